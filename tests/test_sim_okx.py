"""The OKX v5 simulator checked against OKX's documentation with a plain websockets client (not
with Dial), so the feed is verified independently of the library that reads it.

Sources: https://www.okx.com/docs-v5/en/ as of June-August 2026 - #overview-websocket-connect,
-login, -subscribe, -notification; #order-book-trading-market-data-ws-tickers-channel,
-ws-order-book-channel, -ws-trades-channel, -ws-all-trades-channel, -ws-candlesticks-channel;
#order-book-trading-trade-ws-order-channel; #trading-account-websocket-positions-channel;
#error-code-websocket-public. OKX sends numbers as strings, except where a table says Integer.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from dial.simulator import Simulator
from tests.servers.simulator import simulator

__all__ = ["simulator"]  # fixtures used by name

Json = dict[str, Any]
S, N, L, D, B = str, int, list, dict, bool  # JSON string, integer, array, object, boolean


def strings(names: str) -> dict[str, type]:
    return dict.fromkeys(names.split(), S)


# -- the documented field tables (field -> JSON type) ----------------------------------------

# WS / Tickers channel, "Push data parameters"
TICKER = strings(
    "instType instId last lastSz askPx askSz bidPx bidSz open24h high24h low24h volCcy24h "
    "vol24h sodUtc0 sodUtc8 ts"
)
# WS / Order book channel, "Push data parameters" (books: checksum, prevSeqId, seqId Integer)
BOOKS = {"asks": L, "bids": L, "ts": S, "checksum": N, "prevSeqId": N, "seqId": N}
# ... "Push Data Example of books5 channel" / "... of bbo-tbt channel"
BOOKS5 = {"asks": L, "bids": L, "instId": S, "ts": S, "seqId": N}
BBO_TBT = {"asks": L, "bids": L, "ts": S, "seqId": N}
# WS / Trades channel (seqId Integer) and WS / All trades channel
TRADES = {**strings("instId tradeId px sz side ts count source"), "seqId": N}
TRADES_ALL = strings("instId tradeId px sz side source ts")
# WS / Order channel, the push data example (attachAlgoOrds: Array, linkedAlgoOrd: Object)
ORDER = {
    **strings(
        "accFillSz algoClOrdId algoId amendResult amendSource avgPx cancelSource category ccy "
        "clOrdId code cTime execType fee feeCcy fillFee fillFeeCcy fillNotionalUsd fillPx "
        "fillSz fillPnl fillTime fillPxVol fillPxUsd fillMarkVol fillFwdPx fillMarkPx "
        "fillIdxPx instId instType lever msg notionalUsd ordId ordType pnl posSide px pxUsd "
        "pxVol pxType quickMgnType rebate rebateCcy reduceOnly reqId side attachAlgoClOrdId "
        "slOrdPx slTriggerPx slTriggerPxType source state stpId stpMode sz tag tdMode tgtCcy "
        "tpOrdPx tpTriggerPx tpTriggerPxType tradeId tradeQuoteCcy lastPx uTime "
        "isTpLimit"
    ),
    "attachAlgoOrds": L,
    "linkedAlgoOrd": D,
}
# Positions channel, the instType ANY push data example (closeOrderAlgo: Array of objects)
POSITION = {
    **strings(
        "adl availPos avgPx cTime ccy deltaBS deltaPA gammaBS gammaPA hedgedPos imr instId "
        "instType interest idxPx last usdPx bePx lever liab liabCcy liqPx markPx margin mgnMode "
        "mgnRatio mmr notionalUsd optVal pTime pendingCloseOrdLiabVal pos baseBorrowed "
        "baseInterest quoteBorrowed quoteInterest posCcy posId posSide spotInUseAmt "
        "clSpotInUseAmt maxSpotInUseAmt spotInUseCcy bizRefId bizRefType thetaBS thetaPA "
        "tradeId uTime upl uplLastPx uplRatio uplRatioLastPx vegaBS vegaPA realizedPnl pnl fee "
        "fundingFee liqPenalty nonSettleAvgPx settledPnl"
    ),
    "closeOrderAlgo": L,
}
POSITIONS_SNAPSHOT = {"arg": D, "eventType": S, "curPage": N, "lastPage": B, "data": L}
POSITIONS_EVENT = {"arg": D, "eventType": S, "data": L}
# Overview: subscribe / login responses, and the `notice` event
ACK = {"event": S, "arg": D, "connId": S}
ERROR = {"event": S, "code": S, "msg": S, "connId": S}
LOGIN = ERROR
NOTICE = ERROR
#: the documented contract values (ctVal, base currency per contract) of USDT perpetuals
CT_VAL = {"BTC": "0.01", "ETH": "0.1", "SOL": "1", "BNB": "0.01", "XRP": "100", "DOGE": "1000"}

INSTRUMENTS = ["BTC-USDT", "BTC-USDT-SWAP"]


def assert_fields(obj: Json, table: dict[str, type]) -> None:
    """Exactly the documented keys, each of the documented JSON type (bool is not int)."""
    assert set(obj) == set(table), f"extra {set(obj) - set(table)}, missing {set(table) - set(obj)}"
    for key, kind in table.items():
        assert type(obj[key]) is kind, f"{key}={obj[key]!r} is not {kind.__name__}"


def assert_numeric(*values: str) -> None:
    for value in values:
        assert Decimal(value).is_finite() and value == value.strip(), value


# -- a plain client ----------------------------------------------------------------------------


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Json:
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), f"OKX v5 frames are text, got {type(message).__name__}"
    decoded = json.loads(message)
    assert isinstance(decoded, dict)
    return decoded


def wait_for(ws: ClientConnection, match: Callable[[Json], bool], timeout: float = 5.0) -> Json:
    """The next message `match` accepts (pushes of other channels are skipped)."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = recv_json(ws, remaining)
        if match(message):
            return message
    raise AssertionError("no matching message")


