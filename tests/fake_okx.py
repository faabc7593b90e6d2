"""A local fake of the OKX v5 REST API, strict where the real one is strict.

Private endpoints verify `OK-ACCESS-KEY`, the passphrase, the timestamp (ISO-8601 ms, within 30 s)
and the HMAC-SHA256 signature over `timestamp + METHOD + path?query + body`, and the
`x-simulated-trading` header against the key's environment, answering with OKX's real error
codes (50101..50113). Payloads copy OKX's shapes: every number a string, newest first, `after`
cursors on order lists, the 1440-bar window of /market/candles, `sCode`/`sMsg` on order errors.
`faults[path]` makes one endpoint misbehave: "html" (502 page), "slow" (sleeps), "ratelimit",
"broken" (JSON lacking fields), "sparse" (ticker of an empty book: "" prices; balance without
`frozenBal`, "" `availBal`). Market orders fill at once at the instrument's price.

Run standalone (used by benchmarks/plugin.py): `python -m tests.fake_okx --port 8443`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from aiohttp import web

API_KEY, SECRET, PASSPHRASE = "accesskey123", "secretkey123", "passphrase123"
DEMO_KEY, DEMO_SECRET, DEMO_PASSPHRASE = "demokey456", "demosecret456", "demopass456"
INSTRUMENTS = {"BTC-USDT": 68000.0, "ETH-USDT": 2922.18, "LTC-USDT": 72.5}
BAR_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1H": 3_600_000,
    "2H": 7_200_000,
    "4H": 14_400_000,
    "6Hutc": 21_600_000,
    "12Hutc": 43_200_000,
    "1Dutc": 86_400_000,
    "1Wutc": 604_800_000,
}
RECENT_BARS = 1440  # /market/candles serves only these; older ones live on /history-candles
HISTORY_BARS = 3000
PENDING_ORDERS = 230  # ETH-USDT: more than two pages of 100
HISTORY_ORDERS = 150
SLOW_SECONDS = 3.0

Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def _ok(data: list[Any]) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": data})


def _err(code: str, msg: str, status: int = 200, data: list[Any] | None = None) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "data": data or []}, status=status)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _s(x: float) -> str:
    return format(Decimal(repr(round(x, 8))).normalize(), "f")


@dataclass
class Seen:
    """One request as the fake received it (tests assert on these)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str


