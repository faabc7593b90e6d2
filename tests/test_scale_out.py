"""The scale-out walkthrough (README "Outgrowing one machine"), run for real.

Three collectors (`dial pipe` from the simulator's Binance and OKX trade feeds, keyed by
symbol) -> one Kafka topic with 6 partitions -> a consumer group of two strategy processes
(examples/scale_out/strategy.py: `ack=manual`, `exec_many` into ClickHouse, ack after the
insert). During the run one collector and one strategy are killed with SIGKILL and restarted.

What must hold, checked against an independent read of the topic from its beginning:
- every message that reached Kafka is in ClickHouse at least once (duplicates are counted
  and printed: the killed strategy's unacknowledged batch comes again);
- each strategy run recorded every partition in offset order; trade ids never go back per
  symbol within a partition;
- the collectors that were not killed left no gap in any symbol's trade ids; the killed one's
  gap lies within its down window. An exchange feed cannot replay what was pushed while no one
  listened: that loss is the collector's, and is why collectors should stay small and restart
  fast (or run twice, deduplicated downstream by trade id).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from dial import Dial
from dial.simulator import Simulator
from tests.conftest import ROOT
from tests.servers.brokers import kafka
from tests.servers.databases import clickhouse_server
from tests.servers.simulator import script_env

__all__ = ["clickhouse_server", "kafka"]  # fixtures used by name

STRATEGY = ROOT / "examples" / "scale_out" / "strategy.py"
COMPOSE = ROOT / "docker" / "docker-compose.yml"
PARTITIONS = 6
RATE = 10.0  # simulator market steps per second: every symbol trades at least once a step
WAIT = 30.0  # seconds any one expected event may take (a group rebalance after a SIGKILL
# waits out the dead member's session timeout, 10 s with aiokafka's defaults)

BINANCE_GROUPS = {
    "binance-a": ("btcusdt", "ethusdt", "solusdt"),
    "binance-b": ("bnbusdt", "xrpusdt", "dogeusdt"),
}
OKX_SYMBOLS = ("BTC-USDT", "ETH-USDT", "SOL-USDT")
KILLED_COLLECTOR = "binance-b"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    """A child process whose output goes to a log file (read when an assert fails)."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    history: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=script_env(),
                cwd=ROOT,
            )
        self.history.append(self.popen)
        self.started_at = time.time()

    def kill(self) -> float:
        """SIGKILL, as a crash or an OOM kill would; returns when it happened."""
        assert self.popen is not None and self.popen.poll() is None, self.output()
        self.popen.kill()
        self.popen.wait(10)
        return time.time()

    def terminate(self) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.output()}") from None

    def cleanup(self) -> None:
        for popen in self.history:
            if popen.poll() is None:
                popen.kill()
                popen.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def wait_for(self, text: str, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT
        while self.output().count(text) < count:
            assert self.popen is not None and self.popen.poll() is None, (
                f"{self.name} exited {self.popen and self.popen.returncode}:\n{self.output()}"
            )
            assert time.monotonic() < deadline, f"{self.name}: no {text!r}:\n{self.output()}"
            time.sleep(0.1)


def collector_argv(source: str, sink: str, key: str) -> list[str]:
    return [sys.executable, "-m", "dial.cli", "pipe", source, sink, "--key", key, "--quiet"]


def strategy_argv(name: str, topic: str, group: str, clickhouse: str, table: str) -> list[str]:
    return [
        sys.executable,
        str(STRATEGY),
        "--name",
        name,
        "--kafka",
        topic,
        "--group",
        group,
        "--clickhouse",
        clickhouse,
        "--table",
        table,
        "--batch",
        "50",
    ]


# -- Kafka and ClickHouse, read independently ------------------------------------------------------


def create_topic(port: int, topic: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "scale_out" / "topic.py"),
            f"kafka://127.0.0.1:{port}/{topic}",
            "--partitions",
            str(PARTITIONS),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=script_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout


@dataclass(frozen=True)
class Stored:
    """One record as the topic holds it."""

    partition: int
    offset: int
    key: str | None
    payload: str


def topic_records(port: int, topic: str) -> list[Stored]:
    """Every record of the topic, read from the beginning by a plain aiokafka consumer
    (no group, no dialkit) until it has been quiet for 2 s."""

    async def run() -> list[Stored]:
        consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            got: list[Stored] = []
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < 2.0:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    got += [
                        Stored(
                            tp.partition,
                            r.offset,
                            None if r.key is None else r.key.decode(),
                            r.value.decode(),
                        )
                        for r in records
                    ]
                    quiet_since = time.monotonic()
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


def recorded_rows(address: str, table: str) -> list[dict[str, Any]]:
    with Dial(address, 10, raise_errors=True) as db:
        result = db.exec(
            f"SELECT run, seq, partition, offset, symbol, trade_id, payload FROM {table} "
            "ORDER BY run, seq"
        )
    return [dict(zip(result["columns"], row, strict=True)) for row in result["values"]]


def covered(address: str, table: str, wanted: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (partition, offset) pairs of `wanted` not recorded yet."""
    with Dial(address, 10, raise_errors=True) as db:
        result = db.exec(f"SELECT DISTINCT partition, offset FROM {table}")
    return wanted - {(int(p), int(o)) for p, o in result["values"]}


# -- what the feeds sent --------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeSeen:
    collector: str
    symbol: str
    trade_id: int
    traded_at: float  # seconds since the epoch (the venue's trade time)


def trade_of(payload: str) -> TradeSeen | None:
    message = json.loads(payload)
    if message.get("e") == "trade":
        group = next(g for g, symbols in BINANCE_GROUPS.items() if message["s"].lower() in symbols)
        return TradeSeen(group, message["s"], int(message["t"]), message["T"] / 1000)
    if message.get("arg", {}).get("channel") == "trades" and message.get("data"):
        trade = message["data"][0]
        return TradeSeen("okx", trade["instId"], int(trade["tradeId"]), int(trade["ts"]) / 1000)
    return None  # OKX's subscribe acknowledgement


def missing_ids(ids: list[int]) -> list[int]:
    present = set(ids)
    return [i for i in range(min(ids), max(ids) + 1) if i not in present]


# -- the walkthrough -------------------------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with Simulator(["binance", "okx"], rate=RATE) as sim:
        yield sim


@pytest.mark.slow
def test_scale_out_walkthrough(
    kafka: int, clickhouse_server: int, simulator: Simulator, tmp_path: Path
) -> None:
    topic, group, table = unique("scale_out_"), unique("strategies_"), unique("scale_out_")
    sink = f"kafka://127.0.0.1:{kafka}/{topic}"
    clickhouse = f"clickhouse://tcp://127.0.0.1:{clickhouse_server}?database=default"
    create_topic(kafka, topic)

    binance = simulator.base_url("binance")
    okx_subscribe = json.dumps(
        {"op": "subscribe", "args": [{"channel": "trades", "instId": s} for s in OKX_SYMBOLS]}
    )
    collectors = {
        name: Process(
            name,
            collector_argv(
                f"{binance}/ws/" + "/".join(f"{s}@trade" for s in symbols), sink, key="s"
            ),
            tmp_path / f"{name}.log",
        )
        for name, symbols in BINANCE_GROUPS.items()
    }
    collectors["okx"] = Process(
        "okx",
        collector_argv(
            f"{simulator.base_url('okx')}/ws/v5/public|payload={okx_subscribe}",
            sink,
            key="data.0.instId",
        ),
        tmp_path / "okx.log",
    )
    strategies = {
        name: Process(
            name, strategy_argv(name, sink, group, clickhouse, table), tmp_path / f"{name}.log"
        )
        for name in ("s1", "s2")
    }
    everyone = [*collectors.values(), *strategies.values()]
    try:
        for strategy in strategies.values():  # both members join before any trade arrives
            strategy.start()
        for strategy in strategies.values():
            strategy.wait_for(": ready")
        for collector in collectors.values():
            collector.start()
        time.sleep(4)

        victim = collectors[KILLED_COLLECTOR]
        collector_killed_at = victim.kill()
        time.sleep(3)  # the feed goes on; nobody listens for these symbols
        victim.start()

        time.sleep(2)
        strategies["s2"].kill()  # its unacknowledged batch must come again, to someone
        time.sleep(1)
        strategies["s2"].start()
        strategies["s2"].wait_for(": ready", count=2)  # after the group rebalanced
        time.sleep(3)

        for collector in collectors.values():
            assert collector.terminate() == 0, collector.output()
        records = topic_records(kafka, topic)
        wanted = {(r.partition, r.offset) for r in records}
        deadline = time.monotonic() + WAIT
        while missing := covered(clickhouse, table, wanted):
            assert time.monotonic() < deadline, f"{len(missing)} never recorded, e.g. {missing}"
            time.sleep(0.5)
        for strategy in strategies.values():
            assert strategy.terminate() == 0, strategy.output()
    finally:
        for process in everyone:
            process.cleanup()

    try:
        rows = recorded_rows(clickhouse, table)
    finally:
        with Dial(clickhouse, 10, raise_errors=True) as db:
            db.exec(f"DROP TABLE IF EXISTS {table}")
    report_and_check(records, rows, collector_killed_at, victim.started_at)


def report_and_check(
    records: list[Stored], rows: list[dict[str, Any]], killed_at: float, restarted_at: float
) -> None:
    # 1. at least once: every record is in ClickHouse, with the payload Kafka holds
    by_place = {(r.partition, r.offset): r for r in records}
    recorded = Counter((row["partition"], row["offset"]) for row in rows)
    assert set(by_place) <= set(recorded)
    for row in rows:
        assert row["payload"] == by_place[(row["partition"], row["offset"])].payload
    duplicates = sum(count - 1 for count in recorded.values())
    runs = Counter(row["run"] for row in rows)
    print(
        f"\nscale-out: {len(records)} messages in Kafka, {len(rows)} rows recorded by "
        f"{len(runs)} strategy runs ({dict(runs)}), {duplicates} duplicates"
    )

    # 2. order: each run recorded every partition in offset order
    offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row in rows:  # ordered by run, seq: the order each run recorded them
        offsets[(row["run"], row["partition"])].append(row["offset"])
    for (run, partition), seen in offsets.items():
        assert seen == sorted(set(seen)), f"{run} recorded partition {partition} out of order"

    # ... and per symbol, trade ids never go back within a partition
    trades: dict[tuple[str, str], list[TradeSeen]] = defaultdict(list)
    partitions_of: dict[tuple[str, str], set[int]] = defaultdict(set)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        trade = trade_of(record.payload)
        if trade is None:
            continue
        assert record.key == trade.symbol  # the collector keyed it by its symbol
        trades[(trade.collector, trade.symbol)].append(trade)
        partitions_of[(trade.collector, trade.symbol)].add(record.partition)
    expected = {(g, s.upper()) for g, symbols in BINANCE_GROUPS.items() for s in symbols}
    expected |= {("okx", s) for s in OKX_SYMBOLS}
    assert set(trades) == expected
    for stream, seen in trades.items():
        assert len(partitions_of[stream]) == 1, f"{stream} spread over several partitions"
        ids = [t.trade_id for t in seen]
        assert ids == sorted(ids), f"{stream}: trade ids went back"

    # 3. gaps: none where the collector ran throughout; the killed one's within its downtime
    for (collector, symbol), seen in sorted(trades.items()):
        gap = missing_ids([t.trade_id for t in seen])
        if collector != KILLED_COLLECTOR:
            assert gap == [], f"{collector} {symbol}: trade ids missing {gap[:10]}"
            continue
        assert gap, f"{symbol}: the collector was down 3 s, yet no trade was missed"
        before = max((t for t in seen if t.trade_id < gap[0]), key=lambda t: t.trade_id)
        after = min((t for t in seen if t.trade_id > gap[-1]), key=lambda t: t.trade_id)
        assert gap == list(range(gap[0], gap[-1] + 1)), f"{symbol}: more than one gap"
        # the gap's neighbours bracket the down window: the last trade forwarded came at
        # most 1.5 s before the kill (the batch read but not yet confirmed died with the
        # process), the first one after it once the restarted collector had subscribed
        assert killed_at - 1.5 <= before.traded_at <= killed_at, (symbol, before, killed_at)
        assert restarted_at <= after.traded_at <= restarted_at + 10.0, (symbol, after)
        print(f"  {symbol}: {len(gap)} trades lost while {collector} was down (no replay)")


# -- the compose profile -------------------------------------------------------------------------


def load_strategy() -> Any:
    spec = importlib.util.spec_from_file_location("scale_out_strategy", STRATEGY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_compose_scale_out_profile() -> None:
    """docker/docker-compose.yml's `scale-out` profile: the simulator, the topic job, three
    collectors keyed by symbol into one topic, two strategies in one group; every command is
    one the CLI or the strategy accepts, every script it names exists."""
    from dial.cli import build_parser

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    profiled = {name: s for name, s in services.items() if "scale-out" in s.get("profiles", [])}
    assert not [name for name, s in services.items() if "profiles" not in s and "build" in s]
    for name, service in profiled.items():
        assert (ROOT / service["build"]["dockerfile"]).exists(), name
        scripts = [arg for arg in service["command"] if arg.endswith(".py")]
        assert all((ROOT / script).exists() for script in scripts), (name, scripts)
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"

    pipes = [s["command"] for s in profiled.values() if s["command"][:2] == ["dial", "pipe"]]
    assert len(pipes) == 3
    sinks = set()
    for command in pipes:
        args = build_parser().parse_args(command[1:])
        assert args.key, f"{command}: not keyed by symbol"
        sinks.add(args.dst)
    assert len(sinks) == 1 and sinks.pop().startswith("kafka://kafka:29092/")

    strategy = load_strategy()
    members = [
        strategy.build_parser().parse_args(command[2:])
        for command in (s["command"] for s in profiled.values())
        if command[:2] == ["python", "examples/scale_out/strategy.py"]
    ]
    assert len(members) == 2
    assert len({m.group for m in members}) == 1, "both strategies must be in one group"
    assert len({m.name for m in members}) == 2
    kafka_env = services["kafka"]["environment"]
    assert "INTERNAL://kafka:29092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
