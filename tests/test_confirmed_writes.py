"""Confirmed writes (`|confirm=true`): `write()` succeeds only once the broker has the message.

AMQP publisher confirms, Kafka `acks=all` (idempotent producer where the broker offers it),
MQTT QoS 1 PUBACK, NATS JetStream publish acks. The fault tests write from several threads
at once, break the path to the broker mid-burst (a broker killed and restarted, a link reset
in the middle of a frame), keep writing through the reconnect, and then read the broker with
an independent client: every write that returned success must be there. Writes that
returned 0 may or may not be (at-least-once), but none may vanish behind a success.

Without the option writes stay fire-and-forget; what a lost link takes from the send queue
is counted in `stats().send_errors`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import nats
import paho.mqtt.client as paho
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

import dial.aio
from dial import Dial, last_error
from dial.connection import session_of
from tests.conftest import wait_until
from tests.servers.base import free_port, kill, start, stop, temp_dir
from tests.servers.brokers import (
    kafka,
    mosquitto,
    nats_server,
    rabbitmq,
    start_mosquitto,
    start_nats,
    tansu_binary,
)
from tests.servers.faultproxy import FaultProxy

__all__ = ["kafka", "mosquitto", "nats_server", "rabbitmq"]  # fixtures used by name

WAIT = 20.0
RECONNECT = "|confirm=true&reconnect=true&interval=200"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# -- writing from several threads while the path breaks ----------------------------------------


class Burst:
    """`threads` writers, each writing its own numbered messages through `conn` with
    `write(message, timeout)` until stopped; records which writes returned success."""

    def __init__(self, conn: Any, threads: int = 4, timeout: float = 3.0) -> None:
        self.conn = conn
        self.timeout = timeout
        self.ok: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(n,), daemon=True) for n in range(threads)
        ]

    def _write(self, writer: int) -> None:
        number = 0
        while not self._stop.is_set():
            message = f"w{writer}-{number}"
            number += 1
            if self.conn.write(message, timeout=self.timeout) > 0:
                self.ok.append(message)
            else:
                self.failed.append(message)
                time.sleep(0.02)  # down: do not spin through the numbers

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT + self.timeout)
        assert not any(thread.is_alive() for thread in self._threads), "a writer hung"

    def wait_ok(self, count: int, seconds: float = WAIT) -> None:
        assert wait_until(lambda: len(self.ok) >= count, seconds), (
            f"only {len(self.ok)} confirmed writes ({len(self.failed)} failed): {self.conn.stats()}"
        )


def survive(conn: Any, fault: Callable[[], None], recover: Callable[[], None] = lambda: None):
    """Write, break the path mid-burst, recover, write on; returns the finished `Burst`."""
    with Burst(conn) as burst:
        burst.wait_ok(150)
        fault()
        recover()
        before = len(burst.ok)
        assert wait_until(lambda: conn.stats().reconnects >= 1, WAIT), conn.stats()
        burst.wait_ok(before + 150)
    assert burst.failed, "the fault went unnoticed: no write failed"
    stats = conn.stats()
    assert stats.messages_out >= len(burst.ok), stats
    assert stats.last_send_error, stats
    return burst


def missing(confirmed: list[str], stored: set[str]) -> list[str]:
    return [message for message in confirmed if message not in stored]


# -- independent clients --------------------------------------------------------------------------


class MqttCollector:
    """A plain paho subscriber (QoS 1) connected straight to the broker."""

    def __init__(self, port: int, topic: str) -> None:
        self.got: set[str] = set()
        self.last = time.monotonic()
        ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert ready.wait(WAIT), "the independent subscriber did not subscribe"
        self.client = client

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        self.got.add(message.payload.decode())
        self.last = time.monotonic()

    def settle(self) -> set[str]:
        wait_until(lambda: time.monotonic() - self.last > 1.0, WAIT)
        return set(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _nats_stream(port: int, name: str, subject: str, storage: str) -> None:
    client = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        await client.jsm().add_stream(name=name, subjects=[subject], storage=storage)
    finally:
        await client.close()


def nats_stream(port: int, name: str, subject: str, storage: str = "memory") -> None:
    asyncio.run(_nats_stream(port, name, subject, storage))


def nats_stored(port: int, name: str) -> set[str]:
    async def run() -> set[str]:
        client = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            jsm = client.jsm()
            state = (await jsm.stream_info(name)).state
            got = set()
            for seq in range(state.first_seq, state.last_seq + 1):
                got.add((await jsm.get_msg(name, seq)).data.decode())
            return got
        finally:
            await client.close()

    return asyncio.run(run())


def nats_drop_stream(port: int, name: str) -> None:
    async def run() -> None:
        client = await nats.connect(f"nats://127.0.0.1:{port}")
        try:
            await client.jsm().delete_stream(name)
        finally:
            await client.close()

    asyncio.run(run())


def kafka_stored(port: int, topic: str) -> set[str]:
    async def run() -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        await consumer.start()
        got: set[str] = set()
        try:
            await consumer.topics()
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in tps]
                if all(at >= ends[tp] for at, tp in zip(positions, tps, strict=True)):
                    break
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.update(r.value.decode() for r in records if r.value is not None)
        finally:
            await consumer.stop()
        return got

    return asyncio.run(run())


async def _amqp(port: int, work: Callable[[Any], Any]) -> Any:
    connection = await aio_pika.connect(host="127.0.0.1", port=port)
    try:
        channel = await connection.channel()
        return await work(channel)
    finally:
        await connection.close()


def amqp_checker(port: int, exchange: str, key: str, queue: str) -> None:
    """The exchange Dial publishes to, and an independent queue bound to it (not exclusive,
    not auto-deleted: it outlives this connection and any fault)."""

    async def work(channel: Any) -> None:
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC)
        checker = await channel.declare_queue(queue)
        await checker.bind(ex, routing_key=key)

    asyncio.run(_amqp(port, work))


def amqp_drain(port: int, queue: str) -> set[str]:
    async def work(channel: Any) -> set[str]:
        checker = await channel.get_queue(queue)
        got: set[str] = set()
        while (message := await checker.get(no_ack=True, fail=False)) is not None:
            got.add(message.body.decode())
        return got

    return asyncio.run(_amqp(port, work))


def amqp_cleanup(port: int, exchange: str, *queues: str) -> None:
    async def work(channel: Any) -> None:
        for queue in queues:
            await channel.queue_delete(queue)
        if exchange:
            await channel.exchange_delete(exchange)

    try:
        asyncio.run(_amqp(port, work))
    except Exception:
        pass


# -- the option itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "ws://127.0.0.1:1/x|confirm=true",
        "tcp://127.0.0.1:1|confirm=true",
        "udp://127.0.0.1:1|confirm=true",
        "sqlite3://:memory:|confirm=true",
    ],
)
def test_confirm_is_refused_where_nothing_can_confirm(address: str) -> None:
    assert Dial(address) is None
    assert "option confirm is not supported" in (last_error() or "")


def test_confirm_takes_a_boolean() -> None:
    assert Dial("mqtt://127.0.0.1:1?topic=t|confirm=maybe") is None
    assert "confirm='maybe': expected true or false" in (last_error() or "")


def test_nats_confirm_needs_a_jetstream_stream(nats_server: int) -> None:
    subject = unique("dial.nostream.")
    assert Dial(f"nats://127.0.0.1:{nats_server}?topic={subject}|confirm=true") is None
    reason = last_error() or ""
    assert "JetStream stream" in reason and subject in reason, reason
    assert Dial(f"nats://127.0.0.1:{nats_server}?topic=prices.*|confirm=true") is None
    assert "wildcard" in (last_error() or "")
    port = free_port()
    core_only = start_nats(port)  # no -js
    try:
        assert Dial(f"nats://127.0.0.1:{port}?topic={subject}|confirm=true") is None
        assert "needs JetStream" in (last_error() or ""), last_error()
    finally:
        stop(core_only)


# -- confirmed writes on a healthy link -----------------------------------------------------------


def test_nats_confirmed_writes_are_in_the_stream(nats_server: int) -> None:
    subject, stream = unique("dial.confirm."), unique("DIAL_CONFIRM_")
    nats_stream(nats_server, stream, subject)
    try:
        with Dial(f"nats://127.0.0.1:{nats_server}?topic={subject}|confirm=true") as conn:
            assert [conn.write(f"c{i}") for i in range(50)] == [2] * 10 + [3] * 40
            assert conn.stats().messages_out == 50 and conn.stats().send_errors == 0
            assert [conn.read(WAIT * 1000) for _ in range(50)] == [f"c{i}" for i in range(50)]
        assert nats_stored(nats_server, stream) == {f"c{i}" for i in range(50)}
    finally:
        nats_drop_stream(nats_server, stream)


def test_mqtt_confirmed_writes_reach_an_independent_subscriber(mosquitto: int) -> None:
    topic = unique("dial/confirm/")
    collector = MqttCollector(mosquitto, topic)
    try:
        with Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={topic}|confirm=true") as conn:
            started = time.monotonic()
            assert all(conn.write(f"c{i}") > 0 for i in range(100))
            assert time.monotonic() - started < 5, "a PUBACK waited for a delayed TCP ACK"
            assert conn.stats().messages_out == 100
        assert collector.settle() == {f"c{i}" for i in range(100)}
    finally:
        collector.close()


def test_kafka_confirmed_writes_are_in_the_topic(kafka: int) -> None:
    topic = unique("dial_confirm_")
    with Dial(f"kafka://127.0.0.1:{kafka}/{topic}|confirm=true", timeout=30) as conn:
        assert all(conn.write(f"c{i}") > 0 for i in range(100))
        assert conn.stats().messages_out == 100 and conn.stats().send_errors == 0
    assert kafka_stored(kafka, topic) == {f"c{i}" for i in range(100)}


def test_amqp_confirmed_writes_are_in_an_independent_queue(rabbitmq: int) -> None:
    exchange, key = unique("dial_cx_"), "confirm.k"
    mine, checker = unique("dial_cq_"), unique("dial_check_")
    amqp_checker(rabbitmq, exchange, key, checker)
    try:
        query = f"?queue={mine}&exchange={exchange}&routing_key={key}"
        with Dial(f"amqp://guest:guest@127.0.0.1:{rabbitmq}/{query}|confirm=true") as conn:
            assert all(conn.write(f"c{i}") > 0 for i in range(100))
            assert conn.stats().messages_out == 100
        assert amqp_drain(rabbitmq, checker) == {f"c{i}" for i in range(100)}
    finally:
        amqp_cleanup(rabbitmq, exchange, mine, checker)


def test_the_amqp_query_parameter_means_the_same(rabbitmq: int) -> None:
    queue = unique("dial_cq_")
    try:
        with Dial(f"amqp://guest:guest@127.0.0.1:{rabbitmq}/?queue={queue}&confirm=true") as conn:
            assert session_of(conn).confirm
            assert conn.write("x") == 1
    finally:
        amqp_cleanup(rabbitmq, "", queue)


def test_a_confirmed_write_does_not_wait_for_a_reader_that_is_behind(
    nats_server: int, mosquitto: int
) -> None:
    """The buffer is full, so reading is paused; the confirmation comes on the same socket
    behind the unread messages. It must not wait for the reader (who may be the writer),
    and the held messages are not dropped for it."""
    subject, stream = unique("dial.held."), unique("DIAL_HELD_")
    nats_stream(nats_server, stream, subject)
    topic = unique("dial/held/")
    try:
        nats_conn = Dial(f"nats://127.0.0.1:{nats_server}?topic={subject}|confirm=true")
        mqtt_conn = Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={topic}|confirm=true")
        assert nats_conn and mqtt_conn, last_error()
        with nats_conn, mqtt_conn:

            async def flood() -> None:
                client = await nats.connect(f"nats://127.0.0.1:{nats_server}")
                for i in range(5000):
                    await client.publish(subject, b"f%d" % i)
                await client.flush()
                await client.close()

            asyncio.run(flood())
            publisher = paho.Client(CallbackAPIVersion.VERSION2)
            publisher.connect("127.0.0.1", mosquitto)
            publisher.loop_start()
            sent = [publisher.publish(topic, b"f%d" % i) for i in range(5000)]
            for info in sent:
                info.wait_for_publish(WAIT)
            publisher.disconnect()
            publisher.loop_stop()
            for conn in (nats_conn, mqtt_conn):
                assert wait_until(lambda c=conn: c.stats().buffered >= 1000, WAIT)
                started = time.monotonic()
                assert conn.write("confirmed", timeout=10) == 9, conn.stats()
                assert time.monotonic() - started < 5
                got = []
                while (message := conn.read(2000)) not in (None, ""):
                    got.append(message)
                assert got == [f"f{i}" for i in range(5000)] + ["confirmed"]
                assert conn.stats().dropped == 0
    finally:
        nats_drop_stream(nats_server, stream)


# -- the path breaks mid-burst --------------------------------------------------------------------


def test_nats_every_confirmed_write_survives_a_broker_kill() -> None:
    """JetStream on a private nats-server with file storage, SIGKILLed mid-burst and started
    again on the same store: every acknowledged message is in the stream afterwards."""
    port, store = free_port(), temp_dir("nats-js-")
    subject, stream = unique("dial.kill."), unique("DIAL_KILL_")
    server = start_nats(port, jetstream=store)
    try:
        nats_stream(port, stream, subject, storage="file")
        with Dial(f"nats://127.0.0.1:{port}?topic={subject}{RECONNECT}", timeout=10) as conn:
            assert conn, last_error()
            holder: dict[str, Any] = {}

            def crash() -> None:
                kill(server)
                time.sleep(0.5)

            def restart() -> None:
                holder["server"] = start_nats(port, jetstream=store)

            burst = survive(conn, crash, restart)
        server = holder.get("server", server)
        assert not missing(burst.ok, nats_stored(port, stream))
    finally:
        stop(server)


def test_mqtt_every_confirmed_write_survives_a_cut_link() -> None:
    port = free_port()
    broker = start_mosquitto(port, extra=["max_queued_messages 0"])
    topic = unique("dial/cut/")
    collector = MqttCollector(port, topic)
    try:
        with FaultProxy(("127.0.0.1", port)) as proxy:
            address = f"mqtt://127.0.0.1:{proxy.port}?topic={topic}&qos=1{RECONNECT}"
            with Dial(address, raise_errors=True) as conn:
                burst = survive(conn, lambda: proxy.reset("to_server", mid_frame=True))
        assert not missing(burst.ok, collector.settle())
    finally:
        collector.close()
        stop(broker)


@pytest.fixture
def kafka_behind_proxy() -> Iterator[tuple[FaultProxy, int]]:
    """A private tansu that advertises a proxy's address, so every connection aiokafka
    opens goes through the proxy."""
    broker_port = free_port()
    proxy = FaultProxy(("127.0.0.1", broker_port))
    url = f"tcp://127.0.0.1:{broker_port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{proxy.port}",
    ]
    process = start(f"tansu-confirm-{broker_port}", argv, broker_port)
    try:
        yield proxy, broker_port
    finally:
        proxy.close()
        stop(process)


def test_kafka_every_confirmed_write_survives_a_cut_link(
    kafka_behind_proxy: tuple[FaultProxy, int],
) -> None:
    proxy, _ = kafka_behind_proxy
    topic = unique("dial_cut_")
    with Dial(f"kafka://127.0.0.1:{proxy.port}/{topic}{RECONNECT}", timeout=30) as conn:
        assert conn, last_error()
        burst = survive(conn, lambda: proxy.reset("to_server", mid_frame=True))
    assert not missing(burst.ok, kafka_stored(proxy.port, topic))


def test_amqp_every_confirmed_write_survives_a_cut_link(rabbitmq: int) -> None:
    exchange, key = unique("dial_cx_"), "cut.k"
    mine, checker = unique("dial_cq_"), unique("dial_check_")
    amqp_checker(rabbitmq, exchange, key, checker)
    try:
        with FaultProxy(("127.0.0.1", rabbitmq)) as proxy:
            query = f"?queue={mine}&exchange={exchange}&routing_key={key}"
            address = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{query}{RECONNECT}"
            with Dial(address, raise_errors=True) as conn:
                burst = survive(conn, lambda: proxy.reset("to_server", mid_frame=True))
        assert not missing(burst.ok, amqp_drain(rabbitmq, checker))
    finally:
        amqp_cleanup(rabbitmq, exchange, mine, checker)


# -- a link that drops with writes queued ---------------------------------------------------------


@pytest.fixture
def mqtt_behind_proxy() -> Iterator[tuple[FaultProxy, int]]:
    port = free_port()
    broker = start_mosquitto(port)
    proxy = FaultProxy(("127.0.0.1", port))
    try:
        yield proxy, port
    finally:
        proxy.close()
        stop(broker)


def test_fire_and_forget_stays_the_default(mqtt_behind_proxy: tuple[FaultProxy, int]) -> None:
    proxy, _ = mqtt_behind_proxy
    with Dial(f"mqtt://127.0.0.1:{proxy.port}?topic={unique('dial/ff/')}") as conn:
        proxy.stall()
        started = time.monotonic()
        assert conn.write("x", timeout=5) == 1  # queued, not waited for
        assert time.monotonic() - started < 0.5
        assert not session_of(conn).confirm


def test_writes_queued_when_the_link_drops_are_counted(
    mqtt_behind_proxy: tuple[FaultProxy, int],
) -> None:
    """Without confirm: the link stalls, the send queue backs up, the link is reset. What
    was still queued is gone, and `send_errors` says how many (it used to vanish)."""
    proxy, _ = mqtt_behind_proxy
    with Dial(f"mqtt://127.0.0.1:{proxy.port}?topic={unique('dial/q/')}") as conn:
        session = session_of(conn)
        proxy.stall()
        block = "x" * 65536
        for _ in range(1000):  # until the kernel's buffers are full and the queue stays
            assert conn.write(block) > 0
            if session.pending() >= 20:
                time.sleep(0.3)
                if session.pending() >= 20:
                    break
        queued = session.pending()
        assert queued >= 20, "the send queue never backed up"
        proxy.reset(mid_frame=False)
        assert wait_until(lambda: not conn.stats().connected, WAIT)
        stats = conn.stats()
        assert stats.send_errors >= queued, stats
        assert "link lost" in (stats.last_send_error or ""), stats
        assert conn.write("after") == 0


def test_a_confirmed_write_in_flight_when_the_link_drops_returns_0(
    mqtt_behind_proxy: tuple[FaultProxy, int],
) -> None:
    proxy, _ = mqtt_behind_proxy
    address = f"mqtt://127.0.0.1:{proxy.port}?topic={unique('dial/q/')}|confirm=true"
    with Dial(address, raise_errors=True) as conn:
        proxy.stall()
        result: list[int] = []
        writer = threading.Thread(target=lambda: result.append(conn.write("x", timeout=30)))
        writer.start()
        time.sleep(0.3)  # sent, no PUBACK can come
        assert not result
        started = time.monotonic()
        proxy.reset(mid_frame=False)
        writer.join(10)
        assert result == [0]
        assert time.monotonic() - started < 5
        stats = conn.stats()
        assert "link lost" in (stats.last_send_error or ""), stats
        assert stats.send_errors == 1 and stats.messages_out == 0, stats


def test_a_confirmed_write_gives_up_at_its_timeout(
    mqtt_behind_proxy: tuple[FaultProxy, int],
) -> None:
    proxy, _ = mqtt_behind_proxy
    address = f"mqtt://127.0.0.1:{proxy.port}?topic={unique('dial/t/')}|confirm=true"
    with Dial(address, raise_errors=True) as conn:
        assert conn.write("before", timeout=5) == 6
        proxy.stall()
        started = time.monotonic()
        assert conn.write("stuck", timeout=0.5) == 0
        assert 0.4 < time.monotonic() - started < 2
        assert conn.stats().last_send_error == "not confirmed within 0.5 s"
        assert conn.stats().connected  # a slow answer is not a lost link
        proxy.resume()
        assert conn.write("after", timeout=5) == 5


# -- dial.aio -------------------------------------------------------------------------------------


def test_async_confirmed_writes(kafka: int, mqtt_behind_proxy: tuple[FaultProxy, int]) -> None:
    proxy, _ = mqtt_behind_proxy
    topic = unique("dial_aconfirm_")

    async def main() -> None:
        conn = await dial.aio.dial(f"kafka://127.0.0.1:{kafka}/{topic}|confirm=true", 30)
        assert conn is not None, last_error()
        sizes = await asyncio.gather(*(conn.write(f"a{i}") for i in range(100)))
        assert sizes == [2] * 10 + [3] * 90
        assert conn.stats().messages_out == 100  # counted once the broker acknowledged
        await conn.close()
        assert await conn.write("late") == 0
        assert conn.stats().last_send_error == "connection closed"

        stalled = await dial.aio.dial(
            f"mqtt://127.0.0.1:{proxy.port}?topic={unique('dial/a/')}|confirm=true"
        )
        assert stalled is not None, last_error()
        proxy.stall()
        assert await stalled.write("stuck", timeout=0.5) == 0
        assert stalled.stats().last_send_error == "not confirmed within 0.5 s"
        await stalled.close()

    asyncio.run(main())
    assert kafka_stored(kafka, topic) == {f"a{i}" for i in range(100)}
