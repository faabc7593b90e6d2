"""Binance spot market data: the WebSocket streams of wss://stream.binance.com:9443 and the REST
order book snapshot of https://api.binance.com, as Binance documents them in
github.com/binance/binance-spot-api-docs (web-socket-streams.md, rest-api.md "Order book",
errors.md, CHANGELOG.md; checked against Binance's documentation of July 2026).

Connections: `/ws/<stream>[/<stream>...]` (raw events), `/ws` (streams come by `SUBSCRIBE`),
`/stream?streams=<a>/<b>` and `/stream` (combined: every event wrapped as
`{"stream":"<name>","data":<event>}`); `timeUnit=MICROSECOND` in the query turns time fields
into microseconds. Any other path is refused at the handshake.

Streams (symbols lowercase): `<s>@trade`, `<s>@aggTrade`, `<s>@bookTicker`, `<s>@ticker`,
`<s>@miniTicker`, `!miniTicker@arr`, `<s>@avgPrice`, `<s>@depth<5|10|20>[@100ms]` (partial
book), `<s>@depth[@100ms]` (diff depth, `U`/`u` chained so a book can be kept from the REST
snapshot), `<s>@kline_<1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M>[@+08:00]`.
A well-formed name that carries no data (unknown or uppercase symbol, unknown stream type, and
`!ticker@arr`, retired on 2026-03-26 per the CHANGELOG of 2026-02-24) is accepted and stays
silent, as Binance does; a malformed one is answered "Invalid request: invalid stream" and the
connection is closed. `binance_legacy_ticker_arr=True` serves `!ticker@arr` as it was before
(an array of 24hrTicker), for FMZ-era scripts written against it.

Cadence: Binance pushes tickers, klines, avgPrice and depth every 1000 ms (100 ms for the
`@100ms` variants, 2000 ms for klines other than 1s) and trades and bookTicker in real time.
The simulator pushes every stream once per market step, `settings.rate` steps a second, the
`@100ms` variants included; a kline also gets a final `"x":true` push when its interval ends.

Control messages: `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY` /
`GET_PROPERTY` `combined`, answered `{"result":...,"id":...}`; errors `{"error":{"code":N,
"msg":...},"id":...}` with the documented codes and messages (0 unknown property, 1 value not a
boolean, 2 invalid request, 3 invalid JSON; invalid JSON also closes the connection).

Lifecycle: a ping frame every `binance_ping_interval` s (payload: the time in ms); a pong
missing for `binance_pong_timeout` s closes with 1008 "Pong timeout"; more than 5 incoming
messages in a second close with 1008 "Too many requests"; at most 1024 streams a connection;
a connection is closed (1001) after `binance_max_lifetime` s; `shutdown()` sends the
`serverShutdown` event to every connection and closes them `binance_shutdown_grace` s later.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConcurrencyError, ConnectionClosed

from .feed import Feed
from .market import Instrument, Step, Trade, now_ms

__all__ = ["KLINE_INTERVALS", "BinanceFeed", "parse_stream", "ticker_event"]

MAX_STREAMS = 1024  # "A single connection can listen to a maximum of 1024 streams."
MAX_INCOMING = 5  # "WebSocket connections have a limit of 5 incoming messages per second."
MAX_DEPTH_LIMIT = 5000  # GET /api/v3/depth: "If limit > 5000, only 5000 entries"
DEFAULT_DEPTH_LIMIT = 100
AVG_PRICE_MS = 300_000  # avgPrice: the average over the last 5 minutes
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
#: kline interval -> length in seconds (1M is a calendar month, 1w starts on Monday)
KLINE_INTERVALS: dict[str, int] = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600,
    "2h": 7200, "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400,
    "3d": 259200, "1w": 604800, "1M": 2_678_400,
}  # fmt: skip
UTC8_MS = 8 * 3_600_000
MONDAY_MS = 4 * 86_400_000  # 1970-01-05, the first Monday after the epoch

_SYMBOL_STREAM = re.compile(
    r"^(?P<symbol>[a-z0-9]+)@(?:"
    r"(?P<simple>trade|aggTrade|bookTicker|ticker|miniTicker|avgPrice)"
    r"|depth(?P<levels>5|10|20)?(?:@100ms)?"
    r"|kline_(?P<interval>[0-9]+[smhdwM])(?P<utc8>@\+08:00)?"
    r")$"
)
# what SUBSCRIBE accepts as a name at all; anything else is "invalid stream"
_STREAM_SYNTAX = re.compile(r"^[A-Za-z0-9!_.:+\-]+(?:@[A-Za-z0-9!_.:+\-]+)*$")
_REST_SYMBOL = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
_REST_INT = re.compile(r"^[0-9]{1,20}$")


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _n(value: float) -> str:
    """Binance spot sends prices and quantities as strings with 8 decimals."""
    return f"{value:.8f}"


# -- stream names ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Stream:
    """A parsed stream name that carries data."""

    # trade aggTrade bookTicker ticker miniTicker avgPrice depth partial kline allMini allTickers
    kind: str
    inst: Instrument | None = None
    levels: int = 0
    interval: str = ""
    offset_ms: int = 0


def parse_stream(name: str, spot: dict[str, Instrument], legacy: bool = False) -> Stream | None:
    """The stream `name` stands for, or None when Binance would accept it and send nothing.

    `legacy` serves `!ticker@arr` as before its retirement (for FMZ-era scripts)."""
    if name == "!miniTicker@arr":
        return Stream("allMini")
    if name == "!ticker@arr":
        return Stream("allTickers") if legacy else None
    match = _SYMBOL_STREAM.match(name)
    if match is None:
        return None
    inst = spot.get(match["symbol"])
    if inst is None:
        return None
    if match["simple"]:
        return Stream(match["simple"], inst)
    if match["interval"]:
        if match["interval"] not in KLINE_INTERVALS:
            return None
        offset = UTC8_MS if match["utc8"] else 0
        return Stream("kline", inst, interval=match["interval"], offset_ms=offset)
    if match["levels"]:
        return Stream("partial", inst, levels=int(match["levels"]))
    return Stream("depth", inst)


# -- klines ------------------------------------------------------------------------------------


def kline_bounds(interval: str, at_ms: int, offset_ms: int = 0) -> tuple[int, int]:
    """(open time, close time) of the `interval` kline holding `at_ms`, in UTC or UTC+8."""
    local = at_ms + offset_ms
    if interval == "1M":
        day = datetime.fromtimestamp(local / 1000, tz=timezone.utc)
        start = calendar.timegm((day.year, day.month, 1, 0, 0, 0)) * 1000
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        end = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000 - 1
        return start - offset_ms, end - offset_ms
    length = KLINE_INTERVALS[interval] * 1000
    anchor = MONDAY_MS if interval == "1w" else 0
    start = local - (local - anchor) % length
    return start - offset_ms, start + length - 1 - offset_ms


@dataclass
class Bar:
    """One kline as Binance streams it, built from the market's trades."""

    interval: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    quote: float = 0.0
    taker_base: float = 0.0  # bought by takers (aggressive buys)
    taker_quote: float = 0.0
    trades: int = 0
    first_id: int = -1  # -1 while the kline has no trade, as Binance sends it
    last_id: int = -1

    def add(self, trade: Trade) -> None:
        if self.trades == 0:
            self.open = self.high = self.low = trade.price
            self.first_id = trade.trade_id
        self.high = max(self.high, trade.price)
        self.low = min(self.low, trade.price)
        self.close = trade.price
        self.volume += trade.size
        self.quote += trade.size * trade.price
        if trade.buyer_is_taker:
            self.taker_base += trade.size
            self.taker_quote += trade.size * trade.price
        self.trades += 1
        self.last_id = trade.trade_id

    def following(self, at_ms: int, offset_ms: int) -> Bar:
        start, end = kline_bounds(self.interval, at_ms, offset_ms)
        return Bar(self.interval, start, end, self.close, self.close, self.close, self.close)


