"""mqtt / nats / amqp / kafka behind Dial, against real brokers.

Every broker is checked the same way: a connection reads its own publications, talks both ways
with an independent client, loses nothing to a slow reader (the broker keeps the backlog), and
comes back by itself (reconnect=true) after its broker is killed and restarted.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import nats
import paho.mqtt.client as paho
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

import dial
from dial import ArgumentError, Dial
from tests.conftest import wait_until
from tests.servers.base import ensure_binary, free_port, kill, port_open, stop, wait_port
from tests.servers.brokers import (
    close_own_rabbitmq_connections,
    kafka,
    mosquitto,
    nats_server,
    rabbitmq,
    start_mosquitto,
    start_nats,
    start_tansu,
)

__all__ = ["kafka", "mosquitto", "nats_server", "rabbitmq"]  # fixtures used by name

WAIT = 10.0  # seconds any single expected event may take


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def read_until(conn: Any, wanted: Callable[[Any], bool], seconds: float = WAIT) -> list[Any]:
    """Read messages until one satisfies `wanted`; returns all read (bounded in time)."""
    seen: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = conn.read(200)
        if message is None or message == "":
            if message == "":
                time.sleep(0.05)
            continue
        seen.append(message)
        if wanted(message):
            return seen
    raise AssertionError(f"expected message not read within {seconds} s; read {seen[-5:]!r}")


def wait_for(condition: Callable[[], bool], seconds: float = WAIT) -> bool:
    return wait_until(condition, seconds)


# -- independent clients, one per broker --------------------------------------------------------


class Mqtt:
    name = "mqtt"

    def url(self, port: int, topic: str, query: str = "") -> str:
        return f"mqtt://127.0.0.1:{port}?topic={topic}{query}"

    def publish(self, port: int, topic: str, messages: list[str]) -> None:
        binary = ensure_binary("mosquitto_pub", "mosquitto-clients")
        for message in messages:
            subprocess.run(
                [binary, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", message],
                check=True,
                timeout=WAIT,
            )

    def collect(self, port: int, topic: str, count: int, trigger: Callable[[], None]) -> list:
        got: list[str] = []
        ready, done = threading.Event(), threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *_: c.subscribe(topic)
        client.on_subscribe = lambda *_: ready.set()

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            got.append(message.payload.decode())
            if len(got) >= count:
                done.set()

        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        try:
            assert ready.wait(WAIT), "independent mqtt subscriber did not subscribe"
            trigger()
            done.wait(WAIT)
        finally:
            client.disconnect()
            client.loop_stop()
        return got


class Nats:
    name = "nats"

    def url(self, port: int, topic: str, query: str = "") -> str:
        return f"nats://127.0.0.1:{port}?topic={topic}{query}"

    def publish(self, port: int, topic: str, messages: list[str]) -> None:
        async def run() -> None:
            client = await nats.connect(f"nats://127.0.0.1:{port}")
            for message in messages:
                await client.publish(topic, message.encode())
            await client.flush()
            await client.close()

        asyncio.run(run())

    def collect(self, port: int, topic: str, count: int, trigger: Callable[[], None]) -> list:
        async def run() -> list[str]:
            client = await nats.connect(f"nats://127.0.0.1:{port}")
            got: list[str] = []
            done = asyncio.Event()

            async def on_message(message: Any) -> None:
                got.append(message.data.decode())
                if len(got) >= count:
                    done.set()

            await client.subscribe(topic, cb=on_message)
            await client.flush()
            trigger()
            try:
                await asyncio.wait_for(done.wait(), WAIT)
            except asyncio.TimeoutError:
                pass
            await client.close()
            return got

        return asyncio.run(run())


class Amqp:
    """The independent side uses the default exchange for publishing (routing key = queue);
    for consuming it binds its own queue to an exchange the Dial connection publishes to."""

    name = "amqp"

    def url(self, port: int, topic: str, query: str = "") -> str:
        return f"amqp://guest:guest@127.0.0.1:{port}/?queue={topic}{query}"

    def publish(self, port: int, topic: str, messages: list[str]) -> None:
        async def run() -> None:
            connection = await aio_pika.connect(host="127.0.0.1", port=port)
            channel = await connection.channel()
            for message in messages:
                await channel.default_exchange.publish(aio_pika.Message(message.encode()), topic)
            await connection.close()

        asyncio.run(run())

    def collect_exchange(
        self, port: int, exchange: str, key: str, count: int, trigger: Callable[[], None]
    ) -> list:
        async def run() -> list[str]:
            connection = await aio_pika.connect(host="127.0.0.1", port=port)
            channel = await connection.channel()
            ex = await channel.get_exchange(exchange)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(ex, routing_key=key)
            got: list[str] = []
            done = asyncio.Event()

            async def on_message(message: Any) -> None:
                got.append(message.body.decode())
                if len(got) >= count:
                    done.set()

            await queue.consume(on_message, no_ack=True)
            trigger()
            try:
                await asyncio.wait_for(done.wait(), WAIT)
            except asyncio.TimeoutError:
                pass
            await connection.close()
            return got

        return asyncio.run(run())


class Kafka:
    name = "kafka"

    def url(self, port: int, topic: str, query: str = "") -> str:
        return f"kafka://127.0.0.1:{port}/{topic}" + (f"?{query.lstrip('&')}" if query else "")

    def publish(self, port: int, topic: str, messages: list[str]) -> None:
        async def run() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
            await producer.start()
            try:
                for message in messages:
                    await producer.send_and_wait(topic, message.encode(), partition=0)
            finally:
                await producer.stop()

        asyncio.run(run())

    def collect(self, port: int, topic: str, count: int, trigger: Callable[[], None]) -> list:
        async def run() -> list[str]:
            consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
            await consumer.start()
            got: list[str] = []
            try:
                await consumer.topics()  # fetch metadata of every topic
                partitions = consumer.partitions_for_topic(topic)
                assert partitions, f"topic {topic} unknown to the independent consumer"
                tps = [TopicPartition(topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                trigger()
                deadline = time.monotonic() + WAIT
                while len(got) < count and time.monotonic() < deadline:
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        got += [r.value.decode() for r in records]
            finally:
                await consumer.stop()
            return got

        return asyncio.run(run())


MQTT, NATS, AMQP, KAFKA = Mqtt(), Nats(), Amqp(), Kafka()
FIXTURE = {"mqtt": "mosquitto", "nats": "nats_server", "amqp": "rabbitmq", "kafka": "kafka"}
KINDS = [MQTT, NATS, AMQP, KAFKA]


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def broker(request: pytest.FixtureRequest) -> tuple[Any, int]:
    kind = request.param
    return kind, request.getfixturevalue(FIXTURE[kind.name])


def topic_for(kind: Any) -> str:
    return unique("dial_test_" if kind.name in ("amqp", "kafka") else "dial.test.").replace(
        ".", "/" if kind.name == "mqtt" else "."
    )


# -- behaviour shared by every broker --------------------------------------------------------------


def test_reads_its_own_publications_as_str(broker: tuple[Any, int]) -> None:
    """Broker payloads are always str, whatever the bytes: non-UTF-8 survives as surrogate
    escapes (FMZ scripts write and read text on brokers)."""
    kind, port = broker
    with Dial(kind.url(port, topic_for(kind)), raise_errors=True) as conn:
        assert conn.write("hello") == 5
        assert conn.write("grüße €") == len("grüße €".encode())
        assert conn.write(b"\xff\x00raw") == 5
        got = [conn.read(WAIT * 1000) for _ in range(3)]
        assert got == ["hello", "grüße €", "\udcff\x00raw"]
        assert got[2].encode("utf-8", "surrogateescape") == b"\xff\x00raw"
        assert conn.read(-1) is None  # nothing else arrived


def test_reads_what_an_independent_client_publishes(broker: tuple[Any, int]) -> None:
    kind, port = broker
    topic = topic_for(kind)
    with Dial(kind.url(port, topic), raise_errors=True) as conn:
        kind.publish(port, topic, ["from-outside-1", "from-outside-2"])
        assert conn.read(WAIT * 1000) == "from-outside-1"
        assert conn.read(WAIT * 1000) == "from-outside-2"


@pytest.mark.parametrize("kind", [MQTT, NATS, KAFKA], ids=lambda k: k.name)
def test_an_independent_client_reads_what_dial_writes(kind: Any, request: Any) -> None:
    port = request.getfixturevalue(FIXTURE[kind.name])
    topic = topic_for(kind)
    with Dial(kind.url(port, topic), raise_errors=True) as conn:
        got = kind.collect(port, topic, 3, lambda: [conn.write(f"w{i}") for i in range(3)])
    assert got == ["w0", "w1", "w2"]


def test_amqp_independent_client_reads_what_dial_publishes_to_an_exchange(rabbitmq: int) -> None:
    exchange, queue = unique("dial_x_"), unique("dial_q_")
    url = AMQP.url(rabbitmq, queue, f"&exchange={exchange}&routing_key=prices.btc")
    with Dial(url, raise_errors=True) as conn:
        got = AMQP.collect_exchange(
            rabbitmq, exchange, "prices.*", 2, lambda: [conn.write(m) for m in ("a", "b")]
        )
        assert got == ["a", "b"]
        # the Dial connection's own queue is bound with the same key: it gets them too
        assert [conn.read(WAIT * 1000), conn.read(WAIT * 1000)] == ["a", "b"]


def test_slow_reader_loses_nothing_the_broker_keeps_the_backlog(broker: tuple[Any, int]) -> None:
    """A broker can wait, so a reader that reads nothing while 10,000 messages arrive loses
    none: the connection stops taking them at its high-water mark (at most the ring's 2000
    are held), the broker keeps the rest, and all are read afterwards, in order
    (tests/test_broker_backpressure.py goes further)."""
    kind, port = broker
    total = 10_000
    with Dial(kind.url(port, topic_for(kind)), raise_errors=True) as conn:
        for i in range(total):
            assert conn.write(f"m{i}") > 0
        assert wait_for(lambda: conn.stats().messages_out >= total, 60), conn.stats()
        time.sleep(0.5)  # the reader sleeps on: what arrives stops at the high-water mark
        stats = conn.stats()
        assert stats.connected and stats.dropped == 0, stats
        assert stats.buffered <= 2000 and stats.messages_in < total, stats
        got = [conn.read(WAIT * 1000) for _ in range(total)]
        assert got == [f"m{i}" for i in range(total)]
        assert conn.read(-1) is None
        assert conn.dropped == 0


def test_unreachable_broker_gives_none_and_a_reason(broker: tuple[Any, int]) -> None:
    kind, _ = broker
    port = free_port()
    assert Dial(kind.url(port, topic_for(kind)), timeout=5) is None
    reason = dial.last_error()
    assert reason is not None
    assert str(port) in reason
    assert "refused" in reason or "cannot reach" in reason


# -- addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("mqtt://127.0.0.1:1883", "missing topic"),
        ("mqtt://127.0.0.1:1883?topic=", "parameter 'topic' is empty"),
        ("mqtt://127.0.0.1:1883?topic=t&qos=3", "qos='3': expected 0, 1 or 2"),
        ("mqtt://127.0.0.1:1883?topic=t&retain=maybe", "expected true or false"),
        ("mqtt://127.0.0.1:1883?topic=t&keepalive=1", "keepalive"),
        ("mqtt://127.0.0.1:1883?topic=t&colour=red", "unknown parameter 'colour'"),
        ("mqtt://127.0.0.1:1883?topic=a&topic=b", "given twice"),
        ("mqtt://127.0.0.1:1883/t", "give the topic as ?topic=NAME"),
        ("mqtt://127.0.0.1:99999?topic=t", "bad host or port"),
        ("nats://127.0.0.1:4222", "missing topic"),
        ("nats://127.0.0.1:4222?topic=a b", "whitespace"),
        ("amqp://guest:guest@127.0.0.1:5672/", "missing queue"),
        ("amqp://127.0.0.1:5672/?queue=q&durable=perhaps", "expected true or false"),
        ("kafka://127.0.0.1:9092", "missing topic"),
        ("kafka://127.0.0.1:9092/", "missing topic"),
        ("kafka://127.0.0.1:9092/bad topic!", "bad topic"),
        ("kafka://127.0.0.1:9092/t?offset=newest", "expected latest or earliest"),
        ("kafka://u:p@127.0.0.1:9092/t", "credentials"),
        ("mqtt://127.0.0.1:1883?topic=t|compress=gzip", "option compress is not supported"),
    ],
)
def test_bad_addresses_are_refused_with_a_specific_reason(address: str, expected: str) -> None:
    assert Dial(address) is None
    assert expected in (dial.last_error() or "")


def test_mqtt_topic_wildcards_and_plus_need_no_escaping(mosquitto: int) -> None:
    base = unique("dial/wild/")
    with Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={base}/+/price", raise_errors=True) as conn:
        MQTT.publish(mosquitto, f"{base}/btc/price", ["42"])
        assert conn.read(WAIT * 1000) == "42"
        with pytest.raises(ArgumentError, match=r"wildcard \(\+ or #\)"):
            conn.write("x")  # subscribe-only: refused at once, nothing queued
        assert conn.stats().messages_out == 0 and conn.stats().send_errors == 0


# -- credentials -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_mosquitto() -> Any:
    port = free_port()
    process = start_mosquitto(port, {"alice": "s3cret-mq"})
    yield port
    stop(process)


@pytest.fixture(scope="module")
def secured_nats() -> Any:
    port = free_port()
    process = start_nats(port, "bob", "s3cret-nats")
    yield port
    stop(process)


def test_mqtt_credentials(secured_mosquitto: int, caplog: pytest.LogCaptureFixture) -> None:
    port = secured_mosquitto
    caplog.set_level(logging.DEBUG)
    assert Dial(f"mqtt://alice:hunter2@127.0.0.1:{port}?topic=t") is None
    assert "refused the connection" in (dial.last_error() or "")
    assert "authorized" in (dial.last_error() or "")
    assert Dial(f"mqtt://127.0.0.1:{port}?topic=t") is None  # anonymous refused too
    with Dial(f"mqtt://alice:s3cret-mq@127.0.0.1:{port}?topic=t", raise_errors=True) as conn:
        assert "s3cret" not in repr(conn)
        conn.write("in")
        assert conn.read(WAIT * 1000) == "in"
    assert "hunter2" not in caplog.text and "s3cret" not in caplog.text


def test_nats_credentials(secured_nats: int, caplog: pytest.LogCaptureFixture) -> None:
    port = secured_nats
    caplog.set_level(logging.DEBUG)
    assert Dial(f"nats://bob:hunter2@127.0.0.1:{port}?topic=t") is None
    assert "authorization failed" in (dial.last_error() or "")
    with Dial(f"nats://bob:s3cret-nats@127.0.0.1:{port}?topic=t", raise_errors=True) as conn:
        assert "s3cret" not in repr(conn)
        conn.write("in")
        assert conn.read(WAIT * 1000) == "in"
    assert "hunter2" not in caplog.text and "s3cret" not in caplog.text


def test_amqp_credentials_and_vhost(rabbitmq: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert Dial(f"amqp://guest:hunter2@127.0.0.1:{rabbitmq}/?queue=q") is None
    assert "authentication failed" in (dial.last_error() or "")
    assert Dial(f"amqp://guest:guest@127.0.0.1:{rabbitmq}/no_such_vhost?queue=q") is None
    assert "virtual host" in (dial.last_error() or "")
    assert "hunter2" not in caplog.text


# -- options ---------------------------------------------------------------------------------------


def test_mqtt_qos1_and_retain(mosquitto: int) -> None:
    topic = unique("dial/retain/")
    url = f"mqtt://127.0.0.1:{mosquitto}?topic={topic}&qos=1&retain=true"
    with Dial(url, raise_errors=True) as writer:
        writer.write("kept")
        assert writer.read(WAIT * 1000) == "kept"
    # a later subscriber gets the retained message at once
    with Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={topic}", raise_errors=True) as late:
        assert late.read(WAIT * 1000) == "kept"
    MQTT.publish(mosquitto, topic, [""])  # clear the retained message (empty payload)


def test_nats_queue_group_splits_messages(nats_server: int) -> None:
    subject = unique("dial.queue.")
    url = f"nats://127.0.0.1:{nats_server}?topic={subject}&queue=workers"
    with Dial(url, raise_errors=True) as one, Dial(url, raise_errors=True) as two:
        NATS.publish(nats_server, subject, [f"job{i}" for i in range(40)])
        assert wait_for(lambda: one.stats().messages_in + two.stats().messages_in >= 40)
        time.sleep(0.2)  # a duplicate would arrive now; none may
        firsts = [one.read(-1) for _ in range(one.stats().buffered)]
        seconds = [two.read(-1) for _ in range(two.stats().buffered)]
        assert sorted(firsts + seconds) == sorted(f"job{i}" for i in range(40))


def test_amqp_existing_durable_queue_is_used_as_it_is(rabbitmq: int) -> None:
    queue = unique("dial_durable_")

    async def declare(durable: bool, delete: bool = False) -> None:
        connection = await aio_pika.connect(host="127.0.0.1", port=rabbitmq)
        channel = await connection.channel()
        if delete:
            await channel.queue_delete(queue)
        else:
            await channel.declare_queue(queue, durable=durable)
        await connection.close()

    asyncio.run(declare(True))
    try:
        with Dial(AMQP.url(rabbitmq, queue), raise_errors=True) as conn:  # no durable given
            conn.write("ok")
            assert conn.read(WAIT * 1000) == "ok"
        assert Dial(AMQP.url(rabbitmq, queue, "&durable=false")) is None
        assert "already exists with other settings" in (dial.last_error() or "")
    finally:
        asyncio.run(declare(True, delete=True))


def test_amqp_publisher_confirms(rabbitmq: int) -> None:
    with Dial(AMQP.url(rabbitmq, unique("dial_confirm_"), "&confirm=true")) as conn:
        for i in range(20):
            conn.write(f"c{i}")
        assert [conn.read(WAIT * 1000) for _ in range(20)] == [f"c{i}" for i in range(20)]
        assert conn.stats().send_errors == 0


def test_kafka_starts_at_the_moment_of_dial_unless_earliest(kafka: int) -> None:
    topic = unique("dial_offsets_")
    KAFKA.publish(kafka, topic, ["before-1", "before-2"])
    with Dial(KAFKA.url(kafka, topic), raise_errors=True) as latest:
        latest.write("after")
        assert latest.read(WAIT * 1000) == "after"
        assert latest.read(300) is None
    with Dial(KAFKA.url(kafka, topic, "offset=earliest"), raise_errors=True) as earliest:
        seen = read_until(earliest, lambda m: m == "after")
        assert seen[:2] == ["before-1", "before-2"]


def test_kafka_consumer_group(kafka: int) -> None:
    topic = unique("dial_group_")
    url = KAFKA.url(kafka, topic, f"group={unique('g')}")
    with Dial(url, timeout=30, raise_errors=True) as conn:
        conn.write("grouped")
        assert conn.read(WAIT * 1000) == "grouped"


# -- faults ---------------------------------------------------------------------------------------


STARTERS = {"mqtt": start_mosquitto, "nats": start_nats, "kafka": start_tansu}


@pytest.mark.parametrize("kind", [MQTT, NATS, KAFKA], ids=lambda k: k.name)
def test_reconnects_after_the_broker_is_killed_and_restarted(kind: Any) -> None:
    port = free_port()
    starter = STARTERS[kind.name]
    process = starter(port)
    topic = topic_for(kind)
    conn = Dial(kind.url(port, topic, "") + "|reconnect=true&interval=200", raise_errors=True)
    try:
        conn.write("before")
        assert conn.read(WAIT * 1000) == "before"
        kill(process)
        assert wait_for(lambda: not conn.connected), "the loss was not noticed"
        assert conn.read() == ""  # drained and down: "" at once, FMZ style
        assert conn.write("lost") == 0
        assert not port_open(port)
        process = starter(port)
        assert wait_port(port, WAIT)
        assert wait_for(lambda: conn.connected, 20), conn.stats()
        assert conn.reconnects >= 1
        # the subscription is back: both our own and an independent publisher's messages flow
        conn.write("after")
        read_until(conn, lambda m: m == "after")
        kind.publish(port, topic, ["outside-after"])
        read_until(conn, lambda m: m == "outside-after")
    finally:
        conn.close()
        stop(process)


def test_amqp_reconnects_after_the_broker_drops_the_connection(rabbitmq: int) -> None:
    queue = unique("dial_fault_")
    conn = Dial(AMQP.url(rabbitmq, queue) + "|reconnect=true&interval=200", raise_errors=True)
    try:
        conn.write("before")
        assert conn.read(WAIT * 1000) == "before"
        assert close_own_rabbitmq_connections() >= 1
        assert wait_for(lambda: conn.stats().reconnects >= 1, 20), conn.stats()
        assert wait_for(lambda: conn.connected)
        conn.write("after")
        read_until(conn, lambda m: m == "after")
        AMQP.publish(rabbitmq, queue, ["outside-after"])
        read_until(conn, lambda m: m == "outside-after")
    finally:
        conn.close()


def test_without_reconnect_a_lost_link_stays_down(rabbitmq: int) -> None:
    conn = Dial(AMQP.url(rabbitmq, unique("dial_down_")), raise_errors=True)
    try:
        conn.write("buffered")
        assert wait_for(lambda: conn.stats().buffered == 1)
        close_own_rabbitmq_connections()
        assert wait_for(lambda: not conn.connected)
        assert conn.read() == "buffered"  # what was buffered still comes first
        assert conn.read() == ""
        assert conn.write("x") == 0
        time.sleep(0.5)
        assert not conn.connected and conn.reconnects == 0
    finally:
        conn.close()


def test_close_leaves_no_threads_behind(broker: tuple[Any, int]) -> None:
    kind, port = broker
    before = {t.ident for t in threading.enumerate()}
    conn = Dial(kind.url(port, topic_for(kind)), raise_errors=True)
    conn.write("x")
    assert conn.read(WAIT * 1000) == "x"
    conn.close()
    conn.close()  # idempotent
    extra = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert [t.name for t in extra if t.name != "dial-reactor"] == []


@pytest.mark.slow
def test_kafka_close_stops_a_producer_stuck_on_a_frozen_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The branch of KafkaTransport.close() for a producer still sending after stop() gave up:
    its sender task is cancelled and awaited, and the client is closed (no socket left to the
    broker). The broker is frozen (SIGSTOP), so its TCP links stay open and requests hang."""
    import os
    import signal

    import psutil

    port = free_port()
    process = start_tansu(port)
    conn = Dial(KAFKA.url(port, unique("dial_frozen_")), raise_errors=True)
    me = psutil.Process()

    def links_to_broker() -> int:
        return sum(
            1
            for c in me.net_connections("tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
        )

    try:
        conn.write("before")
        assert conn.read(WAIT * 1000) == "before"
        assert links_to_broker() >= 1
        os.killpg(process.pid, signal.SIGSTOP)
        conn.write("stuck")  # produced into a request the frozen broker never answers
        time.sleep(0.5)
        with caplog.at_level(logging.DEBUG, logger="dial"):
            started = time.monotonic()
            conn.close()
            took = time.monotonic() - started
        assert "error while closing" not in caplog.text, caplog.text
        assert took < 12, f"close() took {took:.1f} s"
        assert wait_for(lambda: links_to_broker() == 0, 5), "the Kafka client was not closed"
    finally:
        os.killpg(process.pid, signal.SIGCONT)
        conn.close()
        stop(process)
