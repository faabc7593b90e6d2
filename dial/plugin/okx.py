"""OKX v5 spot adapter: every FMZ protocol method against the real OKX REST API.

`secret_key` carries `secret,passphrase[,simulate]`; `simulate` adds `x-simulated-trading: 1`
(OKX demo trading). Private requests are signed with HMAC-SHA256 over
`timestamp + METHOD + requestPath(+query) + body`, base64-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from dial.plugin.exchange import Call, Exchange, PluginError, Reply, Symbol, UpstreamError

__all__ = ["Okx"]

#: FMZ period in minutes -> OKX `bar`. Six hours and longer use the UTC-aligned bars.
BARS = {
    1: "1m",
    3: "3m",
    5: "5m",
    15: "15m",
    30: "30m",
    60: "1H",
    120: "2H",
    240: "4H",
    360: "6Hutc",
    720: "12Hutc",
    1440: "1Dutc",
    10080: "1Wutc",
}
#: OKX order `state` -> FMZ order status.
STATES = {
    "live": "pending",
    "partially_filled": "partial-filled",
    "filled": "filled",
    "canceled": "canceled",
    "mmp_canceled": "canceled",
}
MAX_PAGES = 50  # bound every pagination loop (5000 orders, 15000 candles)
DEFAULT_DEPTH = 30
DEFAULT_RECORDS = 100
MAX_RECORDS = 10_000


class Keys(NamedTuple):
    access_key: str
    secret: str
    passphrase: str
    simulate: bool

    def __repr__(self) -> str:  # never the credentials, not even in a traceback or a debugger
        return f"Keys(access_key=***, secret=***, passphrase=***, simulate={self.simulate})"


def parse_secret_key(secret_key: str) -> tuple[str, str, bool]:
    """`secret,passphrase[,simulate]` -> (secret, passphrase, simulate), spaces ignored.

    The one place the demo-trading flag is read: anything but exactly `simulate` in the third
    field is refused, so a typo can never send orders to the live account."""
    parts = [part.strip() for part in secret_key.split(",")]
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise PluginError(
            "OKX: secret_key must be 'secret,passphrase' or 'secret,passphrase,simulate'"
        )
    if len(parts) == 3 and parts[2].lower() != "simulate":
        raise PluginError("OKX: the third part of secret_key may only be 'simulate'")
    return parts[0], parts[1], len(parts) == 3


class Okx(Exchange):
    name = "OKX"
    api_base = "https://www.okx.com"

    # ---- credentials, signing, errors ----

    def keys(self, call: Call) -> Keys:
        keys = call.cache.get("okx_keys")
        if keys is None:
            if not call.access_key:
                raise PluginError("OKX: access_key is empty")
            secret, passphrase, simulate = parse_secret_key(call.secret_key)
            keys = Keys(call.access_key, secret, passphrase, simulate)
            call.cache["okx_keys"] = keys
        return keys

    def headers(self, call: Call | None) -> dict[str, str]:
        # Public requests work without keys; a signed request gets the flag from `sign()`, which
        # reads it from the one parse of `secret_key` (an ambiguous flag fails there, closed).
        if call is None or not call.secret_key:
            return {}
        try:
            simulate = parse_secret_key(call.secret_key)[2]
        except PluginError:
            return {}
        return {"x-simulated-trading": "1"} if simulate else {}

    def sign(self, call: Call, method: str, request_path: str, body: str) -> dict[str, str]:
        keys = self.keys(call)
        now = datetime.now(timezone.utc)
        timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        message = f"{timestamp}{method}{request_path}{body}".encode()
        digest = hmac.new(keys.secret.encode(), message, hashlib.sha256).digest()
        return {
            "OK-ACCESS-KEY": keys.access_key,
            "OK-ACCESS-SIGN": base64.b64encode(digest).decode(),
            "OK-ACCESS-TIMESTAMP": timestamp,
            "OK-ACCESS-PASSPHRASE": keys.passphrase,
            **({"x-simulated-trading": "1"} if keys.simulate else {}),
        }

    def check(self, status: int, payload: Any) -> Any:
        if not isinstance(payload, dict) or "code" not in payload:
            return super().check(status, payload)
        if str(payload["code"]) != "0":
            detail = _first_item_error(payload.get("data"))
            message = payload.get("msg") or detail or "(no message)"
            if detail and detail != message:
                message = f"{message}: {detail}"
            raise UpstreamError(f"OKX error {payload['code']}: {message}")
        if status >= 400:
            return super().check(status, payload)
        if not isinstance(payload.get("data"), list):
            raise UpstreamError(f"OKX: unexpected answer: {json.dumps(payload)[:200]}")
        return payload

    async def public(self, call: Call, path: str, query: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("GET", path, query=query, call=call)

    async def private(
        self, call: Call, method: str, path: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        self.keys(call)  # a malformed secret_key fails before any traffic
        if method == "GET":
            return await self.request(method, path, query=params, call=call, signed=True)
        return await self.request(method, path, body=dict(params or {}), call=call, signed=True)

    # ---- market data ----

    async def ticker(self, call: Call, symbol: Symbol) -> Reply:
        raw = await self.public(call, "/api/v5/market/ticker", {"instId": symbol.join("-")})
        tick = _only(raw)
        data = {
            "symbol": str(symbol),
            "buy": _text(tick, "bidPx"),  # "" on an empty book
            "sell": _text(tick, "askPx"),
            "high": _text(tick, "high24h"),
            "low": _text(tick, "low24h"),
            "open": _text(tick, "open24h"),
            "last": _text(tick, "last"),
            "vol": _text(tick, "vol24h"),
            "time": tick["ts"],
        }
        return Reply(data, raw)

    async def depth(self, call: Call, symbol: Symbol, limit: int) -> Reply:
        size = min(limit if limit > 0 else DEFAULT_DEPTH, 400)
        query = {"instId": symbol.join("-"), "sz": size}
        raw = await self.public(call, "/api/v5/market/books", query)
        book = _only(raw)
        data = {
            "time": int(book["ts"]),
            "asks": [[float(level[0]), float(level[1])] for level in book["asks"]],
            "bids": [[float(level[0]), float(level[1])] for level in book["bids"]],
        }
        return Reply(data, raw)

    async def trades(self, call: Call, symbol: Symbol) -> Reply:
        limit = min(max(call.integer("limit", 100), 1), 500)
        query = {"instId": symbol.join("-"), "limit": limit}
        raw = await self.public(call, "/api/v5/market/trades", query)
        data = [
            {
                "id": int(t["tradeId"]) if str(t["tradeId"]).isdigit() else t["tradeId"],
                "time": int(t["ts"]),
                "price": float(t["px"]),
                "amount": float(t["sz"]),
                "type": t["side"],
            }
            for t in raw["data"]
        ]
        data.sort(key=lambda t: t["time"])  # oldest first, as FMZ arrays are
        return Reply(data, raw)

    async def records(self, call: Call, symbol: Symbol, period: int, limit: int) -> Reply:
        bar = BARS.get(period)
        if bar is None:
            supported = ", ".join(str(p) for p in BARS)
            raise PluginError(f"OKX: period {period} minutes not supported (one of {supported})")
        wanted = min(limit if limit > 0 else DEFAULT_RECORDS, MAX_RECORDS)
        # /candles holds only the newest 1440 bars (300 a page); older ones are on
        # /history-candles (100 a page). Page backwards with `after` = oldest ts seen.
        path, page_size = "/api/v5/market/candles", 300
        rows: dict[int, list[float]] = {}
        pages: list[Any] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            if len(rows) >= wanted:
                break
            asked = min(page_size, wanted - len(rows))
            query = {"instId": symbol.join("-"), "bar": bar, "limit": asked, "after": after}
            raw = await self.public(call, path, query)
            pages.append(raw)
            candles = raw["data"]
            for c in candles:
                seconds = int(c[0]) // 1000
                rows.setdefault(seconds, [seconds, *map(float, c[1:6])])
            if candles:
                after = candles[-1][0]
            if len(candles) < asked:
                if path.endswith("/history-candles"):
                    break
                path, page_size = "/api/v5/market/history-candles", 100
        data = sorted(rows.values())[-wanted:]  # oldest first, the newest bar last
        data = [[int(r[0]), *r[1:]] for r in data]
        return Reply(data, pages[0] if len(pages) == 1 else pages)

    # ---- account ----

    async def accounts(self, call: Call) -> Reply:
        raw = await self.private(call, "GET", "/api/v5/account/balance")
        data = [
            {"currency": d["ccy"], "free": _text(d, "availBal"), "frozen": _text(d, "frozenBal")}
            for account in raw["data"]
            for d in account.get("details") or []
        ]
        return Reply(data, raw)

    async def assets(self, call: Call) -> Reply:
        """Everything the account owns: trading account plus funding account, per currency."""
        trading, funding = await asyncio.gather(
            self.private(call, "GET", "/api/v5/account/balance"),
            self.private(call, "GET", "/api/v5/asset/balances"),
        )
        totals: dict[str, list[Decimal]] = {}
        entries = [d for account in trading["data"] for d in account.get("details") or []]
        for d in [*entries, *funding["data"]]:
            free, frozen = totals.setdefault(d["ccy"], [Decimal(0), Decimal(0)])
            totals[d["ccy"]] = [
                free + Decimal(_text(d, "availBal")),
                frozen + Decimal(_text(d, "frozenBal")),
            ]
        data = [
            {"currency": ccy, "free": _plain(free), "frozen": _plain(frozen)}
            for ccy, (free, frozen) in totals.items()
        ]
        return Reply(data, {"trading": trading, "funding": funding})

    # ---- orders ----

    async def trade(
        self, call: Call, symbol: Symbol, side: str, price: Decimal, amount: Decimal
    ) -> Reply:
        if amount <= 0:
            raise PluginError(f"params.amount must be positive, got {_plain(amount)}")
        inst_id = symbol.join("-")
        body: dict[str, str] = {"instId": inst_id, "tdMode": "cash", "side": side}
        if price == -1:  # FMZ market order; a market buy's amount is in the quote currency
            body |= {"ordType": "market", "sz": _plain(amount)}
            body["tgtCcy"] = "quote_ccy" if side == "buy" else "base_ccy"
        elif price > 0:
            body |= {"ordType": "limit", "px": _plain(price), "sz": _plain(amount)}
        else:
            raise PluginError(f"params.price must be positive or -1 (market), got {price}")
        raw = await self.private(call, "POST", "/api/v5/trade/order", body)
        return Reply({"id": f"{inst_id},{_only(raw)['ordId']}"}, raw)

    async def orders(self, call: Call, symbol: Symbol) -> Reply:
        inst_id = symbol.join("-")
        query = {"instType": "SPOT", "instId": inst_id, "limit": 100}
        found, pages = await self._paged(call, "/api/v5/trade/orders-pending", query, 0)
        return Reply([_order(o) for o in found], pages[0] if len(pages) == 1 else pages)

    async def order(self, call: Call, order_id: str, symbol: Symbol | None) -> Reply:
        inst_id, ord_id = _split_id(order_id, symbol)
        query = {"instId": inst_id, "ordId": ord_id}
        raw = await self.private(call, "GET", "/api/v5/trade/order", query)
        return Reply(_order(_only(raw)), raw)

    async def historyorders(self, call: Call, symbol: Symbol, since: int, limit: int) -> Reply:
        wanted = limit if limit > 0 else 100
        query = {"instType": "SPOT", "instId": symbol.join("-"), "limit": min(wanted, 100)}
        if since > 0:
            query["begin"] = since
        found, pages = await self._paged(call, "/api/v5/trade/orders-history", query, wanted)
        return Reply([_order(o) for o in found], pages[0] if len(pages) == 1 else pages)

    async def cancel(self, call: Call, order_id: str, symbol: Symbol | None) -> Reply:
        inst_id, ord_id = _split_id(order_id, symbol)
        body = {"instId": inst_id, "ordId": ord_id}
        raw = await self.private(call, "POST", "/api/v5/trade/cancel-order", body)
        return Reply(True, raw)

    async def api(self, call: Call, http_method: str, path: str, params: dict[str, Any]) -> Reply:
        return Reply(await self.private(call, http_method, path, params))

    async def _paged(
        self, call: Call, path: str, query: dict[str, Any], wanted: int
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """Follow OKX's `after=<last ordId>` cursor until a short page (or `wanted` orders)."""
        found: list[dict[str, Any]] = []
        pages: list[Any] = []
        for _ in range(MAX_PAGES):
            raw = await self.private(call, "GET", path, query)
            pages.append(raw)
            page = raw["data"]
            found.extend(page)
            if wanted and len(found) >= wanted:
                return found[:wanted], pages
            if len(page) < int(query["limit"]) or page[-1]["ordId"] == query.get("after"):
                break
            query = {**query, "after": page[-1]["ordId"]}
            if wanted:
                query["limit"] = min(100, wanted - len(found))
        return found, pages


