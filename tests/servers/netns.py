"""Real network faults: a server in its own network namespace, the client in the root one,
and an impaired link between them (delay, loss, reordering, a bandwidth cap, total loss).

Topology (one `/30` per hop, out of 10.201.0.0/16; N is picked free at run time):

    root ns (client)        dialkit-N-wire ns               dialkit-N-srv ns (server)
    dkNc 10.201.N.1 ====== dkNw 10.201.N.2
                            dkNx 10.201.N.5 =============== dkNs 10.201.N.6

The middle namespace is the wire. Where the kernel has `sch_netem`, the impairment is a
`tc qdisc ... netem` on both of its interfaces (one per direction) and the kernel forwards.
Where it has not (CONFIG_NET_SCH_NETEM unset, as on this project's machines), the wire routes
every packet through a TUN device read by a small user-space netem (`python -m
tests.servers.netns wire`), which delays, drops, reorders and rate-limits real IP packets of
the real TCP connections, with netem's semantics. Either way the client's and the server's
kernels see a lossy, slow path and do their own retransmissions.

Also runnable here: `python -m tests.servers.netns feed --host H --port P` (a WebSocket feed
server for the netns tests) and `python -m tests.servers.netns probe` (prints what the machine
supports).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import heapq
import json
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "dialkit"


# -- what the machine supports ---------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """What this machine offers for the netns tests; `missing` says why something is not."""

    ip: bool
    netns: bool
    veth: bool
    tun: bool
    netem: bool
    tbf: bool
    missing: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Enough for the tests: namespaces, veth, and netem or the TUN emulator."""
        return self.ip and self.netns and self.veth and (self.netem or self.tun)

    def describe(self) -> str:
        flags = ("netns", "veth", "tun", "netem", "tbf")
        have = ", ".join(f"{name}={'yes' if getattr(self, name) else 'no'}" for name in flags)
        return have + ("; " + "; ".join(self.missing) if self.missing else "")


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def ensure_iproute2() -> bool:
    """`ip` and `tc`, apt-installing iproute2 when root can (the brief: never skip for that)."""
    if shutil.which("ip") and shutil.which("tc"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "iproute2"],
            env=env,
            capture_output=True,
            check=False,
        )
    return bool(shutil.which("ip") and shutil.which("tc"))


@lru_cache(maxsize=1)
def probe() -> Support:
    """Try each capability for real in a throwaway namespace (about 0.1 s)."""
    missing: list[str] = []
    if not ensure_iproute2():
        return Support(False, False, False, False, False, False, ("iproute2 is not installed",))
    name = f"{PREFIX}-probe-{os.getpid()}"
    netns = _run(["ip", "netns", "add", name], check=False)
    if netns.returncode:
        missing.append(f"ip netns add: {netns.stderr.strip()}")
        return Support(True, False, False, False, False, False, tuple(missing))
    try:
        ns = ["ip", "netns", "exec", name]
        _run([*ns, "ip", "link", "set", "lo", "up"], check=False)
        veth = _run(
            [
                "ip",
                "link",
                "add",
                f"dkp{os.getpid() % 100000}",
                "type",
                "veth",
                "peer",
                "name",
                "p1",
                "netns",
                name,
            ],
            check=False,
        )
        if veth.returncode:
            missing.append(f"veth: {veth.stderr.strip()}")
        else:
            _run(["ip", "link", "del", f"dkp{os.getpid() % 100000}"], check=False)
        netem = _run(
            [*ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], False
        )
        if netem.returncode:
            missing.append(f"netem: {netem.stderr.strip()} (kernel without sch_netem)")
            if shutil.which("modprobe"):  # a module, on kernels that have modules
                _run(["modprobe", "sch_netem"], check=False)
            netem = _run(
                [*ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], False
            )
        _run([*ns, "tc", "qdisc", "del", "dev", "lo", "root"], check=False)
        tbf = _run(
            [
                *ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "32kbit",
                "latency",
                "400ms",
            ],
            check=False,
        )
        if tbf.returncode:
            missing.append(f"tbf: {tbf.stderr.strip()}")
        tun = _run([*ns, "ip", "tuntap", "add", "dev", "dkprobe", "mode", "tun"], check=False)
        if tun.returncode:
            missing.append(f"tun: {tun.stderr.strip()}")
        return Support(
            True,
            True,
            not veth.returncode,
            not tun.returncode,
            not netem.returncode,
            not tbf.returncode,
            tuple(missing),
        )
    finally:
        _run(["ip", "netns", "del", name], check=False)


