"""`dial.pipe` and `dial pipe` against real servers: a WebSocket feed into Kafka keyed by a
JSON field, Kafka into PostgreSQL and ClickHouse tables, NATS into a WebSocket server, a
`dial pipe` killed with SIGKILL and restarted (nothing lost, replays counted), exit codes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import dial
from dial import Dial
from dial.pipes import Pipe, PipeError, PipeResult, json_field_key, with_options
from tests.conftest import ROOT, ServerThread, wait_until
from tests.servers.base import free_port
from tests.servers.brokers import kafka, nats_server
from tests.servers.databases import clickhouse_server, postgres_server
from tests.servers.simulator import script_env

__all__ = ["clickhouse_server", "kafka", "nats_server", "postgres_server"]  # fixtures by name

DIAL = [sys.executable, "-m", "dial.cli"]
WAIT = 20.0


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def postgres(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/test"


def clickhouse(port: int) -> str:
    return f"clickhouse://tcp://127.0.0.1:{port}?database=default"


def produce(port: int, topic: str, messages: list[str]) -> None:
    """Put `messages` on `topic` (close() flushes; nothing may have failed)."""
    conn = Dial(f"kafka://127.0.0.1:{port}/{topic}", 10, raise_errors=True)
    for message in messages:
        assert conn.write(message) > 0
    conn.close()
    stats = conn.stats()
    assert (stats.messages_out, stats.send_errors) == (len(messages), 0), stats.last_error


def rows(address: str, sql: str) -> list[list[Any]]:
    with Dial(address, 10, raise_errors=True) as db:
        result = db.exec(sql)
        assert result is not None, dial.last_error()
        return list(result["values"])


def count_rows(address: str, table: str = "dial_messages") -> int:
    """Rows in `table`; 0 while the pipe has not created it yet."""
    try:
        return int(rows(address, f"SELECT count(*) FROM {table}")[0][0])
    except dial.DialError:
        return 0


class Running:
    """A `Pipe` run in a thread, stopped and joined by the test."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.outcome.append(self.pipe.run())
        except BaseException as exc:
            self.outcome.append(exc)

    def connected(self) -> bool:
        return self.pipe.ready.is_set()

    def finish(self) -> PipeResult:
        self.pipe.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the pipe did not stop"
        result = self.outcome[0]
        if isinstance(result, BaseException):
            raise result
        assert isinstance(result, PipeResult)
        return result


@pytest.fixture
def trade_feed(server_thread: ServerThread) -> Iterator[str]:
    """A WebSocket server that sends 40 Binance-like trades to each client, then idles."""
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        for index in range(40):
            symbol = ("BTCUSDT", "ETHUSDT", "SOLUSDT")[index % 3]
            await ws.send(json.dumps({"e": "trade", "s": symbol, "t": index}))
        await ws.wait_closed()

    async def start() -> Any:
        return await serve(handler, "127.0.0.1", 0)

    server = server_thread.run(start())
    yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/trades"

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    server_thread.run(stop())


MANY = 2500  # more than the 2000-message ring buffer holds


@pytest.fixture
def many_trades(server_thread: ServerThread) -> Iterator[str]:
    """A WebSocket server that sends MANY trades to each client in paced chunks (a reader
    that keeps up loses none), then idles."""
    import asyncio

    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        for index in range(MANY):
            symbol = ("BTCUSDT", "ETHUSDT", "SOLUSDT")[index % 3]
            await ws.send(json.dumps({"e": "trade", "s": symbol, "t": index}))
            if index % 100 == 99:
                await asyncio.sleep(0.005)
        await ws.wait_closed()

    async def start() -> Any:
        return await serve(handler, "127.0.0.1", 0)

    server = server_thread.run(start())
    yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/trades"

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    server_thread.run(stop())


# -- addresses ----------------------------------------------------------------------------------


def test_options_are_added_unless_the_user_set_them() -> None:
    assert with_options("ws://h/x", meta="true") == "ws://h/x|meta=true"
    assert with_options("ws://h/x|reconnect=false", reconnect="true") == "ws://h/x|reconnect=false"
    assert with_options("ws://h/x|payload=a&b=c", meta="true") == "ws://h/x|payload=a&b=c&meta=true"
    assert dial.address.parse(with_options("ws://h/x|payload=a&b=c", meta="true")).options.meta


