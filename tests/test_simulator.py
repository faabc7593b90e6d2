"""The exchange simulator, checked with a plain websockets client (not with Dial), so the
feeds are verified independently of the library that reads them."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from dial.simulator import Simulator, login_signature
from tests.servers.simulator import own_simulator, simulator

__all__ = ["own_simulator", "simulator"]  # fixtures used by name

TICKER_FIELDS = {"s", "h", "l", "b", "a", "c", "q", "E"}
OKX_SUB = {"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}


def inflate_raw(frame: bytes) -> dict:
    return json.loads(zlib.decompress(frame, -15))


def gunzip(frame: bytes) -> dict:
    return json.loads(gzip.decompress(frame))


def okx_login(
    api_key: str = "demo-key",
    secret: str = "demo-secret",
    passphrase: str = "demo-passphrase",
    skew: float = 0.0,
) -> str:
    timestamp = f"{time.time() + skew:.3f}"
    args = {"apiKey": api_key, "passphrase": passphrase, "timestamp": timestamp,
            "sign": login_signature(timestamp, secret)}  # fmt: skip
    return json.dumps({"op": "login", "args": [args]})


# -- Binance -------------------------------------------------------------------------------------


def test_binance_pushes_arrays_of_24h_tickers_that_random_walk(simulator: Simulator) -> None:
    with connect(simulator.url("binance"), open_timeout=5) as ws:
        first = json.loads(ws.recv(timeout=5))
        pushes = [json.loads(ws.recv(timeout=5)) for _ in range(5)]
    assert isinstance(first, list) and len(first) >= 3
    for ticker in first:
        assert ticker.keys() >= TICKER_FIELDS
        assert ticker["e"] == "24hrTicker"
        assert float(ticker["l"]) <= float(ticker["c"]) <= float(ticker["h"])
        assert float(ticker["b"]) < float(ticker["a"])
    assert {t["s"] for t in first} >= {"BTCUSDT", "ETHUSDT"}
    btc = [float(next(t["c"] for t in push if t["s"] == "BTCUSDT")) for push in [first, *pushes]]
    assert len(set(btc)) > 1, "prices never moved"
    assert [p[0]["E"] for p in pushes] == sorted(p[0]["E"] for p in pushes)


def test_binance_single_symbol_stream_and_control_requests(simulator: Simulator) -> None:
    url = simulator.url("binance").replace("!ticker@arr", "ethusdt@ticker")
    with connect(url, open_timeout=5) as ws:
        ticker = json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 7}))
        answers = [json.loads(ws.recv(timeout=5)) for _ in range(4)]
    assert ticker["s"] == "ETHUSDT"
    assert {"result": [], "id": 7} in answers


# -- OKX -----------------------------------------------------------------------------------------


def test_okx_public_frames_are_raw_deflate_and_ping_gets_plain_pong(simulator: Simulator) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        ws.send(json.dumps(OKX_SUB))
        ack = ws.recv(timeout=5)
        push = ws.recv(timeout=5)
        ws.send("ping")
        replies = [ws.recv(timeout=5) for _ in range(3)]
    assert isinstance(ack, bytes) and isinstance(push, bytes)
    with pytest.raises(zlib.error):  # no zlib header: raw DEFLATE only (RFC 1951)
        zlib.decompress(push)
    assert inflate_raw(ack) == {
        "event": "subscribe",
        "arg": OKX_SUB["args"][0],
        "connId": inflate_raw(ack)["connId"],
    }
    data = inflate_raw(push)
    assert data["arg"] == {"channel": "tickers", "instId": "BTC-USDT"}
    assert {"instId", "last", "bidPx", "askPx", "high24h", "low24h", "ts"} <= data["data"][0].keys()
    assert "pong" in replies  # text, uncompressed


def test_okx_rejects_unknown_instrument_and_bad_json(simulator: Simulator) -> None:
    with connect(simulator.url("okx"), open_timeout=5) as ws:
        ws.send(
            json.dumps({"op": "subscribe", "args": [{"channel": "tickers", "instId": "NOPE-USDT"}]})
        )
        unknown = inflate_raw(ws.recv(timeout=5))
        ws.send("{not json")
        bad = inflate_raw(ws.recv(timeout=5))
    assert unknown["event"] == "error" and unknown["code"] == "60018"
    assert "NOPE-USDT" in unknown["msg"]
    assert bad["event"] == "error" and bad["code"] == "60012"


def test_okx_private_login_checks_the_hmac_then_streams_positions(simulator: Simulator) -> None:
    with connect(simulator.url("okx-private"), open_timeout=5) as ws:
        ws.send(
            json.dumps({"op": "subscribe", "args": [{"channel": "positions", "instType": "ANY"}]})
        )
        early = json.loads(ws.recv(timeout=5))
        ws.send(okx_login(secret="wrong-secret"))
        wrong = json.loads(ws.recv(timeout=5))
        ws.send(okx_login(passphrase="wrong"))
        wrong_passphrase = json.loads(ws.recv(timeout=5))
        ws.send(okx_login(skew=-120))
        stale = json.loads(ws.recv(timeout=5))
        ws.send(okx_login(api_key="who"))
        unknown_key = json.loads(ws.recv(timeout=5))
        ws.send(okx_login())
        ok = json.loads(ws.recv(timeout=5))
        ws.send(
            json.dumps({"op": "subscribe", "args": [{"channel": "positions", "instType": "ANY"}]})
        )
        ack = json.loads(ws.recv(timeout=5))
        snapshot = json.loads(ws.recv(timeout=5))
        update = json.loads(ws.recv(timeout=5))
    assert (early["event"], early["code"]) == ("error", "60011")  # Please log in
    assert (wrong["event"], wrong["code"]) == ("error", "60007")  # Invalid sign
    assert wrong_passphrase["code"] == "60024"
    assert stale["code"] == "60006"
    assert unknown_key["code"] == "60005"
    assert ok == {"event": "login", "code": "0", "msg": "", "connId": ok["connId"]}
    assert ack["event"] == "subscribe"
    for push in (snapshot, update):
        assert push["arg"]["channel"] == "positions"
        assert {"instId", "posSide", "pos", "avgPx", "markPx", "upl"} <= push["data"][0].keys()


def test_okx_private_frames_are_plain_text(simulator: Simulator) -> None:
    with connect(simulator.url("okx-private"), open_timeout=5) as ws:
        ws.send(okx_login())
        assert isinstance(ws.recv(timeout=5), str)


def test_okx_accepts_custom_credentials() -> None:
    with (
        Simulator("okx", okx_credentials={"k1": ("s1", "p1")}) as sim,
        connect(sim.url("okx-private")) as ws,
    ):
        ws.send(okx_login("k1", "s1", "p1"))
        assert json.loads(ws.recv(timeout=5))["code"] == "0"
        ws.send(okx_login())  # the demo key is not configured on this one
        assert json.loads(ws.recv(timeout=5))["code"] == "60005"


# -- Huobi ---------------------------------------------------------------------------------------


def test_huobi_gzips_every_frame_acks_sub_and_pushes_detail(simulator: Simulator) -> None:
    with connect(simulator.url("huobi"), open_timeout=5) as ws:
        ws.send(json.dumps({"sub": "market.btcusdt.detail", "id": "id1"}))
        frames = [ws.recv(timeout=5) for _ in range(3)]
    assert all(isinstance(frame, bytes) and frame[:2] == b"\x1f\x8b" for frame in frames)
    ack, *pushes = [gunzip(frame) for frame in frames]
    assert ack["id"] == "id1" and ack["status"] == "ok" and ack["subbed"] == "market.btcusdt.detail"
    ticks = [p for p in pushes if "tick" in p]
    assert ticks and ticks[0]["ch"] == "market.btcusdt.detail"
    assert {"open", "close", "high", "low", "vol", "amount"} <= ticks[0]["tick"].keys()


def test_huobi_rejects_an_unknown_topic(simulator: Simulator) -> None:
    with connect(simulator.url("huobi"), open_timeout=5) as ws:
        ws.send(json.dumps({"sub": "market.nope.detail", "id": "x"}))
        answer = gunzip(ws.recv(timeout=5))
    assert answer["status"] == "error" and "market.nope.detail" in answer["err-msg"]


def _huobi_session(sim: Simulator, answer_pings: bool, seconds: float) -> tuple[int, int | None]:
    pings, close_code = 0, None
    with connect(sim.url("huobi"), open_timeout=5) as ws:
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                try:
                    message = gunzip(ws.recv(timeout=0.2))
                except TimeoutError:
                    continue
                if "ping" in message:
                    pings += 1
                    if answer_pings:
                        ws.send(json.dumps({"pong": message["ping"]}))
        except ConnectionClosed as exc:
            close_code = exc.rcvd.code if exc.rcvd else None
    return pings, close_code


def test_huobi_keeps_a_client_that_answers_pings() -> None:
    with Simulator("huobi", huobi_ping_interval=0.2) as sim:
        pings, closed = _huobi_session(sim, answer_pings=True, seconds=1.5)
        assert closed is None
        assert pings >= 4
        assert sim.counters["huobi.heartbeat_drops"] == 0


def test_huobi_drops_a_client_after_two_missed_pings() -> None:
    with Simulator("huobi", huobi_ping_interval=0.2) as sim:
        started = time.monotonic()
        pings, closed = _huobi_session(sim, answer_pings=False, seconds=5)
        assert closed == 1008
        assert pings == 2
        assert time.monotonic() - started < 2.5
        assert sim.counters["huobi.heartbeat_drops"] == 1


# -- the server ----------------------------------------------------------------------------------


def test_unknown_path_is_refused_with_404(simulator: Simulator) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{simulator.port}/nowhere", open_timeout=5)
    assert info.value.response.status_code == 404


def test_disabled_exchange_is_not_served() -> None:
    with Simulator("binance") as sim:
        assert list(sim.urls()) == ["binance"]
        with pytest.raises(InvalidStatus):
            connect(f"ws://127.0.0.1:{sim.port}/ws/v5/public", open_timeout=5)


def test_unknown_exchange_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown exchange kraken"):
        Simulator("kraken")


def test_drop_all_disconnects_every_client(own_simulator: Simulator) -> None:
    clients = [
        connect(own_simulator.url(feed), open_timeout=5) for feed in ("binance", "okx", "huobi")
    ]
    deadline = time.monotonic() + 5
    while own_simulator.clients < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert own_simulator.drop_all() == 3
    for ws in clients:
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
        ws.close()
    assert own_simulator.clients == 0


def test_abrupt_drop_leaves_no_close_frame(own_simulator: Simulator) -> None:
    ws = connect(own_simulator.url("binance"), open_timeout=5)
    ws.recv(timeout=5)
    own_simulator.drop_all(abrupt=True)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=5)
    assert info.value.rcvd is None
    ws.close()


def test_stop_frees_the_port_and_start_reuses_it(own_simulator: Simulator) -> None:
    port = own_simulator.port
    own_simulator.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    own_simulator.start()
    assert own_simulator.port == port
    with connect(own_simulator.url("binance"), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))


def _simulator_threads() -> int:
    return sum(t.name == "dial-simulator" for t in threading.enumerate())


def test_a_busy_port_raises_at_start() -> None:
    before = _simulator_threads()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            Simulator(port=busy.getsockname()[1]).start()
    assert _simulator_threads() == before


def test_rate_sets_how_often_prices_are_pushed() -> None:
    def pushes(rate: float) -> int:
        with Simulator("binance", rate=rate) as sim, connect(sim.url("binance")) as ws:
            count, deadline = 0, time.monotonic() + 1.5
            while time.monotonic() < deadline:
                try:
                    ws.recv(timeout=0.1)
                    count += 1
                except TimeoutError:
                    pass
            return count

    slow, fast = pushes(1.0), pushes(40.0)
    assert slow <= 3
    assert fast >= 15


def test_no_thread_left_after_stop() -> None:
    sim = Simulator().start()
    thread = sim._thread
    assert thread is not None and thread.is_alive()
    with connect(sim.url("binance")) as ws:
        ws.recv(timeout=5)
        sim.stop()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert not thread.is_alive()
