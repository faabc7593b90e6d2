"""The README's "adapter in under 100 lines" guide, run as written against a small fake Binance
that verifies the API key header, timestamp and hex HMAC-SHA256 query signature."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dial.plugin import PluginServer
from tests.fake_okx import BackgroundLoop, PluginClient

README = Path(__file__).resolve().parents[1] / "README.md"
KEY, SECRET = "binancekey1234", "binancesecret5678"


def guide_code() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    [code] = [b for b in blocks if "class Binance(Exchange)" in b]
    return code


class FakeBinance:
    def __init__(self) -> None:
        self.orders: dict[int, dict[str, Any]] = {}
        self.app = web.Application()
        self.app.router.add_get("/api/v3/ticker/24hr", self.ticker)
        self.app.router.add_get("/api/v3/depth", self.depth)
        self.app.router.add_get("/api/v3/klines", self.klines)
        self.app.router.add_get("/api/v3/account", self.signed(self.account))
        self.app.router.add_route("*", "/api/v3/order", self.signed(self.order))

    @staticmethod
    def error(code: int, msg: str, status: int = 400) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def signed(self, handler: Any) -> Any:
        async def check(request: web.Request) -> web.Response:
            if request.headers.get("X-MBX-APIKEY") != KEY:
                return self.error(-2015, "Invalid API-key, IP, or permissions for action.", 401)
            query, _, signature = request.query_string.rpartition("&signature=")
            good = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(good, signature):
                return self.error(-1022, "Signature for this request is not valid.")
            if abs(int(request.query["timestamp"]) - time.time() * 1000) > 5000:
                return self.error(-1021, "Timestamp for this request is outside of the recvWindow.")
            return await handler(request)

        return check

    async def ticker(self, request: web.Request) -> web.Response:
        if request.query["symbol"] != "ETHUSDT":
            return self.error(-1121, "Invalid symbol.")
        return web.json_response({
            "symbol": "ETHUSDT", "bidPrice": "2922.18", "askPrice": "2922.19",
            "highPrice": "2955.00", "lowPrice": "2775.15", "openPrice": "2787.72",
            "lastPrice": "2922.18", "volume": "249400.8881", "closeTime": 1731028903911,
        })  # fmt: skip

    async def depth(self, request: web.Request) -> web.Response:
        n = int(request.query["limit"])
        return web.json_response({
            "lastUpdateId": 1, "asks": [[str(2922.19 + i), "1.5"] for i in range(n)],
            "bids": [[str(2922.18 - i), "0.5"] for i in range(n)],
        })  # fmt: skip

    async def klines(self, request: web.Request) -> web.Response:
        n, start = int(request.query["limit"]), 1_700_000_000_000
        rows = [[start + i * 3_600_000, "1.1", "2.2", "0.9", "1.5", "10", 0, "0", 1, "0", "0", "0"]
                for i in range(n)]  # fmt: skip
        return web.json_response(rows)

    async def account(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"balances": [{"asset": "USDT", "free": "1000.5", "locked": "20.0"}]}
        )

    async def order(self, request: web.Request) -> web.Response:
        q = request.query
        if request.method == "POST":
            order_id = len(self.orders) + 28
            quantity = q.get("quantity") or q["quoteOrderQty"]
            self.orders[order_id] = {
                "orderId": order_id, "side": q["side"], "status": "NEW", "type": q["type"],
                "price": q.get("price", "0"), "origQty": quantity, "executedQty": "0",
                "cummulativeQuoteQty": "0",
            }  # fmt: skip
            return web.json_response({"orderId": order_id, "status": "NEW"})
        order = self.orders.get(int(q["orderId"]))
        if order is None:
            return self.error(-2013, "Order does not exist.")
        if request.method == "DELETE":
            order["status"] = "CANCELED"
        return web.json_response(order)


@pytest.fixture(scope="module")
def binance() -> Iterator[tuple[PluginClient, FakeBinance]]:
    namespace: dict[str, Any] = {"__name__": "guide"}
    exec(compile(guide_code(), "README.md:binance.py", "exec"), namespace)  # the guide, verbatim
    fake = FakeBinance()
    loop = BackgroundLoop()
    runner = web.AppRunner(fake.app)
    loop.run(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server = PluginServer([namespace["Binance"](f"http://127.0.0.1:{port}")], "127.0.0.1", 0)
    loop.run(server.start())
    yield PluginClient(server.url), fake
    loop.run(server.stop())
    loop.run(runner.cleanup())
    loop.close()


def test_guide_is_under_100_lines() -> None:
    assert len(guide_code().splitlines()) < 100


def test_guide_adapter_market_data(binance: tuple[PluginClient, FakeBinance]) -> None:
    plugin, _ = binance
    ticker = plugin.call("ticker", {"symbol": "eth_usdt"}, path="/Binance")["data"]
    assert ticker == {
        "symbol": "ETH_USDT", "buy": "2922.18", "sell": "2922.19", "high": "2955.00",
        "low": "2775.15", "open": "2787.72", "last": "2922.18", "vol": "249400.8881",
        "time": "1731028903911",
    }  # fmt: skip
    error = plugin.call("ticker", {"symbol": "FOO_BAR"}, path="/Binance")["error"]
    assert error == "Binance error -1121: Invalid symbol."
    depth = plugin.call("depth", {"symbol": "ETH_USDT", "limit": "5"}, path="/Binance")["data"]
    assert len(depth["asks"]) == 5 and depth["bids"][0] == [2922.18, 0.5]
    rows = plugin.call("records", {"symbol": "ETH_USDT", "period": "60"}, path="/Binance")["data"]
    assert len(rows) == 100 and rows[0] == [1_700_000_000, 1.1, 2.2, 0.9, 1.5, 10.0]
    assert plugin.call("trades", {"symbol": "ETH_USDT"}, path="/Binance") == {
        "error": "not supported"
    }


def test_guide_adapter_signed_calls(binance: tuple[PluginClient, FakeBinance]) -> None:
    plugin, fake = binance

    def call(method: str, params: dict | None = None, secret: str = SECRET) -> dict:
        return plugin.call(method, params, path="/Binance", key=KEY, secret=secret)

    assert call("accounts")["data"] == [{"currency": "USDT", "free": "1000.5", "frozen": "20.0"}]
    assert call("accounts", secret="wrong")["error"] == (
        "Binance error -1022: Signature for this request is not valid."
    )
    placed = call("trade", {"symbol": "ETH_USDT", "type": "buy", "price": "1000", "amount": "0.5"})
    order_id = placed["data"]["id"]
    assert order_id == "ETH_USDT,28"
    assert call("order", {"id": order_id})["data"] == {
        "id": order_id, "symbol": "ETH_USDT", "amount": 0.5, "price": 1000.0,
        "deal_amount": 0.0, "avg_price": 0.0, "type": "buy", "status": "pending",
    }  # fmt: skip
    assert call("cancel", {"id": order_id})["data"] is True
    assert call("order", {"id": order_id})["data"]["status"] == "canceled"
    market = call("trade", {"symbol": "ETH_USDT", "type": "buy", "price": -1, "amount": 50})
    assert fake.orders[int(market["data"]["id"].split(",")[1])]["type"] == "MARKET"
    io = plugin.call("__api_/api/v3/account", path="/Binance", key=KEY, secret=SECRET,
                     http_method="GET")  # fmt: skip
    assert io["data"]["balances"][0]["asset"] == "USDT"
