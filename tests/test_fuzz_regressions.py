"""Defects found by the fuzzers (`make fuzz`, tests/fuzz/), each reduced to its minimal input.

Each test names the fuzz property that found it. The xfail(strict=True) ones record a
behaviour that needs a decision rather than a crash: once fixed they XPASS, which fails, so the
marker gets removed.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator

import pytest

from dial import Dial, last_error
from dial.address import parse, redact
from dial.codecs import MAX_DECODED_BYTES, MessageTooLarge, get_codec
from dial.errors import AddressError
from tests.fuzz import fuzz_plugin
from tests.fuzz.fuzz_codecs import bomb
from tests.fuzz.hostile_ws import HostileServer, Script, frame

# ---- address parser (fuzz_address.address_parse_any_text): AddressError, nothing else ----


@pytest.mark.parametrize(
    "address",
    [
        "ws://h|interval=²",  # str.isdigit() accepts a superscript two, int() does not
        "ws://h|interval=" + "9" * 5000,  # int() refuses more than 4300 digits
        "ws://h|backoff=exp&backoffMax=²",
    ],
)
def test_non_ascii_or_huge_interval_is_an_address_error(address: str) -> None:
    with pytest.raises(AddressError, match=r"interval|backoffMax"):
        parse(address)


@pytest.mark.parametrize(
    "proxy",
    [
        "socks5://[::1",  # urlsplit: "Invalid IPv6 URL"
        "socks5://[zz]:1080",  # urlsplit: "'zz' does not appear to be an IPv4 or IPv6 address"
        "socks5://u8\x8f[\xff",  # what atheris found first
    ],
)
def test_proxy_with_a_malformed_host_is_an_address_error(proxy: str) -> None:
    with pytest.raises(AddressError, match="proxy"):
        parse(f"ws://h|proxy={proxy}")


def test_dial_with_a_bad_option_keeps_the_address_reason() -> None:
    assert Dial("ws://127.0.0.1:1|interval=²") is None
    assert "interval" in (last_error() or "")


# ---- redact (fuzz_address.redact_hides_url_password, redact_hides_json_secret) ----


@pytest.mark.parametrize(
    ("text", "password"),
    [
        ("ws://&:a@127.0.0.1", "a"),  # the minimal input
        ("amqp://ops&dev:Hunter2@127.0.0.1:5672/?queue=q", "Hunter2"),  # '&' is valid userinfo
    ],
)
def test_redact_hides_the_password_after_a_user_name_with_an_ampersand(
    text: str, password: str
) -> None:
    assert password not in redact(text)


def test_redact_masks_a_whole_json_secret_that_contains_a_quote() -> None:
    payload = json.dumps({"op": "login", "args": [{"passphrase": 'pp"9x'}]})
    shown = redact(f"wss://h/ws|payload={payload}")
    assert "9x" not in shown
    assert json.loads(shown.split("|payload=", 1)[1])["args"][0]["passphrase"] == "***"


def test_redact_masks_what_follows_a_quoted_secret_so_it_is_idempotent() -> None:
    """atheris: `password='x'y` showed `y`, and a second redact() changed the text again."""
    assert redact("password='x'y") == "password=***"
    once = redact("password='''")
    assert redact(once) == once


def test_payload_written_last_keeps_its_trailing_newline() -> None:
    assert parse("tcp://h:1|payload=PING\r\n").options.payload == "PING\r\n"
    # other options still forgive a trailing newline (an address pasted from a file)
    assert parse("tcp://h:1|reconnect=true\n").options.reconnect is True
    assert parse(" tcp://h:1 \n").target == "h:1"


# ---- codecs (fuzz_codecs.codec_decompression_bomb) ----


def test_gzip_raw_bomb_one_byte_over_the_cap_is_refused() -> None:
    codec = get_codec("gzip_raw")
    assert codec is not None
    with pytest.raises(MessageTooLarge):
        codec.decode(bomb("gzip_raw", MAX_DECODED_BYTES + 1))


@pytest.mark.parametrize("name", ["gzip", "gzip_raw", "zlib"])
def test_a_message_of_exactly_the_cap_still_inflates(name: str) -> None:
    codec = get_codec(name)
    assert codec is not None
    decoded = codec.decode(bomb(name, MAX_DECODED_BYTES))
    assert decoded is not None and len(decoded) == MAX_DECODED_BYTES


def test_concatenated_gzip_members_are_not_silently_cut() -> None:
    codec = get_codec("gzip")
    assert codec is not None
    assert codec.decode(codec.encode(b"first,") + codec.encode(b"second")) == b"first,second"
    assert codec.decode(codec.encode(b"first,") + b"junk") == b"first,"  # as gzip(1) does


# ---- WebSocket (fuzz_websocket.websocket_hostile_server) ----


def test_ws_gzip_raw_bomb_one_byte_over_the_cap_drops_the_link() -> None:
    """Same root cause as the codec test, end to end: the bomb arrived as a bytes message."""
    server = HostileServer()
    try:
        payload = bomb("gzip_raw", MAX_DECODED_BYTES + 1)
        server.script = Script(chunks=[(frame(0x2, payload), 0)], ending="hold", hold_seconds=5)
        conn = Dial(f"{server.url}|compress=gzip_raw", timeout=5)
        assert conn is not None
        try:
            message = conn.read(3000)
            dropped = message == ""
            assert dropped, f"got a {type(message).__name__} message instead of a drop"
            assert "MessageTooLarge" in (conn.stats().last_error or "")
        finally:
            conn.close()
    finally:
        server.stop()


def _picows_link(frames: bytes) -> tuple[object, list[str]]:
    """Dial a hostile server with engine=picows; returns (what read() gave, asyncio errors)."""
    pytest.importorskip("picows")
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logging.getLogger("asyncio").addHandler(handler)
    server = HostileServer()
    try:
        server.script = Script(chunks=[(frames, 0)], ending="hold", hold_seconds=5)
        conn = Dial(f"{server.url}|engine=picows", timeout=5)
        assert conn is not None, last_error()
        try:
            message = conn.read(2000)
        finally:
            conn.close()
        gc.collect()
        return message, errors
    finally:
        server.stop()
        logging.getLogger("asyncio").removeHandler(handler)


def test_picows_frame_with_reserved_bits_fails_the_link() -> None:
    """RFC 6455 5.2: nonzero RSV bits without a negotiated extension fail the connection (the
    websockets engine does; picows delivered the frame, e.g. permessage-deflate data as bytes)."""
    message, _ = _picows_link(frame(0x2, b"abc", rsv=4))
    assert message == "", f"got {message!r} instead of a dropped link"


def test_picows_protocol_error_leaves_no_unretrieved_future() -> None:
    """picows stores the protocol error in its `disconnected_future`, which nobody awaited:
    asyncio logged 'Future exception was never retrieved' and a traceback per bad frame."""
    message, errors = _picows_link(frame(0x3, b"reserved opcode"))
    assert message == ""
    assert not [e for e in errors if "never retrieved" in e], errors


# ---- plugin server (fuzz_plugin.plugin_http_request) ----


@pytest.fixture(scope="module")
def plugin() -> Iterator[None]:
    fuzz_plugin.target()
    yield
    fuzz_plugin.shutdown()


def _request(method: str, params: dict, access_key: str = "accesskey123") -> bytes:
    return json.dumps(
        {
            "access_key": access_key,
            "secret_key": "secretkey123,passphrase123",
            "method": method,
            "params": params,
        }
    ).encode()  # json.dumps keeps a lone surrogate as the escape \ud800


def test_plugin_answer_holding_a_lone_surrogate_is_still_json(plugin: None) -> None:
    """`"method": "__api_/\\ud800"` made the answer unencodable: 'internal error'."""
    body = _request("__api_/\ud800", {})
    fuzz_plugin.post("OKX", body, {"Http-Method": "GET"})
    fuzz_plugin.post("ECHO", body, {"Http-Method": "GET"})


def test_plugin_lone_surrogate_in_a_param_is_not_blamed_on_the_exchange(plugin: None) -> None:
    fuzz_plugin.post("OKX", _request("ticker", {"symbol": "ETH_\ud800"}), {})


def test_plugin_control_character_in_a_key_is_not_blamed_on_the_exchange(plugin: None) -> None:
    """aiohttp refuses the header ("Forbidden control character"): a request error."""
    started = time.monotonic()
    fuzz_plugin.post("OKX", _request("accounts", {}, access_key="\x1f"), {})
    assert time.monotonic() - started < 3
