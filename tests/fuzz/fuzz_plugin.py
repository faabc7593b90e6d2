"""Fuzz target 4: the plugin server's request handling (`dial.plugin.server`).

Two levels:
- `_parse_call(body, http_method)`, the pure request parser: any bytes and any `Http-Method`
  -> a `Call`, or None and a non-empty reason that the server can encode as JSON; never raises.
- the real server over HTTP (started as tests/fake_okx.py's PluginHarness does: a `PluginServer`
  on a background loop, the OKX adapter in front of the local fake OKX, plus /BARE, an adapter
  overriding nothing, and /ECHO, one that answers with what it was given): any path, HTTP
  method, `Http-Method` header and body -> an HTTP answer within a few seconds whose body is
  UTF-8 JSON `{"error": "..."}` or `{"data", "raw"}`, never a 500, never the server's
  "internal error" safety net (an exception escaped a handler), and for the exchanges with no
  upstream (/BARE, /ECHO) never "unexpected answer from the exchange" (a bad request parameter
  blamed on the exchange).
"""

from __future__ import annotations

import atexit
import http.client
import json
import re
import time
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from dial.plugin import Exchange, PluginServer, Reply
from dial.plugin.server import MAX_BODY, _dumps, _parse_call
from tests.fuzz.budget import prop

REQUEST_LIMIT = 3.0  # seconds one answer may take (the fake OKX answers in milliseconds)
METHODS = [
    "ticker",
    "depth",
    "trades",
    "records",
    "accounts",
    "assets",
    "trade",
    "orders",
    "order",
    "historyorders",
    "cancel",
]
PARAM_NAMES = ["symbol", "limit", "period", "since", "type", "price", "amount", "id", "instId"]

# ---- checks ----


def check_parse_call(body: bytes, http_method: str | None) -> None:
    call, error = _parse_call(body, http_method)
    if call is None:
        assert isinstance(error, str) and error.strip(), "no reason for a refused request"
        json.loads(_dumps({"error": error}))  # the answer the server sends must encode
    else:
        assert error == "", error
        assert isinstance(call.method, str) and call.method
        assert isinstance(call.params, dict)
        assert isinstance(call.access_key, str) and isinstance(call.secret_key, str)


def check_answer(exchange: str, status: int, content_type: str, body: bytes, took: float) -> None:
    assert took < REQUEST_LIMIT, f"slow answer: {took:.1f} s"
    assert status != 500, f"HTTP 500: {body[:300]!r}"
    assert status in (200, 404, 405), f"HTTP status {status}: {body[:300]!r}"
    assert content_type.startswith("application/json"), f"content type {content_type}"
    try:
        answer = json.loads(body.decode("utf-8"))
    except ValueError as exc:
        raise AssertionError(f"answer not UTF-8 JSON: {exc}: {body[:300]!r}") from None
    assert isinstance(answer, dict), f"answer not an object: {answer!r:.300}"
    if "error" in answer:
        assert set(answer) == {"error"}, f"answer keys: {sorted(answer)}"
        error = answer["error"]
        assert isinstance(error, str) and error.strip(), f"empty error: {answer!r:.200}"
        assert not error.startswith("internal error"), f"{error[:60]}: {body[:300]!r}"
        if exchange.upper() in ("BARE", "ECHO", "OKX"):  # the fake OKX answers well-formed JSON
            blamed = re.search(r"unexpected answer from the exchange \((\w+)", error)
            assert blamed is None, f"input error blamed on the exchange ({blamed[1]}): {error}"
    else:
        assert set(answer) == {"data", "raw"}, f"answer keys: {sorted(answer)}"


# ---- the server ----


