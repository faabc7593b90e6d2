"""Honest broker benchmark: the highest publish rate each consumer takes without losing a message.

    python benchmarks/brokers.py [--quick] [--only mqtt,nats,amqp,kafka] [--duration S]
                                 [--mqtt-qos 0|1] [--trials]

For every broker that listens on its default port, one run measures two consumers side by side:

* raw  - the client library used the way its documentation shows: paho-mqtt `loop_start()` +
         `on_message` (subscribed with --mqtt-qos), nats-py `subscribe(subject, cb=...)`,
         aio-pika `channel.set_qos(prefetch_count=1000)` + `queue.consume(cb)` with
         `async with message.process()` (acks), aiokafka `AIOKafkaConsumer(topic)` + `getmany()`;
* dial - `Dial(address)` and a thread calling `conn.read()`, the way a strategy reads.

Only messages the consumer's own code got count: the raw callback / fetch loop, or the strings
`read()` returned. A paced publisher in a separate process (the same for both sides; it writes
pre-encoded messages in chunks, so publishing costs little CPU) sends 100-byte messages at a
fixed rate for --duration seconds. A trial at rate R passes when every message of it was
consumed, the last one no later than max(0.3 s, 10% of the duration) after the last publish:
the consumer sustained R without loss and without falling behind.

Rate search, per side: a flood (publish flat out) estimates the consumer's speed; from 0.8x that
estimate the rate is doubled until a trial fails (halved until one passes), then bisected
(geometric mean) until the failing and the passing rate are within 10% (25% with --quick).
Raw and Dial trials alternate (raw first in one round, Dial first in the next) on their own
topics/queues, so load from other processes hits both alike; each trial carries its own tag,
so late messages of an earlier trial never count. The default mode then re-runs both sides at
each side's loss-free rate back to back (same rate, same moment) and narrows Dial's first-drop
rate: the lowest rate at which a Dial trial lost messages, with what `conn.stats()` said
(ring-buffer drops, messages that never reached the connection, i.e. lost at the broker).

A rate the publisher itself could not reach is reported as ">=R (publisher-bound)". Brokers
must already run (see tests/servers/brokers.py); one that does not listen is skipped with one
line. Absolute rates move a lot on a shared 2-core machine: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

HOST = "127.0.0.1"
PORTS = {"mqtt": 1883, "nats": 4222, "amqp": 5672, "kafka": 9092}
SIZE = 100  # bytes per message
PREFETCH = 1000  # aio-pika consumer prefetch of the raw AMQP baseline
GRACE_MIN = 0.3  # seconds after the last publish by which the last message must be consumed
QUIET = 0.3  # seconds without any message before the next trial starts
SETTLE_MAX = 20.0  # seconds a backlog may take to drain before it is purged / ignored
STEP = 2.0  # doubling / halving factor of the search
RATE_MAX = 4_000_000  # msg/s: the search never asks for more
PUB_SHORTFALL = 0.9  # publisher reached < 90% of the asked rate: the trial is publisher-bound
CHUNK = 2048  # messages the publisher hands to the client library at once, at most

monotonic = time.monotonic
Times = tuple[float, float]  # (publishing started, the last message handed to the library)


def fresh(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((HOST, port)) == 0


class Payloads:
    """`count` 100-byte messages `TAG|000000042xxx...`, made a slice at a time."""

    def __init__(self, tag: str, count: int) -> None:
        self.head = tag.encode()
        self.pad = b"x" * (SIZE - len(self.head) - 9)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, part: slice) -> list[bytes]:
        head, pad = self.head, self.pad
        return [head + b"%09d" % i + pad for i in range(*part.indices(self.count))]


# ================================================================================================
# The paced publisher: a separate process, shared by both sides. It uses the client libraries
# to connect, but hands them pre-encoded frames where their per-message cost would make the
# publisher, not the consumer under test, the bottleneck on a 2-core machine.
# ================================================================================================


async def paced(
    send_many: Callable[[list[bytes]], Any], batch: Payloads, rate: float | None
) -> Times:
    """`await send_many(chunk)` until every message went out, `rate` per second (None: flat
    out), in chunks of what is due by now (at most CHUNK). Returns when pacing started and
    ended (the last message handed to the library)."""
    start = monotonic()
    count = len(batch)
    sent = 0
    while sent < count:
        if rate is None:
            due = min(count, sent + CHUNK)
        else:
            due = min(count, sent + CHUNK, int((monotonic() - start) * rate) + 1)
        if due > sent:
            await send_many(batch[sent:due])
            sent = due
        ahead = 0.0 if rate is None else start + sent / rate - monotonic()
        await asyncio.sleep(ahead if ahead > 0.0005 else 0)
    return start, monotonic()


class MqttPublisher:
    """Pre-encoded MQTT 3.1.1 PUBLISH packets, one socket write per chunk (paho costs ~14 us
    a message in Python, which made the publisher the bottleneck). QoS 1: packet ids cycle,
    and a publish is done when the broker acknowledged every packet (4-byte PUBACKs)."""

    def __init__(self, qos: int) -> None:
        self.qos = qos
        self.acked = 0
        self.acks = asyncio.Event()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, PORTS["mqtt"])
        client_id = fresh("bench-pub-").encode()
        # CONNECT, MQTT 3.1.1, clean session, keepalive off
        body = b"\x00\x04MQTT\x04\x02\x00\x00" + len(client_id).to_bytes(2, "big") + client_id
        self.writer.write(b"\x10" + mqtt_length(len(body)) + body)
        connack = await asyncio.wait_for(self.reader.readexactly(4), 10)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"mqtt CONNACK {connack!r}")
        self.pubacks = asyncio.ensure_future(self.count_pubacks())

    async def count_pubacks(self) -> None:
        received = 0
        while data := await self.reader.read(65536):
            received += len(data)
            self.acked = received // 4
            self.acks.set()

    async def prepare(self, target: str) -> None:
        pass

    async def publish(self, target: str, batch: Payloads, rate: float | None) -> Times:
        topic = target.encode()
        writer = self.writer
        if self.qos == 0:
            head = b"\x30" + mqtt_length(2 + len(topic) + SIZE) + len(topic).to_bytes(2, "big")
            head += topic

            async def send(chunk: list[bytes]) -> None:
                writer.write(head + head.join(chunk))
                await writer.drain()

            return await paced(send, batch, rate)
        head = b"\x32" + mqtt_length(4 + len(topic) + SIZE) + len(topic).to_bytes(2, "big")
        head += topic
        ids = [n.to_bytes(2, "big") for n in range(1, 65536)]
        first = self.acked
        sent = [0]

        async def send_qos1(chunk: list[bytes]) -> None:
            base = sent[0]
            writer.write(b"".join(head + ids[(base + i) % 65535] + m for i, m in enumerate(chunk)))
            sent[0] += len(chunk)
            await writer.drain()

        times = await paced(send_qos1, batch, rate)
        deadline = monotonic() + 60
        while self.acked - first < len(batch) and monotonic() < deadline:
            self.acks.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.acks.wait(), 1)
        return times

    async def purge(self, target: str) -> None:
        pass

    async def close(self, targets: list[str]) -> None:
        self.writer.write(b"\xe0\x00")  # DISCONNECT
        self.writer.close()
        self.pubacks.cancel()


def mqtt_length(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


class NatsPublisher:
    async def open(self) -> None:
        import nats

        self.client = await nats.connect(f"nats://{HOST}:{PORTS['nats']}")

    async def prepare(self, target: str) -> None:
        pass

    async def publish(self, target: str, batch: Payloads, rate: float | None) -> Times:
        publish = self.client.publish

        async def send(chunk: list[bytes]) -> None:
            for message in chunk:
                await publish(target, message)

        times = await paced(send, batch, rate)
        await self.client.flush(timeout=30)
        return times

    async def purge(self, target: str) -> None:
        pass

    async def close(self, targets: list[str]) -> None:
        await self.client.close()


class AmqpPublisher:
    """aio-pika sets up the connection and channel; publishes go out as pre-encoded
    Basic.Publish + header + body frames, one write per chunk, through aiormq's own writer
    (aio-pika's publish costs ~40 us a message, which made the publisher the bottleneck)."""

    async def open(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(f"amqp://guest:guest@{HOST}:{PORTS['amqp']}/")
        self.channel = await self.connection.channel(publisher_confirms=False)
        self.underlay = await self.channel.get_underlay_channel()

    async def prepare(self, target: str) -> None:
        pass  # each consumer declares its queue before the first publish

    async def publish(self, target: str, batch: Payloads, rate: float | None) -> Times:
        import struct

        import pamqp.frame
        from aiormq.abc import ChannelFrame
        from pamqp.commands import Basic
        from pamqp.header import ContentHeader

        number = self.underlay.number
        write_queue = self.underlay.connection.write_queue
        head = pamqp.frame.marshal(Basic.Publish(exchange="", routing_key=target), number)
        head += pamqp.frame.marshal(
            ContentHeader(0, SIZE, Basic.Properties(delivery_mode=1)), number
        )
        head += b"\x03" + struct.pack(">HI", number, SIZE)
        tail = b"\xce"
        joiner = tail + head
        loop = asyncio.get_running_loop()

        async def send(chunk: list[bytes]) -> None:
            drained = loop.create_future()
            payload = head + joiner.join(chunk) + tail
            write_queue.put_nowait(ChannelFrame(payload, False, drained))
            await drained

        return await paced(send, batch, rate)

    async def purge(self, target: str) -> None:
        with contextlib.suppress(Exception):
            await self.underlay.queue_purge(target)

    async def close(self, targets: list[str]) -> None:
        for target in targets:  # the Dial side's queue is not auto-deleted
            with contextlib.suppress(Exception):
                await self.underlay.queue_delete(target)
        await self.connection.close()


class KafkaPublisher:
    """aiokafka's batch API (create_batch / send_batch), one batch per chunk and partition."""

    async def open(self) -> None:
        from aiokafka import AIOKafkaProducer

        self.producer = AIOKafkaProducer(
            bootstrap_servers=f"{HOST}:{PORTS['kafka']}", max_batch_size=256 * 1024
        )
        await self.producer.start()
        self.partitions: dict[str, list[int]] = {}

    async def prepare(self, target: str) -> None:
        found = await asyncio.wait_for(self.producer.partitions_for(target), 30)
        self.partitions[target] = sorted(found)

    async def publish(self, target: str, batch: Payloads, rate: float | None) -> Times:
        producer = self.producer
        partitions = self.partitions[target]
        futures: list[Any] = []
        turn = [0]

        async def send(chunk: list[bytes]) -> None:
            pending = producer.create_batch()
            for message in chunk:
                if pending.append(key=None, value=message, timestamp=None) is None:
                    await ship(pending)
                    pending = producer.create_batch()
                    pending.append(key=None, value=message, timestamp=None)
            await ship(pending)

        async def ship(pending: Any) -> None:
            pending.close()
            turn[0] += 1
            partition = partitions[turn[0] % len(partitions)]
            futures.append(await producer.send_batch(pending, target, partition=partition))

        times = await paced(send, batch, rate)
        await asyncio.gather(*futures)  # acknowledged by the broker
        return times

    async def purge(self, target: str) -> None:
        pass

    async def close(self, targets: list[str]) -> None:
        await self.producer.stop()
        if targets:  # tansu keeps topics in memory: give it back
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=f"{HOST}:{PORTS['kafka']}")
            await admin.start()
            try:
                await admin.delete_topics(targets)
            finally:
                await admin.close()


def publisher_process(pipe: Any, broker: str, qos: int) -> None:
    """Child process: open one publisher, then serve commands from the pipe until "exit"."""
    import logging
    import signal

    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent closes us

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        publisher: Any = {
            "mqtt": lambda: MqttPublisher(qos),
            "nats": NatsPublisher,
            "amqp": AmqpPublisher,
            "kafka": KafkaPublisher,
        }[broker]()
        try:
            await asyncio.wait_for(publisher.open(), 30)
        except Exception as exc:
            pipe.send(("error", f"publisher: {type(exc).__name__}: {exc}"))
            return
        pipe.send(("ok", None))
        while True:
            command, *args = await loop.run_in_executor(None, pipe.recv)
            try:
                if command == "exit":
                    await asyncio.wait_for(publisher.close(*args), 10)
                    pipe.send(("ok", None))
                    return
                if command == "publish":
                    target, tag, count, rate = args
                    batch = Payloads(tag, count)
                    start, paced_end = await publisher.publish(target, batch, rate)
                    pipe.send(("ok", (start, paced_end, monotonic())))
                else:
                    await getattr(publisher, command)(*args)
                    pipe.send(("ok", None))
            except Exception as exc:
                pipe.send(("error", f"publisher {command}: {type(exc).__name__}: {exc}"))

    asyncio.run(serve())


class Publisher:
    """The parent's handle on the publisher process."""

    def __init__(self, broker: str, qos: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(
            target=publisher_process, args=(child, broker, qos), daemon=True
        )
        self.process.start()
        self.expect(60)

    def expect(self, timeout: float) -> Any:
        if not self.pipe.poll(timeout):
            raise RuntimeError("publisher process did not answer")
        status, value = self.pipe.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def call(self, *command: Any, timeout: float = 120) -> Any:
        self.pipe.send(command)
        return self.expect(timeout)

    def close(self, targets: list[str]) -> None:
        with contextlib.suppress(Exception):
            self.call("exit", targets, timeout=15)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


# ================================================================================================
# Consumers. Every one calls `count(payload)` once per message it got, nothing else.
# ================================================================================================


class Tally:
    """Per-side counters: `got` counts messages of the current trial (by tag), `seen` all."""

    def __init__(self, text: bool) -> None:
        self.text = text  # Dial gives str, the raw libraries bytes
        self.tag: str | bytes = "\x00" if text else b"\x00"
        self.want = 0
        self.got = 0
        self.seen = 0
        self.done_at = 0.0
        self.done = threading.Event()

    def arm(self, tag: str, want: int) -> None:
        self.done.clear()
        self.done_at = 0.0
        self.got = 0
        self.want = want
        self.tag = tag if self.text else tag.encode()

    def counter(self) -> Callable[[Any], None]:
        def count(payload: Any) -> None:
            self.seen += 1
            if payload.startswith(self.tag):
                self.got += 1
                if self.got == self.want:
                    self.done_at = monotonic()
                    self.done.set()

        return count


class LoopThread:
    """An asyncio loop in a background thread, for the asyncio client libraries."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RawMqtt:
    def __init__(self, target: str, qos: int, tally: Tally) -> None:
        self.target, self.qos, self.tally = target, qos, tally

    def start(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        count = self.tally.counter()

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            count(message.payload)

        subscribed = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=fresh("bench-raw-"))
        client.on_message = on_message
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect(HOST, PORTS["mqtt"])
        client.loop_start()
        client.subscribe(self.target, self.qos)
        if not subscribed.wait(10):
            raise RuntimeError("paho: no SUBACK within 10 s")
        self.client = client

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RawNats:
    def __init__(self, target: str, tally: Tally) -> None:
        self.target, self.tally = target, tally

    def start(self) -> None:
        import nats

        self.runner = LoopThread()
        count = self.tally.counter()

        async def on_message(message: Any) -> None:
            count(message.data)

        async def start() -> Any:
            client = await nats.connect(f"nats://{HOST}:{PORTS['nats']}")
            await client.subscribe(self.target, cb=on_message)
            await client.flush()
            return client

        self.client = self.runner.run(start())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.runner.run(self.client.close(), 10)
        self.runner.stop()


class RawAmqp:
    def __init__(self, target: str, tally: Tally) -> None:
        self.target, self.tally = target, tally

    def start(self) -> None:
        import aio_pika

        self.runner = LoopThread()
        count = self.tally.counter()

        async def on_message(message: Any) -> None:
            async with message.process():
                count(message.body)

        async def start() -> Any:
            connection = await aio_pika.connect(f"amqp://guest:guest@{HOST}:{PORTS['amqp']}/")
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await channel.declare_queue(self.target, auto_delete=True)
            await queue.consume(on_message)
            return connection

        self.connection = self.runner.run(start())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.runner.run(self.connection.close(), 10)
        self.runner.stop()


class RawKafka:
    def __init__(self, target: str, tally: Tally) -> None:
        self.target, self.tally = target, tally

    def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.runner = LoopThread()
        count = self.tally.counter()

        async def start() -> Any:
            # Same fetch wait as Dial's consumer (idle latency bound); everything else default.
            consumer = AIOKafkaConsumer(
                self.target, bootstrap_servers=f"{HOST}:{PORTS['kafka']}", fetch_max_wait_ms=100
            )
            await consumer.start()
            return consumer

        async def consume(consumer: Any) -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for record in records:
                        count(record.value)

        self.consumer = self.runner.run(start())
        self.task = asyncio.run_coroutine_threadsafe(consume(self.consumer), self.runner.loop)

    def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(Exception):
            self.runner.run(self.consumer.stop(), 10)
        self.runner.stop()


class DialConsumer:
    def __init__(self, address: str, tally: Tally) -> None:
        self.address, self.tally = address, tally

    def start(self) -> None:
        from dial import Dial, last_error

        conn: Any = Dial(self.address, timeout=30)
        if conn is None:
            raise RuntimeError(f"Dial failed: {last_error()}")
        self.conn = conn
        count = self.tally.counter()

        def reader() -> None:
            read = conn.read
            while message := read():  # "" once closed
                count(message)

        self.thread = threading.Thread(target=reader, name="dial-reader", daemon=True)
        self.thread.start()

    def stats(self) -> Any:
        return self.conn.stats()

    def stop(self) -> None:
        self.conn.close()
        self.thread.join(5)


# ================================================================================================
# Trials and the rate search
# ================================================================================================


@dataclass
class Trial:
    side: str
    rate: float | None  # asked for; None: flood
    count: int
    pub_rate: float  # what the publisher achieved
    got: int  # of this trial's messages, consumed in the end
    lag: float | None  # seconds from the last publish to the last message consumed
    grace: float
    speed: float = 0.0  # messages consumed per second until done (or the deadline)
    dropped: int = 0  # Dial: ring-buffer drops during the trial
    arrived: int = 0  # Dial: messages that reached the connection (stats().messages_in)

    @property
    def lost(self) -> int:
        return self.count - self.got

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.lag is not None and self.lag <= self.grace

    @property
    def publisher_bound(self) -> bool:
        return self.rate is not None and self.pub_rate < PUB_SHORTFALL * self.rate

    @property
    def effective(self) -> float:
        return self.pub_rate if self.rate is None else min(self.rate, self.pub_rate)

    def line(self) -> str:
        asked = "flood" if self.rate is None else f"{self.rate:,.0f}/s"
        verdict = "pass" if self.passed else ("LOSS" if self.lost else "LAG")
        lag = "never" if self.lag is None else f"{max(self.lag, 0.0) * 1000:,.0f} ms"
        text = (
            f"{self.side:<5}{asked:>13} pub {self.pub_rate:>9,.0f}/s  got {self.got:>8,}"
            f"/{self.count:<8,} last +{lag:<9} {verdict}"
        )
        if self.side == "dial":
            text += f"  [ring-buffer drops {self.dropped:,}, reached conn {self.arrived:,}]"
        if self.publisher_bound:
            text += "  (publisher-bound)"
        return text


@dataclass
class Side:
    name: str
    target: str
    tally: Tally
    consumer: Any
    trials: list[Trial] = field(default_factory=list)
    best: float | None = None  # highest loss-free rate found
    ceiling: bool = False  # the best rate was publisher-bound
    estimate: float = 0.0


class Bench:
    def __init__(self, broker: str, publisher: Publisher, args: argparse.Namespace) -> None:
        self.broker = broker
        self.publisher = publisher
        self.args = args
        self.duration = args.duration
        self.grace = max(GRACE_MIN, 0.1 * args.duration)
        self.quiet = QUIET / 2 if args.quick else QUIET
        self.settle_max = SETTLE_MAX / 5 if args.quick else SETTLE_MAX
        self.serial = 0

    def trial(self, side: Side, rate: float | None, count: int) -> Trial:
        self.serial += 1
        tag = f"{side.name[0]}{self.serial:04d}|"
        tally = side.tally
        tally.arm(tag, count)
        before = side.consumer.stats() if side.name == "dial" else None
        # paced_end: the last message handed to the library; end: flushed / acknowledged
        start, paced_end, end = self.publisher.call("publish", side.target, tag, count, rate)
        deadline = end + self.grace
        tally.done.wait(max(0.0, deadline - monotonic()))
        on_time = tally.got
        finished = tally.done_at if tally.done_at and tally.done_at <= deadline else deadline
        self.settle(side, end)
        after = side.consumer.stats() if side.name == "dial" else None
        got = tally.got
        lag = tally.done_at - end if tally.done_at else None
        pub_rate = count / max(paced_end - start, 1e-6)
        trial = Trial(side.name, rate, count, pub_rate, got, lag, self.grace)
        if got == count and tally.done_at:  # all of it, maybe late: its whole speed
            trial.speed = count / max(tally.done_at - start, 1e-6)
        else:  # lossy: what it consumed on time
            trial.speed = on_time / max(finished - start, 1e-6)
        if before is not None and after is not None:
            trial.dropped = after.dropped - before.dropped
            trial.arrived = after.messages_in - before.messages_in
        side.trials.append(trial)
        if self.args.trials:
            print(f"    {self.broker:<6}{trial.line()}", flush=True)
        return trial

    def settle(self, side: Side, end: float) -> None:
        """Wait until the consumer went quiet (a backlog drained), purging a queue that takes
        too long, so the next trial starts clean."""
        tally = side.tally
        seen, since = tally.seen, monotonic()
        purged = False
        while True:
            time.sleep(0.05)
            now = monotonic()
            if tally.seen != seen:
                seen, since = tally.seen, now
            elif now - since >= self.quiet:
                return
            if now - end > self.settle_max:
                if purged:
                    return
                self.publisher.call("purge", side.target)
                purged = True

    def count_for(self, rate: float) -> int:
        return max(200, int(rate * self.duration))

    def warm_up(self, side: Side) -> None:
        """A few slow messages until the consumer gets them all (Kafka positions, bindings)."""
        for _ in range(5):
            if self.trial(side, 1000.0, 200).lost == 0:
                side.trials.clear()
                return
        raise RuntimeError(f"{side.name}: warm-up messages never arrived")

    def flood(self, side: Side) -> Trial:
        count = self.args.flood
        trial = self.trial(side, None, count)
        side.estimate = max(trial.speed, 100.0)  # consumed per second while the flood lasted
        return trial

    def search(self, side: Side, cap: float) -> Generator[float, Trial, None]:
        """Double / halve from 0.8x the estimate, then bisect; yields rates, receives trials."""
        tolerance = 1.25 if self.args.quick else 1.1
        lo: float | None = None
        hi: float | None = None
        at_cap = False
        rate = min(0.8 * side.estimate, cap)
        for _ in range(self.args.max_trials):
            trial = yield rate
            if trial.passed:
                lo = trial.effective
                at_cap = trial.publisher_bound or rate >= 0.999 * cap
            else:
                hi = min(rate, trial.pub_rate)
            if lo is not None and (at_cap or (hi is not None and hi / lo <= tolerance)):
                break
            if lo is None:
                assert hi is not None
                rate = hi / STEP
                if rate < 50:
                    break
            elif hi is None:
                rate = min(lo * STEP, cap)
            else:
                rate = math.sqrt(lo * hi)
        side.best = lo
        side.ceiling = at_cap and lo is not None

    def alternate(self, sides: list[Side], searches: list[Generator[float, Trial, None]]) -> None:
        """Step every search once per round; the side going first swaps each round."""
        pending: dict[int, float] = {}
        for index, search in enumerate(searches):
            pending[index] = next(search)
        round_no = 0
        while pending:
            order = sorted(pending) if round_no % 2 == 0 else sorted(pending, reverse=True)
            for index in order:
                rate = pending[index]
                trial = self.trial(sides[index], rate, self.count_for(rate))
                try:
                    pending[index] = searches[index].send(trial)
                except StopIteration:
                    del pending[index]
            round_no += 1


def recheck(bench: Bench, raw: Side, dial: Side) -> list[tuple[float, Trial, Trial]]:
    """Both sides once more at each side's loss-free rate, back to back (the order swapped at
    the second rate): the same rate under the same load, for a direct comparison."""
    rates = sorted({r for r in (raw.best, dial.best) if r})
    if len(rates) == 2 and rates[1] / rates[0] < 1.05:
        rates = rates[:1]
    pairs = []
    for index, rate in enumerate(rates):
        count = bench.count_for(rate)
        order = (raw, dial) if index % 2 == 0 else (dial, raw)
        done = {side.name: bench.trial(side, rate, count) for side in order}
        pairs.append((rate, done["raw"], done["dial"]))
    return pairs


def first_drop(bench: Bench, dial: Side, cap: float) -> tuple[Trial | None, float]:
    """The lowest-rate Dial trial that lost messages, and the highest rate below it that lost
    none. Probes upwards when the search saw no loss; narrows the gap in the default mode."""

    def lossy() -> list[Trial]:
        return [t for t in dial.trials if t.lost and t.rate is not None]

    def clean_below(limit: float) -> float:
        rates = [t.effective for t in dial.trials if t.rate and not t.lost and t.effective < limit]
        return max(rates, default=0.0)

    if not lossy():
        rate = max((t.effective for t in dial.trials if t.rate is not None), default=1000.0)
        for _ in range(2):
            rate = min(rate * STEP, cap)
            trial = bench.trial(dial, rate, bench.count_for(rate))
            if trial.lost or trial.publisher_bound or rate >= cap:
                break
    for _ in range(0 if bench.args.quick else 2):
        found = lossy()
        if not found:
            break
        low = min(t.effective for t in found)
        below = clean_below(low)
        if not below or low / below <= 1.15:
            break
        rate = math.sqrt(low * below)
        bench.trial(dial, rate, bench.count_for(rate))
    found = lossy()
    if not found:
        return None, max((t.effective for t in dial.trials if t.rate is not None), default=0.0)
    drop = min(found, key=lambda t: t.effective)
    return drop, clean_below(drop.effective)


# ================================================================================================
# One broker, both sides
# ================================================================================================


def addresses(broker: str, qos: int) -> tuple[str, str, str]:
    """(raw target, dial target, Dial address)."""
    if broker == "mqtt":
        raw, mine = fresh("bench/raw/"), fresh("bench/dial/")
        suffix = f"&qos={qos}" if qos else ""
        return raw, mine, f"mqtt://{HOST}:{PORTS['mqtt']}?topic={mine}{suffix}"
    if broker == "nats":
        raw, mine = fresh("bench.raw."), fresh("bench.dial.")
        return raw, mine, f"nats://{HOST}:{PORTS['nats']}?topic={mine}"
    if broker == "amqp":
        raw, mine = fresh("bench_raw_"), fresh("bench_dial_")
        return raw, mine, f"amqp://guest:guest@{HOST}:{PORTS['amqp']}/?queue={mine}"
    raw, mine = fresh("bench_raw_"), fresh("bench_dial_")
    return raw, mine, f"kafka://{HOST}:{PORTS['kafka']}/{mine}"


def raw_consumer(broker: str, target: str, qos: int, tally: Tally) -> Any:
    if broker == "mqtt":
        return RawMqtt(target, qos, tally)
    return {"nats": RawNats, "amqp": RawAmqp, "kafka": RawKafka}[broker](target, tally)


@dataclass
class Result:
    broker: str
    raw: Side
    dial: Side
    drop: Trial | None
    clean: float  # the highest rate below the first drop (or overall) without loss
    rechecks: list[tuple[float, Trial, Trial]]
    seconds: float


def run_broker(broker: str, args: argparse.Namespace) -> Result:
    began = monotonic()
    raw_target, dial_target, address = addresses(broker, args.mqtt_qos)
    publisher = Publisher(broker, args.mqtt_qos)
    raw = Side("raw", raw_target, Tally(text=False), None)
    dial = Side("dial", dial_target, Tally(text=True), None)
    started: list[Side] = []
    try:
        publisher.call("prepare", raw_target)
        publisher.call("prepare", dial_target)
        raw.consumer = raw_consumer(broker, raw_target, args.mqtt_qos, raw.tally)
        dial.consumer = DialConsumer(address, dial.tally)
        for side in (raw, dial):
            side.consumer.start()
            started.append(side)
        bench = Bench(broker, publisher, args)
        for side in (raw, dial):
            bench.warm_up(side)
        bench.flood(raw)
        bench.flood(dial)
        bench.alternate([raw, dial], [bench.search(raw, RATE_MAX), bench.search(dial, RATE_MAX)])
        rechecks = [] if args.quick else recheck(bench, raw, dial)
        drop, clean = first_drop(bench, dial, RATE_MAX)
        return Result(broker, raw, dial, drop, clean, rechecks, monotonic() - began)
    finally:
        for side in started:
            with contextlib.suppress(Exception):
                side.consumer.stop()
        leftovers = {"amqp": [dial_target], "kafka": [raw_target, dial_target]}
        publisher.close(leftovers.get(broker, []))


# ================================================================================================
# Report
# ================================================================================================


def shown(side: Side) -> str:
    if side.best is None:
        return "none"
    return f"{'>=' if side.ceiling else ''}{side.best:,.0f}"


def verdict(result: Result) -> str:
    raw, dial = result.raw, result.dial
    if raw.best is None or dial.best is None:
        return "no loss-free rate found on one side (see the trials with --trials)"
    ratio = dial.best / raw.best
    if raw.ceiling and not dial.ceiling:
        bound = " (raw was publisher-bound: the true ratio is lower)"
    elif dial.ceiling and not raw.ceiling:
        bound = " (Dial was publisher-bound: the true ratio is higher)"
    elif raw.ceiling:
        bound = " (both publisher-bound: inconclusive)"
    else:
        bound = ""
    if ratio >= 0.9:
        return f"ok: Dial sustains {ratio:.2f}x the raw library's loss-free rate{bound}"
    return f"BELOW 0.9x: Dial sustains {ratio:.2f}x raw; {limit(dial)}{bound}"


def limit(side: Side) -> str:
    """What went wrong at the lowest failing rate above the side's best."""
    best = side.best or 0.0
    failed = [t for t in side.trials if t.rate and not t.passed and t.effective > best]
    if not failed:
        return "no failing trial above it"
    trial = min(failed, key=lambda t: t.effective)
    at = f"at {trial.effective:,.0f}/s"
    if trial.dropped:
        return f"{at} read() fell behind and the ring buffer dropped {trial.dropped:,}"
    if trial.arrived < trial.count and side.name == "dial":
        return f"{at} {trial.count - trial.arrived:,} never reached the connection (broker side)"
    if trial.lost:
        return f"{at} {trial.lost:,} were lost"
    lag = "never" if trial.lag is None else f"{trial.lag:.2f} s"
    return f"{at} nothing was lost but the consumer lagged (last message +{lag})"


def drop_text(result: Result) -> str:
    drop = result.drop
    if drop is None:
        return f"none up to {result.clean:,.0f}/s"
    never = max(drop.count - drop.arrived, 0)
    clean = f" (none at {result.clean:,.0f})" if result.clean else ""
    return (
        f"{drop.effective:,.0f}/s{clean}: lost {drop.lost:,}/{drop.count:,}"
        f", ring-buffer drops {drop.dropped:,}, never reached conn {never:,}"
    )


def report(results: list[Result], skipped: list[str]) -> None:
    if not results:
        return
    print()
    print(f"{'broker':<8}{'raw msg/s':>12}{'Dial msg/s':>12}{'ratio':>7}  Dial first drop")
    for result in results:
        raw, dial = result.raw, result.dial
        ratio = f"{dial.best / raw.best:.2f}" if raw.best and dial.best else "-"
        print(f"{result.broker:<8}{shown(raw):>12}{shown(dial):>12}{ratio:>7}  {drop_text(result)}")
    for line in skipped:
        print(line)
    print()
    for result in results:
        print(f"{result.broker:<8}{verdict(result)}")
        if result.raw.best is not None and result.dial.best is not None:
            print(f"{'':<8}raw limit: {limit(result.raw)}; Dial limit: {limit(result.dial)}")
        if result.rechecks:
            print(
                f"{'':<8}re-check, same rate back to back: "
                + "; ".join(
                    f"{rate:,.0f}/s raw {outcome(raw)}, Dial {outcome(dial)}"
                    for rate, raw, dial in result.rechecks
                )
            )


def outcome(trial: Trial) -> str:
    if trial.passed:
        return "pass"
    return f"LOSS {trial.lost:,}" if trial.lost else f"LAG +{(trial.lag or 0):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short trials, coarse search (<60 s)")
    parser.add_argument("--only", default=",".join(PORTS), help="comma-separated brokers")
    parser.add_argument("--duration", type=float, help="seconds per trial (default 2, quick 0.5)")
    parser.add_argument("--flood", type=int, help="messages in the speed-estimate flood")
    parser.add_argument("--max-trials", type=int, default=9, help="search trials per side")
    parser.add_argument("--mqtt-qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--trials", action="store_true", help="print every trial")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 0.5 if args.quick else 2.0
    if args.flood is None:
        args.flood = 10_000 if args.quick else 60_000
    if args.quick:
        args.max_trials = min(args.max_trials, 5)
    brokers = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in brokers if name not in PORTS]
    if unknown:
        parser.error(f"unknown broker(s): {', '.join(unknown)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{SIZE}-byte messages, trials of {args.duration:g} s, a paced publisher in its own "
        f"process; loss-free = every message consumed, the last within "
        f"{max(GRACE_MIN, 0.1 * args.duration):.2g} s of the last publish. "
        f"{os.cpu_count()} CPUs, load {load:.2f}.",
        flush=True,
    )
    results: list[Result] = []
    skipped: list[str] = []
    for broker in brokers:
        if not listening(PORTS[broker]):
            line = f"{broker:<7}skipped: nothing listens on {HOST}:{PORTS[broker]}"
            print(line, flush=True)
            skipped.append(line)
            continue
        try:
            result = run_broker(broker, args)
        except Exception as exc:
            line = f"{broker:<7}failed: {type(exc).__name__}: {exc}"
            print(line, flush=True)
            skipped.append(line)
            continue
        results.append(result)
        print(
            f"{broker:<7}raw {shown(result.raw)} msg/s, Dial {shown(result.dial)} msg/s "
            f"({result.seconds:.0f} s)",
            flush=True,
        )
    report(results, skipped)


if __name__ == "__main__":
    main()