def test_bad_arguments_are_refused_before_dialling() -> None:
    with pytest.raises(dial.AddressError):
        dial.pipe("ws://127.0.0.1:1/x|nosuch=1", "sqlite3://:memory:")
    with pytest.raises(dial.ArgumentError, match="table"):
        dial.pipe("ws://127.0.0.1:1/x", "sqlite3://:memory:", table="t; DROP TABLE x")
    with pytest.raises(dial.ArgumentError, match="batch"):
        dial.pipe("ws://127.0.0.1:1/x", "sqlite3://:memory:", batch=0)


def test_dial_pipe_is_the_function_and_the_module_is_dial_pipes() -> None:
    import dial.pipes as module

    assert dial.pipe is module.pipe
    assert isinstance(dial.pipe, types.FunctionType)
    assert type(module) is types.ModuleType  # a plain module: no callable-module swap


# -- ws -> kafka, keyed by a JSON field -----------------------------------------------------------


def test_ws_feed_into_kafka_keyed_by_symbol(trade_feed: str, kafka: int) -> None:
    topic = unique("trades-")
    result = dial.pipe(
        trade_feed,
        f"kafka://127.0.0.1:{kafka}/{topic}",
        key=json_field_key("s"),
        count=40,
    )
    assert (result.read, result.written, result.dropped) == (40, 40, 0)
    seen: list[Any] = []
    reader = f"kafka://127.0.0.1:{kafka}/{topic}?offset=earliest|meta=true"
    with Dial(reader, 10, raise_errors=True) as conn:
        deadline = time.monotonic() + WAIT
        while len(seen) < 40 and time.monotonic() < deadline:
            envelope = conn.read_message(200)
            if envelope is not None:
                seen.append(envelope)
    assert len(seen) == 40
    for envelope in seen:
        trade = json.loads(envelope.value)
        assert envelope.key in (trade["s"], trade["s"].encode())
        assert envelope.topic == topic
    # one key, one partition: each symbol's trades keep their order
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        mine = [e for e in seen if json.loads(e.value)["s"] == symbol]
        assert len({e.partition for e in mine}) == 1
        assert [json.loads(e.value)["t"] for e in mine] == sorted(
            json.loads(e.value)["t"] for e in mine
        )


def test_many_batches_in_flight_arrive_complete_and_in_key_order(
    many_trades: str, kafka: int
) -> None:
    topic = unique("inflight-")
    sink = f"kafka://127.0.0.1:{kafka}/{topic}"
    result = dial.pipe(many_trades, sink, key=json_field_key("s"), batch=100, count=MANY)
    assert (result.read, result.written, result.dropped) == (MANY, MANY, 0)
    assert result.batches == MANY // 100
    by_symbol: dict[str, list[int]] = {}
    with Dial(f"{sink}?offset=earliest", 10, raise_errors=True) as conn:
        deadline = time.monotonic() + WAIT
        got = 0
        while got < MANY and time.monotonic() < deadline:
            value = conn.read(200)
            if value:
                trade = json.loads(value)
                by_symbol.setdefault(trade["s"], []).append(trade["t"])
                got += 1
    assert got == MANY
    for trades in by_symbol.values():  # one key, one partition: the feed's order
        assert trades == sorted(trades)
        assert len(set(trades)) == len(trades)


def test_a_feed_that_cannot_wait_gets_batches_below_its_buffer(many_trades: str) -> None:
    result = dial.pipe(many_trades, "sqlite3://:memory:", batch=5000, linger=60, count=MANY)
    assert (result.read, result.written, result.dropped) == (MANY, MANY, 0)
    assert result.batches == 3  # 1000 + 1000 + 500: half the 2000-message buffer at most


