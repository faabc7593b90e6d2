"""The simulated HTX (Huobi) spot market feed against HTX's documentation, checked with a plain
websockets client (not with Dial), so the feed is verified independently of the library.

Source of every table below: huobiapi/docs, branch v1_en, source/index.html.md, section
"Websocket Market Data" (last change 2021-06-23; https://huobiapi.github.io/docs/spot/v1/en/),
and for `market.$symbol.ticker` the "Market Ticker" section added 2021-08-24 (same text in the
Huobi Singapore spot v1 docs). JSON types: integer/long -> int, float -> float, string -> str,
object arrays -> list. Where the example and the field table disagree, the comment says which
one the servers follow."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dial.simulator import Simulator
from dial.simulator.huobi import HEARTBEAT_CLOSE_CODE, KLINE_PERIODS
from tests.servers.simulator import own_simulator, simulator

__all__ = ["own_simulator", "simulator"]  # fixtures used by name

Json = dict[str, Any]

# "Subscribe to Topic" / "Unsubscribe": the acks
SUBBED = {"id": str, "status": str, "subbed": str, "ts": int}
UNSUBBED = {"id": str, "status": str, "unsubbed": str, "ts": int}
# "Error Code": err-code / err-msg; the frame as HTX sends it (status, ts, id, err-code, err-msg)
ERROR = {"status": str, "ts": int, "id": str, "err-code": str, "err-msg": str}
# every push: {"ch", "ts" (system update time), "tick"}
PUSH = {"ch": str, "ts": int, "tick": dict}
# "Pull Data": {"id", "rep", "status", "ts", "data"} (data: list for kline/trade, object else)
REP = {"id": str, "rep": str, "status": str, "ts": int}
# "Market Ticker" -- the table also lists `id`; the example (and the servers) send these 13
TICKER = {
    "open": float, "high": float, "low": float, "close": float, "amount": float, "vol": float,
    "count": int, "bid": float, "bidSize": float, "ask": float, "askSize": float,
    "lastPrice": float, "lastSize": float,
}  # fmt: skip
# "Market Details" -- plus `version`, which HTX sends (REST "Get the Last 24h Market Summary")
DETAIL = {
    "id": int, "amount": float, "count": int, "open": float, "close": float, "low": float,
    "high": float, "vol": float, "version": int,
}  # fmt: skip
# "Best Bid/Offer" -- types per the table (the example quotes them; the servers do not)
BBO = {
    "symbol": str, "quoteTime": int, "bid": float, "bidSize": float, "ask": float,
    "askSize": float, "seqId": int,
}  # fmt: skip
# "Trade Detail": the tick, and each entry of its `data`
TRADE_TICK = {"id": int, "ts": int, "data": list}
TRADE = {"id": int, "tradeId": int, "amount": float, "price": float, "ts": int, "direction": str}
# "Market Depth"
DEPTH = {"bids": list, "asks": list, "version": int, "ts": int}
# "Market Candlestick"
KLINE = {
    "id": int, "amount": float, "count": int, "open": float, "close": float, "low": float,
    "high": float, "vol": float,
}  # fmt: skip
# "Market By Price (refresh update)" and the refresh `req` of the incremental channel
MBP_REFRESH = {"seqNum": int, "bids": list, "asks": list}
# "Market By Price (incremental update)", 150 levels: both sides always present
MBP_150 = {"seqNum": int, "prevSeqNum": int, "bids": list, "asks": list}

TICKS = {
    "market.btcusdt.ticker": TICKER,
    "market.ethusdt.detail": DETAIL,
    "market.btcusdt.bbo": BBO,
    "market.solusdt.trade.detail": TRADE_TICK,
    "market.btcusdt.depth.step0": DEPTH,
    "market.btcusdt.depth.step3": DEPTH,
    "market.ethusdt.kline.1min": KLINE,
    "market.btcusdt.kline.1mon": KLINE,
    "market.btcusdt.mbp.refresh.10": MBP_REFRESH,
}


def gunzip(frame: bytes | str) -> Json:
    assert isinstance(frame, bytes), f"a text frame: {frame!r}"
    assert frame[:2] == b"\x1f\x8b", "not gzip (RFC 1952)"
    value = json.loads(gzip.decompress(frame))
    assert isinstance(value, dict)
    return value


def assert_fields(obj: Json, table: dict[str, type]) -> None:
    """Exactly the documented keys, each of exactly the documented JSON type."""
    assert set(obj) == set(table), f"keys {sorted(obj)} != {sorted(table)}"
    for key, kind in table.items():
        assert type(obj[key]) is kind, f"{key}={obj[key]!r} is not {kind.__name__}"


def frames(ws: ClientConnection, seconds: float, pong: bool = True) -> Iterator[Json]:
    """Every frame for `seconds` (answering heartbeats unless `pong` is False)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = gunzip(ws.recv(timeout=left))
        except TimeoutError:
            return
        if pong and "ping" in message:
            ws.send(json.dumps({"pong": message["ping"]}))
        yield message


