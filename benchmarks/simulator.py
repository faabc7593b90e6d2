"""The simulator's sustained push rate: can it load-test a strategy?

`dial simulate` runs in its own process (as a user runs it); a second process opens many
WebSocket clients to all three venues, subscribes them to busy channels, and counts the frames
they actually received during a measured window (only received frames count). Prints msg/s per
venue and in aggregate against the target of >= 50,000 msg/s on a 2-core machine.

    python benchmarks/simulator.py [--clients 90] [--rate 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
TARGET = 50_000
BINANCE_STREAMS = "btcusdt@trade/ethusdt@trade/btcusdt@depth@100ms/ethusdt@bookTicker"
OKX_ARGS = [
    {"channel": "books", "instId": "BTC-USDT"},
    {"channel": "bbo-tbt", "instId": "ETH-USDT"},
    {"channel": "trades", "instId": "BTC-USDT-SWAP"},
    {"channel": "tickers", "instId": "SOL-USDT"},
]
HUOBI_TOPICS = ("market.btcusdt.bbo", "market.ethusdt.trade.detail", "market.btcusdt.depth.step0")


def start_simulator(rate: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`dial simulate` on free ports; returns the process and venue -> ws://host:port."""
    process = subprocess.Popen(
        # Huobi's heartbeat is stretched so the counting clients need not gunzip every frame
        [
            sys.executable,
            "-m",
            "dial.cli",
            "simulate",
            "--port",
            "0",
            "--rate",
            str(rate),
            "--ping-interval",
            "3600",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    bases: dict[str, str] = {}
    for line in process.stdout:
        match = re.match(r"\s+(binance|okx|huobi)\s+(ws://[^/\s]+)$", line)
        if match:
            bases[match.group(1)] = match.group(2)
        if "Ctrl-C" in line:
            break
    return process, bases


async def client(url: str, requests: list[str], counts: list[int]) -> None:
    """Subscribe, then count frames until cancelled (no per-frame timers: they would cost
    more than the frames and make the counting client the bottleneck)."""
    async with connect(url, max_size=2**22, compression=None, ping_interval=None) as ws:
        for request in requests:
            await ws.send(request)
        index = len(counts)
        counts.append(0)
        async for _ in ws:
            counts[index] += 1


def venue_clients(bases: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    okx = json.dumps({"op": "subscribe", "args": OKX_ARGS})
    huobi = [json.dumps({"sub": topic, "id": str(i)}) for i, topic in enumerate(HUOBI_TOPICS)]
    return [
        ("binance", f"{bases['binance']}/stream?streams={BINANCE_STREAMS}", []),
        ("okx", f"{bases['okx']}/ws/v5/public", [okx]),
        ("huobi", f"{bases['huobi']}/ws", huobi),
    ]


async def measure(bases: dict[str, str], clients: int, seconds: float) -> dict[str, float]:
    counts: dict[str, list[int]] = {}
    tasks = []
    for i in range(clients):
        venue, url, requests = venue_clients(bases)[i % 3]
        per_venue = counts.setdefault(venue, [])
        tasks.append(asyncio.ensure_future(client(url, requests, per_venue)))
    await asyncio.sleep(2.0)  # connect, subscribe, first snapshots
    before = {venue: sum(c) for venue, c in counts.items()}
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    rates = {venue: (sum(c) - before[venue]) / elapsed for venue, c in counts.items()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=90)
    parser.add_argument("--rate", type=float, default=300.0, help="market steps per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    process, bases = start_simulator(args.rate)
    try:
        if len(bases) != 3:
            print(f"simulator did not start: {bases}")
            return 1
        rates = asyncio.run(measure(bases, args.clients, args.seconds))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(15)
    total = sum(rates.values())
    print(f"simulator push rate, {args.clients} clients, {args.rate:g} market steps/s:")
    for venue, rate in rates.items():
        print(f"  {venue:<8} {rate:>10,.0f} msg/s received")
    verdict = "meets" if total >= TARGET else "BELOW"
    print(f"  {'total':<8} {total:>10,.0f} msg/s received ({verdict} target {TARGET:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