def _only(raw: dict[str, Any]) -> dict[str, Any]:
    if not raw["data"]:
        raise UpstreamError("OKX: empty answer")
    return raw["data"][0]


def _first_item_error(data: Any) -> str:
    """Order endpoints put the real reason in `data[0].sMsg` (with `sCode`)."""
    if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("sMsg"):
        return f"{data[0]['sMsg']} (sCode {data[0].get('sCode')})"
    return ""


def _plain(number: Decimal) -> str:
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _split_id(order_id: str, symbol: Symbol | None) -> tuple[str, str]:
    """FMZ order ids are `INST-ID,ordId`; a bare ordId needs params.symbol."""
    inst_id, sep, ord_id = order_id.rpartition(",")
    if sep and inst_id and ord_id:
        return inst_id, ord_id
    if symbol is None:
        raise PluginError(f"order id {order_id!r} has no instrument: expected 'ETH-USDT,123456'")
    return symbol.join("-"), order_id


def _text(item: Mapping[str, Any], key: str) -> str:
    """A numeric field as FMZ's string, "0" when OKX leaves it empty ("") or out."""
    value = item.get(key)
    return str(value) if value not in (None, "") else "0"


def _number(item: Mapping[str, Any], key: str) -> float:
    """A numeric field as a float, 0 when OKX leaves it empty: `avgPx` before the first fill,
    `px` of a market order, `fillPx`, `bidPx` on an empty book are all documented as ""."""
    value = item.get(key)
    return float(value) if value not in (None, "") else 0.0


