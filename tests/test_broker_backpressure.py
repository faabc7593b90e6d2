"""Backpressure on brokers: a source that can wait is paused, so a slow reader loses nothing.

DESIGN.md §2: the ring buffer drops the oldest only for a source that cannot wait. A broker
can, so when `read()` falls behind the connection stops taking messages at the buffer's
high-water mark (NATS: the socket is left unread; MQTT: likewise, which also holds back the
PUBACKs of a QoS 1 subscription; AMQP: acknowledgements are held, so the broker stops at the
prefetch; Kafka: the fetch loop waits) and the broker keeps the backlog. Every test publishes
with an independent client, flat out, while the Dial reader is slow, then checks that every
message arrived, in order, with `stats().dropped == 0`.

Mosquitto keeps a backlog only up to its `max_queued_messages` (1000 by default, QoS 0 and 1
alike): the MQTT tests run a private broker with a bigger limit, and one test shows what the
default does (the broker drops, Dial does not).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import nats
import paho.mqtt.client as paho
import pytest
from aiokafka import AIOKafkaProducer
from paho.mqtt.enums import CallbackAPIVersion

from dial import Dial
from dial.buffer import CAPACITY, MessageBuffer
from dial.transports.amqp import PREFETCH
from tests.servers.base import free_port, stop
from tests.servers.brokers import kafka, nats_server, rabbitmq, start_mosquitto

__all__ = ["kafka", "nats_server", "rabbitmq"]  # fixtures used by name

N = 20_000
WAIT = 30.0  # seconds any one expected event may take
HELD = CAPACITY  # what a paused connection may hold (AMQP: high water + prefetch, below it)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def payloads(count: int) -> list[str]:
    return [f"m{i}" for i in range(count)]


# -- the brokers and their independent publishers ----------------------------------------------


@dataclass
class Broker:
    name: str
    port: int
    address: Callable[[str], str]  # target -> Dial address
    publish: Callable[[str, list[str]], None]  # flat out, returns once the broker has all
    target: Callable[[], str]


def nats_broker(port: int) -> Broker:
    def publish(subject: str, messages: list[str]) -> None:
        async def run() -> None:
            client = await nats.connect(f"nats://127.0.0.1:{port}")
            for message in messages:
                await client.publish(subject, message.encode())
            await client.flush(timeout=WAIT)
            await client.close()

        asyncio.run(run())

    return Broker(
        "nats",
        port,
        lambda subject: f"nats://127.0.0.1:{port}?topic={subject}",
        publish,
        lambda: unique("dial.bp."),
    )


def kafka_broker(port: int) -> Broker:
    def publish(topic: str, messages: list[str]) -> None:
        async def run() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
            await producer.start()
            try:
                sent = [await producer.send(topic, m.encode(), partition=0) for m in messages]
                await asyncio.gather(*sent)
            finally:
                await producer.stop()

        asyncio.run(run())

    return Broker(
        "kafka",
        port,
        lambda topic: f"kafka://127.0.0.1:{port}/{topic}",
        publish,
        lambda: unique("dial_bp_"),
    )


def amqp_broker(port: int) -> Broker:
    def publish(queue: str, messages: list[str]) -> None:
        async def run() -> None:
            connection = await aio_pika.connect(host="127.0.0.1", port=port)
            channel = await connection.channel(publisher_confirms=False)
            underlay = await channel.get_underlay_channel()
            last = len(messages) - 1
            for i, message in enumerate(messages):  # wait for the socket now and then only
                await underlay.basic_publish(
                    message.encode(), routing_key=queue, wait=i % 256 == 0 or i == last
                )
            await connection.close()

        asyncio.run(run())

    return Broker(
        "amqp",
        port,
        lambda queue: f"amqp://guest:guest@127.0.0.1:{port}/?queue={queue}",
        publish,
        lambda: unique("dial_bp_"),
    )


def mqtt_broker(port: int, qos: int) -> Broker:
    def publish(topic: str, messages: list[str]) -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.max_inflight_messages_set(1000)
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            sent = [client.publish(topic, message, qos=qos) for message in messages]
            for info in sent:
                info.wait_for_publish(WAIT)
        finally:
            client.disconnect()
            client.loop_stop()

    return Broker(
        f"mqtt-qos{qos}",
        port,
        lambda topic: f"mqtt://127.0.0.1:{port}?topic={topic}&qos={qos}",
        publish,
        lambda: unique("dial/bp/"),
    )


@pytest.fixture(scope="module")
def roomy_mosquitto() -> Iterator[int]:
    """A private Mosquitto that keeps a big backlog per subscriber (the default is 1000)."""
    port = free_port()
    process = start_mosquitto(port, extra=["max_queued_messages 100000"])
    yield port
    stop(process)


KINDS = ["nats", "kafka", "amqp", "mqtt-qos0", "mqtt-qos1"]


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest) -> Broker:
    kind = request.param
    if kind == "nats":
        return nats_broker(request.getfixturevalue("nats_server"))
    if kind == "kafka":
        return kafka_broker(request.getfixturevalue("kafka"))
    if kind == "amqp":
        return amqp_broker(request.getfixturevalue("rabbitmq"))
    return mqtt_broker(request.getfixturevalue("roomy_mosquitto"), int(kind[-1]))


def read_all(conn: Any, count: int) -> list[Any]:
    got = []
    for _ in range(count):
        message = conn.read(WAIT * 1000)
        if message is None or message == "":
            break
        got.append(message)
    return got


def drop_queue(port: int, queue: str) -> None:
    async def run() -> None:
        connection = await aio_pika.connect(host="127.0.0.1", port=port)
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await connection.close()

    asyncio.run(run())


# -- the tests ---------------------------------------------------------------------------------


def test_a_reader_that_reads_nothing_leaves_the_backlog_at_the_broker(broker: Broker) -> None:
    """N published flat out while nobody reads: the connection holds no more than its
    buffer (it stopped taking messages), drops none, and then yields all N in order."""
    target = broker.target()
    try:
        with Dial(broker.address(target), raise_errors=True) as conn:
            broker.publish(target, payloads(N))
            time.sleep(1.0)  # still not reading: nothing more should come in
            stats = conn.stats()
            assert stats.connected and stats.dropped == 0, stats
            assert stats.messages_in < N, f"{broker.name}: the broker kept nothing: {stats}"
            assert stats.buffered <= HELD, stats
            if broker.name == "amqp":  # high-water mark + at most one prefetch window
                assert stats.buffered <= CAPACITY // 2 + PREFETCH, stats
            assert read_all(conn, N) == payloads(N)
            assert conn.read(-1) is None
            stats = conn.stats()
            assert (stats.messages_in, stats.dropped, stats.reconnects) == (N, 0, 0), stats
    finally:
        if broker.name == "amqp":
            drop_queue(broker.port, target)


def test_a_reader_slow_at_first_gets_everything_in_order(broker: Broker) -> None:
    """The publisher floods while the reader takes a millisecond per message for the first
    3000 (far slower than the feed), then reads at full speed: all N arrive, in order, and
    the ring buffer drops nothing."""
    target = broker.target()
    got: list[Any] = []
    try:
        with Dial(broker.address(target), raise_errors=True) as conn:

            def reader() -> None:
                for i in range(N):
                    message = conn.read(WAIT * 1000)
                    if message is None or message == "":
                        return
                    got.append(message)
                    if i < 3000:
                        time.sleep(0.001)

            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            broker.publish(target, payloads(N))
            thread.join(120)
            assert not thread.is_alive(), f"{broker.name}: read {len(got)} of {N}"
            assert got == payloads(N)
            assert conn.stats().dropped == 0, conn.stats()
    finally:
        if broker.name == "amqp":
            drop_queue(broker.port, target)


def test_mqtt_default_queue_limit_is_where_a_qos1_backlog_is_lost() -> None:
    """What the README warns about: Mosquitto keeps at most `max_queued_messages` (1000 by
    default) for a subscriber that is not reading, and drops the rest itself. Dial drops
    nothing; what arrives is in order; the loss is at the broker (counted here, as Dial
    cannot see it)."""
    port = free_port()
    process = start_mosquitto(port)  # default limits
    try:
        feed = mqtt_broker(port, 1)
        target = feed.target()
        total = 5000
        with Dial(feed.address(target), raise_errors=True) as conn:
            feed.publish(target, payloads(total))
            time.sleep(0.5)
            got = []
            while (message := conn.read(1000)) not in (None, ""):
                got.append(message)
            assert conn.stats().dropped == 0
            numbers = [int(m[1:]) for m in got]
            assert numbers == sorted(numbers) and numbers[:1000] == list(range(1000))
            lost_at_broker = total - len(got)
            assert lost_at_broker > 0, "Mosquitto kept the whole backlog: update the README"
    finally:
        stop(process)


def test_a_held_link_is_not_taken_for_dead(roomy_mosquitto: int, nats_server: int) -> None:
    """While paused for the reader nothing is read, so silence proves nothing: neither
    paho's keepalive (5 s here) nor the `idle` watchdog (2 s) may drop the link."""
    feeds = [
        (mqtt_broker(roomy_mosquitto, 1), "&keepalive=5|idle=2"),
        (nats_broker(nats_server), "|idle=2"),
    ]
    conns = []
    for feed, options in feeds:
        target = feed.target()
        conn = Dial(feed.address(target) + options, raise_errors=True)
        conns.append((feed, target, conn))
    try:
        for feed, target, _ in conns:
            feed.publish(target, payloads(5000))
        time.sleep(12)  # > 2 keepalive periods and many idle periods
        for feed, _, conn in conns:
            stats = conn.stats()
            assert stats.connected and stats.reconnects == 0, (feed.name, stats)
            assert stats.stale_restarts == 0 and stats.last_error is None, (feed.name, stats)
            assert read_all(conn, 5000) == payloads(5000), feed.name
    finally:
        for _, _, conn in conns:
            conn.close()


