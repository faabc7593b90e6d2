"""HTX (Huobi) spot market data, as HTX's "Websocket Market Data" documentation describes it.

Paths: `/ws` (every market topic) and `/feed` (the MBP incremental topics `market.$symbol.mbp.
$levels` and their `req` refresh, which `/ws` does not serve; `/feed` serves the rest too).
Every server frame is a gzip-compressed JSON text in a binary WebSocket frame (read with
`compress=gzip`). The server sends `{"ping": ts}` every `huobi_ping_interval` seconds (5 s
documented); after `huobi_missed_pings` (2) pings without a matching `{"pong": ts}` it
disconnects the client right before the next ping. A client's own `{"ping": ts}` is answered
with `{"pong": ts}`.

Requests (one topic each): `{"sub": topic, "id": id}` -> `{"id","status":"ok","subbed","ts"}`,
`{"unsub": ...}` -> `{"id","status":"ok","unsubbed","ts"}`, `{"req": topic, "id": id}` ->
`{"id","rep","status":"ok","ts","data"}` for kline (with `from`/`to` in epoch seconds, at most
300 bars), depth, trade.detail (latest 300), detail and, on `/feed`, mbp. Errors are
`{"status":"error","ts","id","err-code":"bad-request","err-msg": ...}` with the documented
messages: "invalid topic <topic>", "unsub with not subbed topic <topic>", "not json string",
"429 too many request" (pull requests closer than 100 ms on one connection).

Topics per symbol (btcusdt ...): ticker, detail, bbo, trade.detail, depth.step0..step5 (step0:
up to 150 levels as they are, stepN: prices bucketed to tick * 10**N, up to 20 levels; pushed
once a second), kline.<1min|5min|15min|30min|60min|4hour|1day|1week|1mon|1year> (day and longer
bars start at midnight GMT+8), mbp.refresh.<5|10|20>, and on `/feed` mbp.<5|20|150|400>.

Sources: huobiapi/docs, branch v1_en, source/index.html.md "Websocket Market Data" (last
change 2021-06-23; the same text as https://huobiapi.github.io/docs/spot/v1/en/ then), and the
`market.$symbol.ticker` topic added 2021-08-24 (Huobi Singapore spot v1 documentation, which
shares the text). Where the documentation's example and field table disagree the simulator
follows what HTX's servers send (noted at each encoder).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
import weakref
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .feed import Feed
from .market import Instrument, Step, Trade, now_ms

__all__ = [
    "DEPTH_STEPS",
    "HEARTBEAT_CLOSE_CODE",
    "KLINE_PERIODS",
    "HuobiFeed",
    "Topic",
    "gzip_json",
    "parse_topic",
]

WS_PATH = "/ws"
FEED_PATH = "/feed"  # MBP incremental and its refresh req
#: The documentation only says the server disconnects; HTX closes with 1003 and this reason
#: (as seen by clients, e.g. hummingbot/hummingbot#825).
HEARTBEAT_CLOSE_CODE = 1003
HEARTBEAT_REASON = "ping check expired, session: {session}"
REQ_INTERVAL = 0.1  # "The limitation of single connection is 100 ms" for req
MAX_REQ_ROWS = 300  # kline and trade.detail pull requests return at most 300 rows
KLINE_FROM, KLINE_TO = 1501174800, 2556115200  # documented defaults of a kline req
#: kline period -> fixed length in seconds (None: a calendar week, month or year)
KLINE_PERIODS: dict[str, int | None] = {
    "1min": 60,
    "5min": 300,
    "15min": 900,
    "30min": 1800,
    "60min": 3600,
    "4hour": 14400,
    "1day": 86400,
    "1week": None,
    "1mon": None,
    "1year": None,
}
#: depth type -> (price bucket in ticks, levels): step0 as is up to 150, stepN tick*10**N, 20
DEPTH_STEPS: dict[str, tuple[int, int]] = {"step0": (1, 150)} | {
    f"step{n}": (10**n, 20) for n in range(1, 6)
}
MBP_LEVELS = (5, 20, 150, 400)  # incremental, on /feed
MBP_REFRESH_LEVELS = (5, 10, 20)  # refresh snapshots, on /ws
GMT8 = timezone(timedelta(hours=8))  # HTX's day, week, month and year start in Singapore time

Level = tuple[int, float, float]  # ticks, price, size
_encode = json.JSONEncoder(separators=(",", ":")).encode


def gzip_json(obj: object) -> bytes:
    """One server frame: JSON, gzip-compressed (RFC 1952) like every HTX market frame."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member (3.10 has no
    return packer.compress(_encode(obj).encode()) + packer.flush()  # wbits in zlib.compress)