# -- the emulated wire -----------------------------------------------------------------------


@dataclass
class Shape:
    """netem's knobs: one-way delay (each direction), random loss, reordering (that share
    of packets skips the delay, so it overtakes the ones before it) and a rate cap."""

    delay_ms: float = 0.0
    loss_pct: float = 0.0
    reorder_pct: float = 0.0
    rate_kbit: float = 0.0  # 0: no cap

    def netem_args(self) -> list[str]:
        args = ["delay", f"{self.delay_ms:g}ms"]
        if self.loss_pct:
            args += ["loss", f"{self.loss_pct:g}%"]
        if self.reorder_pct:
            args += ["reorder", f"{self.reorder_pct:g}%"]
        if self.rate_kbit:
            args += ["rate", f"{self.rate_kbit:g}kbit"]
        return args


CLEAR = Shape()
BLACKOUT = Shape(loss_pct=100.0)


@dataclass
class NetnsPair:
    """A server namespace reachable from the root namespace through an impaired wire.

    Use as a context manager; `shape()` changes the wire at any time, `spawn()` starts a
    server inside the server namespace (killed on close)."""

    backend: str = "auto"  # "netem", "user" (the TUN emulator) or "auto" (netem if it works)
    index: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _wire: subprocess.Popen[str] | None = None

    @property
    def client_ip(self) -> str:
        return f"10.201.{self.index}.1"

    @property
    def server_ip(self) -> str:
        return f"10.201.{self.index}.6"

    @property
    def wire_ns(self) -> str:
        return f"{PREFIX}-{self.index}-wire"

    @property
    def server_ns(self) -> str:
        return f"{PREFIX}-{self.index}-srv"

    def __enter__(self) -> NetnsPair:
        support = probe()
        if self.backend == "auto":
            self.backend = "netem" if support.netem else "user"
        self._claim_index()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _claim_index(self) -> None:
        """Take a free N: `ip netns add` fails when the name exists, so it is the lock
        between concurrent test runs on one machine."""
        start = os.getpid() % 240 + 1
        for offset in range(240):
            index = (start + offset) % 240 + 1
            if _run(["ip", "link", "show", f"dk{index}c"], check=False).returncode == 0:
                continue  # a run that crashed left it, or someone else's
            if _run(["ip", "netns", "add", f"{PREFIX}-{index}-wire"], check=False).returncode:
                continue
            self.index = index
            return
        raise RuntimeError("no free 10.201.N.0/29 for a network namespace pair")

    def _build(self) -> None:
        n, wire, srv = self.index, self.wire_ns, self.server_ns
        _run(["ip", "netns", "add", srv])
        in_wire, in_srv = ["ip", "-n", wire], ["ip", "-n", srv]
        _run(
            [
                "ip",
                "link",
                "add",
                f"dk{n}c",
                "type",
                "veth",
                "peer",
                "name",
                f"dk{n}w",
                "netns",
                wire,
            ]
        )
        _run(
            [
                *in_wire,
                "link",
                "add",
                f"dk{n}x",
                "type",
                "veth",
                "peer",
                "name",
                f"dk{n}s",
                "netns",
                srv,
            ]
        )
        _run(["ip", "addr", "add", f"{self.client_ip}/30", "dev", f"dk{n}c"])
        _run(["ip", "link", "set", f"dk{n}c", "up"])
        _run([*in_wire, "addr", "add", f"10.201.{n}.2/30", "dev", f"dk{n}w"])
        _run([*in_wire, "addr", "add", f"10.201.{n}.5/30", "dev", f"dk{n}x"])
        for dev in ("lo", f"dk{n}w", f"dk{n}x"):
            _run([*in_wire, "link", "set", dev, "up"])
        _run([*in_srv, "addr", "add", f"{self.server_ip}/30", "dev", f"dk{n}s"])
        for dev in ("lo", f"dk{n}s"):
            _run([*in_srv, "link", "set", dev, "up"])
        _run([*in_srv, "route", "add", "default", "via", f"10.201.{n}.5"])
        _run(["ip", "route", "add", f"10.201.{n}.4/30", "via", f"10.201.{n}.2"])
        sysctl = ["ip", "netns", "exec", wire, "sysctl", "-q", "-w"]
        _run([*sysctl, "net.ipv4.ip_forward=1"])
        for conf in ("all", "default", f"dk{n}w", f"dk{n}x"):
            _run([*sysctl, f"net.ipv4.conf.{conf}.rp_filter=0"])
        if self.backend == "user":
            self._start_user_wire()

    def _start_user_wire(self) -> None:
        """Route everything crossing the wire namespace through the TUN emulator."""
        n, wire = self.index, self.wire_ns
        tun = f"dk{n}t"
        self._wire = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                wire,
                sys.executable,
                "-m",
                "tests.servers.netns",
                "wire",
                "--tun",
                tun,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._expect_line("ready", 10)
        in_wire = ["ip", "-n", wire]
        _run([*in_wire, "link", "set", tun, "up"])
        _run(
            ["ip", "netns", "exec", wire, "sysctl", "-q", "-w", f"net.ipv4.conf.{tun}.rp_filter=0"]
        )
        _run([*in_wire, "route", "add", "default", "dev", tun, "table", "100"])
        for dev in (f"dk{n}w", f"dk{n}x"):  # arrivals from either side go to the emulator;
            _run([*in_wire, "rule", "add", "iif", dev, "table", "100"])  # its output is routed

    def _expect_line(self, wanted: str, seconds: float) -> None:
        assert self._wire is not None and self._wire.stdout is not None
        ready, _, _ = select.select([self._wire.stdout], [], [], seconds)
        line = self._wire.stdout.readline().strip() if ready else ""
        if line != wanted:
            raise RuntimeError(f"wire emulator said {line!r}, expected {wanted!r}")

    def shape(self, shape: Shape) -> None:
        """Impair both directions of the wire as `shape` says (CLEAR undoes it)."""
        if self.backend == "user":
            assert self._wire is not None and self._wire.stdin is not None
            self._wire.stdin.write(json.dumps(shape.__dict__) + "\n")
            self._wire.stdin.flush()
            self._expect_line("ok", 5)
            return
        n = self.index
        for dev in (f"dk{n}w", f"dk{n}x"):
            base = ["ip", "netns", "exec", self.wire_ns, "tc", "qdisc"]
            if shape == CLEAR:
                _run([*base, "del", "dev", dev, "root"], check=False)
            else:
                _run([*base, "replace", "dev", dev, "root", "netem", *shape.netem_args()])

    def counters(self) -> dict[str, int] | None:
        """Packets the user-space wire forwarded, dropped and sent ahead of earlier ones
        (None with kernel netem, whose reordering is not counted)."""
        if self.backend != "user":
            return None
        assert self._wire is not None and self._wire.stdin is not None
        assert self._wire.stdout is not None
        self._wire.stdin.write("{}\n")
        self._wire.stdin.flush()
        ready, _, _ = select.select([self._wire.stdout], [], [], 5)
        if not ready:
            raise RuntimeError("wire emulator did not answer")
        counts: dict[str, int] = json.loads(self._wire.stdout.readline())
        return counts

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start `argv` inside the server namespace (its output goes to a log file)."""
        logs = Path(tempfile.gettempdir()) / f"dialkit-services-{os.getuid()}"
        logs.mkdir(exist_ok=True)
        log = open(logs / f"netns-{self.index}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.server_ns, *argv],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.processes.append(process)
        return process

    def wait_port(self, port: int, seconds: float = 10.0) -> bool:
        """Whether the server namespace listens on `port` (probed from the root namespace)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.server_ip, port), 0.5),
            ):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        for process in [*self.processes, *([self._wire] if self._wire else [])]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        if self._wire is not None:
            for stream in (self._wire.stdin, self._wire.stdout):
                if stream is not None:
                    stream.close()
        self.processes.clear()
        if self.index:
            _run(["ip", "link", "del", f"dk{self.index}c"], check=False)
            for ns in (self.server_ns, self.wire_ns):
                _run(["ip", "netns", "del", ns], check=False)