def test_mqtt_packets_of_every_size_and_kind_arrive_intact(roomy_mosquitto: int) -> None:
    """QoS 0 PUBLISH packets are taken from the read buffer without paho; sizes around the
    remaining-length boundaries, packets split across reads (one bigger than a read),
    retained, QoS 1 and binary payloads in between must all come out exact and in order."""
    port, topic = roomy_mosquitto, unique("dial/sizes/")
    sizes = [1, 2, 127, 128, 129, 16_383, 16_384, 16_385, 300_000, 5, 2_097_151, 3]
    with Dial(f"mqtt://127.0.0.1:{port}?topic={topic}&qos=1", raise_errors=True) as conn:
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", port)
        client.loop_start()
        expected = []
        try:
            sent = []
            for index, size in enumerate(sizes):
                body = (f"{index}:" + "x" * size)[:size] if size > 3 else "abc"[:size]
                expected.append(body)
                sent.append(client.publish(topic, body, qos=index % 2, retain=index == 4))
            raw = b"\xff\x00bin"
            expected.append(raw.decode("utf-8", "surrogateescape"))
            sent.append(client.publish(topic, raw, qos=0))
            for info in sent:
                info.wait_for_publish(WAIT)
        finally:
            client.disconnect()
            client.loop_stop()
        assert read_all(conn, len(expected)) == expected
        stats = conn.stats()
        assert stats.bytes_in == sum(sizes) + len(raw), stats
        assert stats.dropped == 0 and stats.reconnects == 0, stats


