"""Every example run as a user runs it (`python examples/X.py --url ... --count N`) against the
simulator or local servers, including bad addresses, a server that is gone, Ctrl-C, and the
drops the examples must survive. Also `make demo`'s script."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dial.simulator import Simulator
from tests.servers.base import free_port
from tests.servers.brokers import kafka, mosquitto, nats_server, rabbitmq
from tests.servers.simulator import Script, example, own_simulator, run, simulator

__all__ = ["kafka", "mosquitto", "nats_server", "own_simulator", "rabbitmq", "simulator"]

TICKERS = ("binance_ticker.py", "okx_ticker.py", "huobi_ticker.py")
FEED_OF = {"binance_ticker.py": "binance", "okx_ticker.py": "okx", "huobi_ticker.py": "huobi"}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# -- the three ticker readers --------------------------------------------------------------------


@pytest.mark.parametrize("name", TICKERS)
def test_ticker_example_prints_n_rows_and_ends(name: str, simulator: Simulator) -> None:
    result = run(example(name, "--url", simulator.url(FEED_OF[name]), "--count", "4"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "symbol", "last"]
    rows = lines[1:]
    assert len(rows) >= 4
    assert all("BTC" in row or "ETH" in row or "SOL" in row for row in rows)
    assert all(float(row.split()[2]) > 0 for row in rows)
    no_traceback(result.stderr)


@pytest.mark.parametrize("name", TICKERS)
def test_ticker_example_cannot_connect(name: str) -> None:
    result = run(example(name, "--url", f"ws://127.0.0.1:{free_port()}/ws", "--count", "1"))
    assert result.returncode == 1
    assert "cannot connect:" in result.stderr and "refused" in result.stderr
    no_traceback(result.stderr)


@pytest.mark.parametrize("name", TICKERS)
def test_ticker_example_bad_address(name: str) -> None:
    result = run(example(name, "--url", "not-an-address", "--count", "1"))
    assert result.returncode == 1
    assert "has no scheme" in result.stderr
    no_traceback(result.stderr)


@pytest.mark.parametrize("name", TICKERS)
def test_ticker_example_ends_cleanly_on_ctrl_c(name: str, simulator: Simulator) -> None:
    script = Script(example(name, "--url", simulator.url(FEED_OF[name])))
    assert script.wait_for("USDT", count=2), script.err
    assert script.interrupt() == 130
    assert "stopped" in script.err
    no_traceback(script.err)


def test_sqlite_store_keeps_ticks_and_queries_them_back(
    simulator: Simulator, tmp_path: Path
) -> None:
    db = tmp_path / "ticks.db"
    argv = ["--url", simulator.url("binance"), "--db", str(db), "--count", "3"]
    result = run(example("sqlite_store.py", *argv))
    assert result.returncode == 0, result.stderr
    assert "stored 18 ticks from 3 messages" in result.stdout
    assert "BTCUSDT" in result.stdout and "avg_spread" in result.stdout
    with sqlite3.connect(db) as check:
        count, symbols = check.execute(
            "SELECT COUNT(*), COUNT(DISTINCT symbol) FROM ticks"
        ).fetchone()
    assert (count, symbols) == (18, 6)


def test_sqlite_store_feed_gone(tmp_path: Path) -> None:
    argv = ["--url", f"ws://127.0.0.1:{free_port()}/ws", "--db", str(tmp_path / "t.db")]
    result = run(example("sqlite_store.py", *argv))
    assert result.returncode == 1 and "cannot connect" in result.stderr
    no_traceback(result.stderr)


def test_sqlite_store_unwritable_database(simulator: Simulator, tmp_path: Path) -> None:
    argv = ["--url", simulator.url("binance"), "--db", str(tmp_path / "missing" / "t.db")]
    result = run(example("sqlite_store.py", *argv))
    assert result.returncode == 1
    assert "cannot open" in result.stderr
    no_traceback(result.stderr)


# -- brokers -------------------------------------------------------------------------------------


def test_brokers_example_round_trips_on_all_four(
    mosquitto: int, nats_server: int, rabbitmq: int, kafka: int
) -> None:
    result = run(example("brokers.py", "--count", "3"), seconds=90)
    assert result.returncode == 0, result.stderr
    for name in ("nats", "mqtt", "amqp", "kafka"):
        assert f"{name:<5} read: '{name}, time: " in result.stdout, result.stdout
        assert f"close {name} connect" in result.stderr


def test_brokers_example_broker_gone(mosquitto: int) -> None:
    argv = [
        "--only",
        "mqtt",
        "--url",
        f"mqtt=mqtt://127.0.0.1:{free_port()}?topic=t",
        "--count",
        "1",
    ]
    result = run(example("brokers.py", *argv))
    assert result.returncode == 1
    assert "mqtt: cannot connect:" in result.stderr
    no_traceback(result.stderr)


def test_brokers_example_bad_arguments() -> None:
    result = run(example("brokers.py", "--only", "zeromq"))
    assert result.returncode == 2 and "unknown broker zeromq" in result.stderr


def test_brokers_example_ctrl_c(mosquitto: int) -> None:
    script = Script(example("brokers.py", "--only", "mqtt"))
    assert script.wait_for("mqtt  read:")
    assert script.interrupt() == 130
    assert "close mqtt connect" in script.err
    no_traceback(script.err)


# -- make demo -----------------------------------------------------------------------------------


def test_demo_runs_offline_and_ends_by_itself() -> None:
    result = run(example("demo.py", "--seconds", "5"), seconds=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "simulator dropped all 3 clients" in out
    assert "Stored ticks, queried back from SQLite:" in out
    assert "every reader reconnected after the drop" in out
    for exchange in ("binance", "okx", "huobi"):
        assert f"| {exchange}" in out
    no_traceback(result.stderr)


def test_examples_dir_has_every_promised_example() -> None:
    names = {p.name for p in (Path(__file__).parents[1] / "examples").glob("*.py")}
    assert {*TICKERS, "okx_private.py", "brokers.py", "sqlite_store.py"} <= names


def test_examples_default_to_the_real_exchanges() -> None:
    root = Path(__file__).parents[1] / "examples"
    assert (
        "wss://stream.binance.com:9443/ws/!miniTicker@arr"
        in (root / "binance_ticker.py").read_text()
    )
    assert "wss://ws.okx.com:8443/ws/v5/public" in (root / "okx_ticker.py").read_text()
    assert "wss://api.huobi.pro/ws" in (root / "huobi_ticker.py").read_text()
    assert "wss://ws.okx.com:8443/ws/v5/private" in (root / "okx_private.py").read_text()