def kline_event(inst: Instrument, bar: Bar, closed: bool, stamp: int, k: int) -> dict[str, Any]:
    return {
        "e": "kline",
        "E": stamp * k,
        "s": inst.binance,
        "k": {
            "t": bar.start * k,
            "T": bar.end * k + (k - 1),
            "s": inst.binance,
            "i": bar.interval,
            "f": bar.first_id,
            "L": bar.last_id,
            "o": _n(bar.open),
            "c": _n(bar.close),
            "h": _n(bar.high),
            "l": _n(bar.low),
            "v": _n(bar.volume),
            "n": bar.trades,
            "x": closed,
            "q": _n(bar.quote),
            "V": _n(bar.taker_base),
            "Q": _n(bar.taker_quote),
            "B": "0",
        },
    }


# -- events ------------------------------------------------------------------------------------


def ticker_event(inst: Instrument, stamp: int, k: int = 1) -> dict[str, Any]:
    """`<symbol>@ticker`: the 24hrTicker event (numbers as strings, ids and times as ints)."""
    return {
        "e": "24hrTicker",
        "E": stamp * k,
        "s": inst.binance,
        "p": _n(inst.change),
        "P": f"{inst.change_percent:.3f}",
        "w": _n(inst.weighted_average),
        "x": _n(inst.open),
        "c": _n(inst.last),
        "Q": _n(inst.last_size),
        "b": _n(inst.bid),
        "B": _n(inst.bid_size),
        "a": _n(inst.ask),
        "A": _n(inst.ask_size),
        "o": _n(inst.open),
        "h": _n(inst.high),
        "l": _n(inst.low),
        "v": _n(inst.volume),
        "q": _n(inst.quote_volume),
        "O": (stamp - 86_400_000) * k,
        "C": stamp * k,
        "F": inst.first_trade_id,
        "L": inst.last_trade_id,
        "n": inst.trades,
    }


