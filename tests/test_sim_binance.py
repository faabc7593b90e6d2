"""The simulated Binance spot feed against Binance's own documentation, checked with a plain
websockets client and urllib (not with Dial), so the feed is verified independently of the
library that reads it.

Source: github.com/binance/binance-spot-api-docs (July 2026): web-socket-streams.md (sections
named in each table), rest-api.md "Order book", errors.md, CHANGELOG.md."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from dial.simulator import Simulator
from tests.servers.simulator import simulator

__all__ = ["simulator"]  # fixtures used by name

SPOT = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"}

# -- field -> JSON type, as the payloads in web-socket-streams.md show them ------------------------

TRADE = {  # "Trade Streams"
    "e": str, "E": int, "s": str, "t": int, "p": str, "q": str, "T": int, "m": bool, "M": bool,
}  # fmt: skip
AGG_TRADE = {  # "Aggregate Trade Streams"
    "e": str, "E": int, "s": str, "a": int, "p": str, "q": str, "f": int, "l": int, "T": int,
    "m": bool, "M": bool,
}  # fmt: skip
BOOK_TICKER = {"u": int, "s": str, "b": str, "B": str, "a": str, "A": str}  # "Book Ticker"
MINI_TICKER = {  # "Individual Symbol Mini Ticker Stream"
    "e": str, "E": int, "s": str, "c": str, "o": str, "h": str, "l": str, "v": str, "q": str,
}  # fmt: skip
TICKER = {  # "Individual Symbol Ticker Streams"
    "e": str, "E": int, "s": str, "p": str, "P": str, "w": str, "x": str, "c": str, "Q": str,
    "b": str, "B": str, "a": str, "A": str, "o": str, "h": str, "l": str, "v": str, "q": str,
    "O": int, "C": int, "F": int, "L": int, "n": int,
}  # fmt: skip
AVG_PRICE = {"e": str, "E": int, "s": str, "i": str, "w": str, "T": int}  # "Average Price"
PARTIAL_DEPTH = {"lastUpdateId": int, "bids": list, "asks": list}  # "Partial Book Depth"
DIFF_DEPTH = {  # "Diff. Depth Stream"
    "e": str, "E": int, "s": str, "U": int, "u": int, "b": list, "a": list,
}  # fmt: skip
KLINE = {"e": str, "E": int, "s": str, "k": dict}  # "Kline/Candlestick Streams for UTC"
KLINE_K = {
    "t": int, "T": int, "s": str, "i": str, "f": int, "L": int, "o": str, "c": str, "h": str,
    "l": str, "v": str, "n": int, "x": bool, "q": str, "V": str, "Q": str, "B": str,
}  # fmt: skip
SHUTDOWN = {"e": str, "E": int}  # "Server Shutdown"
DEPTH_SNAPSHOT = {"lastUpdateId": int, "bids": list, "asks": list}  # rest-api.md "Order book"

STREAM_TABLES: dict[str, dict[str, type]] = {
    "btcusdt@trade": TRADE,
    "btcusdt@aggTrade": AGG_TRADE,
    "btcusdt@bookTicker": BOOK_TICKER,
    "ethusdt@miniTicker": MINI_TICKER,
    "ethusdt@ticker": TICKER,
    "btcusdt@avgPrice": AVG_PRICE,
    "btcusdt@depth5": PARTIAL_DEPTH,
    "btcusdt@depth10@100ms": PARTIAL_DEPTH,
    "solusdt@depth20": PARTIAL_DEPTH,
    "btcusdt@depth": DIFF_DEPTH,
    "ethusdt@depth@100ms": DIFF_DEPTH,
    "btcusdt@kline_1m": KLINE,
}
EVENT_TYPES = {
    "btcusdt@trade": "trade",
    "btcusdt@aggTrade": "aggTrade",
    "ethusdt@miniTicker": "24hrMiniTicker",
    "ethusdt@ticker": "24hrTicker",
    "btcusdt@avgPrice": "avgPrice",
    "btcusdt@depth": "depthUpdate",
    "ethusdt@depth@100ms": "depthUpdate",
    "btcusdt@kline_1m": "kline",
}


def assert_shape(obj: dict[str, Any], table: dict[str, type], where: str = "") -> None:
    """Exactly the documented keys, each of the documented JSON type (bool is not int)."""
    assert set(obj) == set(table), f"{where}: keys {sorted(obj)} != {sorted(table)}"
    for key, kind in table.items():
        assert type(obj[key]) is kind, f"{where}: {key}={obj[key]!r} is not {kind.__name__}"


def assert_levels(levels: list[Any], descending: bool, where: str) -> None:
    """[[price, qty], ...] as strings, sorted best first."""
    for level in levels:
        assert isinstance(level, list) and len(level) == 2, where
        assert all(type(value) is str for value in level), where
        float(level[0]), float(level[1])
    prices = [float(price) for price, _ in levels]
    assert prices == sorted(prices, reverse=descending), f"{where}: not sorted"


def ws_url(sim: Simulator, path: str) -> str:
    return sim.base_url("binance") + path


def rest(sim: Simulator, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET on the simulated api.binance.com."""
    try:
        with urllib.request.urlopen(sim.base_url("binance", "http") + path, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def recv_json(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(ws.recv(timeout=timeout))


def answer(ws: ClientConnection, request: dict[str, Any] | str, timeout: float = 5.0) -> Any:
    """Send one control message, return its answer (skipping market data in between)."""
    ws.send(request if isinstance(request, str) else json.dumps(request))
    deadline = time.monotonic() + timeout
    while True:
        message = recv_json(ws, max(0.05, deadline - time.monotonic()))
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return message


def close_code(ws: ClientConnection, timeout: float = 5.0) -> tuple[int, str]:
    """Read until the server closes; (code, reason) of its close frame."""
    with pytest.raises(ConnectionClosed) as info:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.05, deadline - time.monotonic()))
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def silent_for(ws: ClientConnection, seconds: float) -> bool:
    try:
        ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    return False


