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


def test_unknown_path_is_refused_with_404(simulator: Simulator) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{simulator.port}/nowhere", open_timeout=5)
    assert info.value.response.status_code == 404


def test_disabled_exchange_is_not_served() -> None:
    with Simulator("binance") as sim:
        assert list(sim.ports) == ["binance"]
        bases = {url[: len(sim.base_url("binance"))] for url in sim.urls().values()}
        assert bases == {sim.base_url("binance")}
        with pytest.raises(ValueError, match="okx is not simulated here"):
            sim.url("okx")


def test_each_venue_listens_on_its_own_port(simulator: Simulator) -> None:
    """Binance and Huobi both serve `/ws`, as on their real hosts: one port per venue."""
    assert len(set(simulator.ports.values())) == 3
    for venue in ("binance", "okx", "huobi"):
        assert simulator.url(venue).startswith(f"{simulator.base_url(venue)}/")


def test_a_base_port_numbers_the_venues_in_order() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    try:
        sim = Simulator(("okx", "huobi"), port=base).start()
    except OSError:  # pragma: no cover - someone took base+1 meanwhile
        pytest.skip("the probed ports were taken by another process")
    try:
        assert sim.ports == {"okx": base, "huobi": base + 1}
    finally:
        sim.stop()


def test_plain_http_to_an_unknown_path_is_404(simulator: Simulator) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{simulator.base_url('okx', 'http')}/nowhere", timeout=5)
    assert info.value.code == 404


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
    ports = dict(own_simulator.ports)
    own_simulator.stop()
    for port in ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    own_simulator.start()
    assert own_simulator.ports == ports
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
