"""Throughput and latency of the FMZ plugin serving `ticker` from the local fake OKX.

Three processes on 127.0.0.1, as in production: the fake OKX upstream, the plugin
(`python -m dial.plugin okx`) and this load generator. Prints, side by side:
  * direct   - the same load straight at the fake upstream (what the plugin adds is the ratio)
  * closed   - N concurrent clients as fast as they go: requests/s, p50/p99
  * paced    - a fixed 1000 requests/s schedule; latency counted from each request's planned start
               (no coordinated omission), the number the target is about
Target: >= 1000 requests/s with p99 < 25 ms on two cores.

    .venv/bin/python benchmarks/plugin.py [--seconds 8] [--concurrency 16] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
TARGET_RPS, TARGET_P99_MS = 1000, 25.0
BODY = json.dumps(
    {
        "access_key": "accesskey123",
        "secret_key": "secretkey123,passphrase123",
        "nonce": 1,
        "method": "ticker",
        "params": {"symbol": "ETH_USDT"},
    }
).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on 127.0.0.1:{port} after {seconds}s")


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.errors = 0
        self.elapsed = 0.0

    def line(self) -> str:
        n = len(self.latencies)
        ms = [x * 1000 for x in self.latencies] or [0.0]
        return (
            f"{self.name:<28} {n / self.elapsed:>9.0f} {statistics.median(ms):>8.2f} "
            f"{percentile(ms, 0.99):>8.2f} {max(ms):>8.2f} {self.errors:>7}"
        )

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 0.99) * 1000


async def one(session: aiohttp.ClientSession, url: str, body: bytes | None, run: Run) -> bool:
    try:
        if body is None:
            async with session.get(url) as response:
                answer = await response.json(content_type=None)
        else:
            async with session.post(url, data=body) as response:
                answer = await response.json(content_type=None)
        ok = "data" in answer
    except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
        ok = False
    if not ok:
        run.errors += 1
    return ok


async def closed_loop(url: str, body: bytes | None, clients: int, seconds: float, run: Run) -> None:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(clients * 5):  # warm the connection pools on both sides
            await one(session, url, body, Run("warmup"))
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                if await one(session, url, body, run):
                    run.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        run.elapsed = time.perf_counter() - started


async def paced(url: str, body: bytes, rate: int, seconds: float, run: Run) -> None:
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(100):
            await one(session, url, body, Run("warmup"))
        total = int(rate * seconds)
        begin = time.perf_counter() + 0.05
        tasks = []

        async def fire(planned: float) -> None:
            if await one(session, url, body, run):
                run.latencies.append(time.perf_counter() - planned)

        for i in range(total):
            planned = begin + i / rate
            delay = planned - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(fire(planned)))
        await asyncio.gather(*tasks)
        run.elapsed = max(time.perf_counter() - begin, seconds)


async def bench(args: argparse.Namespace, upstream: str, plugin: str) -> list[Run]:
    runs = [
        Run(f"direct upstream  c={args.concurrency}"),
        Run(f"plugin closed    c={args.concurrency}"),
        Run(f"plugin paced     {args.rate}/s"),
    ]
    await closed_loop(f"{upstream}/api/v5/market/ticker?instId=ETH-USDT", None,
                      args.concurrency, args.seconds, runs[0])  # fmt: skip
    await closed_loop(f"{plugin}/OKX", BODY, args.concurrency, args.seconds, runs[1])
    await paced(f"{plugin}/OKX", BODY, args.rate, args.seconds, runs[2])
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=TARGET_RPS)
    parser.add_argument("--log-level", default="info", help="the plugin's log level (info)")
    args = parser.parse_args()

    upstream_port, plugin_port = free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    plugin_url = f"http://127.0.0.1:{plugin_port}"
    processes = [
        spawn("-m", "tests.fake_okx", "--port", str(upstream_port)),
        spawn("-m", "dial.plugin", "okx", "--listen", f"127.0.0.1:{plugin_port}",
              "--api-base", upstream_url, "--log-level", args.log_level),
    ]  # fmt: skip
    try:
        wait_port(upstream_port)
        wait_port(plugin_port)
        runs = asyncio.run(bench(args, upstream_url, plugin_url))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)

    print(f"plugin ticker benchmark, {os.cpu_count()} CPUs, {args.seconds:g}s per run, "
          f"plugin log level {args.log_level}")  # fmt: skip
    print(f"{'run':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for run in runs:
        print(run.line())
    direct, closed, pace = runs
    print(f"plugin/direct throughput ratio: {closed.rps / direct.rps:.2f}")
    verdict = pace.rps >= TARGET_RPS * 0.98 and pace.p99_ms < TARGET_P99_MS and not pace.errors
    print(
        f"target >= {TARGET_RPS} req/s with p99 < {TARGET_P99_MS:g} ms: paced {pace.rps:.0f} req/s "
        f"p99 {pace.p99_ms:.2f} ms ({pace.p99_ms / TARGET_P99_MS:.2f} of budget); "
        f"closed-loop max {closed.rps:.0f} req/s ({closed.rps / TARGET_RPS:.2f}x target) -> "
        f"{'MET' if verdict and closed.rps >= TARGET_RPS else 'NOT MET'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
