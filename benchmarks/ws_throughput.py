"""WebSocket receive throughput: Dial's sync read() loop versus the raw websockets client.

A separate server process writes pre-encoded 100-byte text frames as fast as the socket takes
them. In one run we read the same number of messages with (a) the websockets asyncio client
and (b) `while ...: ws.read()` on a Dial connection, alternating rounds, and print msg/s, the
ratio (target >= 0.85), drops, p50/p99 latency from frame write to read() return, and the RSS
growth of a 1M-message flood nobody reads (target < 60 MB).

    python benchmarks/ws_throughput.py [--messages 300000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from websockets.utils import accept_key

FRAME_PAYLOAD = 100


def text_frame(payload: bytes) -> bytes:
    return bytes([0x81, len(payload)]) + payload  # unmasked server frame, payload < 126 bytes


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readuntil(b"\r\n\r\n")
    lines = request.decode().split("\r\n")
    path = lines[0].split()[1]
    key = next(
        line.split(":", 1)[1].strip()
        for line in lines
        if line.lower().startswith("sec-websocket-key")
    )
    accept = accept_key(key)
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    kind, count = path.strip("/").split("/")
    count = int(count)
    if kind == "bulk":  # as fast as the socket takes them
        frame = text_frame(b"x" * FRAME_PAYLOAD)
        chunk = frame * 1000
        sent = 0
        while sent < count:
            n = min(1000, count - sent)
            writer.write(chunk if n == 1000 else frame * n)
            await writer.drain()
            sent += n
    else:  # "latency": timestamped frames at a steady rate
        pad = b"y" * (FRAME_PAYLOAD - 20)
        for _ in range(count):
            stamp = str(time.monotonic_ns()).encode().rjust(20, b"0")
            writer.write(text_frame(stamp + pad))
            await writer.drain()
            await asyncio.sleep(0.0002)
    try:
        await reader.read()  # until the client goes away
    except ConnectionError:
        pass
    writer.close()


def serve() -> None:
    """Run the frame server (in its own process) and print its port on stdout."""

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


async def raw_websockets(url: str, count: int) -> float:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=None) as ws:
        start = time.perf_counter()
        for _ in range(count):
            await ws.recv()
        return time.perf_counter() - start


def dial_loop(url: str, count: int) -> tuple[float, int, int]:
    from dial import Dial

    ws = Dial(url)
    assert ws, "Dial failed"
    read = ws.read
    received = 0
    start = time.perf_counter()
    while received + ws.dropped < count:
        if read(2000) is None:
            break
        received += 1
    elapsed = time.perf_counter() - start
    dropped = ws.dropped
    ws.close()
    return elapsed, received, dropped


def latency(url: str, count: int) -> tuple[float, float]:
    from dial import Dial

    ws = Dial(url)
    samples = []
    for _ in range(count):
        message = ws.read()
        samples.append((time.monotonic_ns() - int(message[:20])) / 1000)
    ws.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def flood(url: str, count: int) -> tuple[float, int, int]:
    from dial import Dial

    before = rss_mb()
    ws = Dial(url)
    deadline = time.monotonic() + 120
    while ws.stats().messages_in < count and time.monotonic() < deadline:
        time.sleep(0.1)
    grown = rss_mb() - before
    stats = ws.stats()
    ws.close()
    return grown, stats.buffered, stats.dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flood", type=int, default=1_000_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    port = int(server.stdout.readline())
    base = f"ws://127.0.0.1:{port}"
    n = args.messages

    # warm both paths (imports, reactor thread) before timing
    asyncio.run(raw_websockets(f"{base}/bulk/1000", 1000))
    dial_loop(f"{base}/bulk/1000", 1000)

    raw_times, dial_times, drops = [], [], []
    for _ in range(args.rounds):
        raw_times.append(asyncio.run(raw_websockets(f"{base}/bulk/{n}", n)))
        elapsed, received, dropped = dial_loop(f"{base}/bulk/{n}", n)
        dial_times.append(elapsed * n / max(received, 1))  # time per message, scaled to n
        drops.append(dropped)
    raw_rate = n / min(raw_times)
    dial_rate = n / min(dial_times)
    print(f"messages per run        {n}")
    print(f"raw websockets client   {raw_rate:12,.0f} msg/s  (best of {args.rounds})")
    print(f"Dial read() loop        {dial_rate:12,.0f} msg/s  (best of {args.rounds})")
    print(f"ratio Dial / raw        {dial_rate / raw_rate:12.2f}   (target >= 0.85)")
    print(f"dropped while reading   {max(drops):12d}   (target 0)")

    p50, p99 = latency(f"{base}/latency/5000", 5000)
    print(f"latency write->read()   p50 {p50:8.1f} us   p99 {p99:8.1f} us")

    grown, buffered, dropped = flood(f"{base}/bulk/{args.flood}", args.flood)
    print(
        f"flood of {args.flood:,} unread    RSS +{grown:.1f} MB (target < 60), "
        f"buffered {buffered}, dropped {dropped}"
    )
    server.terminate()


if __name__ == "__main__":
    main()
