"""`dial.pipe` against kcat-like raw client loops, counting only what arrived (zero loss).

    python benchmarks/pipe.py [--quick] [--only ws-kafka,kafka-clickhouse] [--count N]
                              [--rounds R] [--batch B] [--kafka-port P] [--clickhouse-port P]
                              [--json PATH]

Two bridges, each measured raw and through `dial.pipe` in one run, rounds alternating (who goes
first alternates too), the best loss-free round of each side counting:

* ws -> kafka: a local WebSocket server (a process of its own) pushes N Binance-shaped trades
  (`{"e":"trade","E":..,"s":"BTCUSDT","t":..,"p":"..","q":"..","T":..,"m":..,"M":true}`)
  as pre-encoded frames, as fast as its socket drains (`drain()` after every chunk: the
  server waits for the client's TCP window, it never buffers ahead). Keyed by symbol.
  - raw: a websockets client (`async for message in ws`) + aiokafka `producer.send(topic,
    value, key=symbol)` per message, then `flush()` and every delivery future checked, with
    the producer settings Dial's confirmed sink uses: acks=all (idempotent when the broker
    offers it: the tansu broker here does not, so neither side is), max_batch_size 256 KiB,
    linger_ms 5 (librdkafka's, i.e. kcat's, default linger).
  - dial: `dial.pipe(ws, "kafka://.../topic", key=json_field_key("s"))`, whose sink dials
    `confirm=true`: a batch counts once the broker acknowledged it.
  The clock runs from the server's first frame to the last message acknowledged by the broker
  (raw: flush() and the futures; dial: `progress().written` reached N). The topic is then read
  back from the beginning: only trades found in it count (distinct trade ids; a message with
  the wrong key counts as an error). A WebSocket feed cannot wait: when the pipe falls behind,
  Dial's ring buffer drops the oldest (the raw websockets client instead stops reading, which
  the server's drain() feels). A round that lost a trade is shown, never counted; if every
  flood round of Dial lost some, the server is paced (0.8x what Dial delivered, then 0.75x
  steps) until a round loses none, and that rate is Dial's result.
* kafka -> clickhouse: N keyed trades already in a topic (4 partitions), read from the
  beginning by a fresh consumer group into a fresh MergeTree table with the schema `dial.pipe`
  documents (received_at, source, topic, src_partition, src_offset, key, payload).
  - raw: aiokafka `AIOKafkaConsumer(group_id=..., enable_auto_commit=False)`, `getmany(
    max_records=B)`, one clickhouse-driver `execute("INSERT ... VALUES", rows)` per batch (in
    the loop's executor, so aiokafka keeps fetching meanwhile), then `consumer.commit()`.
  - dial: `dial.pipe("kafka://...?group=G&offset=earliest", "clickhouse://tcp://...",
    table=T, batch=B)`: `ack=manual`, one `exec_many` per batch, then the offsets committed.
  The clock runs from the first message the loop took from the consumer (raw: getmany()
  returned; dial: `progress().read` > 0) to the last batch committed; the group join before
  it is left out on both sides. Only distinct (partition, offset) rows found in the table
  count.

Servers: the shared Kafka-API broker (tansu, 9092) and ClickHouse (native 9000) when they
listen, else private instances on free ports started the way tests/servers does (stopped at
exit). Absolute rates move a lot on a shared 2-core machine: compare the ratio of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the server helpers live in tests/servers
    sys.path.insert(0, str(ROOT))

from dial.pipes import DEFAULT_BATCH, IN_FLIGHT, Pipe, json_field_key  # noqa: E402

HOST = "127.0.0.1"
KAFKA_PORT = 9092
CLICKHOUSE_PORT = 9000
TARGET = 0.8
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
PARTITIONS = 4
LINGER_MS = 5  # raw producer: librdkafka's (kcat's) default linger
MAX_BATCH_BYTES = 256 * 1024  # raw producer: what Dial's Kafka producer uses
FRAMES_PER_WRITE = 256  # the feed server's chunk: one write + drain() per chunk
POLL = 0.005  # s between looks at the pipe's progress (the end-of-run clock)
QUIET = 3.0  # s without progress, after the feed sent everything, before a round is given up
ROUND_LIMIT = 180.0  # s a round may take at most
PACED_STEPS = 4  # paced Dial rounds after a lossy flood, at most


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@dataclass
class Round:
    """One run of one side: what was asked, what arrived, how fast."""

    side: str
    count: int
    arrived: int = 0  # distinct messages found at the destination
    extra: int = 0  # found more than once, or with the wrong key
    dropped: int = 0  # what Dial's ring buffer dropped (ws source)
    seconds: float = 0.0
    rate: float | None = None  # paced feed rate (msg/s), None: flat out
    start: str = "flood"  # how the source had its messages: pushed flat out, or a backlog
    number: int = 0  # the round; raw and Dial of one round ran back to back
    note: str = ""

    @property
    def lost(self) -> int:
        return self.count - self.arrived

    @property
    def clean(self) -> bool:
        return self.lost == 0 and not self.note

    @property
    def speed(self) -> float:
        return self.arrived / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        paced = self.start if self.rate is None else f"paced {self.rate:,.0f}/s"
        text = f"{self.side:<5}{paced:<18}{self.speed:>10,.0f} msg/s  arrived {self.arrived:,}"
        text += f"/{self.count:,}"
        if self.dropped:
            text += f", ring-buffer drops {self.dropped:,}"
        if self.extra:
            text += f", duplicates/mis-keyed {self.extra:,}"
        if self.note:
            text += f", {self.note}"
        return text + ("" if self.clean else "  (LOSS: not counted)")


@dataclass
class Result:
    bridge: str
    settings: str
    rounds: list[Round] = field(default_factory=list)

    def best(self, side: str) -> Round | None:
        clean = [r for r in self.rounds if r.side == side and r.clean]
        return max(clean, key=lambda r: r.speed, default=None)

    def paired(self) -> list[float]:
        """Dial / raw within each round where both sides lost nothing: the two ran back to
        back, so a drift of the machine or the servers over the run cancels out."""
        ratios = []
        for number in sorted({r.number for r in self.rounds}):
            pair = {r.side: r for r in self.rounds if r.number == number and r.clean}
            if "raw" in pair and "dial" in pair and pair["raw"].speed:
                ratios.append(pair["dial"].speed / pair["raw"].speed)
        return ratios

    def ratio(self) -> float | None:
        raw, mine = self.best("raw"), self.best("dial")
        if raw is None or mine is None or not raw.speed:
            return None
        return mine.speed / raw.speed


# ================================================================================================
# Servers: the shared ones when they listen, else private ones started like tests/servers does
# ================================================================================================


def listening(port: int) -> bool:
    from tests.servers.base import port_open

    return port_open(port)


def kafka_port(given: int | None) -> int:
    if given is not None:
        return given
    if listening(KAFKA_PORT):
        return KAFKA_PORT
    from tests.servers.base import free_port
    from tests.servers.brokers import start_tansu

    port = free_port()  # a private broker: never one that others may later take for shared
    start_tansu(port)
    print(f"started a private Kafka-API broker (tansu) on {HOST}:{port}", flush=True)
    return port


def clickhouse_port(given: int | None) -> int:
    if given is not None:
        return given
    if listening(CLICKHOUSE_PORT):
        return CLICKHOUSE_PORT
    from tests.servers.databases import PrivateClickhouse

    server = PrivateClickhouse()
    server.start()
    print(f"started a private ClickHouse on {HOST}:{server.port}", flush=True)
    return server.port


# ================================================================================================
# Trades and the feed server (its own process, so its CPU is not the pipe's)
# ================================================================================================


def trade(index: int, now_ms: int) -> bytes:
    """One trade as Binance's `<symbol>@trade` stream sends it (compact JSON)."""
    body = {
        "e": "trade",
        "E": now_ms + index // 10,
        "s": SYMBOLS[index % len(SYMBOLS)],
        "t": index,
        "p": f"{60000 + (index % 997) * 0.01:.2f}",
        "q": f"{0.001 * (1 + index % 50):.5f}",
        "T": now_ms + index // 10,
        "m": index % 2 == 0,
        "M": True,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def text_frame(payload: bytes) -> bytes:
    """An unmasked server-to-client WebSocket text frame (RFC 6455 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class Feed:
    """The parent's handle on the feed process: its URL, `go(rate)` to start a push of every
    trade to the connected client, `sent()` for the server's (first frame, last frame) times."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.control, child = context.Pipe()
        self.process = context.Process(target=feed_process, args=(child, count), daemon=True)
        self.process.start()
        if not self.control.poll(60):
            raise RuntimeError("the feed server did not start")
        self.url = f"ws://{HOST}:{self.control.recv()}/ws/trades"

    def go(self, rate: float | None) -> None:
        self.control.send(("go", rate))

    def sent(self, seconds: float) -> tuple[float, float] | None:
        if not self.control.poll(seconds):
            return None
        answer = self.control.recv()
        if answer[0] != "sent":
            raise RuntimeError(f"feed server: {answer[1]}")
        return answer[1], answer[2]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.control.send(("exit", None))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def feed_process(control: Any, count: int) -> None:
    """Child: serve one client at a time; on ("go", rate) push every trade to it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent closes us
    now_ms = int(time.time() * 1000)
    frames = [text_frame(trade(index, now_ms)) for index in range(count)]
    asyncio.run(FeedServer(control, frames).serve())


class FeedServer:
    """A WebSocket server on the websockets library's sans-I/O protocol (handshake, pings,
    close), sending pre-encoded frames itself so that the server costs next to nothing."""

    def __init__(self, control: Any, frames: list[bytes]) -> None:
        self.control = control
        self.frames = frames
        self.clients: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def serve(self) -> None:
        server = await asyncio.start_server(self.handshake, HOST, 0)
        self.control.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        async with server:
            while True:
                command, rate = await loop.run_in_executor(None, self.control.recv)
                if command == "exit":
                    return
                try:
                    writer = await asyncio.wait_for(self.clients.get(), 30)
                    first, last = await self.push(writer, rate)
                except Exception as exc:
                    self.control.send(("error", f"{type(exc).__name__}: {exc}"))
                    continue
                self.control.send(("sent", first, last))

    async def handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from websockets.http11 import Request
        from websockets.server import ServerProtocol

        protocol = ServerProtocol(max_size=None)
        while not (events := protocol.events_received()):
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            protocol.receive_data(data)
        request = events[0]
        if not isinstance(request, Request):  # the sans-I/O parser yields the request first
            writer.close()
            return
        protocol.send_response(protocol.accept(request))
        writer.write(b"".join(protocol.data_to_send()))
        await self.clients.put(writer)
        try:  # answer pings and the closing handshake until the client goes
            while data := await reader.read(65536):
                protocol.receive_data(data)
                protocol.events_received()
                outgoing = protocol.data_to_send()
                if outgoing:
                    writer.write(b"".join(outgoing))
                if b"" in outgoing:  # the protocol wants the TCP connection closed
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def push(self, writer: asyncio.StreamWriter, rate: float | None) -> tuple[float, float]:
        """Every frame, in chunks, each written once the socket drained the last one; with
        `rate`, no chunk before it is due. Returns wall times of the first and last write."""
        frames, total = self.frames, len(self.frames)
        first = time.time()
        start = time.monotonic()
        sent = 0
        while sent < total:
            due = min(total, sent + FRAMES_PER_WRITE)
            if rate is not None:
                due = min(due, int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                writer.write(b"".join(frames[sent:due]))
                sent = due
                await writer.drain()
            if rate is not None:
                ahead = start + sent / rate - time.monotonic()
                await asyncio.sleep(ahead if ahead > 0.0005 else 0)
        return first, time.time()


# ================================================================================================
# Kafka helpers (aiokafka, as the raw side uses it)
# ================================================================================================


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def create_topic(port: int, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{port}")
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def delete_topics(port: int, topics: list[str]) -> None:
    """tansu keeps topics in memory: give them back."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{port}")
    await admin.start()
    try:
        with contextlib.suppress(Exception):
            await admin.delete_topics(topics)
    finally:
        await admin.close()