# -- topics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """A parsed `market.<symbol>.<kind>[.<arg>]` topic."""

    name: str
    inst: Instrument
    kind: str  # ticker, detail, bbo, trade, depth, kline, mbp, mbp.refresh
    arg: str = ""  # depth step, kline period, mbp levels


def parse_topic(market_find: Callable[[str], Instrument | None], name: str) -> Topic | None:
    """The topic `name` names, or None when HTX would answer "invalid topic"."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "market" or not parts[1].isalnum():
        return None
    if parts[1] != parts[1].lower():
        return None
    inst = market_find(parts[1])
    if inst is None:
        return None
    rest = parts[2:]
    if rest in (["ticker"], ["detail"], ["bbo"]):
        return Topic(name, inst, rest[0])
    if rest == ["trade", "detail"]:
        return Topic(name, inst, "trade")
    if len(rest) == 2 and rest[0] == "depth" and rest[1] in DEPTH_STEPS:
        return Topic(name, inst, "depth", rest[1])
    if len(rest) == 2 and rest[0] == "kline" and rest[1] in KLINE_PERIODS:
        return Topic(name, inst, "kline", rest[1])
    if len(rest) == 2 and rest[0] == "mbp" and rest[1] in {str(n) for n in MBP_LEVELS}:
        return Topic(name, inst, "mbp", rest[1])
    refresh = {str(n) for n in MBP_REFRESH_LEVELS}
    if len(rest) == 3 and rest[:2] == ["mbp", "refresh"] and rest[2] in refresh:
        return Topic(name, inst, "mbp.refresh", rest[2])
    return None


# -- encoders (one per topic kind; field names and JSON types as documented) ----------------------


def detail_tick(inst: Instrument) -> dict[str, object]:
    """`market.$symbol.detail`. The WebSocket field table lists id..vol; HTX also sends
    `version` (the REST `/market/detail` table has it, id == version, an internal number)."""
    return {
        "id": inst.update_id,
        "low": inst.low,
        "high": inst.high,
        "open": inst.open,
        "close": inst.last,
        "vol": inst.quote_volume,
        "amount": inst.volume,
        "version": inst.update_id,
        "count": inst.trades,
    }


def ticker_tick(inst: Instrument) -> dict[str, object]:
    """`market.$symbol.ticker`. The field table also lists `id`, but HTX's example (and its
    servers) send these 13 fields only."""
    (_, bid, bid_size), (_, ask, ask_size) = Book.of(inst).best()
    return {
        "open": inst.open,
        "high": inst.high,
        "low": inst.low,
        "close": inst.last,
        "amount": inst.volume,
        "vol": inst.quote_volume,
        "count": inst.trades,
        "bid": bid,
        "bidSize": bid_size,
        "ask": ask,
        "askSize": ask_size,
        "lastPrice": inst.last,
        "lastSize": inst.last_size,
    }


def bbo_tick(inst: Instrument) -> dict[str, object]:
    """`market.$symbol.bbo`: numbers as the field table types them (long/float/int); the
    example's quoted values are not what the servers send."""
    (_, bid, bid_size), (_, ask, ask_size) = Book.of(inst).best()
    return {
        "seqId": inst.update_id,
        "ask": ask,
        "askSize": ask_size,
        "bid": bid,
        "bidSize": bid_size,
        "quoteTime": inst.updated_ms,
        "symbol": inst.huobi,
    }


def trade_rows(tick_id: int, trades: list[Trade]) -> list[dict[str, object]]:
    """`data` of a `market.$symbol.trade.detail` tick. `id` (to be obsoleted) is the tick id
    followed by ten digits, as in HTX's example; `tradeId` is the trade id."""
    return [
        {
            "id": tick_id * 10**10 + trade.trade_id % 10**10,
            "ts": trade.time_ms,
            "tradeId": trade.trade_id,
            "amount": trade.size,
            "price": trade.price,
            "direction": "buy" if trade.buyer_is_taker else "sell",
        }
        for trade in trades
    ]


