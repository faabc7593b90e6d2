"""The plugin server under bad input and failing upstreams: always a JSON `{"error"}`, never a 500,
and it keeps serving. Also: secrets never reach the logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dial.plugin import Call, Exchange, PluginServer, Symbol, UpstreamError
from dial.plugin.masking import fingerprint, mask_headers
from dial.plugin.okx import Okx
from dial.plugin.server import parse_listen
from tests.fake_okx import (
    API_KEY,
    PASSPHRASE,
    SECRET,
    SLOW_SECONDS,
    BackgroundLoop,
    PluginClient,
    PluginHarness,
)

TICKER = {"symbol": "ETH_USDT"}


@pytest.fixture(scope="module")
def plugin() -> Iterator[PluginHarness]:
    harness = PluginHarness()
    yield harness
    harness.close()


@pytest.fixture
def faults(plugin: PluginHarness) -> Iterator[dict[str, str]]:
    yield plugin.fake.faults
    plugin.fake.faults.clear()


def still_serving(plugin: PluginHarness) -> None:
    assert plugin.call("ticker", TICKER)["data"]["symbol"] == "ETH_USDT"


def request(method: object = "ticker", params: object = TICKER, **extra: object) -> dict:
    body = {"access_key": API_KEY, "secret_key": f"{SECRET},{PASSPHRASE}", "nonce": 1}
    return {**body, "method": method, "params": params, **extra}


# ---- malformed requests ----


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "request body is not valid JSON: "),
        (b"", "request body is not valid JSON: "),
        (b"\xff\xfe", "request body is not valid JSON: "),
        (b"[1, 2]", "request body must be a JSON object"),
        (json.dumps({"method": "ticker", "params": {}}).encode(), "missing required field(s): "),
        (json.dumps({"access_key": "k", "params": {}}).encode(), "missing required field(s): "),
        (json.dumps({"access_key": "k", "method": "ticker"}).encode(), "missing required field"),
        (json.dumps(request(method=7)).encode(), "field 'method' must be a non-empty string"),
        (json.dumps(request(method="")).encode(), "field 'method' must be a non-empty string"),
        (json.dumps(request(params="symbol=ETH_USDT")).encode(), "field 'params' must be a JSON"),
        (json.dumps(request(params=None)).encode(), "field 'params' must be a JSON object"),
        (json.dumps(request(access_key=None)).encode(), "fields 'access_key' and 'secret_key'"),
        (json.dumps(request(method="withdraw")).encode(), "unknown method 'withdraw'"),
    ],
)
def test_malformed_request_is_a_json_error(plugin: PluginHarness, body: bytes, error: str) -> None:
    status, answer = plugin.post(body)
    assert status == 200
    assert list(answer) == ["error"] and answer["error"].startswith(error)
    still_serving(plugin)


def test_missing_fields_are_named(plugin: PluginHarness) -> None:
    _, answer = plugin.post({"secret_key": "x"})
    assert answer == {"error": "missing required field(s): access_key, method, params"}
    _, answer = plugin.post({"access_key": "k", "method": "ticker"})
    assert answer == {"error": "missing required field(s): params"}


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "missing params.symbol"),
        ({"symbol": ""}, "missing params.symbol"),
        ({"symbol": 5}, "invalid symbol 5"),
        ({"symbol": "A_B_C"}, "invalid symbol 'A_B_C'"),
    ],
)
def test_bad_symbol(plugin: PluginHarness, params: dict, error: str) -> None:
    assert plugin.call("ticker", params)["error"].startswith(error)


def test_bad_integer_params(plugin: PluginHarness) -> None:
    bad = {"symbol": "ETH_USDT", "period": "1.5"}
    assert plugin.call("records", bad)["error"] == "params.period must be an integer, got '1.5'"
    bad = {"symbol": "ETH_USDT", "limit": True}
    assert plugin.call("depth", bad)["error"] == "params.limit must be an integer, got True"
    bad = {"symbol": "ETH_USDT", "limit": [[1]]}
    assert plugin.call("depth", bad)["error"] == "params.limit must be an integer, got a JSON array"


OUT_OF_RANGE = "is out of range, got {} (at most 18 digits before the decimal point)"
BUY = {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.1"}


@pytest.mark.parametrize(
    ("method", "params", "error"),
    [
        ("depth", {"limit": "1e700000"}, "params.limit " + OUT_OF_RANGE.format("'1e700000'")),
        ("depth", {"limit": "1e1000000"}, "params.limit " + OUT_OF_RANGE.format("'1e1000000'")),
        ("depth", {"limit": 1e300}, "params.limit " + OUT_OF_RANGE.format("1e+300")),
        ("depth", {"limit": 10**400}, "params.limit " + OUT_OF_RANGE.format("a huge integer")),
        ("depth", {"limit": "Infinity"}, "params.limit must be a finite number, got 'Infinity'"),
        ("depth", {"limit": float("inf")}, "params.limit must be a finite number, got inf"),
        ("trades", {"limit": "-inf"}, "params.limit must be a finite number, got '-inf'"),
        ("records", {"period": "NaN"}, "params.period must be a finite number, got 'NaN'"),
        ("records", {"limit": float("nan")}, "params.limit must be a finite number, got nan"),
        ("records", {"limit": "9" * 51}, "params.limit is too long for a number: 51 characters"),
        ("historyorders", {"since": "1e18"}, "params.since " + OUT_OF_RANGE.format("'1e18'")),
        ("trade", {**BUY, "price": "1e-999999"}, "params.price has too many decimal places"),
        (
            "trade",
            {**BUY, "amount": "1e999999"},
            "params.amount " + OUT_OF_RANGE.format("'1e999999'"),
        ),
        ("trade", {**BUY, "amount": "sNaN"}, "params.amount must be a finite number, got 'sNaN'"),
    ],
)
def test_absurd_numbers_are_refused_naming_the_param(
    plugin: PluginHarness, method: str, params: dict, error: str
) -> None:
    """Regression: `1e700000` froze the server 12 s converting it to an int; `Infinity` was
    reported as "unexpected answer from the exchange". Float values go as JSON `Infinity`/`NaN`,
    which the docker's JSON may carry."""
    plugin.fake.seen.clear()
    started = time.perf_counter()
    answer = plugin.call(method, {"symbol": "ETH_USDT", **params})
    assert time.perf_counter() - started < 1
    assert answer["error"].startswith(error), answer
    assert not plugin.fake.seen  # refused before any traffic