# -- every stream, field by field --------------------------------------------------------------


def test_every_stream_has_the_documented_fields_and_types(simulator: Simulator) -> None:
    names = [*STREAM_TABLES, "!miniTicker@arr"]
    seen: dict[str, list[Any]] = {}
    with connect(ws_url(simulator, "/stream?streams=" + "/".join(names)), open_timeout=5) as ws:
        deadline = time.monotonic() + 5
        while set(seen) != set(names) and time.monotonic() < deadline:
            frame = recv_json(ws)
            assert set(frame) == {"stream", "data"}, frame  # the combined wrapper
            seen.setdefault(frame["stream"], []).append(frame["data"])
    assert set(seen) == set(names), f"never pushed: {set(names) - set(seen)}"
    for name, table in STREAM_TABLES.items():
        for event in seen[name]:
            assert_shape(event, table, name)
            if name in EVENT_TYPES:
                assert event["e"] == EVENT_TYPES[name]
                assert event["s"] == name.split("@")[0].upper()
    for event in seen["btcusdt@kline_1m"]:
        assert_shape(event["k"], KLINE_K, "kline k")
    for array in seen["!miniTicker@arr"]:
        assert isinstance(array, list) and {t["s"] for t in array} == SPOT  # spot only
        for ticker in array:
            assert_shape(ticker, MINI_TICKER, "!miniTicker@arr")
            assert ticker["e"] == "24hrMiniTicker"