class Echo(Exchange):
    """An adapter that answers every method with the arguments the framework parsed for it."""

    name = "ECHO"

    async def ticker(self, call, symbol):  # type: ignore[no-untyped-def]
        return Reply({"symbol": str(symbol)}, call.params)

    async def depth(self, call, symbol, limit):  # type: ignore[no-untyped-def]
        return Reply({"symbol": str(symbol), "limit": limit}, call.params)

    async def records(self, call, symbol, period, limit):  # type: ignore[no-untyped-def]
        return Reply([[period, limit, str(symbol)]], call.params)

    async def trade(self, call, symbol, side, price, amount):  # type: ignore[no-untyped-def]
        return Reply({"id": f"{symbol}/{side}/{price}/{amount}"}, call.params)

    async def order(self, call, order_id, symbol):  # type: ignore[no-untyped-def]
        return Reply({"Id": order_id, "Symbol": str(symbol)}, call.params)

    async def cancel(self, call, order_id, symbol):  # type: ignore[no-untyped-def]
        return Reply(True, {"id": order_id})

    async def historyorders(self, call, symbol, since, limit):  # type: ignore[no-untyped-def]
        return Reply([], {"since": since, "limit": limit})

    async def api(self, call, http_method, path, params):  # type: ignore[no-untyped-def]
        return Reply({"method": http_method, "path": path}, params)


class PluginTarget:
    def __init__(self) -> None:
        from dial.plugin.okx import Okx
        from tests.fake_okx import BackgroundLoop, FakeOkx

        self.bg = BackgroundLoop()
        self.fake = FakeOkx()
        self.fake.record = False
        self.bg.run(self.fake.start())
        exchanges = [Okx(self.fake.url), Exchange(name="BARE"), Echo()]
        self.server = PluginServer(exchanges, "127.0.0.1", 0)
        self.bg.run(self.server.start())
        self.port = self.server.port

    def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, bytes, float]:
        started = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_LIMIT + 2)
        try:
            connection.request(
                method, path, body=body if method != "GET" else None, headers=headers
            )
            response = connection.getresponse()
            data = response.read()
            return response.status, response.getheader("Content-Type", ""), data, started
        finally:
            connection.close()

    def close(self) -> None:
        self.bg.run(self.server.stop())
        self.bg.run(self.fake.stop())
        self.bg.close()


_target: PluginTarget | None = None


def target() -> PluginTarget:
    global _target
    if _target is None:
        _target = PluginTarget()
        atexit.register(_target.close)
    return _target


def shutdown() -> None:
    global _target
    if _target is not None:
        atexit.unregister(_target.close)
        _target.close()
        _target = None


def post(exchange: str, body: bytes, headers: dict[str, str], method: str = "POST") -> None:
    status, content_type, data, started = target().request(
        method, "/" + quote(exchange.encode("utf-8", "surrogatepass"), safe="/"), body, headers
    )
    check_answer(exchange, status, content_type, data, time.monotonic() - started)


# ---- strategies ----

# st.text() never yields a lone surrogate; a JSON body can (`"\\ud800"`), so these may.
any_chars = st.characters(blacklist_categories=())


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(any_chars, max_size=max_size)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts(30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(texts(8), inner, max_size=4)
    ),
    max_leaves=12,
)
number_texts = st.one_of(
    st.sampled_from(
        [
            "1",
            "-1",
            "0",
            "-0",
            " 12 ",
            "1.5",
            "1e3",
            "1E-3",
            "1e300000",
            "-1e300000",
            "1e-300000",
            "1e999999999",
            "9" * 5000,
            "0." + "0" * 3000 + "1",
            "NaN",
            "sNaN",
            "-Infinity",
            "inf",
            "1_000",
            "١٢",
            "0x10",
            "",
            " ",
            "\ud800",
        ]
    ),
    st.integers().map(str),
    st.floats().map(repr),
    st.decimals(allow_nan=True).map(str),
)
symbols = st.one_of(
    st.sampled_from(["ETH_USDT", "eth_usdt", "BTC_USDT", "_", "A_", "A_B_C", "ETH-USDT", " E_U "]),
    st.sampled_from(["ETH_\ud800", "ETH_USDT\x00", "ETH_US DT", "ETH_USDT?x=1", "ETH_USDT#"]),
    texts(12),
)
param_values = st.one_of(number_texts, symbols, json_values, st.sampled_from(["buy", "sell"]))