def test_numbers_within_bounds_still_work(plugin: PluginHarness) -> None:
    ok = {"symbol": "ETH_USDT", "limit": "5E0", "since": 1.7e12}
    assert len(plugin.call("historyorders", ok)["data"]) == 5
    assert (
        len(plugin.call("depth", {"symbol": "ETH_USDT", "limit": " 2.000 "})["data"]["asks"]) == 2
    )
    precise = {**BUY, "price": "0.00000000000000000001", "amount": "123456789012345678.5"}
    assert "data" in plugin.call("trade", precise)
    [placed] = plugin.fake.requests_to("/api/v5/trade/order")[-1:]
    assert json.loads(placed.body)["sz"] == "123456789012345678.5"


def test_wrong_http_method_and_unknown_path(plugin: PluginHarness) -> None:
    status, answer = plugin.post(b"", method="GET")
    assert (status, answer) == (405, {"error": "use POST /OKX (got GET)"})
    status, answer = plugin.post(request(), path="/Binance")
    assert status == 404 and answer["error"].startswith("no exchange at /Binance; this plugin")
    assert "/OKX" in answer["error"] and "/BARE" in answer["error"]
    status, answer = plugin.post(request(), path="/okx")  # the path is case-insensitive
    assert status == 200 and answer["data"]["symbol"] == "ETH_USDT"


# ---- hostile HTTP: every answer is HTTP 200 JSON, and the server keeps serving ----


def raw_http(plugin: PluginHarness, head: bytes, body: bytes = b"") -> tuple[int, str, Any]:
    """Send `head` (request line and headers, CRLF-separated) and `body` over a socket exactly as
    given, read until the server closes (`Connection: close`), and parse the JSON answer."""
    with socket.create_connection(("127.0.0.1", plugin.server.port), timeout=10) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        response = b""
        while chunk := sock.recv(1 << 16):
            response += chunk
    header, _, payload = response.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), fields.get("Content-Type", ""), json.loads(payload)


