"""The Binance examples run as a user runs them (`python examples/binance_*.py --url ...`)
against the simulator: real symbols and prices through a serverShutdown and a drop, the combined
stream of full tickers, the silent retired `!ticker@arr`, and a local order book that matches a
fresh REST snapshot (also after a drop). The book keeper's resync rules are also checked on
hand-made events, including the straddling event a live check meets."""

from __future__ import annotations

import importlib.util
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dial.simulator import Simulator
from tests.servers.base import free_port
from tests.servers.simulator import EXAMPLES, Script, example, run, simulator

__all__ = ["simulator"]  # fixtures used by name

SPOT = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"}


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def ticker_rows(out: str) -> list[list[str]]:
    """The data rows of binance_ticker.py: time symbol last bid ask high low."""
    rows = [line.split() for line in out.splitlines()[1:]]
    for row in rows:
        assert len(row) == 7, row
        assert row[1] in SPOT, row
        last, high, low = (Decimal(row[i]) for i in (2, 5, 6))
        assert 0 < low <= last <= high, row
        if row[3] != "-":
            assert Decimal(row[3]) < Decimal(row[4]), row
    return rows


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- binance_ticker ------------------------------------------------------------------------------


def test_ticker_defaults_to_the_mini_ticker_array_of_the_real_exchange() -> None:
    text = (EXAMPLES / "binance_ticker.py").read_text()
    assert 'DEFAULT_URL = "wss://stream.binance.com:9443/ws/!miniTicker@arr"' in text
    assert "Checked against Binance's documentation of July 2026" in " ".join(text.split())


def test_ticker_reads_the_mini_ticker_array(simulator: Simulator) -> None:
    result = run(example("binance_ticker.py", "--url", simulator.url("binance"), "--count", "3"))
    assert result.returncode == 0, result.stderr
    rows = ticker_rows(result.stdout)
    assert len(rows) == 9 and {row[1] for row in rows} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert all(row[3] == row[4] == "-" for row in rows)  # a mini ticker has no bid/ask
    no_traceback(result.stderr)


def test_ticker_reads_a_combined_stream_of_full_tickers(simulator: Simulator) -> None:
    url = simulator.base_url("binance") + "/stream?streams=btcusdt@ticker/ethusdt@ticker"
    result = run(example("binance_ticker.py", "--url", url, "--count", "6"))
    assert result.returncode == 0, result.stderr
    rows = ticker_rows(result.stdout)
    assert len(rows) == 6 and {row[1] for row in rows} == {"BTCUSDT", "ETHUSDT"}
    assert all(row[3] != "-" and row[4] != "-" for row in rows)
    no_traceback(result.stderr)