async def idempotence_offered(port: int) -> bool:
    """Whether the broker hands out producer ids (Dial's confirmed sink asks for them and
    falls back to acks=all alone; the raw producer does the same)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=f"{HOST}:{port}", enable_idempotence=True)
    try:
        await producer.start()
    except Exception:
        return False
    finally:
        await producer.stop()
    return True


async def read_back(port: int, topic: str) -> tuple[int, int]:
    """(distinct trades in the topic, records that were duplicates or carried the wrong key),
    reading every partition from its beginning to its high watermark."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=f"{HOST}:{port}", enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]  # as created
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        seen: set[int] = set()
        extra = 0
        deadline = time.monotonic() + ROUND_LIMIT
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: reading back did not reach the end")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    body = json.loads(record.value)
                    if body["t"] in seen or record.key != body["s"].encode():
                        extra += 1
                    seen.add(body["t"])
        return len(seen), extra
    finally:
        await consumer.stop()


async def produce_trades(port: int, topic: str, count: int) -> None:
    """Fill `topic` with `count` trades keyed by symbol (murmur2 partitioning), fast: one
    aiokafka batch per partition at a time, every batch acknowledged."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    producer = AIOKafkaProducer(
        bootstrap_servers=f"{HOST}:{port}", acks="all", max_batch_size=MAX_BATCH_BYTES
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        now_ms = int(time.time() * 1000)
        open_batches: dict[int, Any] = {}
        acks: list[Any] = []

        async def ship(partition: int) -> None:
            batch = open_batches.pop(partition)
            batch.close()
            acks.append(await producer.send_batch(batch, topic, partition=partition))

        for index in range(count):
            value = trade(index, now_ms)
            key = SYMBOLS[index % len(SYMBOLS)].encode()
            partition = partitioner(key, partitions, partitions)
            batch = open_batches.get(partition) or open_batches.setdefault(
                partition, producer.create_batch()
            )
            if batch.append(key=key, value=value, timestamp=None) is None:
                await ship(partition)
                batch = open_batches.setdefault(partition, producer.create_batch())
                batch.append(key=key, value=value, timestamp=None)
        for partition in list(open_batches):
            await ship(partition)
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


# ================================================================================================
# Running a Dial pipe with an end-of-run clock
# ================================================================================================


class PipeRun:
    """`Pipe.run()` in a thread; the caller watches `progress()` for the moment it is done."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, name="bench-pipe", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.outcome.append(self.pipe.run())
        except BaseException as exc:  # reported by finish()
            self.outcome.append(exc)

    def ready(self, seconds: float) -> bool:
        """Both ends dialled (the source may already be buffering)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.pipe.ready.wait(0.01):
                return True
            if not self.thread.is_alive():
                return False
        return False

    def first_read(self) -> float | None:
        """Wall time the pipe took its first message from the source (group join and
        connects are not part of the rate), or None when it ended before."""
        deadline = time.monotonic() + ROUND_LIMIT
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.pipe.progress().read:
                return time.time()
            time.sleep(POLL)
        return None

    def written_at(self, count: int, quiet_after: Callable[[], bool]) -> float | None:
        """Wall time when `count` messages were written (confirmed, acknowledged), or None
        when progress stopped for QUIET seconds once `quiet_after()` held."""
        last, since = -1, time.monotonic()
        deadline = since + ROUND_LIMIT
        while time.monotonic() < deadline:
            written = self.pipe.progress().written
            if written >= count:
                return time.time()
            if not self.thread.is_alive():
                return None
            now = time.monotonic()
            if written != last:
                last, since = written, now
            elif quiet_after() and now - since > QUIET:
                return None
            time.sleep(POLL)
        return None

    def finish(self) -> tuple[Any, str]:
        """Stop, join; (the PipeResult or None, a note when it failed)."""
        self.pipe.stop()
        self.thread.join(60)
        if self.thread.is_alive():
            return None, "the pipe did not stop"
        outcome = self.outcome[0] if self.outcome else None
        if isinstance(outcome, BaseException):
            return getattr(outcome, "result", None), f"{type(outcome).__name__}: {outcome}"
        return outcome, ""


# ================================================================================================
# ws -> kafka
# ================================================================================================


def dial_ws_kafka(feed: Feed, port: int, count: int, rate: float | None) -> Round:
    topic = fresh("bench_pipe_dial_")
    run(create_topic(port, topic))
    result = Round("dial", count, rate=rate)
    try:
        pipe = Pipe(
            feed.url, f"kafka://{HOST}:{port}/{topic}", key=json_field_key("s"), count=count
        )
        running = PipeRun(pipe)
        if not running.ready(30):
            _, result.note = running.finish()
            result.note = result.note or "the pipe did not connect"
            return result
        feed.go(rate)
        sent: list[tuple[float, float] | None] = []

        def feed_done() -> bool:
            if not sent:
                answer = feed.sent(0)
                if answer is not None:
                    sent.append(answer)
            return bool(sent)

        end = running.written_at(count, feed_done)
        outcome, result.note = running.finish()
        while not sent:
            sent.append(feed.sent(30))
        first = sent[0][0] if sent[0] else None
        if outcome is not None:
            result.dropped = outcome.dropped
        if end is not None and first is not None:
            result.seconds = end - first
        elif not result.note:
            result.note = "the pipe never wrote them all"
        result.arrived, result.extra = run(read_back(port, topic))
        if result.seconds == 0.0:  # no end-of-run time: a rate over what did arrive
            result.seconds = max(time.time() - (first or time.time()), 1e-6)
    finally:
        run(delete_topics(port, [topic]))
    return result


def raw_ws_kafka(feed: Feed, port: int, count: int, idempotent: bool) -> Round:
    topic = fresh("bench_pipe_raw_")
    run(create_topic(port, topic))
    result = Round("raw", count)
    try:
        end, failures = run(raw_ws_kafka_loop(feed, port, topic, count, idempotent))
        answer = feed.sent(30)
        if answer is None:
            result.note = "the feed server did not finish"
        else:
            result.seconds = end - answer[0]
        if failures:
            result.note = f"{failures:,} deliveries failed"
        result.arrived, result.extra = run(read_back(port, topic))
    finally:
        run(delete_topics(port, [topic]))
    return result


async def raw_ws_kafka_loop(
    feed: Feed, port: int, topic: str, count: int, idempotent: bool
) -> tuple[float, int]:
    """The kcat-like loop: every WebSocket message to `producer.send(key=symbol)`, then
    flush() and every delivery checked. Returns (wall time all were acknowledged, failures)."""
    import websockets
    from aiokafka import AIOKafkaProducer

    options: dict[str, Any] = {"enable_idempotence": True} if idempotent else {"acks": "all"}
    producer = AIOKafkaProducer(
        bootstrap_servers=f"{HOST}:{port}",
        linger_ms=LINGER_MS,
        max_batch_size=MAX_BATCH_BYTES,
        **options,
    )
    await producer.start()
    try:
        async with websockets.connect(feed.url, max_size=None, compression=None) as ws:
            feed.go(None)
            deliveries = []
            got = 0
            async for message in ws:
                key = json.loads(message)["s"].encode()
                value = message.encode() if isinstance(message, str) else message
                deliveries.append(await producer.send(topic, value, key=key))
                got += 1
                if got == count:
                    break
            await producer.flush()
            outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
            end = time.time()
        return end, sum(isinstance(outcome, BaseException) for outcome in outcomes)
    finally:
        await producer.stop()


def bench_ws_kafka(port: int, args: argparse.Namespace) -> Result:
    idempotent = run(idempotence_offered(port))
    producer = "idempotent" if idempotent else "acks=all (the broker offers no idempotence)"
    result = Result(
        "ws -> kafka",
        f"{args.count:,} trades, {PARTITIONS} partitions, keyed by symbol; producer {producer}, "
        f"raw linger_ms={LINGER_MS}, max_batch_size={MAX_BATCH_BYTES // 1024} KiB; "
        f"dial.pipe batch={DEFAULT_BATCH}, confirm=true, up to {IN_FLIGHT} batches in flight",
    )
    feed = Feed(args.count)
    try:
        for number in range(args.rounds):
            sides: list[Callable[[], Round]] = [
                lambda: raw_ws_kafka(feed, port, args.count, idempotent),
                lambda: dial_ws_kafka(feed, port, args.count, None),
            ]
            for side in sides if number % 2 == 0 else reversed(sides):
                shown(result, side(), number)
        if result.best("dial") is None:
            pace_dial(result, feed, port, args.count)
    finally:
        feed.close()
    return result


def pace_dial(result: Result, feed: Feed, port: int, count: int) -> None:
    """Every flood round of Dial lost trades: pace the feed below what Dial delivered
    until a round loses none."""
    delivered = max((r.speed for r in result.rounds if r.side == "dial"), default=0.0)
    rate = 0.8 * delivered
    for _ in range(PACED_STEPS):
        if rate < 100:
            return
        if shown(result, dial_ws_kafka(feed, port, count, rate)).clean:
            return
        rate *= 0.75


# ================================================================================================
# kafka -> clickhouse
# ================================================================================================

#: The table `dial.pipe` creates for a database sink (its documented schema), made by us for
#: both sides so that raw and Dial insert into identical tables.
CLICKHOUSE_TABLE = (
    "CREATE TABLE {t} (received_at DateTime64(6, 'UTC'), source String, "
    "topic Nullable(String), src_partition Nullable(Int32), src_offset Nullable(Int64), "
    "key Nullable(String), payload String) ENGINE = MergeTree ORDER BY received_at"
)
COLUMNS = "received_at, source, topic, src_partition, src_offset, key, payload"


class ClickHouse:
    """clickhouse-driver for setup and counting (the raw side opens its own client)."""

    def __init__(self, port: int) -> None:
        from clickhouse_driver import Client

        self.port = port
        self.client = Client(HOST, port)
        self.ddl = CLICKHOUSE_TABLE

    def create(self, table: str) -> None:
        """The pipe's table; a ClickHouse older than 20.1 (no DateTime64) gets whole-second
        `DateTime` receive times, as `dial.pipe` does there."""
        try:
            self.client.execute(self.ddl.format(t=table))
        except Exception as exc:
            if "DateTime64" not in str(exc) or "DateTime64" not in self.ddl:
                raise
            self.ddl = self.ddl.replace("DateTime64(6, 'UTC')", "DateTime('UTC')")
            self.client.execute(self.ddl.format(t=table))

    def drop(self, table: str) -> None:
        self.client.execute(f"DROP TABLE IF EXISTS {table}")

    def tally(self, table: str) -> tuple[int, int]:
        """(distinct (partition, offset) rows, rows beyond those)."""
        rows, distinct = self.client.execute(
            f"SELECT count(), uniqExact(src_partition, src_offset) FROM {table}"
        )[0]
        return int(distinct), int(rows - distinct)

    def close(self) -> None:
        self.client.disconnect()


def dial_kafka_clickhouse(
    port: int, topic: str, clickhouse: ClickHouse, count: int, batch: int
) -> Round:
    table = fresh("bench_pipe_dial_")
    clickhouse.create(table)
    result = Round("dial", count, start="backlog")
    try:
        source = f"kafka://{HOST}:{port}/{topic}?group={fresh('bench-dial-')}&offset=earliest"
        sink = f"clickhouse://tcp://{HOST}:{clickhouse.port}?database=default"
        running = PipeRun(Pipe(source, sink, table=table, batch=batch, count=count))
        first = running.first_read()
        end = running.written_at(count, lambda: True)
        _, result.note = running.finish()
        result.arrived, result.extra = clickhouse.tally(table)
        if end is None or first is None:
            result.note = result.note or "the pipe never wrote them all"
        else:
            result.seconds = end - first
    finally:
        clickhouse.drop(table)
    return result


def raw_kafka_clickhouse(
    port: int, topic: str, clickhouse: ClickHouse, count: int, batch: int
) -> Round:
    table = fresh("bench_pipe_raw_")
    clickhouse.create(table)
    result = Round("raw", count, start="backlog")
    try:
        times = run(raw_kafka_clickhouse_loop(port, topic, clickhouse.port, table, count, batch))
        result.arrived, result.extra = clickhouse.tally(table)
        if times is None:
            result.note = "the raw loop never got them all"
        else:
            result.seconds = times[1] - times[0]
    finally:
        clickhouse.drop(table)
    return result


async def raw_kafka_clickhouse_loop(
    port: int, topic: str, clickhouse_port: int, table: str, count: int, batch: int
) -> tuple[float, float] | None:
    """getmany -> one INSERT per batch -> commit. Returns the wall times of the first
    message received and of the last commit."""
    from aiokafka import AIOKafkaConsumer
    from clickhouse_driver import Client

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=f"{HOST}:{port}",
        group_id=fresh("bench-raw-"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    client = Client(HOST, clickhouse_port)
    insert = f"INSERT INTO {table} ({COLUMNS}) VALUES"
    source = f"kafka://{HOST}:{port}/{topic}"
    loop = asyncio.get_running_loop()
    await consumer.start()
    try:
        done = 0
        first: float | None = None
        deadline = time.monotonic() + ROUND_LIMIT
        while done < count:
            if time.monotonic() > deadline:
                return None
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch)
            if not fetched:
                continue
            now = time.time()
            first = now if first is None else first
            when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
            rows = [
                (
                    when,
                    source,
                    record.topic,
                    record.partition,
                    record.offset,
                    None if record.key is None else record.key.decode(),
                    record.value.decode(),
                )
                for records in fetched.values()
                for record in records
            ]
            await loop.run_in_executor(None, client.execute, insert, rows)
            await consumer.commit()
            done += len(rows)
        return (first or 0.0), time.time()
    finally:
        await consumer.stop()
        client.disconnect()


def bench_kafka_clickhouse(port: int, clickhouse_port: int, args: argparse.Namespace) -> Result:
    result = Result(
        "kafka -> clickhouse",
        f"{args.count:,} trades in {PARTITIONS} partitions, from the beginning, fresh group "
        f"per round; batch={args.batch} rows, commit after each insert; MergeTree table; "
        "raw clickhouse-driver execute() in the loop's executor",
    )
    topic = fresh("bench_pipe_src_")
    run(create_topic(port, topic))
    clickhouse = ClickHouse(clickhouse_port)
    try:
        run(produce_trades(port, topic, args.count))
        for number in range(args.rounds):
            sides: list[Callable[[], Round]] = [
                lambda: raw_kafka_clickhouse(port, topic, clickhouse, args.count, args.batch),
                lambda: dial_kafka_clickhouse(port, topic, clickhouse, args.count, args.batch),
            ]
            for side in sides if number % 2 == 0 else reversed(sides):
                shown(result, side(), number)
    finally:
        clickhouse.close()
        run(delete_topics(port, [topic]))
    return result


# ================================================================================================
# Report
# ================================================================================================


def shown(result: Result, done: Round, number: int = -1) -> Round:
    done.number = number
    result.rounds.append(done)
    print(f"  {result.bridge:<20}{done.line()}", flush=True)
    return done


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    engine = "picows" if _installed("picows") else "websockets"
    return (
        f"{os.cpu_count()} CPUs (nproc), load {load:.2f}, Python {platform.python_version()} "
        f"on {platform.system()} {platform.machine()}; dialkit ws engine {engine}; "
        f"aiokafka {_version('aiokafka')}, websockets {_version('websockets')}, "
        f"clickhouse-driver {_version('clickhouse_driver')}"
    )


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return "?"


def verdict(result: Result) -> str:
    raw, mine = result.best("raw"), result.best("dial")
    if raw is None or mine is None:
        side = "raw" if raw is None else "Dial"
        return f"no loss-free round for {side}: no result"
    ratio = mine.speed / raw.speed
    paced = "" if mine.rate is None else f" (Dial paced at {mine.rate:,.0f}/s: floods lost)"
    mark = "ok" if ratio >= TARGET else f"BELOW {TARGET}x"
    return f"{mark}: Dial {ratio:.2f}x raw{paced}"


def report(results: list[Result]) -> None:
    print()
    print(f"{'bridge':<22}{'raw msg/s':>12}{'Dial msg/s':>12}{'ratio':>7}  verdict")
    for result in results:
        raw, mine = result.best("raw"), result.best("dial")
        ratio = result.ratio()
        print(
            f"{result.bridge:<22}{(f'{raw.speed:,.0f}' if raw else '-'):>12}"
            f"{(f'{mine.speed:,.0f}' if mine else '-'):>12}"
            f"{(f'{ratio:.2f}' if ratio else '-'):>7}  {verdict(result)}"
        )
    for result in results:
        paired = result.paired()
        if paired:
            middle = sorted(paired)[len(paired) // 2]
            each = ", ".join(f"{ratio:.2f}" for ratio in paired)
            print(
                f"{result.bridge}: Dial/raw per round (back to back): {each}; median {middle:.2f}"
            )
    for result in results:
        print(f"{result.bridge}: {result.settings}")


def as_json(results: list[Result]) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine(), "bridges": {}}
    for result in results:
        raw, mine = result.best("raw"), result.best("dial")
        out["bridges"][result.bridge] = {
            "settings": result.settings,
            "raw": raw.speed if raw else None,
            "dial": mine.speed if mine else None,
            "ratio": result.ratio(),
            "paired": result.paired(),
            "rounds": [
                {**asdict(r), "lost": r.lost, "clean": r.clean, "speed": r.speed}
                for r in result.rounds
            ],
        }
    return out


BRIDGES = ("ws-kafka", "kafka-clickhouse")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, 1 round each")
    parser.add_argument("--only", default=",".join(BRIDGES), help="comma-separated bridges")
    parser.add_argument("--count", type=int, help="messages per round (default 100000)")
    parser.add_argument("--rounds", type=int, help="rounds per side (default 3)")
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="kafka -> clickhouse rows per insert"
    )
    parser.add_argument("--kafka-port", type=int, help="a running Kafka-API broker")
    parser.add_argument("--clickhouse-port", type=int, help="a running ClickHouse (native)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.count is None:
        args.count = 20_000 if args.quick else 100_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.count < 1 or args.rounds < 1:
        parser.error("--count and --rounds must be >= 1")
    args.bridges = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.bridges if name not in BRIDGES]
    if unknown:
        parser.error(f"unknown bridge(s): {', '.join(unknown)}; choose from {', '.join(BRIDGES)}")
    return args


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The libraries' retry chatter is not the benchmark's output."""
    import logging

    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def main() -> None:
    import pytest  # the server starters skip (pytest.skip) when a daemon cannot be started

    args = arguments()
    print(machine(), flush=True)
    results: list[Result] = []
    with quiet_logs():
        try:
            kafka = kafka_port(args.kafka_port)
            if "ws-kafka" in args.bridges:
                results.append(bench_ws_kafka(kafka, args))
            if "kafka-clickhouse" in args.bridges:
                clickhouse = clickhouse_port(args.clickhouse_port)
                results.append(bench_kafka_clickhouse(kafka, clickhouse, args))
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            raise SystemExit(f"a server is unavailable: {exc}") from None
    report(results)
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=2))


if __name__ == "__main__":
    main()