def push(channel: str, inst_id: str | None = None) -> Callable[[Json], bool]:
    def match(message: Json) -> bool:
        arg = message.get("arg", {})
        return (
            "data" in message
            and arg.get("channel") == channel
            and inst_id in (None, arg.get("instId"))
        )

    return match


def event(name: str) -> Callable[[Json], bool]:
    return lambda message: message.get("event") == name


def subscribe(ws: ClientConnection, *args: Json, op: str = "subscribe", **extra: str) -> None:
    ws.send(json.dumps({**extra, "op": op, "args": list(args)}))


def sign(timestamp: str, secret: str) -> str:
    """OKX login: base64(HMAC-SHA256(secret, timestamp + 'GET' + '/users/self/verify'))."""
    mac = hmac.new(secret.encode(), (timestamp + "GET" + "/users/self/verify").encode(), "sha256")
    return base64.b64encode(mac.digest()).decode()


def login_request(
    key: str = "demo-key",
    secret: str = "demo-secret",
    passphrase: str = "demo-passphrase",
    skew: float = 0.0,
    timestamp: str | None = None,
) -> str:
    stamp = timestamp if timestamp is not None else f"{time.time() + skew:.3f}"
    args = {
        "apiKey": key,
        "passphrase": passphrase,
        "timestamp": stamp,
        "sign": sign(stamp, secret),
    }
    return json.dumps({"op": "login", "args": [args]})


def logged_in(url: str) -> ClientConnection:
    ws = connect(url, open_timeout=5)
    ws.send(login_request())
    answer = recv_json(ws)
    assert (answer["event"], answer["code"]) == ("login", "0"), answer
    return ws


def okx_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """OKX's documented book checksum (order book channel, "Checksum", until 2026-06-23): the
    first 25 bids and asks alternate as bid[price:size]:ask[price:size]:..., a missing level
    is skipped, and the CRC32 of that string is taken as a signed 32-bit integer."""
    parts = []
    for i in range(25):
        parts += [f"{bids[i][0]}:{bids[i][1]}"] if i < len(bids) else []
        parts += [f"{asks[i][0]}:{asks[i][1]}"] if i < len(asks) else []
    unsigned = binascii.crc32(":".join(parts).encode())
    return int(struct.unpack("<i", struct.pack("<I", unsigned))[0])


class LocalBook:
    """A client's copy of a `books` channel: snapshot, then merge updates by price string."""

    def __init__(self, snapshot: Json) -> None:
        self.bids = {level[0]: level for level in snapshot["bids"]}
        self.asks = {level[0]: level for level in snapshot["asks"]}

    def apply(self, update: Json) -> None:
        for book, levels in ((self.bids, update["bids"]), (self.asks, update["asks"])):
            for level in levels:
                if Decimal(level[1]) == 0:
                    book.pop(level[0], None)
                else:
                    book[level[0]] = level

    def sides(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.values(), key=lambda level: Decimal(level[0]), reverse=True)
        return bids, sorted(self.asks.values(), key=lambda level: Decimal(level[0]))