def test_stream_values_are_consistent(simulator: Simulator) -> None:
    names = ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@depth20", "ethusdt@ticker"]
    names += ["btcusdt@kline_1m", "btcusdt@aggTrade"]
    seen: dict[str, list[Any]] = {name: [] for name in names}
    with connect(ws_url(simulator, "/stream?streams=" + "/".join(names)), open_timeout=5) as ws:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            frame = recv_json(ws)
            seen[frame["stream"]].append(frame["data"])
    trade_ids = [t["t"] for t in seen["btcusdt@trade"]]
    assert len(trade_ids) > 3 and trade_ids == sorted(set(trade_ids))
    assert [a["f"] for a in seen["btcusdt@aggTrade"]] == sorted(
        a["f"] for a in seen["btcusdt@aggTrade"]
    )
    assert len({t["p"] for t in seen["btcusdt@trade"]}) > 1, "prices never moved"
    for quote in seen["btcusdt@bookTicker"]:
        assert float(quote["b"]) < float(quote["a"])
    for book in seen["btcusdt@depth20"]:
        assert len(book["bids"]) == len(book["asks"]) == 20
        assert_levels(book["bids"], True, "bids")
        assert_levels(book["asks"], False, "asks")
        assert float(book["bids"][0][0]) < float(book["asks"][0][0])
    for ticker in seen["ethusdt@ticker"]:
        assert float(ticker["l"]) <= float(ticker["c"]) <= float(ticker["h"])
        assert float(ticker["b"]) < float(ticker["a"])
        assert ticker["L"] - ticker["F"] + 1 == ticker["n"]
        assert ticker["C"] - ticker["O"] == 86_400_000
    for kline in seen["btcusdt@kline_1m"]:
        k = kline["k"]
        assert k["i"] == "1m" and k["T"] - k["t"] == 59_999 and k["t"] % 60_000 == 0
        assert float(k["l"]) <= min(float(k["o"]), float(k["c"]))
        assert float(k["h"]) >= max(float(k["o"]), float(k["c"]))


