"""`meta=true` envelopes on WebSocket (both engines), raw sockets, MQTT and AMQP; MQTT
wildcard addresses refuse writes; AMQP routing keys and headers per write, unroutable
confirmed writes and `ack=manual`. Every test runs against a real local server or broker."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from typing import Any

import aio_pika
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from dial import Dial
from dial.envelope import Envelope
from dial.errors import ArgumentError
from tests.conftest import EchoServers, WsServer, wait_until
from tests.servers.brokers import close_own_rabbitmq_connections, mosquitto, rabbitmq

__all__ = ["mosquitto", "rabbitmq"]  # fixtures used by name

WAIT_MS = 10_000


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def read_envelope(conn: Any) -> Envelope:
    envelope = conn.read_message(WAIT_MS)
    assert isinstance(envelope, Envelope), f"no message within {WAIT_MS} ms: {envelope!r}"
    return envelope


# -- WebSocket, both engines -------------------------------------------------------------------


def test_websocket_envelopes_carry_the_frame_kind(ws_server: WsServer, ws_engine: str) -> None:
    before = time.time()
    with Dial(f"{ws_server.url}|meta=true&compress=gzip", raise_errors=True) as conn:
        conn.write("echo:hello")
        text = read_envelope(conn)
        assert (text.value, text.kind) == ("hello", "text")
        assert text.source == ws_server.url
        assert before <= text.received_at <= time.time()
        conn.write("bin:00ff")
        binary = read_envelope(conn)
        assert (binary.value, binary.kind) == (b"\x00\xff", "binary")
        conn.write("gzip:inflated")  # a compressed binary frame is text, of a binary frame
        inflated = read_envelope(conn)
        assert (inflated.value, inflated.kind) == ("inflated", "binary")
        assert (text.topic, text.headers, text.redelivered) == (None, (), None)


def test_websocket_fragmented_messages_are_enveloped_too(
    ws_server: WsServer, ws_engine: str
) -> None:
    with Dial(f"{ws_server.url}|meta=true", raise_errors=True) as conn:
        conn.write("echo:ready")
        assert read_envelope(conn).value == "ready"
        ws_server.send_all(iter(["frag", "mented"]))  # type: ignore[arg-type]
        message = read_envelope(conn)
        assert (message.value, message.kind) == ("fragmented", "text")


def test_websocket_read_is_unchanged_with_meta(ws_server: WsServer, ws_engine: str) -> None:
    with Dial(f"{ws_server.url}|meta=true", raise_errors=True) as conn:
        conn.write("many:3")
        assert [conn.read(WAIT_MS) for _ in range(3)] == ["m0", "m1", "m2"]
        conn.write(b"\x01\x02")
        assert conn.read_many(10, WAIT_MS) == [b"\x01\x02"]


def test_read_message_without_meta_says_what_is_missing(ws_server: WsServer) -> None:
    with Dial(ws_server.url, raise_errors=True) as conn, pytest.raises(ArgumentError, match="meta"):
        conn.read_message(-1)


# -- raw sockets -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_socket_envelopes_are_binary(echo_servers: EchoServers, scheme: str) -> None:
    target = f"127.0.0.1:{echo_servers.tcp}" if scheme == "tcp" else echo_servers.unix
    with Dial(f"{scheme}://{target}|meta=true", raise_errors=True) as conn:
        conn.write("ping")
        envelope = read_envelope(conn)
        assert (envelope.value, envelope.kind, envelope.topic) == (b"ping", "binary", None)
        assert envelope.source == f"{scheme}://{target}"


def test_tls_socket_envelopes(echo_servers: EchoServers, trust_test_ca: str) -> None:
    with Dial(f"tls://127.0.0.1:{echo_servers.tls}|meta=true", raise_errors=True) as conn:
        conn.write(b"secure")
        assert read_envelope(conn).value == b"secure"


def test_udp_envelopes_name_the_sender(echo_servers: EchoServers) -> None:
    with Dial(f"udp://127.0.0.1:{echo_servers.udp}|meta=true", raise_errors=True) as conn:
        conn.write(b"datagram")
        envelope = read_envelope(conn)
        assert (envelope.value, envelope.kind) == (b"datagram", "binary")
        assert envelope.topic == f"127.0.0.1:{echo_servers.udp}"


def test_socket_read_is_unchanged_with_meta(echo_servers: EchoServers) -> None:
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}|meta=true", raise_errors=True) as conn:
        conn.write(b"plain")
        assert conn.read(WAIT_MS) == b"plain"


# -- MQTT ------------------------------------------------------------------------------------


def mqtt_publish(port: int, topic: str, payload: str, user_properties: Any = ()) -> None:
    """Publish with an independent MQTT 5 client (QoS 1, so it has reached the broker)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        properties = Properties(PacketTypes.PUBLISH)
        if user_properties:
            properties.UserProperty = list(user_properties)
        client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt_wildcard_envelopes_tell_the_topics_apart(mosquitto: int) -> None:
    base = unique("dial/env/")
    address = f"mqtt://127.0.0.1:{mosquitto}?topic={base}/+/price|meta=true"
    with Dial(address, raise_errors=True) as conn:
        mqtt_publish(mosquitto, f"{base}/btc/price", "42")
        mqtt_publish(mosquitto, f"{base}/eth/price", "7")
        first, second = read_envelope(conn), read_envelope(conn)
        assert [(e.topic, e.value) for e in (first, second)] == [
            (f"{base}/btc/price", "42"),
            (f"{base}/eth/price", "7"),
        ]
        assert (first.kind, first.redelivered, first.headers) == ("text", False, ())
        assert first.source == f"mqtt://127.0.0.1:{mosquitto}?topic={base}/+/price"