@dataclass
class Book:
    """One instrument's book at one update id, sorted once per tick for every topic that
    reads it: (ticks, price, size), bids high to low, asks low to high."""

    version: int
    tick: float
    decimals: int
    size_decimals: int
    bids: list[Level]
    asks: list[Level]

    @classmethod
    def of(cls, inst: Instrument) -> Book:
        book = _books.get(inst)
        if book is None or book.version != inst.update_id:
            book = _books[inst] = cls._build(inst)
        return book

    @classmethod
    def _build(cls, inst: Instrument) -> Book:
        tick, decimals = inst.tick, inst.decimals
        bids = [(t, round(t * tick, decimals), q) for t, q in sorted(inst.bids.items())[::-1]]
        asks = [(t, round(t * tick, decimals), q) for t, q in sorted(inst.asks.items())]
        return cls(inst.update_id, tick, decimals, inst.size_decimals, bids, asks)

    def best(self) -> tuple[Level, Level]:
        return self.bids[0], self.asks[0]

    def top(self, levels: int) -> tuple[dict[float, float], dict[float, float]]:
        return (
            {p: q for _, p, q in self.bids[:levels]},
            {p: q for _, p, q in self.asks[:levels]},
        )

    def bucketed(self, bucket: int, levels: int, bids: bool) -> list[list[float]]:
        """The best `levels` buckets of `bucket` ticks, sizes summed (the side is sorted, so
        each bucket is a run of neighbouring levels)."""
        out: list[list[float]] = []
        key, total = None, 0.0
        for ticks, _, size in self.bids if bids else self.asks:
            start = (ticks // bucket if bids else -(-ticks // bucket)) * bucket
            if start != key:
                if key is not None:
                    out.append(self._level(key, total))
                    if len(out) == levels:
                        return out
                key, total = start, 0.0
            total += size
        if key is not None:
            out.append(self._level(key, total))
        return out

    def _level(self, ticks: int, size: float) -> list[float]:
        return [round(ticks * self.tick, self.decimals), round(size, self.size_decimals)]


_books: weakref.WeakKeyDictionary[Instrument, Book] = weakref.WeakKeyDictionary()


def depth_levels(inst: Instrument, step: str) -> tuple[list[list[float]], list[list[float]]]:
    """Bids high to low and asks low to high as [price, size]; stepN buckets prices to
    tick * 10**N (bids down, asks up, so a bucketed bid stays below a bucketed ask)."""
    bucket, levels = DEPTH_STEPS[step]
    book = Book.of(inst)
    if bucket == 1:
        return (
            [[p, q] for _, p, q in book.bids[:levels]],
            [[p, q] for _, p, q in book.asks[:levels]],
        )
    return book.bucketed(bucket, levels, bids=True), book.bucketed(bucket, levels, bids=False)


def depth_tick(inst: Instrument, step: str) -> dict[str, object]:
    bids, asks = depth_levels(inst, step)
    return {"bids": bids, "asks": asks, "version": inst.update_id, "ts": inst.updated_ms}


def top_levels(inst: Instrument, levels: int) -> tuple[dict[float, float], dict[float, float]]:
    return Book.of(inst).top(levels)


def _sides(book: dict[float, float], descending: bool) -> list[list[float]]:
    return [[p, q] for p, q in sorted(book.items(), reverse=descending)]


def _diff(old: dict[float, float], new: dict[float, float], descending: bool) -> list[list[float]]:
    """[price, size] for each level that changed or appeared, [price, 0] for each one gone."""
    changed = {p: q for p, q in new.items() if old.get(p) != q}
    changed.update({p: 0.0 for p in old if p not in new})
    return _sides(changed, descending)


# -- candles ------------------------------------------------------------------------------------


def bar_start(period: str, ms: int) -> int:
    """Epoch seconds where the `period` bar holding `ms` starts (days and longer in GMT+8)."""
    seconds = ms // 1000
    length = KLINE_PERIODS[period]
    if length is not None and length < 86400:
        return seconds - seconds % length  # GMT+8 is a whole number of these from the epoch
    day = datetime.fromtimestamp(seconds, GMT8).replace(hour=0, minute=0, second=0)
    if period == "1week":
        day -= timedelta(days=day.weekday())
    elif period == "1mon":
        day = day.replace(day=1)
    elif period == "1year":
        day = day.replace(month=1, day=1)
    return int(day.timestamp())


def bar_end(period: str, start: int) -> int:
    """Epoch seconds where the next bar starts."""
    length = KLINE_PERIODS[period]
    if length is not None:
        return start + length
    day = datetime.fromtimestamp(start, GMT8)
    if period == "1week":
        return start + 7 * 86400
    if period == "1mon":
        nxt = day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1)
        return int(nxt.timestamp())
    return int(day.replace(year=day.year + 1).timestamp())