def mini_ticker_event(inst: Instrument, stamp: int, k: int = 1) -> dict[str, Any]:
    return {
        "e": "24hrMiniTicker",
        "E": stamp * k,
        "s": inst.binance,
        "c": _n(inst.last),
        "o": _n(inst.open),
        "h": _n(inst.high),
        "l": _n(inst.low),
        "v": _n(inst.volume),
        "q": _n(inst.quote_volume),
    }


def trade_event(inst: Instrument, trade: Trade, stamp: int, k: int) -> dict[str, Any]:
    return {
        "e": "trade",
        "E": stamp * k,
        "s": inst.binance,
        "t": trade.trade_id,
        "p": _n(trade.price),
        "q": _n(trade.size),
        "T": trade.time_ms * k,
        "m": not trade.buyer_is_taker,  # "Is the buyer the market maker?"
        "M": True,
    }


def book_ticker_event(inst: Instrument) -> dict[str, Any]:
    return {
        "u": inst.update_id,
        "s": inst.binance,
        "b": _n(inst.bid),
        "B": _n(inst.bid_size),
        "a": _n(inst.ask),
        "A": _n(inst.ask_size),
    }


def book_levels(inst: Instrument, limit: int) -> dict[str, Any]:
    """The partial-depth event and the REST snapshot share this shape."""
    bids, asks = inst.depth(limit)
    return {
        "lastUpdateId": inst.update_id,
        "bids": [[_n(price), _n(size)] for price, size in bids],
        "asks": [[_n(price), _n(size)] for price, size in asks],
    }


