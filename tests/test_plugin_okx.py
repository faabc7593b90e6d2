"""The OKX adapter against the local fake OKX: every FMZ method's field names and types."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest

from tests.fake_okx import (
    API_KEY,
    DEMO_KEY,
    DEMO_PASSPHRASE,
    DEMO_SECRET,
    PASSPHRASE,
    PENDING_ORDERS,
    SECRET,
    PluginHarness,
)

TICKER_FIELDS = {"symbol", "buy", "sell", "high", "low", "open", "last", "vol", "time"}
ORDER_FIELDS = {"id", "symbol", "amount", "price", "deal_amount", "avg_price", "type", "status"}


@pytest.fixture(scope="module")
def plugin() -> Iterator[PluginHarness]:
    harness = PluginHarness()
    yield harness
    harness.close()


def signed(plugin: PluginHarness, path: str) -> list:
    """Requests the fake received on `path`, each checked to carry OKX's auth headers."""
    seen = plugin.fake.requests_to(path)
    for request in seen:
        assert {"OK-ACCESS-KEY", "OK-ACCESS-SIGN", "OK-ACCESS-TIMESTAMP"} <= set(request.headers)
    return seen


# ---- market data (public, unsigned) ----


def test_ticker_maps_okx_fields_to_fmz_strings(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    answer = plugin.call("ticker", {"symbol": "eth_usdt"})
    data, raw = answer["data"], answer["raw"]
    assert set(data) == TICKER_FIELDS
    assert all(isinstance(v, str) for v in data.values())
    tick = raw["data"][0]
    assert data["symbol"] == "ETH_USDT"
    assert (data["buy"], data["sell"], data["last"]) == (tick["bidPx"], tick["askPx"], tick["last"])
    assert (data["high"], data["low"], data["open"]) == (
        tick["high24h"],
        tick["low24h"],
        tick["open24h"],
    )
    assert (data["vol"], data["time"]) == (tick["vol24h"], tick["ts"])
    [request] = plugin.fake.requests_to("/api/v5/market/ticker")
    assert request.query == {"instId": "ETH-USDT"}
    assert "OK-ACCESS-SIGN" not in request.headers  # public endpoints are not signed


def test_ticker_of_unknown_instrument_is_okx_error(plugin: PluginHarness) -> None:
    assert plugin.call("ticker", {"symbol": "NOPE_USDT"}) == {
        "error": "OKX error 51001: Instrument ID does not exist."
    }


def test_incomplete_symbol_is_rejected_before_any_request(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    answer = plugin.call("ticker", {"symbol": "USDT"})
    assert answer == {"error": "invalid symbol 'USDT': expected BASE_QUOTE such as ETH_USDT"}
    assert not plugin.fake.seen


def test_depth_levels_are_number_pairs_best_first(plugin: PluginHarness) -> None:
    data = plugin.call("depth", {"symbol": "ETH_USDT", "limit": "3"})["data"]
    assert set(data) == {"time", "asks", "bids"}
    assert isinstance(data["time"], int)
    assert len(data["asks"]) == len(data["bids"]) == 3
    for side in ("asks", "bids"):
        assert all(len(lvl) == 2 and all(isinstance(x, float) for x in lvl) for lvl in data[side])
    asks, bids = [p for p, _ in data["asks"]], [p for p, _ in data["bids"]]
    assert asks == sorted(asks) and bids == sorted(bids, reverse=True)
    assert bids[0] < asks[0]


def test_depth_limit_defaults_to_30_and_caps_at_okx_400(plugin: PluginHarness) -> None:
    assert len(plugin.call("depth", {"symbol": "ETH_USDT"})["data"]["asks"]) == 30
    assert len(plugin.call("depth", {"symbol": "ETH_USDT", "limit": 5000})["data"]["bids"]) == 400


def test_trades_are_typed_and_oldest_first(plugin: PluginHarness) -> None:
    data = plugin.call("trades", {"symbol": "ETH_USDT"})["data"]
    assert len(data) == 100
    for trade in data:
        assert set(trade) == {"id", "time", "price", "amount", "type"}
        assert isinstance(trade["id"], int) and isinstance(trade["time"], int)
        assert isinstance(trade["price"], float) and isinstance(trade["amount"], float)
        assert trade["type"] in ("buy", "sell")
    times = [t["time"] for t in data]
    assert times == sorted(times)


def test_records_page_through_candles_and_history(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    answer = plugin.call("records", {"symbol": "ETH_USDT", "period": "60", "limit": "2000"})
    rows = answer["data"]
    assert len(rows) == 2000
    assert all(len(r) == 6 and isinstance(r[0], int) for r in rows)
    assert all(isinstance(x, float) for r in rows for x in r[1:])
    steps = {b[0] - a[0] for a, b in itertools.pairwise(rows)}
    assert steps == {3600}  # contiguous, oldest first
    recent = plugin.fake.requests_to("/api/v5/market/candles")
    older = plugin.fake.requests_to("/api/v5/market/history-candles")
    assert recent[0].query["bar"] == "1H" and "after" not in recent[0].query
    assert len(recent) == 5 and len(older) == 6  # 1440 recent bars (300/page), 560 older (100/page)
    assert int(older[0].query["after"]) == rows[-1440][0] * 1000  # continues at the oldest seen
    assert isinstance(answer["raw"], list) and len(answer["raw"]) == 11


def test_records_default_limit_and_daily_bars(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    rows = plugin.call("records", {"symbol": "BTC_USDT", "period": 1440})["data"]
    assert len(rows) == 100 and rows[1][0] - rows[0][0] == 86400
    assert plugin.fake.requests_to("/api/v5/market/candles")[0].query["bar"] == "1Dutc"


def test_records_unsupported_period(plugin: PluginHarness) -> None:
    error = plugin.call("records", {"symbol": "ETH_USDT", "period": "7"})["error"]
    assert error.startswith("OKX: period 7 minutes not supported")


# ---- account (private, signed) ----


def test_accounts_from_trading_balance(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    data = plugin.call("accounts")["data"]
    assert {"currency": "USDT", "free": "10000", "frozen": "250"} in data
    assert {"currency": "BTC", "free": "0.2482982056277609", "frozen": "0"} in data
    assert all(set(a) == {"currency", "free", "frozen"} for a in data)
    [request] = signed(plugin, "/api/v5/account/balance")
    assert request.headers["OK-ACCESS-PASSPHRASE"] == PASSPHRASE
    assert "x-simulated-trading" not in request.headers


def test_assets_sum_trading_and_funding(plugin: PluginHarness) -> None:
    answer = plugin.call("assets")
    by_currency = {a["currency"]: a for a in answer["data"]}
    assert by_currency["USDT"] == {"currency": "USDT", "free": "10500", "frozen": "250"}
    assert by_currency["TUSD"] == {"currency": "TUSD", "free": "3000", "frozen": "0"}
    assert set(answer["raw"]) == {"trading", "funding"}


# ---- orders ----


def test_limit_order_lifecycle(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    params = {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.1"}
    placed = plugin.call("trade", params)["data"]
    inst, _, ord_id = placed["id"].partition(",")
    assert inst == "ETH-USDT" and ord_id.isdigit()
    [request] = signed(plugin, "/api/v5/trade/order")
    assert json.loads(request.body) == {
        "instId": "ETH-USDT",
        "tdMode": "cash",
        "side": "buy",
        "ordType": "limit",
        "px": "1000",
        "sz": "0.1",
    }

    order = plugin.call("order", {"id": placed["id"], "symbol": "ETH_USDT"})["data"]
    assert order == {
        "id": placed["id"],
        "symbol": "ETH_USDT",
        "amount": 0.1,
        "price": 1000.0,
        "deal_amount": 0.0,
        "avg_price": 0.0,
        "type": "buy",
        "status": "pending",
    }
    assert plugin.call("cancel", {"id": placed["id"], "symbol": "ETH_USDT"})["data"] is True
    assert plugin.call("order", {"id": placed["id"]})["data"]["status"] == "canceled"
    again = plugin.call("cancel", {"id": placed["id"]})["error"]
    assert again.startswith("OKX error 1: All operations failed: Order cancellation failed")
    assert "sCode 51400" in again


def test_market_buy_amount_is_quote_currency(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    params = {"symbol": "ETH_USDT", "type": "buy", "price": -1, "amount": 100}
    assert plugin.call("trade", params)["data"]["id"].startswith("ETH-USDT,")
    [request] = plugin.fake.requests_to("/api/v5/trade/order")
    body = json.loads(request.body)
    assert body["ordType"] == "market" and body["tgtCcy"] == "quote_ccy"
    assert body["sz"] == "100" and "px" not in body


def test_market_buy_order_reports_base_currency(plugin: PluginHarness) -> None:
    """Regression: a market buy's order read `amount` 100 (USDT, OKX's `sz`) next to
    `deal_amount` 0.0342 (ETH): both are ETH now, so `amount - deal_amount` means something."""
    params = {"symbol": "ETH_USDT", "type": "buy", "price": -1, "amount": 100}
    placed = plugin.call("trade", params)["data"]["id"]
    answer = plugin.call("order", {"id": placed})
    bought = round(100 / 2922.18, 8)
    assert answer["data"] == {
        "id": placed,
        "symbol": "ETH_USDT",
        "amount": bought,
        "price": 0.0,
        "deal_amount": bought,
        "avg_price": 2922.18,
        "type": "buy",
        "status": "filled",
    }
    raw = answer["raw"]["data"][0]
    assert (raw["sz"], raw["tgtCcy"]) == ("100", "quote_ccy")  # the USDT stays in `raw`
    listed = plugin.call("historyorders", {"symbol": "ETH_USDT", "limit": 5})["data"]
    assert next(o for o in listed if o["id"] == placed) == answer["data"]


@pytest.mark.parametrize(
    ("side", "tgt_ccy", "size", "amount"),
    [
        ("sell", None, "0.5", 0.5),  # OKX default for a market sell: base currency
        ("buy", "base_ccy", "0.25", 0.25),  # a market buy sized in ETH (via exchange.IO)
        ("sell", "quote_ccy", "1461.09", 0.5),  # a market sell sized in USDT
    ],
)
def test_every_market_order_reports_base_currency(
    plugin: PluginHarness, side: str, tgt_ccy: str | None, size: str, amount: float
) -> None:
    body = {"instId": "ETH-USDT", "tdMode": "cash", "side": side, "ordType": "market", "sz": size}
    if tgt_ccy:
        body["tgtCcy"] = tgt_ccy
    placed = plugin.call("__api_/api/v5/trade/order", body, http_method="POST")
    order_id = f"ETH-USDT,{placed['data']['data'][0]['ordId']}"
    order = plugin.call("order", {"id": order_id})["data"]
    assert order["amount"] == order["deal_amount"] == amount
    assert order["status"] == "filled" and order["avg_price"] == 2922.18


# ---- fields OKX may leave empty ("") or out ----


def test_balance_without_frozen_bal(plugin: PluginHarness) -> None:
    """Regression: `accounts` indexed `frozenBal` (KeyError -> "unexpected answer")."""
    plugin.fake.faults["/api/v5/account/balance"] = "sparse"
    try:
        accounts = plugin.call("accounts")
        assets = plugin.call("assets")
    finally:
        plugin.fake.faults.clear()
    assert {"currency": "USDT", "free": "0", "frozen": "0"} in accounts["data"], accounts
    assert "frozenBal" not in accounts["raw"]["data"][0]["details"][0]
    by_currency = {a["currency"]: a for a in assets["data"]}
    assert by_currency["USDT"] == {"currency": "USDT", "free": "500", "frozen": "0"}


def test_ticker_of_an_empty_book(plugin: PluginHarness) -> None:
    plugin.fake.faults["/api/v5/market/ticker"] = "sparse"
    try:
        answer = plugin.call("ticker", {"symbol": "ETH_USDT"})
    finally:
        plugin.fake.faults.clear()
    assert answer["raw"]["data"][0]["bidPx"] == ""
    data = answer["data"]
    assert {k: data[k] for k in ("buy", "sell", "last", "high", "low", "open")} == dict.fromkeys(
        ("buy", "sell", "last", "high", "low", "open"), "0"
    )
    assert data["vol"] == "0" and data["time"].isdigit()


def test_order_with_empty_prices(plugin: PluginHarness) -> None:
    """OKX sends "" for `avgPx`/`fillPx` before a fill and for `px` of a market order."""
    empty = plugin.fake.new_order(
        "ETH-USDT", "sell", "", "", "canceled", ordType="market", accFillSz="", avgPx=""
    )
    order = plugin.call("order", {"id": f"ETH-USDT,{empty['ordId']}"})["data"]
    assert (order["amount"], order["price"], order["deal_amount"], order["avg_price"]) == (
        0,
        0,
        0,
        0,
    )
    assert order["status"] == "canceled"
    filled = plugin.fake.new_order("ETH-USDT", "buy", "2900", "0.1", "filled", accFillSz="0.1")
    order = plugin.call("order", {"id": f"ETH-USDT,{filled['ordId']}"})["data"]
    assert (order["deal_amount"], order["avg_price"]) == (0.1, 0.0)  # avgPx ""


def test_trade_rejected_by_okx_shows_scode(plugin: PluginHarness) -> None:
    params = {"symbol": "ETH_USDT", "type": "buy", "price": "3000", "amount": "1000"}
    assert plugin.call("trade", params) == {
        "error": "OKX error 1: All operations failed: "
        "Order failed. Insufficient USDT balance in account. (sCode 51008)"
    }


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"type": "long", "price": "1", "amount": "1"}, "params.type must be 'buy' or 'sell'"),
        ({"type": "buy", "price": "abc", "amount": "1"}, "params.price must be a number"),
        ({"type": "buy", "price": "1"}, "missing params.amount"),
        ({"type": "sell", "price": "0", "amount": "1"}, "params.price must be positive or -1"),
        ({"type": "sell", "price": "5", "amount": "-1"}, "params.amount must be positive"),
    ],
)
def test_trade_bad_params(plugin: PluginHarness, params: dict, error: str) -> None:
    plugin.fake.seen.clear()
    answer = plugin.call("trade", {"symbol": "ETH_USDT", **params})
    assert answer["error"].startswith(error)
    assert not plugin.fake.requests_to("/api/v5/trade/order")


def test_open_orders_follow_the_after_cursor(plugin: PluginHarness) -> None:
    live = [
        o
        for o in plugin.fake.orders.values()
        if o["instId"] == "ETH-USDT" and o["state"] in ("live", "partially_filled")
    ]
    assert len(live) >= PENDING_ORDERS
    plugin.fake.seen.clear()
    answer = plugin.call("orders", {"symbol": "ETH_USDT"})
    orders = answer["data"]
    assert sorted(o["id"] for o in orders) == sorted(f"ETH-USDT,{o['ordId']}" for o in live)
    requests = signed(plugin, "/api/v5/trade/orders-pending")
    assert len(requests) == len(live) // 100 + 1
    assert "after" not in requests[0].query
    assert requests[1].query["after"] == orders[99]["id"].split(",")[1]
    for order in orders:
        assert set(order) == ORDER_FIELDS and order["symbol"] == "ETH_USDT"
        assert order["status"] in ("pending", "partial-filled")
        assert all(isinstance(order[k], float) for k in ("amount", "price", "deal_amount"))
    assert any(o["status"] == "partial-filled" and o["avg_price"] == 2000.0 for o in orders)


def test_order_lookups(plugin: PluginHarness) -> None:
    assert plugin.call("order", {"id": "ETH-USDT,1"}) == {
        "error": "OKX error 51603: Order does not exist"
    }
    assert plugin.call("order", {"id": "12345"})["error"].startswith("order id '12345' has no")
    some = next(o for o in plugin.fake.orders.values() if o["state"] == "filled")
    by_bare_id = plugin.call("order", {"id": some["ordId"], "symbol": "ETH_USDT"})["data"]
    assert by_bare_id["status"] == "filled" and by_bare_id["deal_amount"] == 0.1
    assert by_bare_id["avg_price"] == float(some["avgPx"])


def test_history_orders_limit_since_and_statuses(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    first = plugin.call("historyorders", {"symbol": "ETH_USDT", "since": 0, "limit": 0})["data"]
    assert len(first) == 100 and len(plugin.fake.requests_to("/api/v5/trade/orders-history")) == 1
    assert {o["status"] for o in first} == {"filled", "canceled", "partial-canceled"}
    assert all(set(o) == ORDER_FIELDS for o in first)

    plugin.fake.seen.clear()
    more = plugin.call("historyorders", {"symbol": "ETH_USDT", "since": 0, "limit": 120})["data"]
    pages = plugin.fake.requests_to("/api/v5/trade/orders-history")
    assert len(more) == 120 and [p.query["limit"] for p in pages] == ["100", "20"]
    assert len({o["id"] for o in more}) == 120

    history = sorted(
        (o for o in plugin.fake.orders.values() if o["state"] in ("filled", "canceled")),
        key=lambda o: int(o["cTime"]),
    )
    since = int(history[-10]["cTime"])
    recent = plugin.call("historyorders", {"symbol": "ETH_USDT", "since": since, "limit": 0})
    assert {o["id"].split(",")[1] for o in recent["data"]} == {
        o["ordId"] for o in history if int(o["cTime"]) >= since
    }


# ---- exchange.IO ----


def test_io_get_signs_the_query(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    params = {"instType": "SPOT", "instId": "BTC-USDT"}
    answer = plugin.call("__api_/api/v5/trade/orders-pending", params, http_method="GET")
    assert answer["data"]["code"] == "0"
    assert [o["instId"] for o in answer["data"]["data"]] == ["BTC-USDT"]
    [request] = signed(plugin, "/api/v5/trade/orders-pending")
    assert request.method == "GET" and request.query == params


def test_io_post_sends_json_body(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    params = {"instId": "ETH-USDT", "ordId": "42"}
    answer = plugin.call("__api_/api/v5/trade/cancel-order", params, http_method="post")
    assert "sCode 51400" in answer["error"]
    [request] = signed(plugin, "/api/v5/trade/cancel-order")
    assert request.method == "POST" and json.loads(request.body) == params


def test_io_needs_http_method_and_a_path(plugin: PluginHarness) -> None:
    error = plugin.call("__api_/api/v5/account/balance")["error"]
    assert error == "missing Http-Method header for an exchange.IO api call"
    error = plugin.call("__api_//evil.example/x", http_method="GET")["error"]
    assert error.startswith("invalid API path")
    assert plugin.call("__api_/api/v5/x", http_method="PATCH")["error"].startswith("unsupported")


# ---- keys ----


def test_simulate_sends_demo_trading_header(plugin: PluginHarness) -> None:
    plugin.fake.seen.clear()
    secret = f"{DEMO_SECRET},{DEMO_PASSPHRASE},simulate"
    assert "data" in plugin.call("accounts", key=DEMO_KEY, secret=secret)
    [request] = signed(plugin, "/api/v5/account/balance")
    assert request.headers["x-simulated-trading"] == "1"
    # a demo key without the flag, or a live key with it, is refused by OKX
    demo_as_live = plugin.call("accounts", key=DEMO_KEY, secret=f"{DEMO_SECRET},{DEMO_PASSPHRASE}")
    live_as_demo = plugin.call("accounts", secret=f"{SECRET},{PASSPHRASE},simulate")
    for answer in (demo_as_live, live_as_demo):
        assert answer["error"] == "OKX error 50101: APIKey does not match current environment."


@pytest.mark.parametrize(
    "secret",
    [
        f"{DEMO_SECRET}, {DEMO_PASSPHRASE}, simulate",
        f" {DEMO_SECRET} ,{DEMO_PASSPHRASE} , Simulate ",
        f"{DEMO_SECRET},{DEMO_PASSPHRASE},SIMULATE ",
    ],
)
def test_simulate_flag_with_spaces_still_sends_demo_header(
    plugin: PluginHarness, secret: str
) -> None:
    """Regression: a spaced flag was accepted as demo but sent without the header (live orders)."""
    plugin.fake.seen.clear()
    answer = plugin.call(
        "trade",
        {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.01"},
        key=DEMO_KEY,
        secret=secret,
    )
    assert "data" in answer, answer
    [request] = signed(plugin, "/api/v5/trade/order")
    assert request.headers["x-simulated-trading"] == "1"


@pytest.mark.parametrize(
    "third", ["simulated", "simulate,", "demo", "simu late", "true", "1", "simulate live"]
)
def test_unrecognized_simulate_field_fails_closed(plugin: PluginHarness, third: str) -> None:
    plugin.fake.seen.clear()
    secret = f"{DEMO_SECRET},{DEMO_PASSPHRASE},{third}"
    answer = plugin.call(
        "trade",
        {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.01"},
        key=DEMO_KEY,
        secret=secret,
    )
    assert answer["error"].startswith("OKX: "), answer
    assert not plugin.fake.requests_to("/api/v5/trade/order")


@pytest.mark.parametrize("third", ["simulate\n", "\tsimulate", "simu\x00late"])
def test_control_characters_in_the_secret_are_refused(plugin: PluginHarness, third: str) -> None:
    """Whitespace other than spaces never reaches the flag parser: refused before any order."""
    plugin.fake.seen.clear()
    secret = f"{DEMO_SECRET},{DEMO_PASSPHRASE},{third}"
    answer = plugin.call(
        "trade",
        {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.01"},
        key=DEMO_KEY,
        secret=secret,
    )
    assert "must not contain control characters" in answer["error"], answer
    assert not plugin.fake.requests_to("/api/v5/trade/order")


@pytest.mark.parametrize(
    ("key", "secret", "error"),
    [
        (API_KEY, f"{SECRET},wrongpass", "OKX error 50105: Request header OK-ACCESS-PASSPHRASE"),
        (API_KEY, f"wrongsecret,{PASSPHRASE}", "OKX error 50113: Invalid Sign."),
        ("unknownkey999", f"{SECRET},{PASSPHRASE}", "OKX error 50111: Invalid OK-ACCESS-KEY."),
    ],
)
def test_rejected_credentials(plugin: PluginHarness, key: str, secret: str, error: str) -> None:
    assert plugin.call("accounts", key=key, secret=secret)["error"].startswith(error)


@pytest.mark.parametrize(
    ("key", "secret", "error"),
    [
        (API_KEY, SECRET, "OKX: secret_key must be 'secret,passphrase' or"),
        (API_KEY, f"{SECRET},", "OKX: secret_key must be 'secret,passphrase' or"),
        (API_KEY, f"{SECRET},{PASSPHRASE},live,x", "OKX: secret_key must be"),
        (API_KEY, f"{SECRET},{PASSPHRASE},live", "OKX: the third part of secret_key may only"),
        ("", f"{SECRET},{PASSPHRASE}", "OKX: access_key is empty"),
    ],
)
def test_malformed_secret_key_fails_without_traffic(
    plugin: PluginHarness, key: str, secret: str, error: str
) -> None:
    plugin.fake.seen.clear()
    answer = plugin.call("orders", {"symbol": "ETH_USDT"}, key=key, secret=secret)
    assert answer["error"].startswith(error)
    assert SECRET not in answer["error"] and PASSPHRASE not in answer["error"]
    assert not plugin.fake.seen
    # market data does not need the keys
    assert "data" in plugin.call("ticker", {"symbol": "ETH_USDT"}, key=key, secret=secret)
