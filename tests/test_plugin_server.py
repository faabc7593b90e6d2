"""The plugin server under bad input and failing upstreams: always a JSON `{"error"}`, never a 500,
and it keeps serving. Also: secrets never reach the logs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dial.plugin import Call, Exchange, PluginServer, Symbol
from dial.plugin.server import parse_listen
from tests.fake_okx import API_KEY, PASSPHRASE, SECRET, SLOW_SECONDS, PluginHarness

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


def test_wrong_http_method_and_unknown_path(plugin: PluginHarness) -> None:
    status, answer = plugin.post(b"", method="GET")
    assert (status, answer) == (405, {"error": "use POST /OKX (got GET)"})
    status, answer = plugin.post(request(), path="/Binance")
    assert status == 404 and answer["error"].startswith("no exchange at /Binance; this plugin")
    assert "/OKX" in answer["error"] and "/BARE" in answer["error"]
    status, answer = plugin.post(request(), path="/okx")  # the path is case-insensitive
    assert status == 200 and answer["data"]["symbol"] == "ETH_USDT"


def test_oversized_body_is_rejected_cleanly(plugin: PluginHarness) -> None:
    status, answer = plugin.post(json.dumps(request(pad="x" * (2 << 20))).encode())
    assert status == 200 and answer["error"].startswith("request rejected: ")
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
    faults["/api/v5/market/ticker"] = "broken"
    error = plugin.call("ticker", TICKER)["error"]
    assert error == "OKX ticker: unexpected answer from the exchange (KeyError: 'bidPx')"


def test_upstream_unreachable(plugin: PluginHarness) -> None:
    error = plugin.call("ticker", TICKER, path="/OKX-DOWN")["error"]
    assert error.startswith("OKX-DOWN: cannot reach http://127.0.0.1:")
    assert "refused" in error.lower()


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


# ---- logging ----


def test_logs_mask_keys_and_secrets(
    plugin: PluginHarness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="dial.plugin"):
        plugin.call("accounts")
        plugin.call("ticker", TICKER)
        plugin.call("__api_/api/v5/account/balance", {"secret": "s3cr3tparam"}, http_method="GET")
    text = caplog.text
    assert "OKX accounts key=acce*** params={} -> ok" in text
    assert "OK-ACCESS-PASSPHRASE': 'pass***'" in text  # upstream headers logged, masked
    for secret in (SECRET, PASSPHRASE, API_KEY, "s3cr3tparam"):
        assert secret not in text
    for record in caplog.records:  # from the server's own thread, not the test's
        assert record.thread != threading.get_ident() or record.name != "dial.plugin"