def depth_update_event(step: Step, stamp: int, k: int) -> dict[str, Any]:
    """One diff-depth event for everything a step changed: the last size of each level."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for side, price, size in step.changes:
        (bids if side == "bid" else asks)[price] = size
    return {
        "e": "depthUpdate",
        "E": stamp * k,
        "s": step.inst.binance,
        "U": step.first_update_id,
        "u": step.last_update_id,
        "b": [[_n(p), _n(bids[p])] for p in sorted(bids, reverse=True)],
        "a": [[_n(p), _n(asks[p])] for p in sorted(asks)],
    }


# -- connections -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    combined: bool
    micro: bool
    streams: dict[str, None] = field(default_factory=dict)  # an ordered set
    arrivals: deque[float] = field(default_factory=deque)

    @property
    def variant(self) -> tuple[bool, bool]:
        return self.combined, self.micro


class _Refused(Exception):
    """A control message Binance answers with an error (and maybe a disconnect)."""

    def __init__(self, code: int, msg: str, close: bool = False) -> None:
        super().__init__(msg)
        self.code, self.msg, self.close = code, msg, close


def _error(code: int, msg: str, request_id: object = None, with_id: bool = True) -> str:
    body: dict[str, Any] = {"error": {"code": code, "msg": msg}}
    if with_id:
        body["id"] = request_id
    return _dumps(body)


def _query(text: str) -> dict[str, list[str]]:
    """Query parameters, percent-decoded but with `+` kept (it is part of `@+08:00`)."""
    found: dict[str, list[str]] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if name:
            found.setdefault(unquote(name), []).append(unquote(value))
    return found


def _valid_id(value: object) -> bool:
    """Documented: a 64-bit signed integer, an alphanumeric string of up to 36, or null."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and len(value) <= 36 and value.isascii() and value.isalnum()


def _column_after(text: str, key: str, value: object) -> int:
    """1-based column just past `value` of `key` in `text`, as serde reports positions."""
    literal = _dumps(value)
    start = text.find(literal, max(text.find(f'"{key}"'), 0))
    return start + len(literal) if start >= 0 else len(text)


