"""Binance spot market streams: `/ws/!ticker@arr` (all 24h tickers as one JSON array per push)
and `/ws/<symbol>@ticker` (one symbol's 24h ticker object)."""

from __future__ import annotations

import json
import re

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .feed import Feed
from .market import Instrument, now_ms

__all__ = ["BinanceFeed", "ticker_event"]

ALL_TICKERS = "/ws/!ticker@arr"
_SYMBOL_TICKER = re.compile(r"^/ws/([a-z0-9]+)@ticker$")


def _num(value: float) -> str:
    return f"{value:.8f}"


def ticker_event(inst: Instrument, event_ms: int) -> dict[str, object]:
    """A `24hrTicker` event with Binance's field names (numbers as strings, like Binance)."""
    return {
        "e": "24hrTicker",
        "E": event_ms,
        "s": inst.binance,
        "p": _num(inst.change),
        "P": f"{inst.change_percent:.3f}",
        "w": _num(inst.weighted_average),
        "x": _num(inst.open),
        "c": _num(inst.last),
        "Q": _num(inst.last_size),
        "b": _num(inst.bid),
        "B": _num(1.5),
        "a": _num(inst.ask),
        "A": _num(2.25),
        "o": _num(inst.open),
        "h": _num(inst.high),
        "l": _num(inst.low),
        "v": _num(inst.volume),
        "q": _num(inst.quote_volume),
        "O": event_ms - 86_400_000,
        "C": event_ms,
        "F": inst.first_trade_id,
        "L": inst.first_trade_id + inst.trades - 1,
        "n": inst.trades,
    }


class BinanceFeed(Feed):
    name = "binance"
    paths = (ALL_TICKERS,)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.all_clients: set[ServerConnection] = set()
        self.symbol_clients: dict[str, set[ServerConnection]] = {}

    def serves(self, path: str) -> bool:
        match = _SYMBOL_TICKER.match(path)
        return path == ALL_TICKERS or bool(match and self.market.find(match.group(1)))

    async def handle(self, ws: ServerConnection, path: str) -> None:
        if path == ALL_TICKERS:
            group = self.all_clients
        else:
            match = _SYMBOL_TICKER.match(path)
            assert match is not None
            group = self.symbol_clients.setdefault(match.group(1).upper(), set())
        group.add(ws)
        try:
            async for message in ws:
                await ws.send(self._answer(message))
        except ConnectionClosed:
            pass
        finally:
            group.discard(ws)

    def _answer(self, message: str | bytes) -> str:
        """Binance answers control requests ({"method": ..., "id": n}) on a raw stream."""
        try:
            request = json.loads(message)
            request_id = request["id"]
            method = request["method"]
        except (ValueError, TypeError, KeyError):
            return json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}})
        if method == "LIST_SUBSCRIPTIONS":
            return json.dumps({"result": [], "id": request_id})
        return json.dumps({"result": None, "id": request_id})

    def tick(self) -> None:
        stamp = now_ms()
        if self.all_clients:
            events = [ticker_event(inst, stamp) for inst in self.market.instruments]
            broadcast(self.all_clients, json.dumps(events, separators=(",", ":")))
            self.count("sent", len(self.all_clients))
        for symbol, clients in self.symbol_clients.items():
            inst = self.market.find(symbol)
            if clients and inst is not None:
                broadcast(clients, json.dumps(ticker_event(inst, stamp), separators=(",", ":")))
                self.count("sent", len(clients))