class FakeOkx:
    def __init__(self) -> None:
        self.keys = {
            API_KEY: (SECRET, PASSPHRASE, False),
            DEMO_KEY: (DEMO_SECRET, DEMO_PASSPHRASE, True),
        }
        self.faults: dict[str, str] = {}
        self.seen: deque[Seen] = deque(maxlen=2000)
        self.record = True
        self.trading = {"USDT": ["10000", "250"], "BTC": ["0.2482982056277609", "0"]}
        self.trading["ETH"] = ["3.5", "0.5"]
        self.funding = {"USDT": ["500", "0"], "TUSD": ["3000", "0"]}
        self.orders: dict[str, dict[str, Any]] = {}
        self._next_id = 700_000_000_000_000_000
        self._seed_orders()
        self.app = web.Application()
        public: dict[str, Handler] = {
            "/api/v5/market/ticker": self.ticker,
            "/api/v5/market/books": self.books,
            "/api/v5/market/trades": self.trades,
            "/api/v5/market/candles": self.candles,
            "/api/v5/market/history-candles": self.candles,
        }
        private: dict[tuple[str, str], Handler] = {
            ("GET", "/api/v5/account/balance"): self.balance,
            ("GET", "/api/v5/asset/balances"): self.asset_balances,
            ("POST", "/api/v5/trade/order"): self.place_order,
            ("GET", "/api/v5/trade/order"): self.get_order,
            ("GET", "/api/v5/trade/orders-pending"): self.orders_pending,
            ("GET", "/api/v5/trade/orders-history"): self.orders_history,
            ("POST", "/api/v5/trade/cancel-order"): self.cancel_order,
        }
        self._public, self._private = public, private
        self.app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ----

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # ---- routing, faults, authentication ----

    async def _route(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.text()
        if self.record:
            self.seen.append(
                Seen(request.method, path, dict(request.query), dict(request.headers), body)
            )
        fault = self.faults.get(path)
        if fault == "html":
            html = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
            html += "Gateway</h1></center><hr><center>cloudflare</center></body></html>"
            return web.Response(status=502, text=html, content_type="text/html")
        if fault == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if fault == "ratelimit":
            return _err("50011", "Too Many Requests", 429)
        if fault == "broken":
            return _ok([{"instId": "ETH-USDT"}])
        if path in self._public and request.method == "GET":
            return await self._public[path](request, body)
        handler = self._private.get((request.method, path))
        if handler is None:
            return web.Response(status=404, text="<html><body>404 Not Found</body></html>",
                                content_type="text/html")  # fmt: skip
        problem = self._authenticate(request, body)
        return problem or await handler(request, body)

    def _authenticate(self, request: web.Request, body: str) -> web.Response | None:
        h = request.headers
        key, sign = h.get("OK-ACCESS-KEY"), h.get("OK-ACCESS-SIGN")
        stamp, passphrase = h.get("OK-ACCESS-TIMESTAMP"), h.get("OK-ACCESS-PASSPHRASE")
        if not key:
            return _err("50103", "Request header OK-ACCESS-KEY cannot be empty.", 401)
        if not passphrase:
            return _err("50104", "Request header OK-ACCESS-PASSPHRASE cannot be empty.", 401)
        if not sign:
            return _err("50106", "Request header OK-ACCESS-SIGN cannot be empty.", 401)
        if not stamp:
            return _err("50107", "Request header OK-ACCESS-TIMESTAMP cannot be empty.", 401)
        if key not in self.keys:
            return _err("50111", "Invalid OK-ACCESS-KEY.", 401)
        secret, expected_passphrase, demo = self.keys[key]
        if (h.get("x-simulated-trading") == "1") != demo:
            return _err("50101", "APIKey does not match current environment.", 401)
        if passphrase != expected_passphrase:
            return _err("50105", "Request header OK-ACCESS-PASSPHRASE incorrect.", 401)
        try:
            if len(stamp) != 24 or not stamp.endswith("Z"):
                raise ValueError
            sent = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return _err("50112", "Invalid OK-ACCESS-TIMESTAMP.", 401)
        if abs(time.time() - sent.timestamp()) > 30:
            return _err("50102", "Timestamp request expired.", 401)
        message = f"{stamp}{request.method}{request.raw_path}{body}".encode()
        good = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
        if not hmac.compare_digest(good.decode(), sign):
            return _err("50113", "Invalid Sign.", 401)
        return None

    @staticmethod
    def _instrument(request: web.Request) -> str | None:
        inst = request.query.get("instId", "")
        return inst if inst in INSTRUMENTS else None

    # ---- public market data ----

    async def ticker(self, request: web.Request, body: str) -> web.Response:
        inst = self._instrument(request)
        if inst is None:
            return _err("51001", "Instrument ID does not exist.")
        last = INSTRUMENTS[inst]
        if self.faults.get(request.path) == "sparse":  # an instrument with an empty book
            return _ok([{"instType": "SPOT", "instId": inst, "last": "", "lastSz": "",
                         "askPx": "", "askSz": "", "bidPx": "", "bidSz": "", "open24h": "",
                         "high24h": "", "low24h": "", "volCcy24h": "0", "vol24h": "0",
                         "ts": str(_now_ms()), "sodUtc0": "", "sodUtc8": ""}])  # fmt: skip
        return _ok([{
            "instType": "SPOT", "instId": inst, "last": _s(last), "lastSz": "0.1",
            "askPx": _s(last + 0.01), "askSz": "10.5", "bidPx": _s(last), "bidSz": "3.2",
            "open24h": _s(last * 0.954), "high24h": _s(last * 1.0115), "low24h": _s(last * 0.95),
            "volCcy24h": _s(last * 249400.888156), "vol24h": "249400.888156",
            "ts": str(_now_ms()), "sodUtc0": _s(last * 0.97), "sodUtc8": _s(last * 0.98),
        }])  # fmt: skip

    async def books(self, request: web.Request, body: str) -> web.Response:
        inst = self._instrument(request)
        if inst is None:
            return _err("51001", "Instrument ID does not exist.")
        size = int(request.query.get("sz", "1"))
        if not 1 <= size <= 400:
            return _err("51000", "Parameter sz error", 400)
        mid = INSTRUMENTS[inst]
        asks = [[_s(mid + 0.01 * (i + 1)), _s(0.5 + i), "0", str(i + 1)] for i in range(size)]
        bids = [[_s(mid - 0.01 * i), _s(0.25 + i), "0", str(i + 2)] for i in range(size)]
        return _ok([{"asks": asks, "bids": bids, "ts": str(_now_ms()), "seqId": 123456}])

    async def trades(self, request: web.Request, body: str) -> web.Response:
        inst = self._instrument(request)
        if inst is None:
            return _err("51001", "Instrument ID does not exist.")
        limit = min(int(request.query.get("limit", "100")), 500)
        now, px = _now_ms(), INSTRUMENTS[inst]
        return _ok([{
            "instId": inst, "side": "buy" if i % 3 else "sell", "sz": _s(0.01 * (i + 1)),
            "px": _s(px - 0.01 * i), "source": "0", "tradeId": str(242720720 - i),
            "ts": str(now - 150 * i),
        } for i in range(limit)])  # fmt: skip

    async def candles(self, request: web.Request, body: str) -> web.Response:
        inst = self._instrument(request)
        if inst is None:
            return _err("51001", "Instrument ID does not exist.")
        bar = request.query.get("bar", "1m")
        if bar not in BAR_MS:
            return _err("51000", "Parameter bar error", 400)
        history = request.path.endswith("history-candles")
        most = 100 if history else 300
        limit = int(request.query.get("limit", "100"))
        if not 1 <= limit <= most:
            return _err("51000", "Parameter limit error", 400)
        step = BAR_MS[bar]
        newest = _now_ms() // step * step
        available = HISTORY_BARS if history else RECENT_BARS
        after = request.query.get("after")
        start = 0 if after is None else max(0, (newest - int(after)) // step + 1)
        rows = []
        for i in range(start, min(start + limit, available)):
            ts = newest - i * step
            o = INSTRUMENTS[inst] + (ts // step % 97) * 0.01
            c = o + 0.05
            confirm = "0" if i == 0 else "1"
            vol = _s(10 + ts // step % 13)
            rows.append([str(ts), _s(o), _s(c + 0.1), _s(o - 0.1), _s(c), vol, vol, vol, confirm])
        return _ok(rows)

    # ---- private: account ----

    async def balance(self, request: web.Request, body: str) -> web.Response:
        details = [
            {"ccy": ccy, "availBal": free, "frozenBal": frozen, "ordFrozen": frozen,
             "cashBal": _s(float(free) + float(frozen)), "eq": _s(float(free) + float(frozen)),
             "availEq": "", "uTime": str(_now_ms())}
            for ccy, (free, frozen) in self.trading.items()
        ]  # fmt: skip
        if self.faults.get(request.path) == "sparse":  # fields OKX may leave out or empty
            for d in details:
                del d["frozenBal"]
                d["availBal"] = ""
        return _ok([{"totalEq": "12345.6", "uTime": str(_now_ms()), "details": details}])

    async def asset_balances(self, request: web.Request, body: str) -> web.Response:
        return _ok([
            {"ccy": ccy, "bal": _s(float(free) + float(frozen)), "availBal": free,
             "frozenBal": frozen}
            for ccy, (free, frozen) in self.funding.items()
        ])  # fmt: skip

    # ---- private: orders ----

    def new_order(self, inst: str, side: str, px: str, sz: str, state: str, **extra: Any) -> dict:
        self._next_id += 1
        now = _now_ms()
        order = {
            "instType": "SPOT", "instId": inst, "ordId": str(self._next_id), "clOrdId": "",
            "px": px, "sz": sz, "ordType": "limit", "side": side, "state": state,
            "accFillSz": "0", "avgPx": "", "fillPx": "", "tdMode": "cash", "fee": "0",
            "cTime": str(now), "uTime": str(now),
        }  # fmt: skip
        order.update(extra)
        self.orders[order["ordId"]] = order
        return order

    def _seed_orders(self) -> None:
        start = _now_ms() - 3_600_000
        for i in range(HISTORY_ORDERS):
            state = "filled" if i % 3 == 0 else "canceled"
            fill = {"filled": "0.1", "canceled": "0.04" if i % 3 == 1 else "0"}[state]
            avg = "" if fill == "0" else _s(2900 + i)
            self.new_order("ETH-USDT", "buy" if i % 2 else "sell", _s(2900 + i), "0.1", state,
                            accFillSz=fill, avgPx=avg, cTime=str(start + i * 1000))  # fmt: skip
        for i in range(PENDING_ORDERS):
            fill, state = ("0.02", "partially_filled") if i % 10 == 0 else ("0", "live")
            self.new_order("ETH-USDT", "buy", _s(2000 + i), "0.25", state, accFillSz=fill,
                            avgPx="2000" if fill != "0" else "")  # fmt: skip
        self.new_order("BTC-USDT", "sell", "70000", "0.01", "live")

    def _page(self, request: web.Request, states: set[str]) -> web.Response:
        q = request.query
        if q.get("instType") != "SPOT":
            return _err("51000", "Parameter instType error", 400)
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= 100:
            return _err("51000", "Parameter limit error", 400)
        after, begin = int(q.get("after", "0")), int(q.get("begin", "0"))
        found = sorted(
            (o for o in self.orders.values()
             if o["state"] in states and (not q.get("instId") or o["instId"] == q["instId"])
             and (not after or int(o["ordId"]) < after) and int(o["cTime"]) >= begin),
            key=lambda o: int(o["ordId"]), reverse=True,
        )  # fmt: skip
        return _ok(found[:limit])

    async def orders_pending(self, request: web.Request, body: str) -> web.Response:
        return self._page(request, {"live", "partially_filled"})

    async def orders_history(self, request: web.Request, body: str) -> web.Response:
        return self._page(request, {"filled", "canceled", "mmp_canceled"})

    async def get_order(self, request: web.Request, body: str) -> web.Response:
        order = self.orders.get(request.query.get("ordId", ""))
        if order is None or order["instId"] != request.query.get("instId"):
            return _err("51603", "Order does not exist")
        return _ok([order])

    async def place_order(self, request: web.Request, body: str) -> web.Response:
        try:
            o = json.loads(body)
        except ValueError:
            return _err("50002", "Json data format error", 400)
        inst, side, kind = o.get("instId"), o.get("side"), o.get("ordType")
        if inst not in INSTRUMENTS:
            return _err("51001", "Instrument ID does not exist.")
        if o.get("tdMode") != "cash" or side not in ("buy", "sell"):
            return _err("51000", "Parameter tdMode error", 400)
        if kind not in ("limit", "market") or (kind == "limit") != ("px" in o):
            return _err("51000", "Parameter px error", 400)
        sz = Decimal(o.get("sz", "0"))
        px = Decimal(o.get("px", str(INSTRUMENTS[inst])))
        if sz <= 0:
            return _err("51000", "Parameter sz error", 400)
        cost = sz if kind == "market" and o.get("tgtCcy") == "quote_ccy" else sz * px
        if side == "buy" and cost > Decimal(self.trading["USDT"][0]):
            fail = {"clOrdId": "", "ordId": "", "sCode": "51008", "tag": "",
                    "sMsg": "Order failed. Insufficient USDT balance in account."}  # fmt: skip
            return _err("1", "All operations failed", 200, [fail])
        if kind == "market":  # fills at once, at the instrument's price, as OKX reports it
            order = self.new_order(inst, side, "", o["sz"], "filled", ordType=kind,
                                   tgtCcy=o.get("tgtCcy", ""), **_market_fill(o, px))  # fmt: skip
        else:
            order = self.new_order(inst, side, o["px"], o["sz"], "live", ordType=kind)
        placed = {"clOrdId": "", "ordId": order["ordId"], "sCode": "0", "sMsg": "Order placed",
                  "tag": "", "ts": str(_now_ms())}  # fmt: skip
        return _ok([placed])

    async def cancel_order(self, request: web.Request, body: str) -> web.Response:
        o = json.loads(body or "{}")
        order = self.orders.get(o.get("ordId", ""))
        if (
            order is None
            or order["instId"] != o.get("instId")
            or order["state"]
            not in (
                "live",
                "partially_filled",
            )
        ):
            fail = {"clOrdId": "", "ordId": o.get("ordId", ""), "sCode": "51400",
                    "sMsg": "Order cancellation failed as the order has been filled, canceled "
                    "or does not exist."}  # fmt: skip
            return _err("1", "All operations failed", 200, [fail])
        order["state"] = "canceled"
        return _ok([{"clOrdId": "", "ordId": order["ordId"], "sCode": "0", "sMsg": ""}])


def _market_fill(o: dict[str, Any], px: Decimal) -> dict[str, str]:
    """A market order's fill: `sz` is quote currency when tgtCcy says so (a buy's default)."""
    unit = o.get("tgtCcy") or ("quote_ccy" if o["side"] == "buy" else "base_ccy")
    size = Decimal(o["sz"])
    base = (size / px).quantize(Decimal("0.00000001")) if unit == "quote_ccy" else size
    return {"accFillSz": _s(float(base)), "avgPx": _s(float(px)), "fillPx": _s(float(px))}


class BackgroundLoop:
    """An asyncio loop in a daemon thread, for running servers next to synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class PluginClient:
    """Posts to a plugin server exactly as the FMZ docker does (blocking, for tests)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(
        self, body: Any, path: str = "/OKX", headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> tuple[int, Any]:  # fmt: skip
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data if method == "POST" else None, method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, path: str = "/OKX",
        key: str = API_KEY, secret: str = f"{SECRET},{PASSPHRASE}",
        http_method: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        body = {"access_key": key, "secret_key": secret, "nonce": time.time_ns(),
                "method": method, "params": params or {}}  # fmt: skip
        headers = {"Http-Method": http_method} if http_method else None
        status, answer = self.post(body, path, headers)
        assert status == 200, (status, answer)
        assert set(answer) in ({"data", "raw"}, {"error"}), answer
        return answer


class PluginHarness(PluginClient):
    """The fake OKX plus a `PluginServer` on free ports, driven from synchronous tests.

    Exchanges served: /OKX (the fake), /OKX-SLOW (0.5 s timeout), /OKX-DOWN (nothing listening),
    /OKX-NODNS (api base `http://nonexistent.invalid`: the `.invalid` TLD never resolves, RFC 6761),
    /BARE (an `Exchange` overriding nothing) and /BUGGY (an adapter that crashes)."""

    def __init__(self) -> None:
        from dial.plugin import Exchange, PluginServer
        from dial.plugin.okx import Okx

        class Buggy(Exchange):
            name = "BUGGY"

            async def ticker(self, call: Any, symbol: Any) -> Any:
                raise RuntimeError("adapter bug")

        self.bg = BackgroundLoop()
        self.fake = FakeOkx()
        self.bg.run(self.fake.start())
        with socket.socket() as probe:  # a port with nothing listening
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        exchanges = [
            Okx(self.fake.url),
            Okx(self.fake.url, name="OKX-SLOW", timeout=0.5),
            Okx(f"http://127.0.0.1:{closed_port}", name="OKX-DOWN"),
            Okx("http://nonexistent.invalid", name="OKX-NODNS", timeout=5),
            Exchange(name="BARE"),
            Buggy(),
        ]
        self.server = PluginServer(exchanges, "127.0.0.1", 0)
        self.bg.run(self.server.start())
        super().__init__(self.server.url)

    def close(self) -> None:
        self.bg.run(self.server.stop())
        self.bg.run(self.fake.stop())
        self.bg.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OKX v5 REST server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async def serve() -> None:
        fake = FakeOkx()
        fake.record = False
        await fake.start("127.0.0.1", args.port)
        print(f"fake OKX at {fake.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
