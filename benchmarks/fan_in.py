"""Fan-in: 500 WebSocket connections in one process, read by one thread with `dial.wait` and
`read_many`, while a server in another process pushes 200 messages/s on each (100,000 msg/s
in all).

Each ~100-byte text frame carries the server's `time.monotonic_ns()` at write time and a
per-connection sequence number, so the reader measures latency (frame written -> message in
the reader's hand) and notices any loss. Printed: the aggregate rate, the CPU the client
process used (user + system, in cores), p50/p99/p99.9 latency, the memory one idle connection
costs (RSS growth of dialling them all before the pushes start, divided by their number), and
drops (buffer overflows and sequence gaps). The run only counts with 0 drops. First, the same
feeds are read by raw picows on one asyncio loop (no Dial): the floor this machine allows.

`--api aio` reads them with `dial.aio` instead: every connection dialled on one `asyncio.run`
loop (its sessions run there, no reactor thread in the path) and read by one task each with
`await conn.read_many(2000, 500)`. `--progress` prints, every second on stderr, how many
connections are dialled and reading and how many messages arrived (to see where a run stops).

    python benchmarks/fan_in.py [--api sync|aio] [--connections 500] [--rate 200] [--seconds 10]

Targets (issue 13): 100k msg/s over 500 connections using < 1.5 cores, p99 < 10 ms,
< 64 KB per idle connection, 0 drops.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PAD = 100


class Pusher:
    """The server side (picows' server, so the pushing costs little CPU): every connection
    gets `rate` frames per second, paced by one timer for all of them, once `go` is read on
    stdin."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.links: list[Any] = []
        self.sequence: list[int] = []

    def listener(self, request: Any) -> Any:
        from picows import WSListener, WSMsgType

        pusher = self

        class Feed(WSListener):
            def on_ws_connected(self, transport: Any) -> None:
                if request.path != b"/warmup":  # the client's warm-up is not a feed
                    pusher.links.append(transport)
                    pusher.sequence.append(0)

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                """Answer a client's CLOSE (picows leaves that to us): without it every
                client close() waits out its closing handshake (1 s each, one after
                another when a loop closes its connections in turn)."""
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.send_close(frame.get_close_code(), frame.get_close_message())
                    transport.disconnect()

        return Feed()

    async def push(self, seconds: float) -> None:
        """Send one frame to every connection every 1/rate s (spread over the period)."""
        from picows import WSMsgType

        text = WSMsgType.TEXT
        loop = asyncio.get_running_loop()
        period = 1.0 / self.rate
        count = len(self.links)
        slices = 10  # the connections are served in 10 groups spread over each period
        start = loop.time()
        pad = b"y" * (PAD - 30)
        links, sequence, now = self.links, self.sequence, time.monotonic_ns
        for tick in range(round(seconds * self.rate) * slices):
            for index in range(tick % slices, count, slices):
                sequence[index] += 1
                links[index].send(text, b"%020d %08d %b" % (now(), sequence[index], pad))
            delay = start + (tick + 1) * period / slices - loop.time()
            await asyncio.sleep(max(0.0, delay))


def serve(rate: int, seconds: float) -> None:
    """The server process: print the port, wait for `go` on stdin, push, print the totals."""

    async def main() -> None:
        from picows import ws_create_server

        pusher = Pusher(rate)
        server = await ws_create_server(pusher.listener, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        cpu = time.process_time()
        await pusher.push(seconds)
        print(sum(pusher.sequence), time.process_time() - cpu, flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
        os._exit(0)  # every connection drops at once, without a word

    asyncio.run(main())


def raw_picows(port: int, connections: int, expected: int, go: Callable[[], None]) -> tuple:
    """The same feeds read by picows' core API on one asyncio loop in this thread, no Dial:
    the floor this machine and server allow. Returns (latencies in us, cores used)."""
    from picows import WSListener, ws_connect

    latencies = array("d")

    async def run() -> float:
        done = asyncio.get_running_loop().create_future()

        class Reader(WSListener):
            def on_ws_frame(self, transport, frame) -> None:
                message = frame.get_payload_as_utf8_text()
                latencies.append((time.monotonic_ns() - int(message[:20])) / 1000.0)
                if len(latencies) >= expected and not done.done():
                    done.set_result(None)

        url = f"ws://127.0.0.1:{port}/fan"
        links = [await ws_connect(Reader, url) for _ in range(connections)]
        cpu, wall = time.process_time(), time.monotonic()
        go()
        await asyncio.wait_for(done, 60)
        used = (time.process_time() - cpu) / (time.monotonic() - wall)
        for transport, _ in links:
            transport.disconnect()
        return used

    return latencies, asyncio.run(run())


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], int]:
    argv = ["--serve", "--rate", str(args.rate), "--seconds", str(args.seconds)]
    server = subprocess.Popen(
        [sys.executable, __file__, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    return server, int(server.stdout.readline())


def say(server: subprocess.Popen[str], word: str) -> None:
    assert server.stdin is not None
    server.stdin.write(f"{word}\n")
    server.stdin.flush()


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(sorted_samples: array, fraction: float) -> float:
    return sorted_samples[min(len(sorted_samples) - 1, int(len(sorted_samples) * fraction))]


@dataclass
class Outcome:
    """What one client run measured; `report` prints it."""

    api: str
    engine: str
    per_connection_kb: float
    received: int
    wall: float
    cpu: float
    latencies: array
    gaps: int
    dropped: int
    sent: int
    server_cpu: float


def run_sync(args: argparse.Namespace, server: subprocess.Popen[str], url: str) -> Outcome:
    """The reference client: `Dial` per connection, one thread reading them all with
    `dial.wait` + `read_many` (the sessions run on dialkit's reactor thread)."""
    assert server.stdout is not None
    import dial
    from dial import Dial
    from dial.connection import session_of

    expected = args.connections * args.rate * round(args.seconds)
    Dial(url.replace("/fan", "/warmup")).close()  # warm up: imports, the reactor thread
    gc.collect()
    before = rss_kb()
    conns = [Dial(url, timeout=30) for _ in range(args.connections)]
    assert all(conns), dial.last_error()
    gc.collect()
    time.sleep(0.5)
    per_connection = (rss_kb() - before) / args.connections
    engine = session_of(conns[0]).transport.engine

    latencies = array("d")
    last_sequence = [0] * args.connections
    gaps = 0
    received = 0
    index_of = {id(conn): i for i, conn in enumerate(conns)}
    say(server, "go")
    cpu_start, wall_start = time.process_time(), time.monotonic()
    idle_since = None
    monotonic_ns = time.monotonic_ns
    while True:
        ready = dial.wait(conns, 200)
        if not ready:
            if received and idle_since is None:
                idle_since = time.monotonic()
            if received >= expected or (idle_since and time.monotonic() - idle_since > 2):
                break
            continue
        idle_since = None
        for conn in ready:
            batch = conn.read_many(2000, -1)
            now = monotonic_ns()
            slot = index_of[id(conn)]
            for message in batch:
                latencies.append((now - int(message[:20])) / 1000.0)
                sequence = int(message[21:29])
                gaps += sequence - last_sequence[slot] - 1
                last_sequence[slot] = sequence
            received += len(batch)
    wall = (idle_since or time.monotonic()) - wall_start
    cpu = time.process_time() - cpu_start
    sent, server_cpu = server.stdout.readline().split()
    dropped = sum(conn.dropped for conn in conns)
    say(server, "stop")  # the server goes first: no closing handshakes to wait for
    server.wait(10)
    for conn in conns:
        conn.close()
    api = "one reader thread (dial.wait + read_many)"
    return Outcome(
        api, engine, per_connection, received, wall, cpu, latencies, gaps, dropped,
        int(sent), float(server_cpu),
    )  # fmt: skip


class AioFanIn:
    """The `dial.aio` client: every connection on this loop, one reading task each."""

    def __init__(self, args: argparse.Namespace, server: subprocess.Popen[str], url: str):
        self.args, self.server, self.url = args, server, url
        self.expected = args.connections * args.rate * round(args.seconds)
        self.latencies = array("d")
        self.gaps = self.received = self.dialled = self.reading = 0
        self.last_at = 0.0  # time.monotonic() of the last batch taken
        self.phase = "dialling"

    async def run(self) -> Outcome:
        import dial
        import dial.aio
        from dial.connection import session_of

        args, server = self.args, self.server
        progress = asyncio.ensure_future(self.show_progress()) if args.progress else None
        warmup = await dial.aio.dial(self.url.replace("/fan", "/warmup"), raise_errors=True)
        await warmup.close()
        gc.collect()
        before = rss_kb()
        conns = []
        for _ in range(args.connections):
            conn = await dial.aio.dial(self.url, timeout=30)
            assert conn is not None, dial.last_error()
            conns.append(conn)
            self.dialled += 1
        gc.collect()
        await asyncio.sleep(0.5)
        per_connection = (rss_kb() - before) / args.connections
        engine = session_of(conns[0]).transport.engine

        self.phase = "reading"
        say(server, "go")
        cpu_start, wall_start = time.process_time(), time.monotonic()
        self.last_at = wall_start
        readers = [asyncio.ensure_future(self.read(conn)) for conn in conns]
        while self.received < self.expected and time.monotonic() - self.last_at < 2.0:
            await asyncio.sleep(0.05)
        wall = (self.last_at if self.received else time.monotonic()) - wall_start
        cpu = time.process_time() - cpu_start
        self.phase = "closing"
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        sent, server_cpu = (await asyncio.to_thread(self.server_totals)).split()
        dropped = sum(conn.dropped for conn in conns)
        say(server, "stop")  # the server goes first: no closing handshakes to wait for
        await asyncio.to_thread(server.wait, 10)
        await asyncio.gather(*(conn.close() for conn in conns))
        if progress is not None:
            progress.cancel()
        api = "one loop, a task per connection (dial.aio read_many)"
        return Outcome(
            api, engine, per_connection, self.received, wall, cpu, self.latencies,
            self.gaps, dropped, int(sent), float(server_cpu),
        )  # fmt: skip

    async def read(self, conn: Any) -> None:
        """One connection's reader: batches as they come, until the link goes down."""
        self.reading += 1
        latencies, monotonic_ns = self.latencies, time.monotonic_ns
        last_sequence = 0
        try:
            while True:
                batch = await conn.read_many(2000, 500)
                if batch == [""]:
                    return  # down (the server went away) and drained
                if not batch:
                    continue
                now = monotonic_ns()
                for message in batch:
                    latencies.append((now - int(message[:20])) / 1000.0)
                    sequence = int(message[21:29])
                    self.gaps += sequence - last_sequence - 1
                    last_sequence = sequence
                self.received += len(batch)
                self.last_at = time.monotonic()
        finally:
            self.reading -= 1

    def server_totals(self) -> str:
        assert self.server.stdout is not None
        return self.server.stdout.readline()

    async def show_progress(self) -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            print(
                f"[{time.monotonic() - started:5.1f} s] {self.phase}: dialled {self.dialled}, "
                f"reading {self.reading}, received {self.received:,}",
                file=sys.stderr,
                flush=True,
            )


def report(args: argparse.Namespace, outcome: Outcome, baseline: tuple | None) -> None:
    wall, received = outcome.wall, outcome.received
    ordered = array("d", sorted(outcome.latencies))
    print(
        f"{args.connections} connections x {args.rate} msg/s for {args.seconds:g} s, "
        f"engine {outcome.engine}, {outcome.api}"
    )
    print(f"sent {outcome.sent:,}, received {received:,} ({received / wall:,.0f} msg/s)")
    print(f"client CPU              {outcome.cpu / wall:6.2f} cores   (target < 1.5)")
    print(f"server CPU              {outcome.server_cpu / args.seconds:6.2f} cores   (not counted)")
    if ordered:
        print(
            f"latency write->read     p50 {percentile(ordered, 0.5) / 1000:7.2f} ms   "
            f"p99 {percentile(ordered, 0.99) / 1000:7.2f} ms   "
            f"p99.9 {percentile(ordered, 0.999) / 1000:7.2f} ms   (target p99 < 10 ms)"
        )
    print(f"memory per idle conn    {outcome.per_connection_kb:6.1f} KB   (target < 64)")
    lost = outcome.sent - received
    print(
        f"dropped {outcome.dropped}, sequence gaps {outcome.gaps}, not received {lost}   (target 0)"
    )
    if baseline is not None:
        raw = array("d", sorted(baseline[0]))
        print(
            f"raw picows, one thread  p50 {percentile(raw, 0.5) / 1000:7.2f} ms   "
            f"p99 {percentile(raw, 0.99) / 1000:7.2f} ms   "
            f"p99.9 {percentile(raw, 0.999) / 1000:7.2f} ms   CPU {baseline[1]:.2f} cores"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=("sync", "aio"), default="sync")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rate", type=int, default=200, help="messages/s per connection")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--engine", default=None, help="websockets or picows (default: auto)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the raw picows run (the floor)"
    )
    parser.add_argument(
        "--progress", action="store_true", help="aio: print counts every second on stderr"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.rate, args.seconds)

    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    expected = args.connections * args.rate * round(args.seconds)
    baseline = None
    try:
        import picows  # noqa: F401  - the server, and the baseline client
    except ImportError:
        print("fan_in needs picows (pip install '.[fast]'): skipped")
        return
    if not args.no_baseline:
        server, port = start_server(args)
        baseline = raw_picows(port, args.connections, expected, lambda: say(server, "go"))
        say(server, "stop")
        server.wait(10)
    server, port = start_server(args)
    options = f"|engine={args.engine}" if args.engine else ""
    url = f"ws://127.0.0.1:{port}/fan{options}"
    if args.api == "aio":
        outcome = asyncio.run(AioFanIn(args, server, url).run())
    else:
        outcome = run_sync(args, server, url)
    report(args, outcome, baseline)


if __name__ == "__main__":
    main()