def test_mqtt5_user_properties_are_headers(mosquitto: int) -> None:
    topic = unique("dial/env5/")
    address = f"mqtt://127.0.0.1:{mosquitto}?topic={topic}&version=5|meta=true"
    with Dial(address, raise_errors=True) as conn:
        mqtt_publish(mosquitto, topic, "tick", [("venue", "okx"), ("seq", "1"), ("seq", "2")])
        envelope = read_envelope(conn)
        assert envelope.value == "tick"
        assert envelope.headers == (("venue", b"okx"), ("seq", b"1"), ("seq", b"2"))
        assert conn.write("own") == 3  # MQTT 5 publishes and reads its own messages too
        assert read_envelope(conn).value == "own"


def test_mqtt_read_is_unchanged_with_meta(mosquitto: int) -> None:
    topic = unique("dial/plain/")
    with Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={topic}|meta=true", raise_errors=True) as conn:
        conn.write("a")
        conn.write("b")
        assert [conn.read(WAIT_MS), conn.read(WAIT_MS)] == ["a", "b"]


@pytest.mark.parametrize("wildcard", ["+/price", "#"])
def test_mqtt_wildcard_address_refuses_writes_with_the_reason(
    mosquitto: int, wildcard: str
) -> None:
    topic = f"{unique('dial/ro/')}/{wildcard}"
    with Dial(f"mqtt://127.0.0.1:{mosquitto}?topic={topic}", raise_errors=True) as conn:
        with pytest.raises(ArgumentError, match=r"write\(\) refused: .*wildcard.*subscribed"):
            conn.write("x")
        assert conn.stats().send_errors == 0


def test_mqtt_version_must_be_known() -> None:
    assert Dial("mqtt://127.0.0.1:1883?topic=t&version=4") is None
    from dial import last_error

    assert "expected 3.1.1 or 5" in (last_error() or "")


# -- AMQP ------------------------------------------------------------------------------------


def amqp_run(port: int, work: Any) -> Any:
    """Run `work(channel)` on an independent aio-pika connection."""

    async def run() -> Any:
        connection = await aio_pika.connect(host="127.0.0.1", port=port)
        try:
            return await work(await connection.channel())
        finally:
            await connection.close()

    return asyncio.run(run())


def amqp_delete(port: int, queue: str, exchange: str | None = None) -> None:
    async def work(channel: Any) -> None:
        await channel.queue_delete(queue)
        if exchange:
            await channel.exchange_delete(exchange)

    amqp_run(port, work)


def amqp_url(port: int, queue: str, query: str = "") -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/?queue={queue}{query}"