# -- the user-space netem (runs inside the wire namespace) -----------------------------------

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def run_wire(tun_name: str) -> None:
    """Forward IP packets read from the TUN device back into it, impaired by the current
    `Shape` (JSON lines on stdin, each answered `ok`; `{}` asks for the counters, answered
    as JSON): netem in user space."""
    tun = open_tun(tun_name)
    shape = Shape()
    counts = {"forwarded": 0, "dropped": 0, "reordered": 0}
    queue: list[tuple[float, int, bytes]] = []  # (when to send, tie-breaker, packet)
    line_free: dict[bytes, float] = {}  # per destination: when the rate-capped line is free
    seq = 0
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select([tun, stdin], [], [], timeout)
        if stdin in readable:
            line = sys.stdin.readline()
            if not line:
                return
            command = json.loads(line)
            if command:
                shape = Shape(**command)
                print("ok", flush=True)
            else:
                print(json.dumps(counts), flush=True)
        if tun in readable:
            while True:
                try:
                    packet = os.read(tun, 65536)
                except BlockingIOError:
                    break
                now = time.monotonic()
                if shape.loss_pct and random.random() * 100 < shape.loss_pct:
                    counts["dropped"] += 1
                    continue
                counts["forwarded"] += 1
                delay = shape.delay_ms / 1000
                if shape.reorder_pct and random.random() * 100 < shape.reorder_pct:
                    delay = 0.0  # netem's reorder: this one goes at once, overtaking
                    counts["reordered"] += bool(queue)
                due = now + delay
                if shape.rate_kbit:
                    dst = packet[16:20]
                    due = max(due, line_free.get(dst, 0.0)) + len(packet) * 8 / (
                        shape.rate_kbit * 1000
                    )
                    line_free[dst] = due
                seq += 1
                heapq.heappush(queue, (due, seq, packet))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, packet = heapq.heappop(queue)
            with contextlib.suppress(OSError):
                os.write(tun, packet)