@dataclass
class Bar:
    """One kline bar; `tick()` is its documented shape."""

    id: int  # start, epoch seconds
    end: int
    open: float
    high: float
    low: float
    close: float
    amount: float = 0.0  # base volume
    vol: float = 0.0  # quote volume
    count: int = 0

    def tick(self) -> dict[str, object]:
        return {
            "id": self.id,
            "open": self.open,
            "close": self.close,
            "low": self.low,
            "high": self.high,
            "amount": self.amount,
            "vol": self.vol,
            "count": self.count,
        }


@dataclass
class Series:
    """The bars of one instrument and period: the current one and up to 300 closed ones."""

    period: str
    current: Bar
    closed: deque[Bar] = field(default_factory=lambda: deque(maxlen=MAX_REQ_ROWS))

    @classmethod
    def starting(cls, period: str, price: float, ms: int) -> Series:
        start = bar_start(period, ms)
        return cls(period, Bar(start, bar_end(period, start), price, price, price, price))

    def roll(self, ms: int) -> Bar:
        """The bar holding `ms`, opening new (trade-less) bars at the last close as needed."""
        bar = self.current
        if ms // 1000 >= bar.end:
            self.closed.append(bar)
            start = bar_start(self.period, ms)
            price = bar.close
            bar = self.current = Bar(start, bar_end(self.period, start), price, price, price, price)
        return bar

    def add(self, trade: Trade) -> None:
        bar = self.roll(trade.time_ms)
        bar.high = max(bar.high, trade.price)
        bar.low = min(bar.low, trade.price)
        bar.close = trade.price
        bar.amount += trade.size
        bar.vol += trade.size * trade.price
        bar.count += 1

    def between(self, first: int, last: int) -> list[dict[str, object]]:
        bars = [bar for bar in (*self.closed, self.current) if first <= bar.id <= last]
        return [bar.tick() for bar in bars[-MAX_REQ_ROWS:]]


# -- MBP incremental ----------------------------------------------------------------------------


@dataclass
class MbpStream:
    """What one `market.$symbol.mbp.$levels` stream last published: its seqNum and book."""

    levels: int
    seq: int
    bids: dict[float, float]
    asks: dict[float, float]

    @classmethod
    def of(cls, inst: Instrument, levels: int) -> MbpStream:
        bids, asks = top_levels(inst, levels)
        return cls(levels, inst.update_id, bids, asks)

    def advance(self, inst: Instrument) -> dict[str, object] | None:
        """The next incremental tick, or None (5/20 levels send nothing when nothing changed;
        150/400 always send both sides, empty or not, as documented)."""
        bids, asks = top_levels(inst, self.levels)
        bid_changes = _diff(self.bids, bids, descending=True)
        ask_changes = _diff(self.asks, asks, descending=False)
        full = self.levels >= 150
        if not (full or bid_changes or ask_changes) or inst.update_id == self.seq:
            return None
        tick: dict[str, object] = {"seqNum": inst.update_id, "prevSeqNum": self.seq}
        if full or bid_changes:
            tick["bids"] = bid_changes
        if full or ask_changes:
            tick["asks"] = ask_changes
        self.seq, self.bids, self.asks = inst.update_id, bids, asks
        return tick

    def refresh(self) -> dict[str, object]:
        return {
            "seqNum": self.seq,
            "bids": _sides(self.bids, descending=True),
            "asks": _sides(self.asks, descending=False),
        }


# -- the feed -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    path: str
    session: str = field(default_factory=lambda: str(uuid.uuid4()))
    unanswered: set[int] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    last_req: float = -math.inf