def first(ws: ClientConnection, test: Any, seconds: float = 5.0) -> Json:
    for message in frames(ws, seconds):
        if test(message):
            return message
    raise AssertionError(f"nothing matched within {seconds} s")


def push_of(ws: ClientConnection, topic: str, seconds: float = 5.0) -> Json:
    return first(ws, lambda m: m.get("ch") == topic, seconds)


def answer_to(ws: ClientConnection, request_id: str, seconds: float = 5.0) -> Json:
    return first(ws, lambda m: m.get("id") == request_id, seconds)


def send(ws: ClientConnection, **request: object) -> None:
    ws.send(json.dumps(request))


@contextmanager
def feed(sim: Simulator, path: str = "/ws") -> Iterator[ClientConnection]:
    with connect(sim.base_url("huobi") + path, open_timeout=5, max_size=2**22) as ws:
        yield ws


def sub(ws: ClientConnection, topic: str) -> Json:
    send(ws, sub=topic, id=topic)
    ack = answer_to(ws, topic)
    assert_fields(ack, SUBBED)
    assert ack["status"] == "ok" and ack["subbed"] == topic
    return ack


def req(ws: ClientConnection, topic: str, **extra: object) -> Json:
    time.sleep(0.11)  # HTX allows one req per 100 ms on a connection
    send(ws, req=topic, id=f"req-{topic}", **extra)
    answer = answer_to(ws, f"req-{topic}")
    assert answer.get("status") == "ok", answer
    assert_fields({k: v for k, v in answer.items() if k != "data"}, REP)
    assert answer["rep"] == topic
    return answer


def error_for(ws: ClientConnection, **request: object) -> str:
    ws.send(json.dumps(request))
    answer = answer_to(ws, str(request["id"]))
    assert_fields(answer, ERROR)
    assert answer["status"] == "error" and answer["err-code"] == "bad-request"
    return str(answer["err-msg"])


def assert_book(bids: list[list[float]], asks: list[list[float]]) -> None:
    """[price, size] floats, bids high to low, asks low to high, best bid < best ask."""
    for level in (*bids, *asks):
        assert len(level) == 2 and all(type(x) is float and x > 0 for x in level), level
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert len({p for p, _ in bids}) == len(bids) and len({p for p, _ in asks}) == len(asks)
    assert bids[0][0] < asks[0][0]


# -- framing, acks, contracts --------------------------------------------------------------------