# -- a WebSocket feed server for the netns tests ------------------------------------------------


async def run_feed(host: str, port: int, rate: float) -> None:
    """`sub` starts a numbered stream on that connection (`0`, `1`, ... at `rate` per s);
    anything else is echoed. Numbers start at 0 on every connection, so a gap or a repeat
    within one connection is a lost or duplicated message."""
    from websockets.asyncio.server import ServerConnection, serve

    async def stream(connection: ServerConnection) -> None:
        number = 0
        while True:
            await connection.send(str(number))
            number += 1
            await asyncio.sleep(1 / rate)

    async def handle(connection: ServerConnection) -> None:
        feeding: asyncio.Task[None] | None = None
        try:
            async for message in connection:
                if message == "sub" and feeding is None:
                    feeding = asyncio.ensure_future(stream(connection))
                else:
                    await connection.send(message)
        except Exception:
            pass
        finally:
            if feeding is not None:
                feeding.cancel()

    async with serve(handle, host, port, ping_interval=None, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    wire = sub.add_parser("wire", help="the user-space netem on a TUN device")
    wire.add_argument("--tun", required=True)
    feed = sub.add_parser("feed", help="a WebSocket feed server")
    feed.add_argument("--host", required=True)
    feed.add_argument("--port", type=int, required=True)
    feed.add_argument("--rate", type=float, default=50.0)
    sub.add_parser("probe", help="print what this machine supports")
    args = parser.parse_args(argv)
    if args.command == "wire":
        run_wire(args.tun)
    elif args.command == "feed":
        asyncio.run(run_feed(args.host, args.port, args.rate))
    else:
        print(probe().describe())


if __name__ == "__main__":
    main()