def test_ticker_says_so_when_the_retired_all_tickers_stream_stays_silent(
    simulator: Simulator,
) -> None:
    url = simulator.base_url("binance") + "/ws/!ticker@arr"
    result = run(
        example("binance_ticker.py", "--url", url, "--seconds", "1.5", "--quiet-after", "0.5")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == []
    assert "no ticker for 0.5 s" in result.stderr and "retired !ticker@arr" in result.stderr
    no_traceback(result.stderr)


def test_ticker_lives_through_a_server_shutdown_and_a_drop() -> None:
    with Simulator("binance", rate=10, binance_shutdown_grace=60) as sim:
        feed = sim.feeds["binance"]
        script = Script(example("binance_ticker.py", "--url", sim.url("binance")))
        try:
            assert script.wait_for("USDT", count=6), script.err
            assert sim.call(feed.shutdown) == 1
            deadline = time.monotonic() + 10
            while "reconnecting now" not in script.err and time.monotonic() < deadline:
                time.sleep(0.05)
            # a new connection at once (long before the server's 60 s), the old one let go
            assert "serverShutdown received, reconnecting now" in script.err
            # the example says so as it dials: the simulator counts the link once it is up
            while sim.counters["binance.connections"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sim.counters["binance.connections"] == 2
            while len(feed.clients) != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(feed.clients) == 1
            before = len(ticker_rows(script.out))
            assert script.wait_for("USDT", count=before + 6), script.err
            assert sim.drop_all() == 1
            after_drop = len(ticker_rows(script.out))
            assert script.wait_for("USDT", count=after_drop + 6), script.err
            assert sim.counters["binance.connections"] == 3  # reconnect=true after the drop
            assert script.interrupt() == 130
        finally:
            script.kill()
    rows = ticker_rows(script.out)
    assert {row[1] for row in rows[after_drop:]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    no_traceback(script.err)


# -- binance_book --------------------------------------------------------------------------------


def book_args(sim: Simulator, stream: str = "/ws/btcusdt@depth") -> list[str]:
    return ["--url", sim.base_url("binance") + stream, "--rest", sim.base_url("binance", "http")]


def test_book_defaults_to_the_real_exchange() -> None:
    text = (EXAMPLES / "binance_book.py").read_text()
    assert 'DEFAULT_WS = "wss://stream.binance.com:9443"' in text
    assert 'DEFAULT_REST = "https://api.binance.com"' in text
    assert "Checked against Binance's documentation of July 2026" in " ".join(text.split())


def test_book_check_says_the_book_matches(simulator: Simulator) -> None:
    result = run(example("binance_book.py", *book_args(simulator), "--check", "--count", "10"))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.split()[1:2] == ["BTCUSDT"]]
    assert len(rows) == 10
    ids = [int(row.split()[2].removeprefix("u=")) for row in rows]
    assert ids == sorted(ids) and len(set(ids)) == 10
    for row in rows:
        words = row.split()
        bid, ask = Decimal(words[4]), Decimal(words[8])
        assert bid < ask, row
    assert "check: book matches the snapshot at lastUpdateId" in result.stdout
    assert "200 levels equal" in result.stdout  # the simulated book holds 100 levels a side
    no_traceback(result.stderr)


def test_book_from_a_combined_stream(simulator: Simulator) -> None:
    args = book_args(simulator, "/stream?streams=ethusdt@depth@100ms")
    result = run(example("binance_book.py", *args, "--symbol", "ethusdt", "--check"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ETHUSDT" in result.stdout and "check: book matches the snapshot" in result.stdout


def test_book_resyncs_after_a_drop_and_still_matches() -> None:
    with Simulator("binance", rate=10) as sim:
        script = Script(example("binance_book.py", *book_args(sim), "--check", "--count", "30"))
        try:
            assert script.wait_for("BTCUSDT", count=5), script.err
            sim.drop_all()
            assert script.wait() == 0, script.out + script.err
        finally:
            script.kill()
    assert "disconnected: resynchronising the book" in script.err
    assert sim.counters["binance.snapshots"] >= 3  # first sync, resync, check
    assert "check: book matches the snapshot" in script.out
    no_traceback(script.err)


def test_book_cannot_reach_the_stream_or_the_rest_api(simulator: Simulator) -> None:
    gone = f"ws://127.0.0.1:{free_port()}/ws/btcusdt@depth"
    result = run(example("binance_book.py", "--url", gone, "--count", "1"))
    assert result.returncode == 1 and "cannot connect:" in result.stderr
    args = [*book_args(simulator)[:2], "--rest", f"http://127.0.0.1:{free_port()}"]
    result = run(example("binance_book.py", *args, "--count", "1"))
    assert result.returncode == 1 and "cannot get the snapshot" in result.stderr
    assert "refused" in result.stderr
    result = run(example("binance_book.py", *book_args(simulator), "--symbol", "ethusdt"))
    assert result.returncode == 1 and "the stream is for BTCUSDT, not ETHUSDT" in result.stderr
    no_traceback(result.stderr)


def test_book_ends_cleanly_on_ctrl_c(simulator: Simulator) -> None:
    script = Script(example("binance_book.py", *book_args(simulator)))
    try:
        assert script.wait_for("BTCUSDT", count=2), script.err
        assert script.interrupt() == 130
    finally:
        script.kill()
    assert "stopped" in script.err
    no_traceback(script.err)


# -- the book keeper's rules on hand-made events ---------------------------------------------------


Levels = tuple[tuple[str, str], ...]


def event(first: int, last: int, bids: Levels = (), asks: Levels = ()) -> dict[str, Any]:
    """A depthUpdate for update ids first..last."""
    return {"e": "depthUpdate", "E": 0, "s": "BTCUSDT", "U": first, "u": last,
            "b": [list(level) for level in bids], "a": [list(level) for level in asks]}  # fmt: skip


SNAP = {"lastUpdateId": 10, "bids": [["100", "1"], ["99", "2"]], "asks": [["101", "3"]]}


@pytest.fixture
def book_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load("binance_book")
    snaps = iter([SNAP, {**SNAP, "lastUpdateId": 20}])
    monkeypatch.setattr(module, "snapshot", lambda *args: next(snaps))
    return module


def test_keeper_drops_old_events_chains_and_resyncs_on_a_gap(book_module: ModuleType) -> None:
    keeper = book_module.Keeper("http://unused", "BTCUSDT", 5000)
    assert keeper.feed(event(5, 8)) == []  # buffered, then dropped: u <= lastUpdateId
    assert keeper.book is not None and keeper.book.last_id == 10
    applied = keeper.feed(event(9, 12, bids=(("100", "0"), ("98", "5"))))  # straddles 10
    assert len(applied) == 1 and keeper.book.last_id == 12
    assert keeper.book.bids == {Decimal("99"): Decimal("2"), Decimal("98"): Decimal("5")}
    assert keeper.feed(event(13, 15, asks=(("101", "4"),))) and keeper.book.last_id == 15
    assert keeper.feed(event(11, 14)) == []  # already in the book
    assert keeper.feed(event(17, 19)) == []  # a gap: 16 is missing, so start over
    assert keeper.resyncs == 1 and keeper.book is not None and keeper.book.last_id == 20


def test_check_compares_before_a_straddling_event_and_skips_its_levels(
    book_module: ModuleType,
) -> None:
    book = book_module.Book(SNAP)
    snap = {"lastUpdateId": 12, "bids": [["100", "1"], ["99", "7"]], "asks": [["101", "3"]]}
    touched = {("bid", Decimal("99"))}
    assert book_module.compare(book, snap, 5000, touched) == (2, [])
    compared, differences = book_module.compare(book, snap, 5000, set())
    assert compared == 3 and differences == ["bid 99: book 2, snapshot 7"]
    # a snapshot cut at `limit` levels is compared only down to its last level
    deeper = book_module.Book({**SNAP, "bids": [*SNAP["bids"], ["50", "9"]]})
    assert book_module.compare(deeper, SNAP, 2, set()) == (3, [])
    assert book_module.compare(deeper, SNAP, 3, set())[1] == ["bid 50: book 9, snapshot -"]


def test_examples_dir_has_the_binance_examples() -> None:
    names = {path.name for path in Path(EXAMPLES).glob("binance_*.py")}
    assert names == {"binance_ticker.py", "binance_book.py"}