def test_the_sink_is_dialled_before_the_source() -> None:
    """A feed is not opened (and left flooding) while there is nowhere to write."""
    import socket

    with socket.socket() as feed:
        feed.bind(("127.0.0.1", 0))
        feed.listen()
        feed.settimeout(0.5)
        source = f"tcp://127.0.0.1:{feed.getsockname()[1]}"
        pipe = Pipe(source, f"kafka://127.0.0.1:{free_port()}/t", timeout=3)
        with pytest.raises(dial.DialError, match="broker"):
            pipe.run()
        assert not pipe.ready.is_set()
        with pytest.raises(TimeoutError):
            feed.accept()


def test_transform_drops_and_rewrites(trade_feed: str, kafka: int) -> None:
    topic = unique("btc-")

    def only_btc(envelope: Any) -> str | None:
        trade = json.loads(envelope.value)
        return f"{trade['s']}:{trade['t']}" if trade["s"] == "BTCUSDT" else None

    result = dial.pipe(trade_feed, f"kafka://127.0.0.1:{kafka}/{topic}", only_btc, count=40)
    assert (result.read, result.written, result.filtered) == (40, 14, 26)
    with Dial(f"kafka://127.0.0.1:{kafka}/{topic}?offset=earliest", 10) as conn:
        got = [conn.read(5000) for _ in range(14)]
    assert got == [f"BTCUSDT:{index}" for index in range(0, 40, 3)]


# -- kafka -> databases -------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgres", "clickhouse"])
def test_kafka_into_a_database_table(database: str, kafka: int, request: Any) -> None:
    port = request.getfixturevalue(f"{database}_server")
    sink = postgres(port) if database == "postgres" else clickhouse(port)
    topic, table = unique("ticks-"), unique("ticks_")
    produced = [json.dumps({"n": index, "px": 100 + index}) for index in range(120)]
    produce(kafka, topic, produced)
    source = f"kafka://127.0.0.1:{kafka}/{topic}?group={unique('g')}&offset=earliest"
    result = dial.pipe(source, sink, table=table, batch=50, count=120)
    assert (result.read, result.written, result.replayed) == (120, 120, 0)
    assert result.batches >= 3
    stored = rows(sink, f"SELECT payload, topic, src_offset, source FROM {table}")
    assert sorted(row[0] for row in stored) == sorted(produced)
    assert {row[1] for row in stored} == {topic}
    assert sorted(row[2] for row in stored) == list(range(120))
    assert all(row[3].startswith("kafka://127.0.0.1:") for row in stored)
    rows(sink, f"DROP TABLE {table}")


# -- nats -> ws ---------------------------------------------------------------------------------


def test_nats_into_a_websocket_server(nats_server: int, ws_server: Any) -> None:
    subject = unique("ticks.")
    running = Running(Pipe(f"nats://127.0.0.1:{nats_server}?topic={subject}", ws_server.url))
    publisher = Dial(f"nats://127.0.0.1:{nats_server}?topic={subject}", 10, raise_errors=True)
    try:
        assert wait_until(running.connected, WAIT)

        def warm() -> bool:  # the pipe's subscription is live once a probe comes through
            publisher.write("probe")
            return wait_until(lambda: "probe" in ws_server.received, 0.3)

        assert wait_until(warm, WAIT)
        for index in range(50):
            publisher.write(f"tick {index}")
        wanted = {f"tick {index}" for index in range(50)}
        assert wait_until(lambda: wanted <= set(ws_server.received), WAIT)
    finally:
        publisher.close()
        result = running.finish()
    assert result.written == result.read >= 51
    assert result.reason == "stopped"


# -- kill -9 and restart ------------------------------------------------------------------------


def start_pipe(source: str, sink: str, table: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DIAL, "pipe", source, sink, "--table", table, "--batch", "50", "--linger", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=script_env(),
        cwd=ROOT,
        text=True,
    )