class HuobiFeed(Feed):
    name = "huobi"
    paths = (WS_PATH, FEED_PATH)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.subscribers: dict[str, set[ServerConnection]] = {}
        self.topics: dict[str, Topic] = {}
        self._pushed_at: dict[str, float] = {}  # depth topic -> monotonic time of last push
        self._bbo: dict[str, tuple[Level, Level]] = {}
        self._mbp: dict[str, MbpStream] = {}
        stamp = now_ms()
        spot = self.market.spot
        self._new_trades: dict[str, list[dict[str, object]]] = {}  # this tick's, by symbol
        self._trades: dict[str, deque[dict[str, object]]] = {
            inst.huobi: deque(maxlen=MAX_REQ_ROWS) for inst in spot
        }
        self._series: dict[str, dict[str, Series]] = {
            inst.huobi: {p: Series.starting(p, inst.last, stamp) for p in KLINE_PERIODS}
            for inst in spot
        }

    def describe(self) -> list[str]:
        periods = "|".join(KLINE_PERIODS)
        return [
            f"{WS_PATH}    HTX spot market data; every frame gzip; "
            f'{{"ping":ts}} every {self.settings.huobi_ping_interval:g} s, '
            f"{self.settings.huobi_missed_pings} unanswered -> disconnect",
            "       sub/unsub market.<symbol>.ticker|detail|bbo|trade.detail|depth.step0-5|"
            f"kline.<{periods}>|mbp.refresh.<5|10|20>",
            "       req market.<symbol>.kline.<period> (from/to)|depth.stepN|trade.detail|detail",
            f"{FEED_PATH}  sub market.<symbol>.mbp.<5|20|150|400> (incremental), req for refresh",
        ]

    # -- a client connection ---------------------------------------------------------------------

    async def handle(self, ws: ServerConnection, path: str) -> None:
        client = _Client(ws, path)
        heartbeat = asyncio.ensure_future(self._heartbeat(client))
        try:
            async for message in ws:
                answer = self.answer(client, message)
                if answer is not None:
                    await ws.send(answer)
        except ConnectionClosed:
            pass
        finally:
            heartbeat.cancel()
            for topic in client.topics:
                self._leave(ws, topic)

    async def _heartbeat(self, client: _Client) -> None:
        """Ping every interval; right before the next ping, drop a client that left the
        last `huobi_missed_pings` pings unanswered (HTX's documented rule)."""
        while True:
            await asyncio.sleep(self.settings.huobi_ping_interval)
            if len(client.unanswered) >= self.settings.huobi_missed_pings:
                self.count("heartbeat_drops")
                reason = HEARTBEAT_REASON.format(session=client.session)
                await client.ws.close(HEARTBEAT_CLOSE_CODE, reason)
                return
            stamp = now_ms()
            while stamp in client.unanswered:
                stamp += 1
            client.unanswered.add(stamp)
            self.count("pings")
            try:
                await client.ws.send(gzip_json({"ping": stamp}))
            except ConnectionClosed:
                return

    def answer(self, client: _Client, message: str | bytes) -> bytes | None:
        """The frame answering one client message, or None (a pong needs no answer)."""
        request = _decode(message)
        if request is None:
            return self._error(None, "not json string")
        if "pong" in request:
            pong = request["pong"]
            if isinstance(pong, int) and pong in client.unanswered:
                client.unanswered.clear()
                self.count("pongs")
            return None
        if "ping" in request:
            return gzip_json({"pong": request["ping"]})
        request_id = request.get("id")
        if "sub" in request:
            return self._sub(client, request_id, request["sub"])
        if "unsub" in request:
            return self._unsub(client, request_id, request["unsub"])
        if "req" in request:
            return self._req(client, request_id, request)
        return self._error(request_id, "invalid topic")

    def _topic(self, client: _Client, name: object, req: bool = False) -> Topic | None:
        """The topic, if this path serves it (MBP incremental only on /feed)."""
        if not isinstance(name, str):
            return None
        topic = self.topics.get(name) or parse_topic(self.market.find, name)
        if topic is None or (topic.kind == "mbp" and client.path != FEED_PATH):
            return None
        if req and topic.kind not in ("kline", "depth", "trade", "detail", "mbp"):
            return None
        return topic

    def _sub(self, client: _Client, request_id: object, name: object) -> bytes:
        topic = self._topic(client, name)
        if topic is None:
            return self._error(request_id, f"invalid topic {name}")
        self.topics.setdefault(topic.name, topic)
        group = self.subscribers.setdefault(topic.name, set())
        if topic.kind == "mbp" and not group:  # a stream nobody followed starts afresh
            self._mbp[topic.name] = MbpStream.of(topic.inst, int(topic.arg))
        group.add(client.ws)
        client.topics.add(topic.name)
        self.count("subs")
        return gzip_json({"id": request_id, "status": "ok", "subbed": topic.name, "ts": now_ms()})

    def _unsub(self, client: _Client, request_id: object, name: object) -> bytes:
        if not isinstance(name, str) or name not in client.topics:
            if self._topic(client, name) is None:
                return self._error(request_id, f"invalid topic {name}")
            return self._error(request_id, f"unsub with not subbed topic {name}")
        client.topics.discard(name)
        self._leave(client.ws, name)
        return gzip_json({"id": request_id, "status": "ok", "unsubbed": name, "ts": now_ms()})

    def _leave(self, ws: ServerConnection, name: str) -> None:
        group = self.subscribers.get(name)
        if group is not None:
            group.discard(ws)
            if not group:
                del self.subscribers[name]

    def _req(self, client: _Client, request_id: object, request: dict[str, object]) -> bytes:
        name = request["req"]
        topic = self._topic(client, name, req=True)
        if topic is None:
            return self._error(request_id, f"invalid topic {name}")
        now = time.monotonic()
        if now - client.last_req < REQ_INTERVAL:
            return self._error(request_id, "429 too many request")
        client.last_req = now
        self.count("reqs")
        data = self._snapshot(topic, request)
        return gzip_json(
            {"id": request_id, "rep": topic.name, "status": "ok", "ts": now_ms(), "data": data}
        )

    def _snapshot(self, topic: Topic, request: dict[str, object]) -> object:
        inst = topic.inst
        if topic.kind == "kline":
            first = _epoch(request.get("from"), KLINE_FROM)
            last = _epoch(request.get("to"), KLINE_TO)
            series = self._series[inst.huobi][topic.arg]
            series.roll(now_ms())
            return series.between(first, last)
        if topic.kind == "depth":
            return depth_tick(inst, topic.arg)
        if topic.kind == "trade":
            return list(reversed(self._trades[inst.huobi]))  # newest first
        if topic.kind == "mbp":
            stream = self._mbp.get(topic.name)
            if stream is None or not self.subscribers.get(topic.name):
                stream = self._mbp[topic.name] = MbpStream.of(inst, int(topic.arg))
            return stream.refresh()
        return detail_tick(inst)

    def _error(self, request_id: object, text: str) -> bytes:
        self.count("errors")
        return gzip_json(
            {
                "status": "error",
                "ts": now_ms(),
                "id": request_id,
                "err-code": "bad-request",
                "err-msg": text,
            }
        )

    # -- pushes ----------------------------------------------------------------------------------

    def tick(self, steps: list[Step]) -> None:
        stamp = now_ms()
        spot: dict[str, Step] = {}
        for step in steps:
            if step.inst.kind == "SPOT":
                spot[step.inst.huobi] = step
                self._record(step, stamp)
        clock = time.monotonic()
        for name, clients in list(self.subscribers.items()):
            topic = self.topics[name]
            tick = self._push(topic, spot.get(topic.inst.huobi), clock)
            if tick is None:
                continue
            broadcast(clients, gzip_json({"ch": name, "ts": stamp, "tick": tick}))
            self.count("sent", len(clients))

    def _record(self, step: Step, stamp: int) -> None:
        """Keep the latest 300 trades and every kline period's bars of a spot instrument."""
        rows = self._new_trades[step.inst.huobi] = trade_rows(step.last_update_id, step.trades)
        self._trades[step.inst.huobi].extend(rows)
        for series in self._series[step.inst.huobi].values():
            for trade in step.trades:
                series.add(trade)
            series.roll(stamp)

    def _push(self, topic: Topic, step: Step | None, clock: float) -> object | None:
        inst, kind = topic.inst, topic.kind
        if kind == "ticker":
            return ticker_tick(inst)
        if kind == "detail":
            return detail_tick(inst)
        if kind == "trade":
            if step is None or not step.trades:
                return None
            return {
                "id": step.last_update_id,
                "ts": step.time_ms,
                "data": self._new_trades[inst.huobi],
            }
        if kind == "bbo":
            quote = Book.of(inst).best()
            if self._bbo.get(topic.name) == quote:
                return None
            self._bbo[topic.name] = quote
            return bbo_tick(inst)
        if kind == "depth":
            if clock - self._pushed_at.get(topic.name, -math.inf) < (
                self.settings.huobi_depth_interval - 1e-3
            ):
                return None
            self._pushed_at[topic.name] = clock
            return depth_tick(inst, topic.arg)
        if kind == "kline":
            return self._series[inst.huobi][topic.arg].current.tick()
        if kind == "mbp.refresh":
            bids, asks = top_levels(inst, int(topic.arg))
            return {
                "seqNum": inst.update_id,
                "bids": _sides(bids, descending=True),
                "asks": _sides(asks, descending=False),
            }
        return self._mbp[topic.name].advance(inst)


def _decode(message: str | bytes) -> dict[str, object] | None:
    """A request as a JSON object; a gzip-compressed request (mode=dual) is accepted too."""
    if isinstance(message, bytes):
        try:
            message = zlib.decompress(message, 47)  # gzip or zlib header
        except zlib.error:
            pass
    try:
        request = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    return request if isinstance(request, dict) else None


def _epoch(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