# -- the buffer's side of it, without a broker -------------------------------------------------


class Flow:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: list[str] = []

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")


def test_hold_mode_pauses_whether_or_not_anyone_reads_and_never_drops() -> None:
    loop = asyncio.new_event_loop()
    try:
        buffer = MessageBuffer()
        flow = Flow(loop)
        buffer.set_flow_control(flow, hold=True)
        for i in range(CAPACITY // 2):  # nobody has read yet: still paused at high water
            buffer.put(f"m{i}")
        assert flow.events == ["pause"]
        for i in range(CAPACITY // 2, CAPACITY):  # what was already on its way still fits
            buffer.put(f"m{i}")
        loop.run_until_complete(asyncio.sleep(0.1))  # no time limit: still paused
        assert flow.events == ["pause"] and buffer.dropped == 0
        for i in range(CAPACITY - CAPACITY // 8):  # down to the low-water mark
            assert buffer.read(-1) == f"m{i}"
        loop.run_until_complete(asyncio.sleep(0))
        assert flow.events == ["pause", "resume"]
        assert buffer.dropped == 0 and len(buffer) == CAPACITY // 8
    finally:
        loop.close()


def test_without_hold_an_idle_reader_still_gets_drop_oldest() -> None:
    """Sources that cannot wait (exchange feeds) keep FMZ's drop-oldest."""
    loop = asyncio.new_event_loop()
    try:
        buffer = MessageBuffer()
        flow = Flow(loop)
        buffer.set_flow_control(flow)
        for i in range(CAPACITY + 10):
            buffer.put(f"m{i}")
        assert buffer.dropped == 10
        assert buffer.read(-1) == "m10"
    finally:
        loop.close()