def assert_levels(bids: list[list[str]], asks: list[list[str]]) -> None:
    """[price, size, "0", orders], bids high to low, asks low to high, not crossed."""
    for level in bids + asks:
        assert len(level) == 4 and all(type(x) is str for x in level) and level[2] == "0"
        assert Decimal(level[0]) > 0 and Decimal(level[1]) > 0 and int(level[3]) >= 1
    bid_prices = [Decimal(level[0]) for level in bids]
    ask_prices = [Decimal(level[0]) for level in asks]
    assert bid_prices == sorted(bid_prices, reverse=True) and len(set(bid_prices)) == len(bids)
    assert ask_prices == sorted(ask_prices) and len(set(ask_prices)) == len(asks)
    assert bid_prices[0] < ask_prices[0]


@pytest.fixture(scope="module")
def frozen() -> Iterator[Simulator]:
    """A market that does not move (rate 0): what it sends can be compared with its state."""
    with Simulator("okx", rate=0) as sim:
        yield sim


# -- framing, heartbeat, idle timeout, legacy deflate -----------------------------------------


def test_frames_are_plain_text_json_and_ping_gets_pong(simulator: Simulator) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "tickers", "instId": "BTC-USDT"})
        ack = recv_json(ws)
        first = recv_json(ws)
        ws.send("ping")
        pong = wait_for_text(ws, "pong")
    assert_fields(ack, ACK)
    assert ack["event"] == "subscribe"
    assert ack["arg"] == {"channel": "tickers", "instId": "BTC-USDT"}
    assert len(ack["connId"]) == 8 and int(ack["connId"], 16) >= 0
    assert push("tickers", "BTC-USDT")(first)
    assert pong == "pong"


def wait_for_text(ws: ClientConnection, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        message = ws.recv(timeout=remaining)
        assert isinstance(message, str)
        if message == text:
            return message
    raise AssertionError(f"no {text!r}")


def test_idle_link_is_closed_with_4004_unless_data_or_pongs_flow() -> None:
    with (
        Simulator("okx", rate=10, okx_idle_timeout=0.6) as sim,
        connect(sim.url("okx"), open_timeout=5) as idle,
        connect(sim.url("okx"), open_timeout=5) as pinging,
        connect(sim.url("okx"), open_timeout=5, max_queue=None) as fed,  # read at the end
    ):
        subscribe(fed, {"channel": "tickers", "instId": "ETH-USDT"})
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            pinging.send("ping")
            assert wait_for_text(pinging, "pong") == "pong"
            time.sleep(0.2)
        with pytest.raises(ConnectionClosed):
            idle.recv(timeout=2)
        assert idle.close_code == 4004 and idle.close_reason == "No data received in 30s"
        assert wait_for(fed, push("tickers", "ETH-USDT"))  # still open
        assert sim.counters["okx.idle_drops"] == 1


def test_legacy_deflate_framing_is_off_by_default_and_opt_in() -> None:
    with Simulator("okx", rate=10, okx_legacy_deflate=True) as sim:
        with connect(sim.url("okx"), open_timeout=5) as ws:
            subscribe(ws, {"channel": "tickers", "instId": "BTC-USDT"})
            ack, data = ws.recv(timeout=5), ws.recv(timeout=5)
            ws.send("ping")
            pong = ws.recv(timeout=5)
            while pong != "pong":
                pong = ws.recv(timeout=5)
        with connect(sim.url("okx-private"), open_timeout=5) as private:
            private.send(login_request())
            login = private.recv(timeout=5)
    assert isinstance(ack, bytes) and isinstance(data, bytes)
    with pytest.raises(zlib.error):  # raw DEFLATE (RFC 1951): no zlib header
        zlib.decompress(data)
    assert json.loads(zlib.decompress(ack, -15))["event"] == "subscribe"
    assert json.loads(zlib.decompress(data, -15))["arg"]["channel"] == "tickers"
    assert isinstance(login, str) and json.loads(login)["event"] == "login"


# -- public channels, SPOT and SWAP ------------------------------------------------------------


@pytest.mark.parametrize("inst_id", INSTRUMENTS)
def test_tickers_contract(simulator: Simulator, inst_id: str) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "tickers", "instId": inst_id})
        pushes = [wait_for(ws, push("tickers", inst_id)) for _ in range(4)]
    for message in pushes:
        assert set(message) == {"arg", "data"} and len(message["data"]) == 1
        tick = message["data"][0]
        assert_fields(tick, TICKER)
        assert_numeric(*(tick[k] for k in TICKER if k not in ("instType", "instId")))
        assert tick["instId"] == inst_id
        assert tick["instType"] == ("SWAP" if inst_id.endswith("-SWAP") else "SPOT")
        assert Decimal(tick["bidPx"]) < Decimal(tick["askPx"])
        assert Decimal(tick["low24h"]) <= Decimal(tick["last"]) <= Decimal(tick["high24h"])
    last = pushes[-1]["data"][0]
    vol, vol_ccy = Decimal(last["vol24h"]), Decimal(last["volCcy24h"])
    assert vol > 0
    if inst_id.endswith("-SWAP"):  # vol24h in contracts, volCcy24h in base currency
        assert vol * Decimal(CT_VAL["BTC"]) == vol_ccy
    else:  # vol24h in base, volCcy24h in quote: their ratio is a traded price
        assert Decimal(last["low24h"]) <= vol_ccy / vol <= Decimal(last["high24h"])


