"""The OKX examples run as a user runs them (`python examples/okx_*.py --url ... --count N`)
against the simulator: SPOT and SWAP rows with real content, channels, drops, a quiet feed kept
alive by "ping", logins refused and logins made afresh after every drop."""

from __future__ import annotations

import time
from decimal import Decimal

from dial.simulator import Simulator
from tests.servers.base import free_port
from tests.servers.simulator import Script, example, own_simulator, run, script_env, simulator

__all__ = ["own_simulator", "simulator"]  # fixtures used by name

SPOT, SWAP = ("BTC-USDT", "ETH-USDT"), ("BTC-USDT-SWAP", "ETH-USDT-SWAP")


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def fields(row: str) -> dict[str, str]:
    """key=value words of a row."""
    return dict(word.split("=", 1) for word in row.split() if "=" in word)


def assert_ticker_row(row: str) -> str:
    """time symbol last bid ask high low: a sane quote; returns the symbol."""
    _, symbol, last, bid, ask, high, low = row.split()
    assert Decimal(bid) < Decimal(ask)
    assert Decimal(low) <= Decimal(last) <= Decimal(high)
    return symbol


# -- okx_ticker ----------------------------------------------------------------------------------


def test_ticker_reads_spot_and_swap_tickers_by_default(simulator: Simulator) -> None:
    result = run(example("okx_ticker.py", "--url", simulator.url("okx"), "--count", "12"))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["time", "symbol", "last", "bid", "ask", "high", "low"]
    assert len(rows) == 12
    symbols = {assert_ticker_row(row) for row in rows}
    assert symbols == {*SPOT, *SWAP}
    no_traceback(result.stderr)


def test_ticker_reads_books5_and_trades_on_spot_and_swap(simulator: Simulator) -> None:
    argv = ["--url", simulator.url("okx"), "--count", "30", "--channels", "books5,trades"]
    result = run(example("okx_ticker.py", *argv, "--inst", "btc-usdt,BTC-USDT-SWAP"))
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:]
    books = [row for row in rows if " book5 " in row]
    trades = [row for row in rows if " trade " in row]
    assert len(books) + len(trades) == 30 and books and trades
    for row in books:
        book = fields(row)
        bids = [Decimal(p) for p in book["bids"].split(",")]
        asks = [Decimal(p) for p in book["asks"].split(",")]
        assert len(bids) == len(asks) == 5
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
        assert bids[0] < asks[0]
        _, _, mid, bid, ask, *_ = row.split()
        assert Decimal(bid) == bids[0] and Decimal(ask) == asks[0] and bids[0] < Decimal(mid)
    for row in trades:
        _, _, price, side, size, *_ = row.split()
        assert side in ("buy", "sell") and Decimal(price) > 0 and Decimal(size) > 0
    assert {row.split()[1] for row in books} == {"BTC-USDT", "BTC-USDT-SWAP"}
    no_traceback(result.stderr)


def test_ticker_resubscribes_spot_and_swap_after_a_drop(own_simulator: Simulator) -> None:
    argv = ["--url", own_simulator.url("okx"), "--count", "60", "--inst", "BTC-USDT,BTC-USDT-SWAP"]
    script = Script(example("okx_ticker.py", *argv))
    assert script.wait_for("BTC-USDT-SWAP", count=3), script.err
    assert own_simulator.drop_all() == 1
    before = len(script.stdout)
    assert script.wait() == 0, script.err
    after = script.stdout[before:]
    assert {line.split()[1] for line in after} == {"BTC-USDT", "BTC-USDT-SWAP"}
    assert len(script.stdout) == 61  # the header and 60 rows
    # it came back on a new connection and re-subscribed through the payload
    assert own_simulator.counters["okx.connections"] == 2
    no_traceback(script.err)


def test_ticker_survives_the_simulator_going_away_and_coming_back(
    own_simulator: Simulator,
) -> None:
    argv = ["--url", own_simulator.url("okx"), "--count", "20", "--inst", "ETH-USDT-SWAP"]
    script = Script(example("okx_ticker.py", *argv))
    assert script.wait_for("ETH-USDT-SWAP", count=2), script.err
    own_simulator.stop()  # refused for a while: reconnect attempts fail
    time.sleep(2.5)
    own_simulator.start()
    assert script.wait(30) == 0, script.err
    assert script.out.count("ETH-USDT-SWAP") == 20
    no_traceback(script.err)