def test_amqp_key_and_headers_round_trip_into_the_envelope(rabbitmq: int) -> None:
    queue, exchange = unique("dial_env_"), unique("dial_env_x_")
    query = f"&exchange={exchange}&routing_key=prices.%23"  # %23: '#', bound as prices.#
    try:
        with Dial(amqp_url(rabbitmq, queue, query) + "|meta=true", raise_errors=True) as conn:
            headers = {"venue": "okx", "raw": b"\xff\x00"}
            assert conn.write("tick", key="prices.btc", headers=headers) == 4
            envelope = read_envelope(conn)
            assert (envelope.value, envelope.topic, envelope.kind) == ("tick", "prices.btc", "text")
            found = dict(envelope.headers)
            assert (found["venue"], found["raw"]) == (b"okx", b"\xff\x00")
            assert found["amqp-exchange"] == exchange.encode()
            assert envelope.redelivered is False and envelope.timestamp is None
            assert envelope.source == amqp_url(rabbitmq, queue, query).replace(":guest@", ":***@")
            assert conn.write("plain") == 5  # the address's routing key: bound too
            plain = read_envelope(conn)
            assert (plain.value, plain.topic) == ("plain", "prices.#")
    finally:
        amqp_delete(rabbitmq, queue, exchange)


def test_amqp_envelope_reports_the_publishers_properties(rabbitmq: int) -> None:
    queue = unique("dial_props_")
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

    async def publish(channel: Any) -> None:
        message = aio_pika.Message(
            b"filled",
            headers={"qty": 3, "final": True, "note": "text"},
            timestamp=stamp,
            content_type="application/json",
            correlation_id="order-7",
        )
        await channel.default_exchange.publish(message, routing_key=queue)

    try:
        with Dial(amqp_url(rabbitmq, queue) + "|meta=true", raise_errors=True) as conn:
            amqp_run(rabbitmq, publish)
            envelope = read_envelope(conn)
            assert (envelope.value, envelope.topic) == ("filled", queue)
            assert envelope.timestamp == stamp.timestamp()
            found = dict(envelope.headers)
            assert (found["qty"], found["final"], found["note"]) == (b"3", b"true", b"text")
            assert found["amqp-exchange"] == b""  # the default exchange
            assert found["amqp-content-type"] == b"application/json"
            assert found["amqp-correlation-id"] == b"order-7"
    finally:
        amqp_delete(rabbitmq, queue)


def test_amqp_text_headers_go_as_strings_so_a_headers_exchange_matches(rabbitmq: int) -> None:
    queue, watcher, exchange = unique("dial_hdr_"), unique("dial_hdr_w_"), unique("dial_hdr_x_")

    async def bind_watcher(channel: Any) -> None:
        headers_exchange = await channel.declare_exchange(exchange, aio_pika.ExchangeType.HEADERS)
        bound = await channel.declare_queue(watcher)
        await bound.bind(headers_exchange, arguments={"x-match": "all", "side": "buy"})

    async def take(channel: Any) -> Any:
        message = await (await channel.declare_queue(watcher, passive=True)).get(timeout=5)
        await message.ack()
        return message.body, message.headers

    amqp_run(rabbitmq, bind_watcher)
    try:
        address = amqp_url(rabbitmq, queue, f"&exchange={exchange}") + "|confirm=true"
        with Dial(address, raise_errors=True) as conn:
            assert conn.write("sold", headers={"side": "sell"}) == 4
            assert conn.write("bought", headers={"side": "buy", "blob": b"\xfe"}) == 6
        body, headers = amqp_run(rabbitmq, take)
        assert (body, headers) == (b"bought", {"side": "buy", "blob": bytearray(b"\xfe")})
    finally:
        amqp_delete(rabbitmq, queue, exchange)
        amqp_delete(rabbitmq, watcher)


def test_amqp_unroutable_confirmed_write_fails_with_the_reason(rabbitmq: int) -> None:
    queue, exchange = unique("dial_route_"), unique("dial_route_x_")
    address = amqp_url(rabbitmq, queue, f"&exchange={exchange}&routing_key=bound")
    try:
        with Dial(address + "|confirm=true", raise_errors=True) as conn:
            assert conn.write("lost", key="nowhere") == 0
            reason = conn.stats().last_send_error or ""
            assert "NO_ROUTE" in reason and "'nowhere'" in reason, reason
            assert conn.write("kept", key="bound") == 4  # routable: confirmed
            assert conn.read(WAIT_MS) == "kept"
    finally:
        amqp_delete(rabbitmq, queue, exchange)


