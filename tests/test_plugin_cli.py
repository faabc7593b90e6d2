"""`python -m dial.plugin okx|call` as a user runs them: real processes, one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dial.plugin import cli
from dial.plugin.masking import fingerprint
from tests.fake_okx import API_KEY, PASSPHRASE, SECRET, PluginClient, PluginHarness
from tests.servers.base import free_port, port_open, wait_port

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["--access-key", API_KEY, "--secret-key", f"{SECRET},{PASSPHRASE}"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dial.plugin", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DIAL_PLUGIN_ACCESS_KEY": "", "DIAL_PLUGIN_SECRET_KEY": ""},
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, start: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(start), result.stderr
    assert len([line for line in lines if line.startswith("error")]) == 1


@pytest.fixture(scope="module")
def fake() -> Iterator[PluginHarness]:
    harness = PluginHarness()
    yield harness
    harness.close()


@contextlib.contextmanager
def plugin_process(fake: PluginHarness, output: int) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`python -m dial.plugin okx` against the fake OKX; yields its base URL and the process."""
    port = free_port()
    argv = ["okx", "--listen", f"127.0.0.1:{port}", "--api-base", fake.fake.url, "--timeout", "5"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dial.plugin", *argv],
        cwd=ROOT,
        stdout=output,
        stderr=output,
        text=True,
    )
    try:
        assert wait_port(port, 15), "the plugin did not start listening"
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def okx_process(fake: PluginHarness) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with plugin_process(fake, subprocess.PIPE) as (base, process):
        yield f"{base}/OKX", process


def test_serve_call_and_stop(okx_process: tuple[str, subprocess.Popen[str]]) -> None:
    url, process = okx_process
    ticker = run("call", url, "ticker", "symbol=ETH_USDT")
    assert ticker.returncode == 0, ticker.stderr
    assert json.loads(ticker.stdout)["data"]["symbol"] == "ETH_USDT"

    accounts = run("call", url, "accounts", *KEYS)
    assert accounts.returncode == 0, accounts.stderr
    assert {"currency": "USDT", "free": "10000", "frozen": "250"} in json.loads(accounts.stdout)[
        "data"
    ]

    io = run("call", url, "__api_/api/v5/trade/orders-pending", "instType=SPOT", *KEYS)
    assert io.returncode == 0 and json.loads(io.stdout)["data"]["code"] == "0"

    history = run("call", url, "historyorders", "symbol=ETH_USDT", "since:=0", "limit:=5", *KEYS)
    assert len(json.loads(history.stdout)["data"]) == 5

    refused = run("call", url, "ticker", "symbol=USDT")  # the plugin's {"error"} -> exit 1
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"].startswith("invalid symbol 'USDT'")

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out.startswith(f"serving {url} -> ")
    assert "Traceback" not in err
    assert f"OKX accounts key={fingerprint(API_KEY)} params={{}} -> ok" in err  # request log
    assert SECRET not in err and PASSPHRASE not in err and API_KEY not in err


def timed(call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    return call(), time.perf_counter() - started


@pytest.mark.parametrize("limit", ["1e700000", "1e1000000"])
def test_absurd_number_does_not_stall_the_server(fake: PluginHarness, limit: str) -> None:
    """Regression: `limit: "1e700000"` made the plugin spend 12 s (27 s for 1e1000000) in
    int(Decimal(...)) on its event loop, GIL held, stalling every other request. The plugin runs
    in its own process here, so a stall cannot also freeze the clock that measures it."""
    with plugin_process(fake, subprocess.DEVNULL) as (base, _):
        client = PluginClient(base)
        assert "data" in client.call("ticker", {"symbol": "ETH_USDT"})  # warm: upstream connected
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(
                timed, lambda: client.call("depth", {"symbol": "ETH_USDT", "limit": limit})
            )
            time.sleep(0.05)  # the absurd request goes first
            good = pool.submit(timed, lambda: client.call("ticker", {"symbol": "ETH_USDT"}))
            (bad_answer, bad_seconds), (answer, seconds) = bad.result(60), good.result(60)
    assert bad_answer == {
        "error": f"params.limit is out of range, got '{limit}' "
        "(at most 18 digits before the decimal point)"
    }
    assert answer["data"]["symbol"] == "ETH_USDT"
    assert bad_seconds < 1 and seconds < 1, (bad_seconds, seconds)  # a bound, not a perf target


def test_call_errors_are_one_line(fake: PluginHarness) -> None:
    closed = f"http://127.0.0.1:{free_port()}/OKX"
    one_line_error(run("call", closed, "ticker"), 1, f"error: cannot reach {closed}: ")
    one_line_error(run("call", fake.url + "/OKX", "ticker", "symbol"), 2, "error: bad parameter")
    one_line_error(run("call", fake.url, "ticker", "limit:=x"), 2, "error: bad parameter 'limit")
    one_line_error(run("call", "ftp://h/OKX", "ticker"), 2, "error: URL must start with http")
    not_json = run("call", fake.fake.url + "/nothing", "ticker")  # the fake's HTML 404 page
    one_line_error(not_json, 1, f"error: {fake.fake.url}/nothing answered HTTP 404 with non-JSON")


def test_okx_bad_arguments_are_one_line() -> None:
    one_line_error(run("okx", "--listen", "nowhere"), 2, "error: invalid listen address")
    one_line_error(run("okx", "--api-base", "okx.com"), 2, "error: --api-base must be an http")
    one_line_error(run("okx", "--timeout", "0"), 2, "error: --timeout must be positive")


def test_okx_port_in_use(fake: PluginHarness) -> None:
    busy = fake.fake.port
    assert port_open(busy)
    result = run("okx", "--listen", f"127.0.0.1:{busy}", "--api-base", fake.fake.url)
    one_line_error(result, 1, f"error: cannot listen on 127.0.0.1:{busy}: ")
    assert "in use" in result.stderr


def test_register_adds_plugin_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="dial")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["plugin", "call", "http://127.0.0.1:1/OKX", "ticker", "a=1", "b:=2"])
    assert args.func is cli.run_call and args.params == ["a=1", "b:=2"]
    args = parser.parse_args(["plugin", "okx", "--listen", "127.0.0.1:7777"])
    assert args.func is cli.run_okx and args.api_base == "https://www.okx.com"
    assert parser.parse_args(["plugin"]).func(args) == 2  # bare `dial plugin` prints help


def test_parse_params() -> None:
    assert cli.parse_params(["symbol=ETH_USDT", "limit=30", "since:=0", "x:=[1]", "q=a=b"]) == {
        "symbol": "ETH_USDT",
        "limit": "30",
        "since": 0,
        "x": [1],
        "q": "a=b",
    }