api_methods = st.one_of(
    st.sampled_from(["__api_/api/v5/market/ticker", "__api_", "__api_//x", "__api_/\ud800"]),
    texts(20).map(lambda t: "__api_/" + t),
)
param_dicts = st.dictionaries(
    st.one_of(st.sampled_from(PARAM_NAMES), texts(6)), param_values, max_size=6
)


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, Any]:
    """Right types everywhere, so the request reaches the exchange; the params are fuzzed."""
    key = draw(st.sampled_from(["accesskey123", "demokey456", "", "k" * 40]) | texts(20))
    secret = draw(
        st.sampled_from(["secretkey123,passphrase123", "demosecret456,demopass456,1", "", ","])
        | texts(30)
    )
    method = draw(st.one_of(st.sampled_from(METHODS), api_methods))
    body = {"access_key": key, "secret_key": secret, "method": method, "params": draw(param_dicts)}
    if draw(st.booleans()):
        body["nonce"] = draw(json_values)
    return body


@st.composite
def malformed(draw: st.DrawFn) -> dict[str, Any]:
    """A request body shaped like the FMZ docker's, with any field wrong or missing."""
    body: dict[str, Any] = {}
    fields = {
        "access_key": st.one_of(st.sampled_from(["accesskey123", "", "k"]), json_values),
        "secret_key": st.one_of(st.sampled_from(["secretkey123,passphrase123", ""]), json_values),
        "nonce": json_values,
        "method": st.one_of(st.sampled_from(METHODS), api_methods, json_values),
        "params": st.one_of(param_dicts, json_values),
    }
    for name, values in fields.items():
        if draw(st.integers(0, 9)):  # each field present 90% of the time
            body[name] = draw(values)
    return body


requests = st.one_of(well_formed(), well_formed(), well_formed(), malformed())


def _encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # lone surrogates stay \\udXXX escapes


bodies = st.one_of(
    requests.map(_encode),
    requests.map(_encode),
    requests.map(_encode),
    st.binary(max_size=300),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"params":' * n + b"1" + b"}" * n),
    st.sampled_from(
        [b"", b"null", b"[]", b'"x"', b"\xef\xbb\xbf{}", b"{\xff}", b'{"a":1e99999}', b"NaN"]
    ),
    requests.map(lambda r: _encode(r).decode().encode("utf-16")),
)
exchanges = st.sampled_from(["OKX", "BARE", "ECHO", "bare", "echo", "Okx"] * 3) | texts(8)
http_methods = st.one_of(
    st.none(), st.sampled_from(["GET", "POST", "get", "DELETE", "PUT", "PATCH", ""]), texts(8)
)


def _header_safe(text: str) -> str:
    return "".join(ch for ch in text if 32 <= ord(ch) < 127)


# ---- properties ----


@prop(body=st.one_of(bodies, st.binary()), http_method=http_methods)
def plugin_parse_call(body: bytes, http_method: str | None) -> None:
    check_parse_call(body, http_method)


@prop(
    exchange=exchanges,
    body=st.one_of(bodies, st.just(b" " * (MAX_BODY + 1))),
    http_method=http_methods,
    verb=st.sampled_from(["POST"] * 8 + ["GET", "PUT", "DELETE"]),
)
def plugin_http_request(exchange: str, body: bytes, http_method: str | None, verb: str) -> None:
    headers = {"Content-Type": "application/json"}
    if http_method is not None:
        headers["Http-Method"] = _header_safe(http_method)
    post(exchange, body, headers, verb)


PROPERTIES = [plugin_parse_call, plugin_http_request]