def _sized_in_quote(o: Mapping[str, Any]) -> bool:
    """OKX sizes a spot market order by `tgtCcy`, by default a buy in the quote currency."""
    if o.get("ordType") != "market":
        return False
    unit = o.get("tgtCcy") or ("quote_ccy" if o["side"] == "buy" else "base_ccy")
    return unit == "quote_ccy"


def _order(o: dict[str, Any]) -> dict[str, Any]:
    """An OKX order in FMZ's shape, `amount` and `deal_amount` both in the base currency.

    A market buy spends an amount of quote currency (`sz` is USDT), so its size in ETH is what it
    bought: `amount` is then `accFillSz`, like `deal_amount` (the USDT stays in `raw`)."""
    status = STATES.get(o["state"], o["state"])
    filled = _number(o, "accFillSz")
    if status == "canceled" and filled > 0:
        status = "partial-canceled"
    base, _, quote = o["instId"].partition("-")
    return {
        "id": f"{o['instId']},{o['ordId']}",
        "symbol": f"{base}_{quote}",
        "amount": filled if _sized_in_quote(o) else _number(o, "sz"),
        "price": _number(o, "px"),
        "deal_amount": filled,
        "avg_price": _number(o, "avgPx"),
        "type": o["side"],
        "status": status,
    }