@pytest.mark.parametrize("base", sorted(CT_VAL))
def test_swap_sizes_are_contracts_of_the_documented_ct_val(frozen: Simulator, base: str) -> None:
    inst_id = f"{base}-USDT-SWAP"
    with connect(frozen.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "books5", "instId": inst_id})
        book = wait_for(ws, push("books5", inst_id))["data"][0]
    bids, asks = frozen.market.find(inst_id).depth(5)  # type: ignore[union-attr]
    for sent, (price, base_size) in zip(book["bids"] + book["asks"], bids + asks, strict=True):
        assert Decimal(sent[0]) == Decimal(str(price))
        assert Decimal(sent[1]) * Decimal(CT_VAL[base]) == Decimal(str(base_size)).normalize()


@pytest.mark.parametrize("inst_id", INSTRUMENTS)
def test_books_snapshot_then_updates_chain_by_seq_id_and_rebuild_the_book(
    simulator: Simulator, inst_id: str
) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "books", "instId": inst_id})
        assert recv_json(ws)["event"] == "subscribe"
        snapshot = recv_json(ws)
        book = LocalBook(snapshot["data"][0])
        previous, updates = snapshot["data"][0]["seqId"], []
        for _ in range(6):
            update = wait_for(ws, push("books", inst_id))
            updates.append(update)
            data = update["data"][0]
            assert data["prevSeqId"] == previous and data["seqId"] > data["prevSeqId"]
            previous = data["seqId"]
            book.apply(data)
        subscribe(ws, {"channel": "books", "instId": inst_id})  # a fresh snapshot, in order
        while (message := wait_for(ws, push("books", inst_id)))["action"] == "update":
            book.apply(message["data"][0])
    assert set(snapshot) == {"arg", "action", "data"} and snapshot["action"] == "snapshot"
    data = snapshot["data"][0]
    assert_fields(data, BOOKS)
    assert data["prevSeqId"] == -1 and data["seqId"] >= 0
    assert data["checksum"] == 0  # "Deprecated ... its value is fixed to 0"
    assert_levels(data["bids"], data["asks"])
    assert 25 <= len(data["bids"]) <= 400 and 25 <= len(data["asks"]) <= 400
    for update in updates:
        assert update["action"] == "update"
        assert_fields(update["data"][0], BOOKS)
        assert update["data"][0]["checksum"] == 0
        assert update["data"][0]["bids"] or update["data"][0]["asks"]
    fresh = message["data"][0]
    assert [fresh["bids"], fresh["asks"]] == list(book.sides())


