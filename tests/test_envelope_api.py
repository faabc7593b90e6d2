"""The envelope API every transport shares: `meta=true` and `read_message()`, `ack=manual`
and `ack()`, `write(data, key=, headers=)` - what a user is told when a piece is missing, and
how an envelope looks as JSON (`dial read --json`)."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

import dial.aio
from dial import AddressError, ArgumentError, Dial
from dial.address import parse
from dial.envelope import Envelope, Record, envelopes_of, headers_of, record_of
from tests.conftest import WsServer, wait_until


def test_read_message_without_meta_says_how_to_get_envelopes(ws_server: WsServer) -> None:
    with Dial(ws_server.url, raise_errors=True) as conn:
        with pytest.raises(ArgumentError, match=r"meta=true"):
            conn.read_message(-1)
        conn.write("echo:still fine")
        assert conn.read(2000) == "still fine"  # the connection is unharmed


def test_ack_needs_a_transport_that_acknowledges(ws_server: WsServer) -> None:
    with pytest.raises(AddressError, match=r"option ack is not supported for ws://"):
        Dial(f"{ws_server.url}|ack=manual", raise_errors=True)
    with Dial(f"{ws_server.url}|meta=true", raise_errors=True) as conn:
        envelope = Envelope("x", source="ws://h", received_at=0.0)
        with pytest.raises(ArgumentError, match=r"ack=manual"):
            conn.ack(envelope)


def test_ack_manual_implies_meta() -> None:
    assert parse("kafka://h/t?group=g|ack=manual").options.meta
    assert not parse("kafka://h/t?group=g").options.meta


def test_key_and_headers_are_refused_where_the_transport_cannot_carry_them(
    ws_server: WsServer,
) -> None:
    with Dial(ws_server.url, raise_errors=True) as conn:
        with pytest.raises(ArgumentError, match=r"write\(\) key=: ws:// messages carry neither"):
            conn.write("x", key="BTCUSDT")
        with pytest.raises(ArgumentError, match=r"headers="):
            conn.write("x", headers={"a": "b"})
        assert conn.stats().messages_out == 0  # nothing was queued
        conn.write("echo:ok")
        assert conn.read(2000) == "ok"


def test_async_connection_has_the_same_rules(ws_server: WsServer) -> None:
    async def main() -> None:
        conn = await dial.aio.dial(ws_server.url, raise_errors=True)
        try:
            with pytest.raises(ArgumentError, match=r"meta=true"):
                await conn.read_message(-1)
            with pytest.raises(ArgumentError, match=r"key="):
                await conn.write("x", key=b"k")
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ("a=b", r"must be a dict"),
        ([("a",)], r"expected \(name, value\) pairs"),
        ({"": "x"}, r"non-empty str"),
        ({1: "x"}, r"non-empty str"),
        ({"a": 1}, r"header 'a' must be str or bytes"),
    ],
)
def test_bad_headers_get_a_specific_error(headers: object, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        headers_of(headers)  # type: ignore[arg-type]


def test_headers_keep_their_order_and_become_bytes() -> None:
    assert headers_of({"b": "1", "a": b"\x00"}) == (("b", b"1"), ("a", b"\x00"))


def test_an_envelope_s_key_and_headers_can_be_written_back_as_they_were_read() -> None:
    read = Envelope(
        "v",
        source="kafka://h/t",
        received_at=0.0,
        key="caf\udce9",
        headers=(("h", b"1"), ("h", b"2")),
    )  # a non-UTF-8 key, a repeated header
    record = record_of(
        "v", read.key, read.headers, scheme="kafka", accepted=frozenset({"key", "headers"})
    )
    assert isinstance(record, Record)
    assert record.key == b"caf\xe9" and record.headers == (("h", b"1"), ("h", b"2"))
    assert record_of(
        "v", bytearray(b"k"), None, scheme="kafka", accepted=frozenset({"key"})
    ) == Record("v", b"k")


def test_ack_takes_envelopes_in_the_caller_s_thread() -> None:
    one = Envelope("v", source="s", received_at=0.0)
    assert envelopes_of(one) == (one,)
    assert envelopes_of(e for e in [one, one]) == (one, one)  # a generator is read here
    for bad in ("abc", b"abc", 3, [one, "x"]):
        with pytest.raises(TypeError, match=r"ack\(\) takes envelopes"):
            envelopes_of(bad)


def test_a_bad_write_is_refused_the_same_way_while_the_link_is_down(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url, raise_errors=True)
    try:
        conn.write("close")  # the server closes the link; no reconnect
        assert wait_until(lambda: not conn.connected)
        with pytest.raises(ArgumentError, match=r"key="):
            conn.write("x", key="k")
        assert conn.write("x") == 0  # a valid write is just not sent
    finally:
        conn.close()


def test_read_message_waits_for_the_reconnect_instead_of_spinning(ws_server: WsServer) -> None:
    conn = Dial(f"{ws_server.url}|meta=true&reconnect=true&interval=2000", raise_errors=True)
    try:
        conn.write("close")
        assert wait_until(lambda: not conn.connected)
        started = time.monotonic()
        assert conn.read_message(400) is None  # nothing came: it waited the 400 ms out
        assert time.monotonic() - started >= 0.35
        assert wait_until(lambda: conn.connected, 5)
        conn.write("echo:back")
        envelope = conn.read_message(2000)
        assert envelope is not None and envelope.value == "back"
    finally:
        conn.close()


def test_envelope_as_json_is_kcat_like_and_never_loses_bytes() -> None:
    envelope = Envelope(
        value="caf\udce9",  # a payload that is not UTF-8 (surrogate-escaped)
        source="kafka://127.0.0.1:9092/t",
        received_at=1764500000.1234567,
        topic="t",
        partition=2,
        offset=41,
        key="BTCUSDT",
        headers=(("trace", b"abc"), ("bin", b"\xff\xfe")),
        timestamp=1764500000.1,
    )
    out = envelope.as_dict()
    assert out["topic"] == "t" and out["partition"] == 2 and out["offset"] == 41
    assert out["key"] == "BTCUSDT" and out["ts"] == 1764500000.1
    assert out["headers"] == {"trace": "abc", "bin_b64": base64.b64encode(b"\xff\xfe").decode()}
    assert "payload" not in out
    assert base64.b64decode(out["payload_b64"]) == b"caf\xe9"
    assert "redelivered" not in out  # unknown fields are left out, not null
    plain = Envelope(b"\x01\x02", source="tcp://h:1", received_at=1.0, kind="binary").as_dict()
    assert plain["kind"] == "binary" and base64.b64decode(plain["payload_b64"]) == b"\x01\x02"