class BinanceFeed(Feed):
    name = "binance"
    paths = ("/ws", "/ws/<stream>[/<stream>...]", "/stream?streams=<a>/<b>")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.spot = {inst.binance.lower(): inst for inst in self.market.spot}
        self.clients: set[_Client] = set()
        # stream name -> (combined, micro) -> connections; one encoding per variant and push
        self.subscribers: dict[str, dict[tuple[bool, bool], set[ServerConnection]]] = {}
        self.streams: dict[str, Stream] = {}  # names that carry data (few)
        self.bars: dict[tuple[Instrument, str, int], Bar] = {}
        self.spot_set = set(self.spot.values())
        self.tops: dict[Instrument, tuple[float, float, float, float]] = {}
        self.recent: dict[Instrument, deque[tuple[int, float, float]]] = {
            inst: deque() for inst in self.spot.values()
        }
        self.recent_sums = {inst: [0.0, 0.0] for inst in self.spot.values()}
        self.last_trade_ms = {inst: inst.updated_ms for inst in self.spot.values()}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the feed interface -----------------------------------------------------------------

    def serves(self, path: str) -> bool:
        return path in ("/ws", "/ws/", "/stream") or path.startswith("/ws/")

    def keepalive(self) -> tuple[float | None, float | None]:
        # The pings are sent by `_watch` (per connection), so a missing pong closes with
        # Binance's 1008 "Pong timeout" rather than the library's 1011.
        return None, None

    def describe(self) -> list[str]:
        return [
            "/ws/<stream>[/<stream>...]  raw streams; /ws then SUBSCRIBE",
            '/stream?streams=<a>/<b>  combined: {"stream":..., "data":...}',
            "streams: <s>@trade @aggTrade @bookTicker @ticker @miniTicker @avgPrice "
            "@depth[@100ms] @depth5|10|20[@100ms] @kline_<1s..1M>[@+08:00], !miniTicker@arr "
            "(!ticker@arr: retired, silent)",
            "requests: SUBSCRIBE UNSUBSCRIBE LIST_SUBSCRIPTIONS SET_PROPERTY GET_PROPERTY",
            f"ping every {self.settings.binance_ping_interval:g} s, pong within "
            f"{self.settings.binance_pong_timeout:g} s; connections live "
            f"{self.settings.binance_max_lifetime:g} s; serverShutdown via feed.shutdown()",
            "REST: GET /api/v3/depth?symbol=BTCUSDT&limit=100 (max 5000), /api/v3/ping, "
            "/api/v3/time",
        ]

    async def handle(self, ws: ServerConnection, path: str) -> None:
        assert ws.request is not None
        query = _query(urlsplit(ws.request.path).query)
        combined = path == "/stream"
        micro = any(unit.upper() == "MICROSECOND" for unit in query.get("timeUnit", []))
        client = _Client(ws, combined, micro)
        if combined:
            names = [n for value in query.get("streams", []) for n in value.split("/") if n]
        else:
            names = [n for n in path[len("/ws/") :].split("/") if n]
        self._subscribe(client, names[:MAX_STREAMS])
        self.clients.add(client)
        watchdog = asyncio.ensure_future(self._watch(client))
        try:
            async for message in ws:
                if not self._within_rate(client):
                    self.count("rate_limited")
                    await ws.close(1008, "Too many requests")
                    break
                reply, close = self._control(client, message)
                await ws.send(reply)
                if close:
                    await ws.close(1008, "Invalid request")
                    break
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self.clients.discard(client)
            self._unsubscribe(client, list(client.streams))

    def tick(self, steps: list[Step]) -> None:
        stamp = now_ms()
        spot_steps = {step.inst: step for step in steps if step.inst in self.spot_set}
        self._remember_trades(spot_steps)
        closed = self._roll_bars(spot_steps, stamp)
        moved_tops = self._moved_tops()
        for name, groups in self.subscribers.items():
            stream = self.streams.get(name)
            if stream is None or not any(groups.values()):
                continue
            encoded: dict[bool, list[str]] = {}
            for (combined, micro), conns in groups.items():
                if not conns:
                    continue
                if micro not in encoded:
                    k = 1000 if micro else 1
                    events = self._events(stream, spot_steps, closed, moved_tops, stamp, k)
                    encoded[micro] = [_dumps(event) for event in events]
                for raw in encoded[micro]:
                    frame = f'{{"stream":{_dumps(name)},"data":{raw}}}' if combined else raw
                    broadcast(conns, frame)
                    self.count("sent", len(conns))

    def http(self, method: str, path: str, query: dict[str, str]) -> tuple[int, object] | None:
        if method != "GET":
            return None
        if path == "/api/v3/depth":
            return self._depth_snapshot(query)
        if path == "/api/v3/ping":
            return 200, {}
        if path == "/api/v3/time":
            return 200, {"serverTime": now_ms()}
        return None

    # -- lifecycle --------------------------------------------------------------------------

    async def shutdown(self, grace: float | None = None) -> int:
        """Send `serverShutdown` to every connection, close them `grace` s later (1001).

        Returns how many connections were told. Binance sends the event "when the server is
        about to shut down"; since 2026-06-09 its docs name no delay, so the delay is a setting.
        """
        grace = self.settings.binance_shutdown_grace if grace is None else grace
        clients = list(self.clients)
        stamp = now_ms()
        for client in clients:
            raw = _dumps({"e": "serverShutdown", "E": stamp * (1000 if client.micro else 1)})
            frame = f'{{"stream":"!serverShutdown","data":{raw}}}' if client.combined else raw
            broadcast([client.ws], frame)
        self.count("shutdowns")
        loop = asyncio.get_running_loop()
        loop.call_later(max(grace, 0.0), self._close_all, [c.ws for c in clients])
        return len(clients)

    def _close_all(self, conns: Iterable[ServerConnection]) -> None:
        for ws in conns:
            task = asyncio.ensure_future(ws.close(1001, "Server shutdown"))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _watch(self, client: _Client) -> None:
        """Ping frames, the pong deadline and the 24-hour cut of one connection."""
        ws, settings = client.ws, self.settings
        loop = asyncio.get_running_loop()
        interval = settings.binance_ping_interval
        end = loop.time() + settings.binance_max_lifetime
        next_ping = loop.time() + interval if interval > 0 else float("inf")
        pending: list[tuple[float, asyncio.Future[float]]] = []
        try:
            while True:
                pending = [(due, pong) for due, pong in pending if not pong.done()]
                wake = min([end, next_ping, *(due for due, _ in pending)])
                await asyncio.sleep(max(0.0, wake - loop.time()))
                now = loop.time()
                if now >= end:
                    self.count("lifetime_cuts")
                    await ws.close(1001, "Connection lifetime expired")
                    return
                if any(due <= now and not pong.done() for due, pong in pending):
                    self.count("pong_timeouts")
                    await ws.close(1008, "Pong timeout")
                    return
                if now >= next_ping:
                    next_ping = max(next_ping + interval, now)
                    try:
                        pong = await ws.ping(str(now_ms()))
                    except ConcurrencyError:  # two pings in one millisecond
                        continue
                    pending.append(
                        (now + settings.binance_pong_timeout, cast(asyncio.Future[float], pong))
                    )
        except ConnectionClosed:
            pass

    def _within_rate(self, client: _Client) -> bool:
        now = asyncio.get_running_loop().time()
        arrivals = client.arrivals
        arrivals.append(now)
        while arrivals and arrivals[0] <= now - 1.0:
            arrivals.popleft()
        return len(arrivals) <= MAX_INCOMING

    # -- control messages -------------------------------------------------------------------

    def _control(self, client: _Client, message: str | bytes) -> tuple[str, bool]:
        """The answer to one incoming message, and whether to close the connection after it."""
        self.count("requests")
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            request = json.loads(text)
        except ValueError as exc:
            line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
            msg = f"Invalid JSON: expected value at line {line} column {column}"
            return _error(3, msg, with_id=False), True
        if not isinstance(request, dict):
            msg = f"Invalid request: missing field `method` at line 1 column {len(text.rstrip())}"
            return _error(2, msg, with_id=False), False
        request_id = request.get("id")
        if not _valid_id(request_id) or "id" not in request:
            msg = "Invalid request: request ID must be an unsigned integer"
            return _error(2, msg, with_id=False), False
        try:
            method = request.get("method")
            if "method" not in request:
                column = len(text.rstrip())
                raise _Refused(
                    2, f"Invalid request: missing field `method` at line 1 column {column}"
                )
            if not isinstance(method, str) or method not in METHODS:
                column = _column_after(text, "method", method)
                expected = ", ".join(f"`{name}`" for name in METHODS)
                msg = f"unknown variant `{method}`, expected one of {expected}"
                raise _Refused(2, f"Invalid request: {msg} at line 1 column {column}")
            result = self._method(client, method, request.get("params"))
        except _Refused as refused:
            return _error(refused.code, refused.msg, request_id), refused.close
        return _dumps({"result": result, "id": request_id}), False

    def _method(self, client: _Client, method: str, params: object) -> object:
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            names = [] if params is None else params
            if not isinstance(names, list) or not all(
                isinstance(n, str) and _STREAM_SYNTAX.match(n) for n in names
            ):
                raise _Refused(2, "Invalid request: invalid stream", close=True)
            if method == "UNSUBSCRIBE":
                self._unsubscribe(client, names)
                return None
            if len(client.streams.keys() | set(names)) > MAX_STREAMS:
                raise _Refused(2, "Invalid request: too many streams")
            self._subscribe(client, names)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise _Refused(2, "Invalid request: too many parameters")
            return list(client.streams)
        args = params if isinstance(params, list) else []
        if len(args) > (2 if method == "SET_PROPERTY" else 1):
            raise _Refused(2, "Invalid request: too many parameters")
        if not args or not isinstance(args[0], str):
            raise _Refused(2, "Invalid request: property name must be a string")
        if args[0] != "combined":
            raise _Refused(0, "Unknown property")
        if method == "GET_PROPERTY":
            return client.combined
        if len(args) < 2 or not isinstance(args[1], bool):
            raise _Refused(1, "Invalid value type: expected Boolean")
        if args[1] != client.combined:
            names = list(client.streams)
            self._unsubscribe(client, names)
            client.combined = args[1]
            self._subscribe(client, names)
        return None

    def _subscribe(self, client: _Client, names: list[str]) -> None:
        for name in names:
            stream = self.streams.get(name)
            if stream is None:
                stream = parse_stream(name, self.spot, self.settings.binance_legacy_ticker_arr)
                if stream is not None:  # only names with data are kept: they are few
                    self.streams[name] = stream
                    if stream.kind == "kline":
                        self._bar(stream)
            client.streams[name] = None
            groups = self.subscribers.setdefault(name, {})
            groups.setdefault(client.variant, set()).add(client.ws)

    def _unsubscribe(self, client: _Client, names: list[str]) -> None:
        for name in names:
            client.streams.pop(name, None)
            groups = self.subscribers.get(name, {})
            groups.get(client.variant, set()).discard(client.ws)
            if not any(groups.values()):
                self.subscribers.pop(name, None)

    # -- market state -----------------------------------------------------------------------

    def _bar(self, stream: Stream) -> Bar:
        assert stream.inst is not None
        key = (stream.inst, stream.interval, stream.offset_ms)
        if key not in self.bars:
            start, end = kline_bounds(stream.interval, now_ms(), stream.offset_ms)
            last = stream.inst.last
            self.bars[key] = Bar(stream.interval, start, end, last, last, last, last)
        return self.bars[key]

    def _remember_trades(self, steps: dict[Instrument, Step]) -> None:
        """The last 5 minutes of trades of each symbol, for avgPrice."""
        for inst, step in steps.items():
            recent, sums = self.recent[inst], self.recent_sums[inst]
            for trade in step.trades:
                recent.append((trade.time_ms, trade.size, trade.size * trade.price))
                sums[0] += trade.size
                sums[1] += trade.size * trade.price
                self.last_trade_ms[inst] = trade.time_ms
            while recent and recent[0][0] < step.time_ms - AVG_PRICE_MS:
                _, size, quote = recent.popleft()
                sums[0] -= size
                sums[1] -= quote

    def _roll_bars(self, steps: dict[Instrument, Step], stamp: int) -> dict[tuple, Bar]:
        """Close the klines whose interval ended, then add this step's trades."""
        closed: dict[tuple, Bar] = {}
        for key, bar in self.bars.items():
            inst, _, offset = key
            step = steps.get(inst)
            at = step.time_ms if step else stamp
            if at > bar.end:
                closed[key] = bar
                bar = self.bars[key] = bar.following(at, offset)
            for trade in step.trades if step else ():
                bar.add(trade)
        return closed

    def _moved_tops(self) -> set[Instrument]:
        """Symbols whose best bid/ask price or quantity changed since the last push."""
        moved = set()
        for inst in self.spot.values():
            top = (inst.bid, inst.bid_size, inst.ask, inst.ask_size)
            if self.tops.get(inst) != top:
                self.tops[inst] = top
                moved.add(inst)
        return moved

    def _events(
        self,
        stream: Stream,
        steps: dict[Instrument, Step],
        closed: dict[tuple, Bar],
        moved_tops: set[Instrument],
        stamp: int,
        k: int,
    ) -> list[object]:
        """What one push of `stream` sends: events (or one array), times scaled by `k`."""
        if stream.kind in ("allMini", "allTickers"):
            event = mini_ticker_event if stream.kind == "allMini" else ticker_event
            changed = [inst for inst in self.spot.values() if inst in steps]
            return [[event(inst, stamp, k) for inst in changed]] if changed else []
        inst = stream.inst
        assert inst is not None
        step = steps.get(inst)
        kind = stream.kind
        if kind == "kline":
            key = (inst, stream.interval, stream.offset_ms)
            events = [kline_event(inst, closed[key], True, stamp, k)] if key in closed else []
            return [*events, kline_event(inst, self.bars[key], False, stamp, k)]
        if kind == "bookTicker":
            return [book_ticker_event(inst)] if inst in moved_tops else []
        if kind == "partial":
            return [book_levels(inst, stream.levels)]
        if step is None:
            return []
        if kind == "trade":
            return [trade_event(inst, trade, stamp, k) for trade in step.trades]
        if kind == "aggTrade":
            return [self._agg_trade(inst, trade, stamp, k) for trade in step.trades]
        if kind == "depth":
            return [depth_update_event(step, stamp, k)] if step.changes else []
        if kind == "ticker":
            return [ticker_event(inst, stamp, k)]
        if kind == "miniTicker":
            return [mini_ticker_event(inst, stamp, k)]
        # avgPrice
        size, quote = self.recent_sums[inst]
        return [
            {
                "e": "avgPrice",
                "E": stamp * k,
                "s": inst.binance,
                "i": "5m",
                "w": _n(quote / size if size > 0 else inst.last),
                "T": self.last_trade_ms[inst] * k,
            }
        ]

    def _agg_trade(self, inst: Instrument, trade: Trade, stamp: int, k: int) -> dict[str, Any]:
        """Each fill of a step is at its own price level, so it is its own aggregate trade;
        the aggregate id is derived from the trade id so every subscriber sees the same."""
        return {
            "e": "aggTrade",
            "E": stamp * k,
            "s": inst.binance,
            "a": trade.trade_id - inst.first_trade_id + 1,
            "p": _n(trade.price),
            "q": _n(trade.size),
            "f": trade.trade_id,
            "l": trade.trade_id,
            "T": trade.time_ms * k,
            "m": not trade.buyer_is_taker,
            "M": True,
        }

    # -- REST -------------------------------------------------------------------------------

    def _depth_snapshot(self, query: dict[str, str]) -> tuple[int, object]:
        """GET /api/v3/depth with rest-api.md's parameters and errors.md's codes."""
        known = [name for name in ("symbol", "limit", "symbolStatus") if name in query]
        if len(known) < len(query):
            msg = f"Not all sent parameters were read; read '{len(known)}' parameter(s) but was "
            return 400, {"code": -1104, "msg": msg + f"sent '{len(query)}'."}
        symbol = query.get("symbol", "")
        if not symbol:
            msg = "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            return 400, {"code": -1102, "msg": msg}
        if not _REST_SYMBOL.match(symbol):
            msg = "Illegal characters found in parameter 'symbol'; legal range is "
            return 400, {"code": -1100, "msg": msg + "'^[A-Z0-9-_.]{1,20}$'."}
        limit_text = query.get("limit", str(DEFAULT_DEPTH_LIMIT))
        if not _REST_INT.match(limit_text):
            msg = "Illegal characters found in parameter 'limit'; legal range is "
            return 400, {"code": -1100, "msg": msg + "'^[0-9]{1,20}$'."}
        status = query.get("symbolStatus")
        if status is not None and status not in ("TRADING", "HALT", "BREAK"):
            return 400, {"code": -1122, "msg": "Invalid symbolStatus."}
        inst = self.spot.get(symbol.lower())
        if inst is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        if status not in (None, "TRADING"):
            msg = "The symbol's status does not match the requested symbolStatus."
            return 400, {"code": -1220, "msg": msg}
        self.count("snapshots")
        return 200, book_levels(inst, max(1, min(int(limit_text), MAX_DEPTH_LIMIT)))