def test_books_checksum_crc32_when_enabled() -> None:
    # the test's own checksum first reproduces the documentation's two worked examples
    assert okx_checksum([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]]) == (
        okx_checksum_of("3366.1:7:3366.8:9:3366:6:3368:8")
    )
    assert okx_checksum([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]) == (
        okx_checksum_of("3366.1:7:3366.8:9:3368:8:3372:8")
    )
    with (
        Simulator("okx", rate=20, okx_book_checksum=True) as sim,
        connect(sim.url("okx"), open_timeout=5) as ws,
    ):
        subscribe(ws, *({"channel": "books", "instId": i} for i in INSTRUMENTS))
        books: dict[str, LocalBook] = {}
        checked = 0
        while checked < 20:
            message = wait_for(ws, push("books"))
            inst_id, data = message["arg"]["instId"], message["data"][0]
            if message["action"] == "snapshot":
                books[inst_id] = LocalBook(data)
            else:
                books[inst_id].apply(data)
            assert data["checksum"] == okx_checksum(*books[inst_id].sides()), message
            assert data["checksum"] != 0
            checked += 1


def okx_checksum_of(text: str) -> int:
    value = binascii.crc32(text.encode())
    return value - 2**32 if value >= 2**31 else value


@pytest.mark.parametrize("inst_id", INSTRUMENTS)
def test_books5_and_bbo_tbt_contract(simulator: Simulator, inst_id: str) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "books5", "instId": inst_id})
        subscribe(ws, {"channel": "bbo-tbt", "instId": inst_id})
        books5 = [wait_for(ws, push("books5", inst_id)) for _ in range(3)]
        bbo = [wait_for(ws, push("bbo-tbt", inst_id)) for _ in range(3)]
    for message in books5:
        assert set(message) == {"arg", "data"}
        data = message["data"][0]
        assert_fields(data, BOOKS5)
        assert data["instId"] == inst_id and len(data["bids"]) == len(data["asks"]) == 5
        assert_levels(data["bids"], data["asks"])
    for message in bbo:
        data = message["data"][0]
        assert_fields(data, BBO_TBT)
        assert len(data["bids"]) == len(data["asks"]) == 1
        assert_levels(data["bids"], data["asks"])


