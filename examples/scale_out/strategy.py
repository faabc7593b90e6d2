"""A strategy process of the scale-out walkthrough: one member of a Kafka consumer group.

    python examples/scale_out/strategy.py --name s1 \\
        --kafka kafka://127.0.0.1:9092/trades --group strategies \\
        --clickhouse 'clickhouse://tcp://127.0.0.1:9000?database=default' --table trades

Run it twice (or on two machines) with the same --group: Kafka splits the topic's partitions
between the members, and since the collectors key every trade by its symbol, each symbol
lives in one partition and reaches exactly one member, in the order it was traded.

Every message is read with its envelope (`ack=manual` implies `meta=true`), recorded to
ClickHouse in batches with `exec_many`, and acknowledged only after the insert returned. A
member that dies (kill -9) loses nothing: what it had not acknowledged is delivered again to
whichever member owns the partition next, so a message may be recorded twice (at least once),
never zero times. Each row says which member and which run of it recorded it, and where the
message sat in Kafka (partition, offset), so duplicates can be counted afterwards.

The "strategy" itself is a stand-in: it keeps the last price of every symbol and prints them
when it stops. Put your own logic in `Strategy.on_trade`.

SIGTERM or Ctrl-C: the current batch is recorded and acknowledged, then it exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from dial import Dial
from dial.envelope import Envelope

BATCH = 500  # messages per insert, at most
WAIT_MS = 200  # how long an empty read waits: how soon a stop request is noticed
PROGRESS_EVERY = 5.0  # seconds between progress lines

DDL = """CREATE TABLE IF NOT EXISTS {table} (
    consumer String,
    run String,
    seq UInt64,
    topic String,
    partition Int32,
    offset Int64,
    key Nullable(String),
    venue Nullable(String),
    symbol Nullable(String),
    trade_id Nullable(Int64),
    price Nullable(Float64),
    traded_ms Nullable(Int64),
    payload String,
    recorded_at DateTime('UTC')
) ENGINE = MergeTree ORDER BY (partition, offset)"""

COLUMNS = (
    "consumer, run, seq, topic, partition, offset, key, venue, symbol, trade_id, price, "
    "traded_ms, payload, recorded_at"
)


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade, the same shape whichever venue it came from."""

    venue: str
    symbol: str
    trade_id: int
    price: float
    traded_ms: int  # the venue's trade time, milliseconds since the epoch


def parse_trade(payload: str | bytes) -> Trade | None:
    """A Binance `trade` event or an OKX v5 `trades` push as a Trade; None for anything else
    (OKX's subscribe acknowledgement, for one), which is still recorded, as it came."""
    try:
        message: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("e") == "trade":  # Binance: {"e":"trade","s":"BTCUSDT","t":12,"p":"..."}
        return Trade(
            "binance", message["s"], int(message["t"]), float(message["p"]), int(message["T"])
        )
    data = message.get("data")
    if message.get("arg", {}).get("channel") == "trades" and data:  # OKX: one trade per push
        trade = data[0]
        return Trade(
            "okx", trade["instId"], int(trade["tradeId"]), float(trade["px"]), int(trade["ts"])
        )
    return None


class Strategy:
    """The trading logic: here, only the last price per symbol."""

    def __init__(self) -> None:
        self.last_price: dict[str, float] = {}

    def on_trade(self, trade: Trade) -> None:
        self.last_price[f"{trade.venue}:{trade.symbol}"] = trade.price


class Recorder:
    """Rows into ClickHouse, one `exec_many` per batch; `seq` numbers the rows of this run in
    the order they were recorded."""

    def __init__(self, address: str, table: str, consumer: str, run: str) -> None:
        self.db = Dial(address, 10, raise_errors=True)
        self.db.exec(DDL.format(table=table))
        placeholders = ", ".join("?" * len(COLUMNS.split(", ")))
        self.insert = f"INSERT INTO {table} ({COLUMNS}) VALUES ({placeholders})"
        self.consumer, self.run, self.seq = consumer, run, 0

    def record(self, batch: Sequence[tuple[Envelope, Trade | None]]) -> None:
        now = datetime.now(timezone.utc)
        rows = []
        for envelope, trade in batch:
            self.seq += 1
            rows.append(
                (
                    self.consumer,
                    self.run,
                    self.seq,
                    envelope.topic,
                    envelope.partition,
                    envelope.offset,
                    envelope.key,
                    trade and trade.venue,
                    trade and trade.symbol,
                    trade and trade.trade_id,
                    trade and trade.price,
                    trade and trade.traded_ms,
                    envelope.value,
                    now,
                )
            )
        self.db.exec_many(self.insert, rows)

    def close(self) -> None:
        self.db.close()


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    run_id = f"{args.name}-{os.getpid()}"
    # ack=manual: nothing is committed until conn.ack(); offset=beginning only applies to
    # partitions the group has never committed (its very first start).
    source = f"{args.kafka}?group={args.group}&offset=beginning|ack=manual&reconnect=true"
    recorder = Recorder(args.clickhouse, args.table, args.name, run_id)
    conn = Dial(source, 60, raise_errors=True)  # returns once the group assigned partitions
    strategy = Strategy()
    print(f"{run_id}: ready", flush=True)
    batch: list[tuple[Envelope, Trade | None]] = []
    recorded, shown_at = 0, time.monotonic()
    try:
        while True:
            envelope = conn.read_message(-1 if batch else WAIT_MS)  # batch what is buffered
            if envelope is not None:
                trade = parse_trade(envelope.value)
                if trade is not None:
                    strategy.on_trade(trade)
                batch.append((envelope, trade))
                if len(batch) < args.batch:
                    continue
            if batch:
                recorder.record(batch)  # raises on failure: nothing is acknowledged then
                conn.ack([envelope for envelope, _ in batch])
                recorded += len(batch)
                batch = []
            elif not conn.connected:
                time.sleep(0.1)  # reconnecting: read_message() returns at once meanwhile
            if stop.is_set():
                break
            if time.monotonic() - shown_at >= PROGRESS_EVERY:
                print(f"{run_id}: recorded {recorded}", flush=True)
                shown_at = time.monotonic()
    finally:
        conn.close()
        recorder.close()
    prices = " ".join(f"{name}={price:g}" for name, price in sorted(strategy.last_price.items()))
    print(f"{run_id}: stopped after {recorded} messages; last prices {prices}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--name", required=True, help="this member's name, e.g. s1")
    parser.add_argument("--kafka", required=True, help="kafka://host:port/topic")
    parser.add_argument("--group", default="strategies", help="the consumer group")
    parser.add_argument("--clickhouse", required=True, help="clickhouse://... address")
    parser.add_argument("--table", default="trades", help="created if absent")
    parser.add_argument("--batch", type=int, default=BATCH, help="messages per insert")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(_number: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = time.monotonic()
    code = run(args, stop)
    print(f"{args.name}: ran {time.monotonic() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