def test_amqp_manual_ack_redelivers_what_was_not_acked_after_a_reconnect(
    rabbitmq: int, caplog: pytest.LogCaptureFixture
) -> None:
    queue = unique("dial_ack_")
    address = amqp_url(rabbitmq, queue) + "|ack=manual&reconnect=true&interval=200"
    try:
        with Dial(address, raise_errors=True) as conn:
            for text in ("one", "two", "three"):
                conn.write(text)
            first, second, third = (read_envelope(conn) for _ in range(3))
            assert [e.value for e in (first, second, third)] == ["one", "two", "three"]
            conn.ack([first, third])
            conn.ack(first)  # again: harmless
            assert close_own_rabbitmq_connections() >= 1
            assert wait_until(lambda: conn.reconnects >= 1 and conn.connected, 20)
            again = read_envelope(conn)
            assert (again.value, again.redelivered) == ("two", True)
            with caplog.at_level(logging.DEBUG, logger="dial"):
                conn.ack(second)  # of the link that is gone: ignored, not an error
            assert "ack() skipped 1 envelope(s) of an earlier link" in caplog.text
            conn.ack(again)
            conn.write("four")
            assert read_envelope(conn).value == "four"
            assert conn.read_message(300) is None  # one, three and two are settled
    finally:
        amqp_delete(rabbitmq, queue)


def test_amqp_ack_refuses_envelopes_of_another_connection_before_acking_any(
    rabbitmq: int,
) -> None:
    queue, elsewhere = unique("dial_own_"), unique("dial_other_")
    try:
        with (
            Dial(amqp_url(rabbitmq, queue) + "|ack=manual", raise_errors=True) as conn,
            Dial(amqp_url(rabbitmq, elsewhere) + "|ack=manual", raise_errors=True) as other,
        ):
            conn.write("kept")
            other.write("theirs")
            kept, theirs = read_envelope(conn), read_envelope(other)
            with pytest.raises(ArgumentError, match="not read from this amqp:// connection"):
                conn.ack([kept, theirs])
            kafka = Envelope("v", "kafka://127.0.0.1:9092/t", time.time(), offset=0, token=("t", 0))
            with pytest.raises(ArgumentError, match="not read from this amqp:// connection"):
                conn.ack([kept, kafka])
            forged = Envelope("kept", kept.source, time.time(), token=None)
            with pytest.raises(ArgumentError, match="not read from this amqp:// connection"):
                conn.ack([kept, forged])
            other.ack(theirs)
        with Dial(amqp_url(rabbitmq, queue) + "|ack=manual", raise_errors=True) as conn:
            again = read_envelope(conn)  # nothing was acknowledged: it comes again
            assert (again.value, again.redelivered) == ("kept", True)
            with pytest.raises(ArgumentError, match="not read from this amqp:// connection"):
                conn.ack([again, kept])  # the same address, but the connection before
            conn.ack(again)
            assert conn.read_message(300) is None
    finally:
        amqp_delete(rabbitmq, queue)
        amqp_delete(rabbitmq, elsewhere)


def test_amqp_manual_ack_redelivers_after_a_restart(rabbitmq: int) -> None:
    queue = unique("dial_restart_")
    try:
        with Dial(amqp_url(rabbitmq, queue) + "|ack=manual", raise_errors=True) as conn:
            conn.write("kept")
            conn.write("done")
            kept, done = read_envelope(conn), read_envelope(conn)
            conn.ack(done)
            assert kept.redelivered is False
        with Dial(amqp_url(rabbitmq, queue) + "|ack=manual", raise_errors=True) as conn:
            again = read_envelope(conn)
            assert (again.value, again.redelivered) == ("kept", True)
            conn.ack(again)
            assert conn.read_message(300) is None
    finally:
        amqp_delete(rabbitmq, queue)


def test_amqp_auto_ack_stays_the_default_with_meta(rabbitmq: int) -> None:
    queue = unique("dial_auto_")
    try:
        with Dial(amqp_url(rabbitmq, queue) + "|meta=true", raise_errors=True) as conn:
            conn.write("once")
            assert read_envelope(conn).value == "once"
            with pytest.raises(ArgumentError, match="ack=manual"):
                conn.ack([])
        with Dial(amqp_url(rabbitmq, queue), raise_errors=True) as conn:
            conn.write("next")
            assert conn.read(WAIT_MS) == "next"  # "once" was acknowledged: not again
    finally:
        amqp_delete(rabbitmq, queue)


def test_manual_ack_is_refused_where_nothing_acknowledges(ws_server: WsServer) -> None:
    assert Dial(f"{ws_server.url}|ack=manual") is None
