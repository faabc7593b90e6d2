"""Store ticks in SQLite as they stream in, then query them back.

python examples/sqlite_store.py --count 20                   # real Binance, ./ticks.db
python examples/sqlite_store.py --url ws://127.0.0.1:8765/ws/!miniTicker@arr --db :memory:

It reads Binance's wss://stream.binance.com:9443/ws/!miniTicker@arr (every symbol's 24h mini
ticker, once a second; mini tickers carry no bid/ask, so those columns stay NULL). A combined
stream of full tickers works too (`/stream?streams=btcusdt@ticker/ethusdt@ticker`, with bid and
ask). Checked against Binance's documentation of July 2026 (`!ticker@arr`, which this example
used to read, was retired on 2026-03-26 and sends nothing now).
"""

from __future__ import annotations

import argparse
import json
import sys

from dial import Dial, last_error

DEFAULT_URL = "wss://stream.binance.com:9443/ws/!miniTicker@arr"
TICKER_EVENTS = ("24hrTicker", "24hrMiniTicker")
SCHEMA = """CREATE TABLE IF NOT EXISTS ticks (
    exchange TEXT, symbol TEXT, last REAL, bid REAL, ask REAL, volume REAL, ts INTEGER)"""
INSERT = "INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?)"
SUMMARY = """SELECT symbol, COUNT(*) AS ticks, MIN(last) AS low, MAX(last) AS high,
    ROUND(AVG(ask - bid), 8) AS avg_spread FROM ticks GROUP BY symbol ORDER BY symbol"""


def print_table(result: dict) -> None:
    columns, values = result["columns"], result["values"]
    cells = [[str(v) for v in columns]] + [[str(v) for v in row] for row in values]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def ticker_rows(message: str | bytes) -> list[tuple[object, ...]]:
    """Rows for the 24hrTicker / 24hrMiniTicker events in one message (raw, array or a combined
    stream's {"stream", "data"} wrapper); other messages (acks, serverShutdown) give none."""
    try:
        payload = json.loads(message)
    except ValueError:
        return []
    if isinstance(payload, dict) and "stream" in payload and "data" in payload:
        payload = payload["data"]
    events = payload if isinstance(payload, list) else [payload]
    return [
        (
            "binance",
            e["s"],
            float(e["c"]),
            _maybe(e.get("b")),
            _maybe(e.get("a")),
            float(e["q"]),
            int(e["E"]),
        )
        for e in events
        if isinstance(e, dict) and e.get("e") in TICKER_EVENTS
    ]


def _maybe(value: object) -> float | None:
    return None if value is None else float(str(value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="Binance ticker stream (default !miniTicker@arr)"
    )
    parser.add_argument("--db", default="ticks.db", help="SQLite file (or :memory:)")
    parser.add_argument("--count", type=int, default=10, help="messages to store (default 10)")
    args = parser.parse_args(argv)

    db = Dial(f"sqlite3://{args.db}")
    if not db:
        print(f"cannot open {args.db}: {last_error()}", file=sys.stderr)
        return 1
    ws = Dial(f"{args.url}|reconnect=true")
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        db.close()
        return 1
    stored = messages = 0
    try:
        if db.exec(SCHEMA) is None:
            print(f"cannot create table: {last_error()}", file=sys.stderr)
            return 1
        while messages < args.count:
            message = ws.read(1000)
            if not message:
                continue  # None: quiet second; "": reconnecting
            rows = ticker_rows(message)
            if not rows:
                continue  # not a ticker message
            for row in rows:
                if db.exec(INSERT, *row) is None:
                    print(f"insert failed: {last_error()}", file=sys.stderr)
                    return 1
                stored += 1
            messages += 1
            if sys.stdout.isatty():
                print(f"\rstored {stored} ticks from {messages} messages", end="", flush=True)
        print(f"\rstored {stored} ticks from {messages} messages")
        summary = db.exec(SUMMARY)
        if summary is None:
            print(f"query failed: {last_error()}", file=sys.stderr)
            return 1
        print_table(summary)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