def test_huobi_every_frame_is_gzip_binary_json(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        send(ws, sub="market.btcusdt.ticker", id="a")
        send(ws, sub="market.nope.ticker", id="b")
        send(ws, req="market.btcusdt.detail", id="c")
        raw = [ws.recv(timeout=5) for _ in range(6)]
    assert all(isinstance(frame, bytes) and frame[:2] == b"\x1f\x8b" for frame in raw)
    kinds = {next(iter({"subbed", "err-msg", "rep", "ch", "ping"} & gunzip(f).keys())) for f in raw}
    assert {"subbed", "err-msg", "rep", "ch"} <= kinds


@pytest.mark.parametrize("topic", sorted(TICKS))
def test_huobi_push_matches_the_documented_fields(simulator: Simulator, topic: str) -> None:
    with feed(simulator) as ws:
        sub(ws, topic)
        push = push_of(ws, topic)
    assert_fields(push, PUSH)
    assert_fields(push["tick"], TICKS[topic])
    tick = push["tick"]
    if "data" in tick:
        assert tick["data"], "a trade push without trades"
        for trade in tick["data"]:
            assert_fields(trade, TRADE)
            assert trade["direction"] in ("buy", "sell")
    if "bids" in tick:
        assert_book(tick["bids"], tick["asks"])
    if "bid" in tick:
        assert tick["bid"] < tick["ask"]


def test_huobi_detail_push_keeps_its_old_shape(simulator: Simulator) -> None:
    """`market.<sym>.detail` as existing scripts read it (the FMZ heartbeat example)."""
    with feed(simulator) as ws:
        sub(ws, "market.btcusdt.detail")
        tick = push_of(ws, "market.btcusdt.detail")["tick"]
    assert tick["low"] <= tick["open"] <= tick["high"] and tick["low"] <= tick["close"]
    assert tick["count"] > 0 and tick["amount"] > 0 and tick["vol"] > tick["amount"]


def test_huobi_ticker_agrees_with_the_book(own_simulator: Simulator) -> None:
    with feed(own_simulator) as ws:
        sub(ws, "market.ethusdt.ticker")
        tick = push_of(ws, "market.ethusdt.ticker")["tick"]
    assert tick["bid"] < tick["ask"] and tick["bidSize"] > 0 and tick["askSize"] > 0
    assert tick["lastPrice"] == tick["close"] and tick["low"] <= tick["close"] <= tick["high"]


def test_huobi_trades_are_tick_by_tick_with_rising_ids(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        sub(ws, "market.btcusdt.trade.detail")
        pushes = [push_of(ws, "market.btcusdt.trade.detail") for _ in range(4)]
    ids = [trade["tradeId"] for push in pushes for trade in push["tick"]["data"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for push in pushes:
        for trade in push["tick"]["data"]:  # "id" (to be obsoleted) starts with the tick id
            assert str(trade["id"]).startswith(str(push["tick"]["id"]))


def test_huobi_unsub_acks_and_stops_the_pushes(simulator: Simulator) -> None:
    topic = "market.btcusdt.bbo"
    with feed(simulator) as ws:
        sub(ws, topic)
        push_of(ws, topic)
        send(ws, unsub=topic, id="u1")
        ack = answer_to(ws, "u1")
        assert_fields(ack, UNSUBBED)
        assert ack["status"] == "ok" and ack["unsubbed"] == topic
        later = [m for m in frames(ws, 0.6) if m.get("ch") == topic]
    assert later == []


def test_huobi_ack_echoes_a_missing_id_as_null(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        ws.send(json.dumps({"sub": "market.btcusdt.ticker"}))
        ack = first(ws, lambda m: "subbed" in m)
    assert ack["id"] is None and ack["status"] == "ok"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "market.nope.detail",  # unknown symbol
        "market.BTCUSDT.ticker",  # symbols are lower case
        "market.btcusdt.kline.2min",  # not a documented period
        "market.btcusdt.depth.step6",
        "market.btcusdt.mbp.refresh.15",
        "market.btcusdt.mbp.150",  # incremental MBP is served on /feed only
        "market.btcusdt.trade",
        "trade.btcusdt",
    ],
)
def test_huobi_sub_to_an_invalid_topic_is_a_bad_request(simulator: Simulator, topic: str) -> None:
    with feed(simulator) as ws:
        assert error_for(ws, sub=topic, id="x") == f"invalid topic {topic}"


def test_huobi_unsub_of_a_topic_not_subbed(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        message = error_for(ws, unsub="market.btcusdt.detail", id="u")
    assert message == "unsub with not subbed topic market.btcusdt.detail"


def test_huobi_not_json(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        ws.send("hello")
        answer = first(ws, lambda m: m.get("status") == "error")
    assert answer["err-msg"] == "not json string" and answer["err-code"] == "bad-request"


def test_huobi_req_faster_than_100ms_is_refused(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        send(ws, req="market.btcusdt.detail", id="r1")
        send(ws, req="market.btcusdt.detail", id="r2")
        assert answer_to(ws, "r1")["status"] == "ok"
        second = answer_to(ws, "r2")
    assert second["status"] == "error" and second["err-msg"] == "429 too many request"


def test_huobi_req_of_a_push_only_topic_is_invalid(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        assert error_for(ws, req="market.btcusdt.ticker", id="t") == (
            "invalid topic market.btcusdt.ticker"
        )


# -- heartbeat -----------------------------------------------------------------------------------


def _session(sim: Simulator, answer_pings: bool, seconds: float) -> tuple[int, Any]:
    """(pings seen, close frame received or None)."""
    pings, closed = 0, None
    with feed(sim) as ws:
        try:
            for message in frames(ws, seconds, pong=answer_pings):
                pings += "ping" in message
                if "ping" in message:
                    assert type(message["ping"]) is int and set(message) == {"ping"}
        except ConnectionClosed as exc:
            closed = exc.rcvd
    return pings, closed


def test_huobi_keeps_a_client_that_answers_pings() -> None:
    with Simulator("huobi", huobi_ping_interval=0.2) as sim:
        pings, closed = _session(sim, answer_pings=True, seconds=1.5)
        assert closed is None
        assert pings >= 5
        assert sim.counters["huobi.heartbeat_drops"] == 0
        assert sim.counters["huobi.pongs"] == pings


def test_huobi_drops_a_client_right_before_the_third_unanswered_ping() -> None:
    with Simulator("huobi", huobi_ping_interval=0.2) as sim:
        started = time.monotonic()
        pings, closed = _session(sim, answer_pings=False, seconds=5)
        elapsed = time.monotonic() - started
        assert pings == 2
        assert closed is not None and closed.code == HEARTBEAT_CLOSE_CODE == 1003
        assert closed.reason.startswith("ping check expired, session: ")
        assert 0.5 < elapsed < 2.5
        assert sim.counters["huobi.heartbeat_drops"] == 1


def test_huobi_a_wrong_pong_does_not_count() -> None:
    with Simulator("huobi", huobi_ping_interval=0.2) as sim, feed(sim) as ws:
        with pytest.raises(ConnectionClosed):
            for message in frames(ws, 5, pong=False):
                if "ping" in message:
                    ws.send(json.dumps({"pong": message["ping"] + 1}))
        assert sim.counters["huobi.heartbeat_drops"] == 1


def test_huobi_answers_a_client_ping(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        ws.send(json.dumps({"ping": 1492420473027}))
        assert first(ws, lambda m: "pong" in m) == {"pong": 1492420473027}


# -- req snapshots -------------------------------------------------------------------------------


def test_huobi_req_kline_returns_bars_between_from_and_to(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        bars = req(ws, "market.btcusdt.kline.1min")["data"]
        now = int(time.time())
        assert bars and isinstance(bars, list)
        for bar in bars:
            assert_fields(bar, KLINE)
            assert bar["id"] % 60 == 0 and bar["low"] <= min(bar["open"], bar["close"])
            assert max(bar["open"], bar["close"]) <= bar["high"]
        assert [b["id"] for b in bars] == sorted(b["id"] for b in bars)
        assert 0 <= now - bars[-1]["id"] < 120  # the bar in progress comes last
        future = req(ws, "market.btcusdt.kline.1min", **{"from": now + 3600, "to": now + 7200})
        assert future["data"] == []
        start = now - now % 300
        current = req(ws, "market.btcusdt.kline.5min", **{"from": start, "to": start + 299})
        assert [bar["id"] for bar in current["data"]] == [start]


def test_huobi_req_depth_trade_and_detail(simulator: Simulator) -> None:
    with feed(simulator) as ws:
        depth = req(ws, "market.ethusdt.depth.step0")["data"]
        trades = req(ws, "market.ethusdt.trade.detail")["data"]
        detail = req(ws, "market.ethusdt.detail")["data"]
    assert_fields(depth, DEPTH)
    assert_book(depth["bids"], depth["asks"])
    assert 0 < len(trades) <= 300
    for trade in trades:
        assert_fields(trade, TRADE)
    ids = [trade["tradeId"] for trade in trades]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert_fields(detail, DETAIL)
    assert detail["count"] >= ids[0] - ids[-1] + 1


def test_huobi_kline_bars_start_on_their_period(simulator: Simulator) -> None:
    """Minute..hour bars on their multiple; day and longer at midnight Singapore time."""
    gmt8 = timezone(timedelta(hours=8))
    with feed(simulator) as ws:
        for period in KLINE_PERIODS:
            bar = req(ws, f"market.solusdt.kline.{period}")["data"][-1]
            start = datetime.fromtimestamp(bar["id"], gmt8)
            length = KLINE_PERIODS[period]
            if length is not None and length < 86400:
                assert bar["id"] % length == 0, period
                continue
            assert (start.hour, start.minute, start.second) == (0, 0, 0), period
            if period == "1week":
                assert start.weekday() == 0
            if period in ("1mon", "1year"):
                assert start.day == 1 and (period == "1mon" or start.month == 1)


# -- depth ---------------------------------------------------------------------------------------


def test_huobi_depth_step0_is_the_book_and_steps_aggregate_it() -> None:
    """step0: every level (up to 150). stepN: prices bucketed to tick * 10**N (bids down, asks
    up), sizes summed, at most 20 levels -- checked on pushes of one book version."""
    steps = [f"step{n}" for n in range(6)]
    with Simulator("huobi", rate=10, huobi_depth_interval=0) as sim, feed(sim) as ws:
        for step in steps:
            sub(ws, f"market.btcusdt.depth.{step}")
        books: dict[int, dict[str, Json]] = {}
        for message in frames(ws, 5):
            if "tick" in message:
                tick = message["tick"]
                books.setdefault(tick["version"], {})[message["ch"].split(".")[-1]] = tick
                if len(books[tick["version"]]) == len(steps):
                    break
    book = next(b for b in books.values() if len(b) == len(steps))
    base = book["step0"]
    assert 1 < len(base["bids"]) <= 150 and 1 < len(base["asks"]) <= 150
    tick_size = 0.1  # BTCUSDT in the simulator
    for n, step in enumerate(steps):
        bids, asks = book[step]["bids"], book[step]["asks"]
        assert_book(bids, asks)
        if n == 0:
            continue
        width = tick_size * 10**n
        assert len(bids) <= 20 and len(asks) <= 20
        # step0 holds the whole simulated book (100 levels a side), so every bucket's size
        # is the sum of the step0 levels it covers: [price, price + width) for bids,
        # (price - width, price] for asks
        for price, _ in (*bids, *asks):
            assert abs(price / width - round(price / width)) < 1e-6, (step, price)
        for price, size in bids:
            inside = [q for p, q in base["bids"] if price - 1e-9 <= p < price + width - 1e-9]
            assert inside and size == pytest.approx(sum(inside), rel=1e-9), (step, price)
        for price, size in asks:
            inside = [q for p, q in base["asks"] if price - width + 1e-9 < p <= price + 1e-9]
            assert inside and size == pytest.approx(sum(inside), rel=1e-9), (step, price)


def test_huobi_depth_is_pushed_once_a_second(simulator: Simulator) -> None:
    topic = "market.ethusdt.depth.step1"
    with feed(simulator) as ws:
        sub(ws, topic)
        stamps = [push_of(ws, topic)["ts"] for _ in range(3)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(900 <= gap <= 1500 for gap in gaps), gaps


# -- MBP on /feed --------------------------------------------------------------------------------


def _levels(book: dict[float, float] | list[list[float]], bids: bool) -> list[tuple]:
    items = book.items() if isinstance(book, dict) else (tuple(level) for level in book)
    return sorted(items, reverse=bids)


def _apply(book: dict[float, float], changes: list[list[float]]) -> None:
    for price, size in changes:
        if size == 0:
            book.pop(price, None)
        else:
            book[price] = size


@pytest.mark.parametrize("levels", [5, 20, 150])
def test_huobi_mbp_increments_rebuild_the_book(levels: int) -> None:
    """The documented recipe: cache increments, req a refresh, align on seqNum == prevSeqNum,
    apply; the book then equals the depth.step0 snapshot of the same version."""
    topic = f"market.btcusdt.mbp.{levels}"
    with Simulator("huobi", rate=10, huobi_depth_interval=0) as sim, feed(sim, "/feed") as ws:
        sub(ws, topic)
        sub(ws, "market.btcusdt.depth.step0")
        refresh = req(ws, topic)["data"]
        assert_fields(refresh, MBP_REFRESH)
        bids, asks = dict(map(tuple, refresh["bids"])), dict(map(tuple, refresh["asks"]))
        assert len(bids) == len(asks) == min(levels, 100)
        seq, checked = refresh["seqNum"], 0
        for message in frames(ws, 4):
            if message.get("ch") == topic:
                tick = message["tick"]
                if tick["seqNum"] <= seq:
                    continue  # before the refresh
                assert tick["prevSeqNum"] == seq, "a gap in the increments"
                if levels >= 150:
                    assert_fields(tick, MBP_150)
                else:
                    assert {"seqNum", "prevSeqNum"} < tick.keys() <= set(MBP_150)
                _apply(bids, tick.get("bids", []))
                _apply(asks, tick.get("asks", []))
                seq = tick["seqNum"]
            elif message.get("ch") == "market.btcusdt.depth.step0" and seq > refresh["seqNum"]:
                depth = message["tick"]
                if depth["version"] == seq:
                    assert _levels(bids, True) == _levels(depth["bids"][:levels], True)
                    assert _levels(asks, False) == _levels(depth["asks"][:levels], False)
                    checked += 1
                    if checked == 3:
                        break
    assert checked == 3


def test_huobi_feed_path_serves_the_other_topics_too(simulator: Simulator) -> None:
    with feed(simulator, "/feed") as ws:
        sub(ws, "market.btcusdt.ticker")
        assert_fields(push_of(ws, "market.btcusdt.ticker")["tick"], TICKER)


def test_huobi_describe_names_paths_topics_and_heartbeat(simulator: Simulator) -> None:
    text = "\n".join(simulator.feeds["huobi"].describe())
    for part in ("/ws", "/feed", "gzip", "ping", "trade.detail", "depth.step0", "kline", "mbp"):
        assert part in text