def post_head(length: int, *headers: bytes) -> bytes:
    return b"\r\n".join(
        [b"POST /OKX HTTP/1.1", b"Host: plugin", b"Content-Length: %d" % length, *headers]
    )


def assert_json_error(answer: tuple[int, str, Any], error: str) -> None:
    status, content_type, body = answer
    assert (status, content_type) == (200, "application/json"), answer
    assert list(body) == ["error"] and body["error"].startswith(error), body


@pytest.mark.parametrize("depth", [100, 50_000])
def test_deeply_nested_body_is_a_json_error(plugin: PluginHarness, depth: int) -> None:
    """Regression: 50k levels raised RecursionError in json.loads -> HTTP 500 plain text."""
    nested = b"[" * depth + b"]" * depth
    body = b'{"access_key":"k","method":"ticker","params":{"symbol":"ETH_USDT","x":%s}}' % nested
    answer = raw_http(plugin, post_head(len(body), b"Content-Type: application/json"), body)
    assert_json_error(answer, "request body is nested too deeply (at most 32 levels)")
    still_serving(plugin)


def test_huge_body_is_a_json_error(plugin: PluginHarness) -> None:
    status, answer = plugin.post(json.dumps(request(pad="x" * (16 << 20))).encode())
    assert (status, answer) == (200, {"error": "request body too large (at most 1048576 bytes)"})
    still_serving(plugin)


def test_huge_chunked_body_is_a_json_error(plugin: PluginHarness) -> None:
    """No Content-Length to refuse up front: the limit holds while reading."""
    chunk = b"x" * (1 << 16)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    head = b"POST /OKX HTTP/1.1\r\nHost: plugin\r\nTransfer-Encoding: chunked"
    assert_json_error(raw_http(plugin, head, body), "request body too large")
    still_serving(plugin)


def test_invalid_utf8_body_is_a_json_error(plugin: PluginHarness) -> None:
    body = json.dumps(request()).encode().replace(API_KEY.encode(), b"key\xff\xfe")
    where = body.index(b"\xff")
    status, answer = plugin.post(body)
    assert (status, answer) == (200, {"error": f"request body is not UTF-8: byte 0xff at {where}"})
    still_serving(plugin)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"application/json; charset=utf-16",
    ],
)
def test_content_type_is_ignored(plugin: PluginHarness, content_type: bytes | None) -> None:
    """The body is JSON whatever the header says (or when there is none)."""
    body = json.dumps(request()).encode()
    headers = [b"Content-Type: " + content_type] if content_type is not None else []
    status, kind, answer = raw_http(plugin, post_head(len(body), *headers), body)
    assert (status, kind, answer["data"]["symbol"]) == (200, "application/json", "ETH_USDT")


@pytest.mark.parametrize("body", [b"null", b'"ticker"', b"5", b"true", b"[]", b"1e999"])
def test_non_object_json_is_a_json_error(plugin: PluginHarness, body: bytes) -> None:
    assert plugin.post(body) == (200, {"error": "request body must be a JSON object"})