def test_raw_streams_are_unwrapped_and_several_may_share_a_path(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws/btcusdt@trade/ethusdt@bookTicker"), open_timeout=5) as ws:
        events = [recv_json(ws) for _ in range(12)]
    assert all("stream" not in event for event in events)
    assert {e.get("e", "bookTicker") for e in events} == {"trade", "bookTicker"}


def test_every_documented_kline_interval(simulator: Simulator) -> None:
    intervals = ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h"]
    intervals += ["1d", "3d", "1w", "1M"]
    names = [f"btcusdt@kline_{i}" for i in intervals] + ["btcusdt@kline_1d@+08:00"]
    seen: dict[str, dict[str, Any]] = {}
    with connect(ws_url(simulator, "/stream?streams=" + "/".join(names)), open_timeout=5) as ws:
        deadline = time.monotonic() + 5
        while len(seen) < len(names) and time.monotonic() < deadline:
            frame = recv_json(ws)
            seen[frame["stream"]] = frame["data"]["k"]
    assert set(seen) == set(names)
    for interval in intervals[:-2]:
        k = seen[f"btcusdt@kline_{interval}"]
        length = {"s": 1, "m": 60, "h": 3600, "d": 86400}[interval[-1]] * int(interval[:-1]) * 1000
        assert k["i"] == interval and k["T"] - k["t"] + 1 == length, k
    week = seen["btcusdt@kline_1w"]
    assert time.gmtime(week["t"] / 1000).tm_wday == 0  # weeks open on Monday 00:00 UTC
    assert week["T"] - week["t"] + 1 == 7 * 86_400_000
    month = seen["btcusdt@kline_1M"]
    start, end = time.gmtime(month["t"] / 1000), time.gmtime((month["T"] + 1) / 1000)
    assert (start.tm_mday, start.tm_hour, end.tm_mday, end.tm_hour) == (1, 0, 1, 0)
    utc8 = seen["btcusdt@kline_1d@+08:00"]
    assert utc8["i"] == "1d" and utc8["t"] % 86_400_000 == 16 * 3_600_000  # 00:00 at UTC+8


def test_a_kline_is_pushed_closed_then_the_next_one_opens(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws/ethusdt@kline_1s"), open_timeout=5) as ws:
        frames = [recv_json(ws)]
        while not frames[-1]["k"]["x"]:
            frames.append(recv_json(ws))
        following = recv_json(ws)
    closed = frames[-1]["k"]
    assert closed["x"] is True and frames[-1]["E"] > closed["T"]
    assert following["k"]["x"] is False and following["k"]["t"] == closed["T"] + 1
    assert closed["n"] == 0 or closed["L"] - closed["f"] + 1 == closed["n"]


def test_time_unit_microsecond(simulator: Simulator) -> None:
    url = ws_url(simulator, "/ws/btcusdt@trade?timeUnit=MICROSECOND")
    with connect(url, open_timeout=5) as ws:
        trade = recv_json(ws)
    now_us = time.time() * 1_000_000
    assert abs(trade["E"] - now_us) < 5_000_000 and abs(trade["T"] - now_us) < 5_000_000


# -- the local order book: diff-depth chain against the REST snapshot ---------------------------


def apply(book: dict[str, dict[str, str]], event: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in event[key]:
            if float(qty) == 0:
                book[side].pop(price, None)
            else:
                book[side][price] = qty


def as_book(snapshot: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {side: dict(map(tuple, snapshot[side])) for side in ("bids", "asks")}


def test_diff_depth_chain_rebuilds_the_rest_snapshot_exactly(simulator: Simulator) -> None:
    # web-socket-streams.md "How to manage a local order book correctly", step by step
    with connect(ws_url(simulator, "/ws/btcusdt@depth@100ms"), open_timeout=5) as ws:
        buffered = [recv_json(ws)]
        status, snap = rest(simulator, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
        assert status == 200 and snap["lastUpdateId"] >= buffered[0]["U"]
        while buffered[-1]["u"] <= snap["lastUpdateId"]:
            buffered.append(recv_json(ws))
        events = [e for e in buffered if e["u"] > snap["lastUpdateId"]]
        assert events[0]["U"] <= snap["lastUpdateId"] + 1 <= events[0]["u"]
        events += [recv_json(ws) for _ in range(15)]
        book, last = as_book(snap), snap["lastUpdateId"]
        for index, event in enumerate(events):
            assert index == 0 or event["U"] == last + 1  # each event continues the last
            apply(book, event)
            last = event["u"]
        status, later = rest(simulator, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
        while last < later["lastUpdateId"]:
            event = recv_json(ws)
            assert event["U"] == last + 1
            apply(book, event)
            last = event["u"]
    assert last == later["lastUpdateId"]
    assert book == as_book(later)


def test_partial_depth_matches_the_snapshot_shape(simulator: Simulator) -> None:
    status, snap = rest(simulator, "/api/v3/depth?symbol=ETHUSDT")
    assert status == 200
    assert_shape(snap, DEPTH_SNAPSHOT, "GET /api/v3/depth")
    assert len(snap["bids"]) == len(snap["asks"]) == 100  # the default limit
    assert_levels(snap["bids"], True, "bids")
    assert_levels(snap["asks"], False, "asks")
    status, small = rest(simulator, "/api/v3/depth?symbol=ETHUSDT&limit=7")
    assert status == 200 and len(small["bids"]) == len(small["asks"]) == 7
    status, huge = rest(simulator, "/api/v3/depth?symbol=ETHUSDT&limit=9000")
    assert status == 200 and len(huge["bids"]) == 100  # "only 5000": the book has 100 levels


@pytest.mark.parametrize(
    ("query", "code", "msg"),
    [
        ("symbol=NOPEUSDT", -1121, "Invalid symbol."),
        ("", -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ("symbol=btcusdt", -1100, "Illegal characters found in parameter 'symbol'"),
        ("symbol=BTCUSDT&limit=ten", -1100, "Illegal characters found in parameter 'limit'"),
        ("symbol=BTCUSDT&depth=5", -1104, "Not all sent parameters were read"),
        ("symbol=BTCUSDT&symbolStatus=NOPE", -1122, "Invalid symbolStatus."),
        ("symbol=BTCUSDT&symbolStatus=HALT", -1220, "The symbol's status does not match"),
    ],
)
def test_rest_depth_errors(simulator: Simulator, query: str, code: int, msg: str) -> None:
    status, body = rest(simulator, f"/api/v3/depth?{query}")
    assert status == 400
    assert set(body) == {"code", "msg"} and body["code"] == code and body["msg"].startswith(msg)


def test_rest_ping_time_and_unknown_path(simulator: Simulator) -> None:
    assert rest(simulator, "/api/v3/ping") == (200, {})
    status, body = rest(simulator, "/api/v3/time")
    assert status == 200 and abs(body["serverTime"] - time.time() * 1000) < 5000
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(simulator.base_url("binance", "http") + "/api/v9/nothing")
    assert info.value.code == 404


# -- live subscribing, listing, properties and errors ------------------------------------------


def test_subscribe_list_unsubscribe(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        assert silent_for(ws, 0.3)  # nothing before a SUBSCRIBE
        sub = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@bookTicker"], "id": 1}
        assert answer(ws, sub) == {"result": None, "id": 1}
        events = [recv_json(ws) for _ in range(10)]
        assert {e.get("e", "bookTicker") for e in events} == {"trade", "bookTicker"}
        assert all("stream" not in e for e in events)  # /ws: raw events
        listed = answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
        assert listed == {"result": ["btcusdt@trade", "ethusdt@bookTicker"], "id": 3}
        unsub = {"method": "UNSUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 312}
        assert answer(ws, unsub) == {"result": None, "id": 312}
        time.sleep(0.3)  # let the frames pushed before the UNSUBSCRIBE arrive
        while not silent_for(ws, 0.01):
            pass
        later = [recv_json(ws) for _ in range(5)]
        assert {e["e"] for e in later} == {"trade"}
        listed = answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "abc"})  # string ids work
        assert listed == {"result": ["btcusdt@trade"], "id": "abc"}


def test_combined_property_and_wrapped_subscriptions(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/stream"), open_timeout=5) as ws:
        assert answer(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {
            "result": True,
            "id": 2,
        }
        sub = {"method": "SUBSCRIBE", "params": ["solusdt@miniTicker"], "id": 1}
        assert answer(ws, sub) == {"result": None, "id": 1}
        frame = recv_json(ws)
        assert frame["stream"] == "solusdt@miniTicker" and frame["data"]["s"] == "SOLUSDT"
    with connect(ws_url(simulator, "/ws/solusdt@miniTicker"), open_timeout=5) as ws:
        assert "stream" not in recv_json(ws)
        set_on = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
        assert answer(ws, set_on) == {"result": None, "id": 5}
        assert answer(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}) == {
            "result": True,
            "id": 6,
        }
        frame = recv_json(ws)
        assert frame["stream"] == "solusdt@miniTicker" and frame["data"]["e"] == "24hrMiniTicker"


@pytest.mark.parametrize(
    ("request_text", "code", "msg", "has_id"),
    [
        ('{"method":"FOO","id":4}', 2, "Invalid request: unknown variant `FOO`, expected one of "
         "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`", True),
        ('{"params":[],"id":1}', 2, "Invalid request: missing field `method`", True),
        ('{"method":"LIST_SUBSCRIPTIONS","id":1.5}', 2,
         "Invalid request: request ID must be an unsigned integer", False),
        ('{"method":"LIST_SUBSCRIPTIONS","id":"not-alnum"}', 2,
         "Invalid request: request ID must be an unsigned integer", False),
        ('{"method":"LIST_SUBSCRIPTIONS"}', 2,
         "Invalid request: request ID must be an unsigned integer", False),
        ('{"method":"GET_PROPERTY","params":["combined","x"],"id":7}', 2,
         "Invalid request: too many parameters", True),
        ('{"method":"SET_PROPERTY","params":[1,true],"id":7}', 2,
         "Invalid request: property name must be a string", True),
        ('{"method":"GET_PROPERTY","params":["colour"],"id":7}', 0, "Unknown property", True),
        ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}', 1,
         "Invalid value type: expected Boolean", True),
    ],
)  # fmt: skip
def test_documented_error_messages_keep_the_connection(
    simulator: Simulator, request_text: str, code: int, msg: str, has_id: bool
) -> None:
    # web-socket-streams.md "Error Messages"
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        reply = answer(ws, request_text)
        assert set(reply) == ({"error", "id"} if has_id else {"error"})
        assert reply["error"]["code"] == code and reply["error"]["msg"].startswith(msg)
        if has_id:
            assert reply["id"] == json.loads(request_text)["id"]
        assert answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 9}) == {"result": [], "id": 9}


def test_invalid_json_is_answered_then_the_connection_closed(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws/btcusdt@bookTicker"), open_timeout=5) as ws:
        reply = answer(ws, "hello")
        assert reply == {
            "error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}
        }
        assert close_code(ws) == (1008, "Invalid request")


def test_a_malformed_stream_name_is_refused_and_closes(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        reply = answer(ws, {"method": "SUBSCRIBE", "params": ["@@@junk###"], "id": 2})
        assert reply == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 2}
        assert close_code(ws) == (1008, "Invalid request")


@pytest.mark.parametrize(
    "name",
    ["nopeusdt@trade", "BTCUSDT@trade", "btcusdt@depth30", "btcusdt@kline_2m", "!ticker@arr"],
)
def test_well_formed_streams_without_data_are_accepted_and_silent(
    simulator: Simulator, name: str
) -> None:
    # Binance acknowledges names it has no data for and sends nothing; !ticker@arr was retired
    # on 2026-03-26 (CHANGELOG 2026-02-24) and connecting to it now gets exactly that.
    with connect(ws_url(simulator, f"/ws/{name}"), open_timeout=5) as ws:
        assert silent_for(ws, 0.6)
        assert answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [name], "id": 1}
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        assert answer(ws, {"method": "SUBSCRIBE", "params": [name], "id": 1}) == {
            "result": None,
            "id": 1,
        }
        assert silent_for(ws, 0.4)


@pytest.mark.parametrize("path", ["/", "/nowhere", "/stream/ws/btcusdt@depth", "/api/v3/depth"])
def test_other_paths_are_refused_at_the_handshake(simulator: Simulator, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(simulator, path), open_timeout=5)
    assert info.value.response.status_code == 404


def test_more_than_five_messages_a_second_disconnect(simulator: Simulator) -> None:
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        for n in range(6):
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": n}))
        replies = [recv_json(ws) for _ in range(5)]
        assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]
        assert close_code(ws) == (1008, "Too many requests")


def test_at_most_1024_streams_a_connection(simulator: Simulator) -> None:
    names = [f"s{i}usdt@trade" for i in range(1024)]
    with connect(ws_url(simulator, "/ws"), open_timeout=5) as ws:
        assert answer(ws, {"method": "SUBSCRIBE", "params": names, "id": 1}) == {
            "result": None,
            "id": 1,
        }
        over = answer(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2})
        assert over["error"]["code"] == 2 and over["id"] == 2
        listed = answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
        assert len(listed["result"]) == 1024 and "btcusdt@trade" not in listed["result"]


# -- heartbeats and the connection lifecycle -----------------------------------------------------


@contextmanager
def raw_client(sim: Simulator, path: str) -> Iterator[socket.socket]:
    """A WebSocket client that completes the handshake and then never answers anything."""
    sock = socket.create_connection(("127.0.0.1", sim.ports["binance"]), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade"
        f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    try:
        yield sock
    finally:
        sock.close()


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of one unmasked server frame."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection ended mid-frame"
            data += chunk
        return data

    first, second = exactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return first & 0x0F, exactly(length)


def test_a_client_that_does_not_answer_pings_is_dropped() -> None:
    with Simulator("binance", binance_ping_interval=0.2, binance_pong_timeout=0.5) as sim:
        with raw_client(sim, "/ws") as sock:
            started = time.monotonic()
            pings: list[bytes] = []
            while True:
                opcode, payload = read_frame(sock)
                if opcode == 0x9:
                    pings.append(payload)
                else:
                    break
            elapsed = time.monotonic() - started
        assert opcode == 0x8, "expected a close frame"
        assert int.from_bytes(payload[:2], "big") == 1008 and payload[2:] == b"Pong timeout"
        assert 0.6 <= elapsed < 2.5 and len(pings) >= 2
        assert all(p.isdigit() and len(p) == 13 for p in pings)  # the time in ms
        assert sim.counters["binance.pong_timeouts"] == 1


def test_a_client_that_answers_pings_stays() -> None:
    with Simulator("binance", binance_ping_interval=0.1, binance_pong_timeout=0.3) as sim:
        with connect(ws_url(sim, "/ws"), open_timeout=5) as ws:  # pongs automatically
            assert silent_for(ws, 1.2)
            assert answer(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})["result"] == []
        assert sim.counters["binance.pong_timeouts"] == 0


def test_connections_are_cut_at_the_maximum_lifetime() -> None:
    with Simulator("binance", rate=10, binance_max_lifetime=0.6) as sim:
        started = time.monotonic()
        with connect(ws_url(sim, "/ws/btcusdt@trade"), open_timeout=5) as ws:
            code, _ = close_code(ws)
        assert code == 1001 and 0.5 <= time.monotonic() - started < 3
        with connect(ws_url(sim, "/ws/btcusdt@trade"), open_timeout=5) as ws:
            assert recv_json(ws)["e"] == "trade"  # a new connection starts a new lifetime


def test_server_shutdown_event_then_disconnect() -> None:
    with Simulator("binance", rate=10, binance_shutdown_grace=0.5) as sim:
        raw = connect(ws_url(sim, "/ws/btcusdt@trade"), open_timeout=5)
        combined = connect(ws_url(sim, "/stream?streams=btcusdt@trade"), open_timeout=5)
        recv_json(raw), recv_json(combined)
        told = sim.call(sim.feeds["binance"].shutdown)
        assert told == 2

        def shutdown_event(ws: ClientConnection) -> Any:
            while True:
                message = recv_json(ws)
                if "serverShutdown" in json.dumps(message):
                    return message

        event = shutdown_event(raw)
        assert_shape(event, SHUTDOWN, "serverShutdown")
        assert event["e"] == "serverShutdown"
        wrapped = shutdown_event(combined)
        assert set(wrapped) == {"stream", "data"} and wrapped["stream"] == "!serverShutdown"
        assert_shape(wrapped["data"], SHUTDOWN, "combined serverShutdown")
        told_at = time.monotonic()
        for ws in (raw, combined):
            assert close_code(ws)[0] == 1001
            ws.close()
        assert time.monotonic() - told_at >= 0.3  # closed after the grace, not at once
        with connect(ws_url(sim, "/ws/btcusdt@trade"), open_timeout=5) as ws:
            assert recv_json(ws)["e"] == "trade"  # new connections are served


def test_describe_names_the_paths_streams_and_lifecycle(simulator: Simulator) -> None:
    text = "\n".join(simulator.feeds["binance"].describe())
    for needle in ("/ws/<stream>", "/stream?streams=", "!miniTicker@arr", "@depth", "@kline_"):
        assert needle in text
    assert "SUBSCRIBE" in text and "/api/v3/depth" in text and "serverShutdown" in text


def test_legacy_all_tickers_array_only_when_asked() -> None:
    # FMZ-era scripts read !ticker@arr; Binance retired it, so it is opt-in here
    with (
        Simulator("binance", rate=10, binance_legacy_ticker_arr=True) as sim,
        connect(ws_url(sim, "/ws/!ticker@arr"), open_timeout=5) as ws,
    ):
        array = recv_json(ws)
    assert isinstance(array, list) and {t["s"] for t in array} == SPOT
    for ticker in array:
        assert_shape(ticker, TICKER, "!ticker@arr")
        assert ticker["e"] == "24hrTicker"