def test_ticker_keeps_a_quiet_feed_alive_with_ping() -> None:
    """A market that does not move sends nothing after the first ticker: without the
    example's "ping", OKX (here 1.5 s) would close the link as idle."""
    with Simulator("okx", rate=0, okx_idle_timeout=1.5) as sim:
        argv = ["--url", sim.url("okx"), "--inst", "SOL-USDT", "--ping-after", "0.3"]
        script = Script(example("okx_ticker.py", *argv))
        assert script.wait_for("SOL-USDT"), script.err
        time.sleep(4)
        assert script.interrupt() == 130
        assert sim.counters["okx.pings"] >= 3
        assert sim.counters["okx.idle_drops"] == 0
        assert sim.counters["okx.connections"] == 1
    assert "stopped" in script.err
    no_traceback(script.err)


def test_ticker_reports_okx_errors_and_rejects_unknown_channels(simulator: Simulator) -> None:
    script = Script(example("okx_ticker.py", "--url", simulator.url("okx"), "--inst", "NOPE-USDT"))
    deadline = time.monotonic() + 10
    while "60018" not in script.err and time.monotonic() < deadline:
        time.sleep(0.05)
    script.kill()
    assert "OKX error 60018: Wrong URL or channel:tickers,instId:NOPE-USDT" in script.err
    result = run(example("okx_ticker.py", "--channels", "tickers,candles"))
    assert result.returncode == 2 and "expected a comma list of tickers" in result.stderr


# -- okx_private ---------------------------------------------------------------------------------


def test_private_logs_in_and_streams_orders_and_positions(simulator: Simulator) -> None:
    result = run(example("okx_private.py", "--url", simulator.url("okx-private"), "--count", "6"))
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:4] == ["time", "channel", "instrument", "side"]
    positions = [row for row in rows if row.split()[1] == "positions"]
    orders = [row for row in rows if row.split()[1] == "orders"]
    assert positions and orders and len(positions) + len(orders) >= 6
    assert any("BTC-USDT-SWAP" in row and " long " in row for row in positions)
    for row in orders:
        order = fields(row)
        assert row.split()[3] in ("buy", "sell")
        assert Decimal(order["filled"]) <= Decimal(order["sz"]) and Decimal(order["px"]) > 0
    assert "logged in (connId" in result.stderr
    no_traceback(result.stderr)


def test_private_wrong_secret_is_refused_clearly(simulator: Simulator) -> None:
    argv = ["--url", simulator.url("okx-private"), "--count", "1", "--secret-key", "nope"]
    result = run(example("okx_private.py", *argv))
    assert result.returncode == 1
    assert "login failed: OKX error 60007: Invalid sign" in result.stderr
    assert result.stdout == ""
    no_traceback(result.stderr)


def test_private_keys_from_the_environment(simulator: Simulator) -> None:
    env = script_env(OKX_API_KEY="demo-key", OKX_SECRET_KEY="demo-secret", OKX_PASSPHRASE="bad")
    argv = ["--url", simulator.url("okx-private"), "--count", "1"]
    result = run(example("okx_private.py", *argv), env=env)
    assert result.returncode == 1 and "OKX error 60024: Wrong passphrase" in result.stderr


def test_private_server_gone() -> None:
    result = run(example("okx_private.py", "--url", f"ws://127.0.0.1:{free_port()}/ws/v5/private"))
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and "login failed" not in result.stderr
    no_traceback(result.stderr)


def test_private_logs_in_afresh_after_every_drop() -> None:
    """Logins 1.2 s apart against a 1 s timestamp window: a login replayed from an earlier
    connect would be refused with 60006, so each one must be signed anew."""
    with Simulator("okx", rate=10, okx_login_window=1, okx_order_ticks=2) as sim:
        script = Script(example("okx_private.py", "--url", sim.url("okx-private")))
        drops = 3
        for drop in range(drops + 1):
            seen = len(script.stdout)
            assert script.wait_for("orders", count=script.out.count("orders") + 2), script.err
            assert len(script.stdout) > seen  # private data flows on this connection
            assert sim.counters["okx.logins"] == drop + 1, script.err
            if drop < drops:
                time.sleep(1.2)
                assert sim.drop_all() == 1
        assert script.interrupt() == 130
        assert sim.counters["okx.login_failures"] == 0
        assert sim.counters["okx.connections"] == drops + 1
    assert f"disconnected; reconnecting (#{drops})" in script.err
    assert "login #4" in script.err and "stopped" in script.err
    no_traceback(script.err)