def test_10kb_header_is_accepted(plugin: PluginHarness) -> None:
    """Regression: aiohttp's default 8190-byte limit answered a plain-text 400."""
    body = json.dumps(request()).encode()
    head = post_head(len(body), b"X-Trace: " + b"t" * 10_240, b"Cookie: " + b"c" * 10_240)
    status, _, answer = raw_http(plugin, head, body)
    assert status == 200 and answer["data"]["symbol"] == "ETH_USDT"


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (post_head(2, b"X-Trace: " + b"t" * (100 << 10)), "request line or header too long"),
        (b"POST /" + b"O" * (100 << 10) + b" HTTP/1.1", "request line or header too long"),
        (post_head(2, *[b"X-%d: 1" % i for i in range(200)]), "malformed HTTP request"),
        (b"GARBAGE", "malformed HTTP request"),
        (b"POST /OKX HTTP/1.1\r\nContent-Length: x", "malformed HTTP request"),
    ],
    ids=["100kb-header", "100kb-url", "200-headers", "not-http", "bad-length"],
)
def test_request_aiohttp_refuses_is_a_json_error(
    plugin: PluginHarness, head: bytes, error: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert_json_error(raw_http(plugin, head, b"{}"), error)
    assert "t" * 100 not in caplog.text and "O" * 100 not in caplog.text  # no echo of the line
    assert "Traceback" not in caplog.text
    still_serving(plugin)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.dictionaries(
        st.sampled_from(["access_key", "secret_key", "method", "params", "nonce"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=6,
        )
        | st.sampled_from(["ticker", "trade", "order", "records", "__api_/x", "cancel"]),
    )
)
def test_any_json_body_gets_data_or_error(plugin: PluginHarness, body: dict) -> None:
    status, answer = plugin.post(body)
    assert status == 200 and set(answer) in ({"data", "raw"}, {"error"})


# ---- failing upstreams ----


def test_upstream_timeout_does_not_block_other_requests(
    plugin: PluginHarness, faults: dict[str, str]
) -> None:
    faults["/api/v5/market/ticker"] = "slow"
    with ThreadPoolExecutor(4) as pool:
        slow = pool.submit(plugin.call, "ticker", TICKER, path="/OKX-SLOW")
        depth = [pool.submit(plugin.call, "depth", TICKER) for _ in range(3)]
        assert all("data" in f.result(timeout=SLOW_SECONDS) for f in depth)
        answer = slow.result(timeout=SLOW_SECONDS)
    assert answer == {"error": "OKX-SLOW: GET /api/v5/market/ticker timed out after 0.5s"}


def test_upstream_html_page(plugin: PluginHarness, faults: dict[str, str]) -> None:
    faults["/api/v5/account/balance"] = "html"
    error = plugin.call("accounts")["error"]
    assert error.startswith(
        "OKX: GET /api/v5/account/balance returned HTTP 502 with non-JSON text/html body: "
        "502 Bad Gateway"
    )
    assert "<" not in error
    faults.clear()
    assert "data" in plugin.call("accounts")


def test_upstream_rate_limit_and_broken_payload(
    plugin: PluginHarness, faults: dict[str, str]
) -> None:
    faults["/api/v5/market/books"] = "ratelimit"
    assert plugin.call("depth", TICKER) == {"error": "OKX error 50011: Too Many Requests"}
    faults["/api/v5/market/ticker"] = "broken"  # no `ts`: prices may be empty, the time may not
    error = plugin.call("ticker", TICKER)["error"]
    assert error == "OKX ticker: unexpected answer from the exchange (KeyError: 'ts')"


def test_upstream_connection_refused(plugin: PluginHarness) -> None:
    error = plugin.call("ticker", TICKER, path="/OKX-DOWN")["error"]
    port = plugin.server.exchanges["okx-down"].api_base.rpartition(":")[2]
    assert error == f"OKX-DOWN: cannot connect to 127.0.0.1:{port}: connection refused"


def test_upstream_host_that_does_not_resolve(plugin: PluginHarness) -> None:
    """Regression: a DNS failure read `Unknown error -2` (os.strerror of a getaddrinfo code)."""
    for method, params in (("ticker", TICKER), ("accounts", {})):
        error = plugin.call(method, params, path="/OKX-NODNS")["error"]
        assert error == "OKX-NODNS: cannot resolve host 'nonexistent.invalid'"


def test_adapter_crash_is_contained(plugin: PluginHarness) -> None:
    answer = plugin.call("ticker", TICKER, path="/BUGGY")
    assert answer == {"error": "internal error in BUGGY adapter: RuntimeError: adapter bug"}
    still_serving(plugin)


# ---- the framework itself ----

ALL_METHODS = [
    ("ticker", TICKER),
    ("depth", TICKER),
    ("trades", TICKER),
    ("records", {"symbol": "ETH_USDT", "period": "60"}),
    ("accounts", {}),
    ("assets", {}),
    ("trade", {"symbol": "ETH_USDT", "type": "buy", "price": "1", "amount": "1"}),
    ("orders", TICKER),
    ("order", {"id": "1", "symbol": "ETH_USDT"}),
    ("historyorders", {"symbol": "ETH_USDT", "since": 0, "limit": 0}),
    ("cancel", {"id": "1"}),
]


@pytest.mark.parametrize(("method", "params"), ALL_METHODS)
def test_unimplemented_methods_are_not_supported(
    plugin: PluginHarness, method: str, params: dict
) -> None:
    assert plugin.call(method, params, path="/BARE") == {"error": "not supported"}


def test_unimplemented_io_is_not_supported(plugin: PluginHarness) -> None:
    answer = plugin.call("__api_/v1/x", path="/BARE", http_method="GET")
    assert answer == {"error": "not supported"}


def test_a_tiny_adapter_gets_data_and_raw() -> None:
    class Echo(Exchange):
        name = "echo"

        async def ticker(self, call: Call, symbol: Symbol) -> dict:
            return {"symbol": str(symbol)}

    import asyncio

    answer = asyncio.run(Echo().dispatch(Call("ticker", {"symbol": "btc_usdt"})))
    assert answer == {"data": {"symbol": "BTC_USDT"}, "raw": None}


def test_adapter_errors_never_echo_the_callers_credentials() -> None:
    """A careless adapter (or exchange) quoting the keys in an error: they come out as ***."""

    class Careless(Exchange):
        async def ticker(self, call: Call, symbol: Symbol) -> Any:
            raise UpstreamError(f"rejected {call.access_key} with {call.secret_key}")

        async def depth(self, call: Call, symbol: Symbol, limit: int) -> Any:
            raise ValueError(f"no passphrase {call.secret_key.split(',')[1]}")

    import asyncio

    call = Call("ticker", TICKER, access_key=CANARY_KEY, secret_key=f"{CANARY},simulate")
    answer = asyncio.run(Careless().dispatch(call))
    assert answer == {"error": "rejected *** with ***"}
    answer = asyncio.run(Careless().dispatch(Call("depth", TICKER, CANARY_KEY, CANARY)))
    assert answer["error"].endswith("(ValueError: no passphrase ***)")


def test_crash_outside_any_adapter_is_a_json_error(caplog: pytest.LogCaptureFixture) -> None:
    """Even a failure `dispatch()` does not contain reaches the client as JSON, not a plain-text
    500 from aiohttp, and the traceback goes to the log."""

    class Broken(Exchange):
        name = "BROKEN"

        async def dispatch(self, call: Call) -> dict[str, Any]:
            raise RecursionError("deep")

    bg = BackgroundLoop()
    server = PluginServer([Broken()], "127.0.0.1", 0)
    try:
        bg.run(server.start())
        with caplog.at_level(logging.ERROR, logger="dial.plugin"):
            status, answer = PluginClient(server.url).post(request(), path="/BROKEN")
        assert (status, answer) == (
            200,
            {"error": "internal error (RecursionError); see the plugin's log"},
        )
        assert "RecursionError: deep" in caplog.text
    finally:
        bg.run(server.stop())
        bg.close()


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:6666") == ("127.0.0.1", 6666)
    assert parse_listen("[::1]:7000") == ("::1", 7000)
    assert parse_listen(":6666") == ("127.0.0.1", 6666)
    assert parse_listen("6666") == ("127.0.0.1", 6666)
    for bad in ("localhost", "h:port", "h:70000", ""):
        with pytest.raises(ValueError, match="invalid listen address"):
            parse_listen(bad)


def test_duplicate_exchange_names_are_refused() -> None:
    with pytest.raises(ValueError, match="two exchanges registered as /okx"):
        PluginServer([Exchange(name="OKX"), Exchange(name="okx")])


# ---- logging and secrets ----


def test_request_log_shows_a_key_fingerprint(
    plugin: PluginHarness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="dial.plugin"):
        plugin.call("accounts")
        plugin.call("__api_/api/v5/account/balance", {"secret": "s3cr3tparam"}, http_method="GET")
    assert f"OKX accounts key={fingerprint(API_KEY)} params={{}} -> ok" in caplog.text
    assert "'OK-ACCESS-PASSPHRASE': '***'" in caplog.text  # upstream headers logged, masked
    assert "s3cr3tparam" not in caplog.text
    for record in caplog.records:  # from the server's own thread, not the test's
        assert record.thread != threading.get_ident() or record.name != "dial.plugin"


CANARY_KEY, CANARY_SECRET, CANARY_PASSPHRASE = (
    "AKzq7WpXv3Lr9TmY",
    "SKjh4RtBn8QwE2uZ",
    "PPxw6YkGd5HsV1oJ",
)
CANARY = f"{CANARY_SECRET},{CANARY_PASSPHRASE}"


def leaked(text: str) -> set[str]:
    """Every 4-character piece of a canary credential found in `text`."""
    secrets = (CANARY_KEY, CANARY_SECRET, CANARY_PASSPHRASE)
    return {s[i : i + 4] for s in secrets for i in range(len(s) - 3) if s[i : i + 4] in text}


def canary_calls(plugin: PluginHarness) -> list[dict]:
    """Every plugin method once with the canary keys, plus the ways a request can fail."""

    def call(method: str, params: dict, secret: str = CANARY, http: str | None = None) -> dict:
        return plugin.call(method, params, key=CANARY_KEY, secret=secret, http_method=http)

    answers = [call(method, params) for method, params in ALL_METHODS]
    placed = call("trade", {"symbol": "ETH_USDT", "type": "buy", "price": "100", "amount": "0.1"})
    order = {"id": placed["data"]["id"]}
    answers += [placed, call("order", order), call("cancel", order)]
    market = {"symbol": "ETH_USDT", "type": "buy", "price": -1, "amount": 10}
    answers += [call("trade", market), call("historyorders", {"symbol": "ETH_USDT", "limit": 3})]
    answers += [
        call("__api_/api/v5/account/balance", {"ccy": "USDT"}, http="GET"),
        call("__api_/api/v5/trade/cancel-order", {"instId": "ETH-USDT", "ordId": "1"}, http="POST"),
        call("accounts", {}, secret=f"{CANARY_SECRET},wrong-passphrase"),
        call("accounts", {}, secret=f"{CANARY_SECRET}x,{CANARY_PASSPHRASE}"),
        call("accounts", {}, secret=CANARY_SECRET),
        call("accounts", {}, secret=f"{CANARY},{CANARY_PASSPHRASE}"),
        call("ticker", TICKER, secret=f"{CANARY},simulate"),
        call("withdraw", {"to": CANARY_KEY[::-1]}),
    ]
    for body in (
        b'{"access_key": "%s", "secret_key": "%s", "method": 7, "params": {}}',
        b'{"access_key": "%s", "secret_key": "%s", "method": "ticker", "params": {',
        b'{"access_key": "%s", "secret_key": "%s\xff", "method": "ticker", "params": {}}',
    ):
        answers.append(plugin.post(body % (CANARY_KEY.encode(), CANARY.encode()))[1])
    return answers


def test_no_piece_of_a_secret_in_logs_answers_or_reprs(
    plugin: PluginHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: DEBUG logs showed `'OK-ACCESS-PASSPHRASE': 'pass***'` (and keys `acce***`), a
    quarter of a passphrase. Canary keys go through every method at DEBUG, on every logger
    (aiohttp's included); no 4 characters of them may come out anywhere."""
    plugin.fake.keys[CANARY_KEY] = (CANARY_SECRET, CANARY_PASSPHRASE, False)
    with caplog.at_level(logging.DEBUG):
        answers = canary_calls(plugin)
    assert sum("data" in a for a in answers) >= 14, answers  # the canary keys did work
    assert "OK-ACCESS-PASSPHRASE" in caplog.text  # the signed requests were logged at DEBUG
    assert not leaked(caplog.text)
    assert not leaked(json.dumps(answers))

    call = Call("accounts", {}, access_key=CANARY_KEY, secret_key=CANARY)
    okx = Okx()
    keys = okx.keys(call)  # parsed credentials are cached on the call
    signed = mask_headers(okx.sign(call, "GET", "/api/v5/account/balance", ""))
    shown = [repr(call), str(call), repr(keys), str(keys), repr(okx), repr(signed)]
    assert not leaked(" ".join(shown)), shown