def test_a_killed_pipe_restarted_loses_nothing_and_counts_replays(
    kafka: int, postgres_server: int
) -> None:
    topic, table, group = unique("orders-"), unique("orders_"), unique("rec")
    sink = postgres(postgres_server)
    produced = [json.dumps({"order": index}) for index in range(20_000)]
    produce(kafka, topic, produced)
    source = f"kafka://127.0.0.1:{kafka}/{topic}?group={group}&offset=earliest"

    def stored() -> int:
        return count_rows(sink, table)

    first = start_pipe(source, sink, table)
    try:
        assert wait_until(lambda: stored() > 0, WAIT), first.stderr
        first.send_signal(signal.SIGKILL)  # mid-run: some batches written, maybe not acked
        first.wait(10)
    finally:
        first.kill()
    assert stored() < 20_000, "the first run finished before it was killed: nothing tested"

    second = start_pipe(source, sink, table)
    try:
        distinct = f"SELECT count(DISTINCT payload) FROM {table}"
        # the restarted member may wait for the broker to evict its killed predecessor
        assert wait_until(lambda: rows(sink, distinct)[0][0] == 20_000, 120)
        second.send_signal(signal.SIGINT)
        _, err = second.communicate(timeout=WAIT)
    finally:
        second.kill()
    assert second.returncode == 130, err
    total, unique_payloads = rows(sink, f"SELECT count(*), count(DISTINCT payload) FROM {table}")[0]
    assert unique_payloads == 20_000  # every produced message is in the table
    summary = re.search(r"replayed ([\d,]+)", err)
    assert summary, err
    assert int(summary.group(1).replace(",", "")) == total - unique_payloads
    rows(sink, f"DROP TABLE {table}")


# -- exit codes ---------------------------------------------------------------------------------


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DIAL, *argv], capture_output=True, text=True, timeout=timeout, env=script_env()
    )


def test_exit_2_for_a_bad_address() -> None:
    result = run_cli("pipe", "ws://127.0.0.1:9/x|nosuch=1", "sqlite3://:memory:")
    assert result.returncode == 2
    assert "unknown option 'nosuch'" in result.stderr and "Traceback" not in result.stderr


def test_exit_1_when_the_source_cannot_be_dialled() -> None:
    port = free_port()
    result = run_cli("pipe", f"ws://127.0.0.1:{port}/x", "sqlite3://:memory:", "-q")
    assert result.returncode == 1
    assert result.stderr.startswith("dial: error:") and "Traceback" not in result.stderr


def test_exit_1_when_the_source_is_lost_without_reconnect(ws_server: Any, tmp_path: Any) -> None:
    database = f"sqlite3://{tmp_path / 'out.db'}"
    process = subprocess.Popen(
        [*DIAL, "pipe", f"{ws_server.url}|reconnect=false&payload=many:5", database],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=script_env(),
    )
    try:
        assert wait_until(lambda: len(ws_server.connections) == 1, WAIT)
        assert wait_until(lambda: count_rows(database) == 5, WAIT)
        ws_server.drop_all()
        _, err = process.communicate(timeout=WAIT)
    finally:
        process.kill()
    assert process.returncode == 1
    assert "source closed" in err
    assert len(rows(database, "SELECT payload FROM dial_messages")) == 5  # written before exit


def test_ctrl_c_exits_130_after_writing_what_was_read(ws_server: Any, tmp_path: Any) -> None:
    database = f"sqlite3://{tmp_path / 'out.db'}"
    process = subprocess.Popen(
        [*DIAL, "pipe", f"{ws_server.url}|payload=many:20", database, "--linger", "60000"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=script_env(),
    )
    try:
        assert wait_until(lambda: len(ws_server.connections) == 1, WAIT)
        time.sleep(0.5)  # the 20 messages are read; the batch lingers, unwritten
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "written 20" in err
    assert len(rows(database, "SELECT payload FROM dial_messages")) == 20


def test_a_pipe_stops_from_another_thread(ws_server: Any) -> None:
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    result = dial.pipe(f"{ws_server.url}|payload=many:3", "sqlite3://:memory:", stop=stop)
    assert result.reason == "stopped" and result.written == 3


def test_source_lost_raises_pipe_error_with_counts(ws_server: Any) -> None:
    threading.Timer(0.5, ws_server.drop_all).start()
    with pytest.raises(PipeError, match="source closed") as caught:
        dial.pipe(f"{ws_server.url}|reconnect=false&payload=many:2", "sqlite3://:memory:")
    assert caught.value.result is not None and caught.value.result.written == 2
