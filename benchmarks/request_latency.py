"""Round-trip latency of tracked requests on loopback: `Tracker` versus a plain websockets client.

A separate server process answers Kraken-style `add_order` requests at once. In one run we
time N sequential request -> response round trips (JSON encode, send, receive, JSON decode,
match by `req_id`) with (a) the websockets asyncio client doing it by hand, (b)
`Tracker.call()` on a sync `Dial` connection (the reader thread hands over to the reactor and
back), and (c) `await Tracker.acall()` on a `dial.aio` connection (one loop, like (a)).
Prints p50/p99 in microseconds for each and the ratios to (a).

    python benchmarks/request_latency.py [--requests 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time


def serve() -> None:
    """Run the Kraken-style server (in its own process) and print its port on stdout."""
    from websockets.asyncio.server import serve as ws_serve

    async def handle(connection) -> None:
        async for message in connection:
            request = json.loads(message)
            await connection.send(
                json.dumps(
                    {
                        "method": request["method"],
                        "req_id": request["req_id"],
                        "result": {"order_id": "OK4GZK-XOTOY-U4C4X5"},
                        "success": True,
                    }
                )
            )

    async def main() -> None:
        async with ws_serve(handle, "127.0.0.1", 0, compression=None, ping_interval=None) as srv:
            print(srv.sockets[0].getsockname()[1], flush=True)
            await asyncio.Future()

    asyncio.run(main())


PARAMS = {"order_type": "limit", "symbol": "BTC/USD", "order_qty": 0.001, "side": "buy"}


async def raw_websockets(url: str, count: int) -> list[float]:
    from websockets.asyncio.client import connect

    samples = []
    async with connect(url, compression=None, ping_interval=None) as ws:
        for req_id in range(1, count + 1):
            started = time.perf_counter_ns()
            await ws.send(
                json.dumps(
                    {"method": "add_order", "params": PARAMS, "req_id": req_id},
                    separators=(",", ":"),
                )
            )
            while True:  # match like a tracker would
                response = json.loads(await ws.recv())
                if response.get("req_id") == req_id:
                    break
            samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def dial_sync(url: str, count: int) -> list[float]:
    from dial import Dial
    from dial.tracking import Tracker

    conn = Dial(url, raise_errors=True)
    tracker = Tracker(conn, timeout=5)
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        response = tracker.call("add_order", PARAMS)
        assert response and response["success"], response
        samples.append((time.perf_counter_ns() - started) / 1000)
    conn.close()
    return samples


async def dial_async(url: str, count: int) -> list[float]:
    import dial.aio
    from dial.tracking import Tracker

    conn = await dial.aio.dial(url, raise_errors=True)
    tracker = Tracker(conn, timeout=5)
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        response = await tracker.acall("add_order", PARAMS)
        assert response and response["success"], response
        samples.append((time.perf_counter_ns() - started) / 1000)
    await conn.close()
    return samples


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = f"ws://127.0.0.1:{int(server.stdout.readline())}"
        n = args.requests
        # warm-up: imports, reactor thread, JIT-free but cache-warm paths
        asyncio.run(raw_websockets(url, 200))
        dial_sync(url, 200)
        asyncio.run(dial_async(url, 200))

        raw, sync, aio = [], [], []
        for _ in range(args.rounds):  # interleaved, so drift hits all three alike
            raw += asyncio.run(raw_websockets(url, n))
            sync += dial_sync(url, n)
            aio += asyncio.run(dial_async(url, n))
    finally:
        server.terminate()

    raw_p50, raw_p99 = percentiles(raw)
    print(f"round trips per client   {n * args.rounds}")
    print(f"raw websockets client    p50 {raw_p50:8.1f} us   p99 {raw_p99:8.1f} us")
    for name, samples in (("Tracker.call (sync)", sync), ("Tracker.acall (aio)", aio)):
        p50, p99 = percentiles(samples)
        print(
            f"{name:24} p50 {p50:8.1f} us   p99 {p99:8.1f} us   "
            f"ratio to raw: p50 {p50 / raw_p50:5.2f}x  p99 {p99 / raw_p99:5.2f}x"
        )


if __name__ == "__main__":
    main()