@pytest.mark.parametrize("inst_id", INSTRUMENTS)
def test_trades_contract(simulator: Simulator, inst_id: str) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "trades", "instId": inst_id})
        trades = [wait_for(ws, push("trades", inst_id))["data"][0] for _ in range(5)]
    for trade in trades:
        assert_fields(trade, TRADES)
        assert trade["instId"] == inst_id and trade["side"] in ("buy", "sell")
        assert trade["count"] == "1" and trade["source"] == "0"
        assert_numeric(trade["px"], trade["sz"], trade["ts"], trade["tradeId"])
    ids = [int(trade["tradeId"]) for trade in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("inst_id", INSTRUMENTS)
def test_business_candles_and_trades_all(simulator: Simulator, inst_id: str) -> None:
    with connect(simulator.url("okx-business"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "candle1m", "instId": inst_id})
        subscribe(ws, {"channel": "trades-all", "instId": inst_id})
        first = wait_for(ws, push("candle1m", inst_id))
        trade = wait_for(ws, push("trades-all", inst_id))["data"][0]
        later = wait_for(ws, push("candle1m", inst_id), timeout=4)
    for message in (first, later):
        assert set(message) == {"arg", "data"} and len(message["data"]) == 1
        candle = message["data"][0]
        assert len(candle) == 9 and all(type(x) is str for x in candle)
        assert_numeric(*candle)
        ts, o, h, low, c, vol, vol_ccy, vol_quote, confirm = candle
        assert int(ts) % 60_000 == 0 and confirm in ("0", "1")
        assert (
            Decimal(low) <= min(Decimal(o), Decimal(c)) <= max(Decimal(o), Decimal(c)) <= Decimal(h)
        )
    vol, vol_ccy, vol_quote = (Decimal(x) for x in later["data"][0][5:8])
    assert vol > 0
    if inst_id.endswith("-SWAP"):  # vol in contracts, volCcy in base, volCcyQuote in USDT
        assert vol * Decimal(CT_VAL["BTC"]) == vol_ccy
    else:  # vol in base, volCcy and volCcyQuote both in quote
        assert vol_ccy == vol_quote
    assert_fields(trade, TRADES_ALL)
    assert trade["instId"] == inst_id and trade["side"] in ("buy", "sell")


@pytest.mark.parametrize(
    ("bar", "start_in_day_ms"),
    [("candle1D", 16 * 3_600_000), ("candle1Dutc", 0), ("candle6H", 4 * 3_600_000)],
)
def test_candle_bars_start_at_documented_times(
    simulator: Simulator, bar: str, start_in_day_ms: int
) -> None:
    """Non-utc bars of 6H and more follow UTC+8 (Hong Kong); the `utc` ones UTC."""
    with connect(simulator.url("okx-business"), open_timeout=5) as ws:
        subscribe(
            ws,
            {"channel": bar, "instId": "ETH-USDT"},
            {"channel": "candle1W", "instId": "ETH-USDT"},
        )
        start = int(wait_for(ws, push(bar))["data"][0][0])
        week = int(wait_for(ws, push("candle1W"))["data"][0][0])
    period = 6 * 3_600_000 if bar == "candle6H" else 86_400_000
    assert start % period == start_in_day_ms % period
    assert start <= time.time() * 1000 < start + period
    assert time.gmtime((week + 8 * 3_600_000) / 1000).tm_wday == 0  # Monday 00:00 UTC+8


# -- requests, acks and errors -----------------------------------------------------------------


def test_acks_echo_id_and_errors_use_the_documented_codes(simulator: Simulator) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "tickers", "instId": "SOL-USDT"}, id="1512")
        ack = wait_for(ws, event("subscribe"))
        requests: list[str | Json] = [
            "{not json",
            {"op": "subscribe"},
            {"op": "subscribe", "args": ["tickers"]},
            {"op": "dance", "args": []},
            {"op": "subscribe", "args": [{"channel": "tickers", "instId": "NOPE-USDT"}]},
            {"op": "subscribe", "args": [{"channel": "tickers", "instId": "btc-usdt"}]},
            {"op": "subscribe", "args": [{"channel": "candle1m", "instId": "BTC-USDT"}]},
            {"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]},
            {"op": "subscribe", "args": [{"channel": "books-l2-tbt", "instId": "BTC-USDT"}]},
            {"id": "77", "op": "subscribe", "args": [{"channel": "nope", "instId": "BTC-USDT"}]},
        ]
        errors = []
        for request in requests:
            ws.send(request if isinstance(request, str) else json.dumps(request))
            errors.append(wait_for(ws, event("error")))
        subscribe(ws, {"channel": "tickers", "instId": "SOL-USDT"}, op="unsubscribe")
        unsubscribed = wait_for(ws, event("unsubscribe"))
        with pytest.raises(TimeoutError):  # no pushes once unsubscribed
            wait_for(ws, push("tickers"), timeout=0.6)
    assert ack == {
        "id": "1512",
        "event": "subscribe",
        "arg": {"channel": "tickers", "instId": "SOL-USDT"},
        "connId": ack["connId"],
    }
    for error in errors[:-1]:
        assert_fields(error, ERROR)
    codes = [error["code"] for error in errors]
    assert codes == [
        "60012",
        "60012",
        "60012",
        "60019",
        "60018",
        "60018",
        "60018",
        "60018",
        "60011",
        "60018",
    ]
    assert errors[0]["msg"] == "Invalid request: {not json"
    assert errors[3]["msg"] == "Invalid op: dance"
    assert errors[4]["msg"] == (
        "Wrong URL or channel:tickers,instId:NOPE-USDT doesn't exist. "
        "Please use the correct URL, channel and parameters referring to API document."
    )
    assert "candle1m" in errors[6]["msg"]  # candles live on /ws/v5/business
    assert errors[-1]["id"] == "77" and errors[-1]["connId"] == ack["connId"]
    assert unsubscribed["arg"] == {"channel": "tickers", "instId": "SOL-USDT"}


def test_public_channels_are_not_on_business(simulator: Simulator) -> None:
    with connect(simulator.url("okx-business"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "books", "instId": "BTC-USDT"})
        error = wait_for(ws, event("error"))
    assert error["code"] == "60018" and "books" in error["msg"]


# -- login ---------------------------------------------------------------------------------------


def test_login_is_checked_as_okx_documents(simulator: Simulator) -> None:
    with connect(simulator.url("okx-private"), open_timeout=5) as ws:
        subscribe(ws, {"channel": "orders", "instType": "ANY"})
        early = recv_json(ws)
        answers = {}
        for name, request in {
            "wrong sign": login_request(secret="wrong-secret"),
            "wrong passphrase": login_request(passphrase="wrong"),
            "stale": login_request(skew=-31),
            "unknown key": login_request(key="who"),
            "bad timestamp": login_request(timestamp="yesterday"),
            "empty": json.dumps({"op": "login", "args": [{"apiKey": "demo-key"}]}),
            "not an object": json.dumps({"op": "login", "args": ["demo-key"]}),
        }.items():
            ws.send(request)
            answers[name] = recv_json(ws)
        ws.send(login_request())
        ok = recv_json(ws)
        ws.send(login_request())
        again = recv_json(ws)
    assert (early["event"], early["code"], early["msg"]) == ("error", "60011", "Please log in")
    for answer in answers.values():
        assert_fields(answer, ERROR)
        assert answer["event"] == "error"
    assert {name: answer["code"] for name, answer in answers.items()} == {
        "wrong sign": "60007",
        "wrong passphrase": "60024",
        "stale": "60006",
        "unknown key": "60005",
        "bad timestamp": "60004",
        "empty": "60027",
        "not an object": "60009",
    }
    assert answers["stale"]["msg"] == "Timestamp request expired"
    assert_fields(ok, LOGIN)
    assert (ok["event"], ok["code"], ok["msg"]) == ("login", "0", "")
    assert again["code"] == "60031"  # no repeated login on one connection


def test_login_window_is_a_setting() -> None:
    with (
        Simulator("okx", okx_login_window=2) as sim,
        connect(sim.url("okx-private"), open_timeout=5) as ws,
    ):
        ws.send(login_request(skew=-3))
        stale = recv_json(ws)
        ws.send(login_request(skew=-1))
        fresh = recv_json(ws)
    assert stale["code"] == "60006" and fresh["code"] == "0"


def test_custom_credentials() -> None:
    with Simulator("okx", okx_credentials={"k1": ("s1", "p1")}) as sim:
        with connect(sim.url("okx-private"), open_timeout=5) as ws:
            ws.send(login_request("k1", "s1", "p1"))
            assert recv_json(ws)["code"] == "0"
        with connect(sim.url("okx-private"), open_timeout=5) as ws:
            ws.send(login_request())  # the demo key is not configured on this one
            assert recv_json(ws)["code"] == "60005"


# -- private channels ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy() -> Iterator[Simulator]:
    """Orders every step and positions snapshots every 0.3 s, for short tests."""
    with Simulator("okx", rate=20, okx_order_ticks=1, okx_positions_interval=0.3) as sim:
        yield sim


def test_orders_channel_pushes_documented_order_updates(busy: Simulator) -> None:
    with logged_in(busy.url("okx-private")) as ws, logged_in(busy.url("okx-private")) as swaps:
        subscribe(ws, {"channel": "orders", "instType": "ANY"}, id="9")
        subscribe(swaps, {"channel": "orders", "instType": "SWAP", "instFamily": "BTC-USDT"})
        ack = recv_json(ws)
        first = recv_json(ws)  # "Data will not be pushed when first subscribed": an update
        updates = [first] + [wait_for(ws, push("orders")) for _ in range(15)]
        swap_updates = [wait_for(swaps, push("orders")) for _ in range(3)]
    assert ack["id"] == "9" and ack["arg"] == {"channel": "orders", "instType": "ANY"}
    orders = [update["data"][0] for update in updates]
    for update, order in zip(updates, orders, strict=True):
        assert set(update) == {"arg", "data"} and len(update["data"]) == 1
        assert update["arg"]["channel"] == "orders" and update["arg"]["instType"] == "ANY"
        assert update["arg"]["uid"].isdigit()
        assert_fields(order, ORDER)
        assert order["state"] in ("live", "partially_filled", "filled", "canceled")
        assert order["side"] in ("buy", "sell") and order["ordType"] == "limit"
        assert_numeric(order["px"], order["sz"], order["accFillSz"], order["avgPx"], order["uTime"])
        assert Decimal(order["accFillSz"]) <= Decimal(order["sz"])
        if order["tradeId"]:  # a fill: fill fields are set
            assert Decimal(order["fillSz"]) > 0 and order["fillPx"] == order["px"]
            assert order["execType"] == "M" and Decimal(order["fillFee"]) < 0
        if order["state"] == "filled":
            assert order["accFillSz"] == order["sz"] and order["avgPx"] == order["px"]
    assert {order["instType"] for order in orders} == {"SPOT", "SWAP"}
    assert {order["state"] for order in orders} >= {"live", "partially_filled", "filled"}
    for order in orders:
        if order["instType"] == "SWAP":
            assert order["tdMode"] == "cross" and order["posSide"] == "net"
            assert Decimal(order["sz"]) == 2  # whole contracts
        else:
            assert order["tdMode"] == "cash" and order["instId"].count("-") == 1
    for update in swap_updates:
        assert update["arg"]["instFamily"] == "BTC-USDT"
        assert update["data"][0]["instId"] == "BTC-USDT-SWAP"


def test_positions_snapshot_regular_pushes_and_event_updates(busy: Simulator) -> None:
    with logged_in(busy.url("okx-private")) as ws:
        subscribe(ws, {"channel": "positions", "instType": "ANY"})
        subscribe(ws, {"channel": "positions", "instType": "SPOT"})
        ack = recv_json(ws)
        snapshot = recv_json(ws)
        refused = wait_for(ws, event("error"))
        regular = wait_for(ws, lambda m: m.get("eventType") == "snapshot", timeout=3)
        subscribe(ws, {"channel": "orders", "instType": "SWAP"})
        moved = wait_for(ws, lambda m: m.get("eventType") == "event_update", timeout=5)
    assert ack["event"] == "subscribe"
    assert_fields(snapshot, POSITIONS_SNAPSHOT)
    assert (snapshot["eventType"], snapshot["curPage"], snapshot["lastPage"]) == (
        "snapshot",
        1,
        True,
    )
    assert snapshot["arg"]["channel"] == "positions" and snapshot["arg"]["uid"].isdigit()
    positions = {p["instId"]: p for p in snapshot["data"]}
    assert set(positions) == {"BTC-USDT-SWAP", "ETH-USDT-SWAP"}
    for position in positions.values():
        assert_fields(position, POSITION)
        assert position["instType"] == "SWAP" and position["mgnMode"] == "cross"
    btc = positions["BTC-USDT-SWAP"]
    assert btc["posSide"] == "long" and Decimal(btc["pos"]) > 0
    assert Decimal(btc["pos"]) == Decimal(btc["pos"]).to_integral()  # whole contracts
    assert refused["code"] == "60018" and "instType:SPOT" in refused["msg"]  # no SPOT positions
    assert_fields(regular, POSITIONS_SNAPSHOT)
    assert_fields(moved, POSITIONS_EVENT)
    assert len(moved["data"]) == 1 and moved["data"][0]["tradeId"]
    assert_fields(moved["data"][0], POSITION)


def test_positions_update_interval_zero_pushes_only_events(busy: Simulator) -> None:
    with logged_in(busy.url("okx-private")) as ws:
        extra = json.dumps({"updateInterval": "0"})
        subscribe(ws, {"channel": "positions", "instType": "SWAP", "extraParams": extra})
        recv_json(ws)  # ack
        assert recv_json(ws)["eventType"] == "snapshot"  # the initial one
        with pytest.raises(TimeoutError):
            wait_for(ws, lambda m: m.get("eventType") == "snapshot", timeout=1.0)


# -- lifecycle -------------------------------------------------------------------------------------


def test_notice_64008_before_a_service_upgrade() -> None:
    with (
        Simulator("okx", rate=10) as sim,
        connect(sim.url("okx"), open_timeout=5) as public,
        logged_in(sim.url("okx-private")) as private,
        connect(sim.url("okx-business"), open_timeout=5) as business,
    ):
        subscribe(public, {"channel": "tickers", "instId": "BTC-USDT"})
        subscribe(business, {"channel": "candle1m", "instId": "BTC-USDT"})
        wait_for(public, push("tickers"))
        wait_for(business, push("candle1m"))
        feed = sim.feeds["okx"]
        assert sim.call(feed.notice_upgrade, 0.3) == 2  # public and private, as documented
        notices = [wait_for(ws, event("notice")) for ws in (public, private)]
        for ws in (public, private):
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=3)
        assert ws.close_code == 1012
        business.send("ping")
        assert wait_for_text(business, "pong") == "pong"  # untouched
    for notice in notices:
        assert_fields(notice, NOTICE)
        assert (notice["event"], notice["code"]) == ("notice", "64008")
        assert (
            notice["msg"]
            == "The connection will soon be closed for a service upgrade. Please reconnect."
        )
