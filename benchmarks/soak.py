"""Soak: connections of every kind kept alive for minutes while their servers are restarted and
their links killed under them; then the numbers a process that runs for weeks depends on.

    python benchmarks/soak.py [--minutes 10 | --seconds S] [--connections 100] [--readers 4]
                              [--faults a,b | --schedule a,b] [--seed N] [--log F] [--json F]

The mix (100 by default): WebSockets to the simulator's three venues, each with a subscription
(`payload`) and some with heartbeats or exponential backoff; MQTT, NATS, AMQP and Kafka
connections that read back their own numbered publications; tcp echo connections; PostgreSQL,
MariaDB and SQLite connections running INSERT/SELECT/DELETE loops. Streams are read by a few
reader threads through `dial.wait`; one writer thread publishes, one thread per database execs.

Faults, one at a time at random gaps (each once first, then drawn at random): the simulator
drops every client (close frame or TCP abort) or is stopped and started on the same ports;
every link through a broker's fault proxy is reset (RST) or one frame is cut in half; a private
Mosquitto or NATS is killed (-9) and restarted; RabbitMQ closes our connections
(`rabbitmqctl close_connection`, ours only: the broker is shared); our PostgreSQL backends are
`pg_terminate_backend`-ed and our MariaDB sessions `KILL`-ed; the echo server drops its clients
or goes away for a while; `storm` and `restarts` do many at once. After each fault every
connection must deliver something produced *after* the fault (an exchange event time, a
publication's write time, a statement started after it): recovery is proven, not assumed.
At the end every connection is closed while every server is down (`--no-close-broken`: while
they are up), the servers come back, and closed connections must stay closed.

Printed, with verdicts: delivered/dropped/reconnects/repeats per kind, recovery time per fault,
RSS growth after warm-up (target < 20 MB), file descriptors and threads after close vs before
the connections were dialled (target: back to baseline, leftovers named), and unhandled
exceptions (target 0: threading/sys excepthooks, unraisable exceptions, WARNING+ log records
carrying a traceback). Exit status 0 when every target is met. Servers: the shared PostgreSQL,
MariaDB and RabbitMQ on their default ports (started when missing), private Mosquitto, NATS and
tansu on free ports (they get killed), the exchange simulator and a tcp echo server in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the server helpers live in tests/servers
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

import dial  # noqa: E402
from dial import Dial  # noqa: E402
from dial.simulator import Simulator  # noqa: E402
from tests.servers import base  # noqa: E402
from tests.servers.brokers import (  # noqa: E402
    RABBITMQ_PORT,
    close_own_rabbitmq_connections,
    start_mosquitto,
    start_nats,
    start_rabbitmq,
    tansu_binary,
)
from tests.servers.databases import (  # noqa: E402
    MARIADB_PORT,
    POSTGRES_PORT,
    PrivateMariadb,
    PrivatePostgres,
)
from tests.servers.faultproxy import FaultProxy  # noqa: E402

HOST = "127.0.0.1"
VENUES = ("binance", "okx", "huobi")
BROKERS = ("mqtt", "nats", "amqp", "kafka")
STREAMS = (*VENUES, *BROKERS, "tcp")
DATABASES = ("postgres", "mysql", "sqlite")
KINDS = (*STREAMS, *DATABASES)
#: share of each kind in the mix (the 100-connection default gives exactly these counts)
WEIGHTS = {
    "binance": 10,
    "okx": 10,
    "huobi": 10,
    "mqtt": 10,
    "nats": 10,
    "amqp": 10,
    "kafka": 8,
    "tcp": 10,
    "postgres": 8,
    "mysql": 8,
    "sqlite": 6,
}
RECONNECT = "reconnect=true&interval=300"
STAMP = re.compile(r'"(?:E|ts)":"?(\d{13})')  # Binance event time, OKX/HTX push time (ms)
PG_ADDRESS = f"postgres://user=postgres dbname=test sslmode=disable host={HOST} port={{port}}"
MYSQL_ADDRESS = f"mysql://root:@tcp({HOST}:{{port}})/test?charset=utf8mb4"


PROC_LOCK = threading.Lock()  # the sampler's /proc reads vs fd counting
PORT_NAMES: dict[int, str] = {}  # our servers' ports, to tell what a leftover socket was


def now_ms() -> int:
    return int(time.time() * 1000)


# -- configuration ------------------------------------------------------------------------------


@dataclass
class Config:
    """What to run. `schedule` fixes the faults (in order) instead of drawing them at random;
    the run then lasts until both `seconds` passed and the schedule is done."""

    seconds: float = 600.0
    connections: int = 100
    readers: int = 4
    write_rate: float = 5.0  # publications (or statements) per second per connection
    sim_rate: float = 4.0  # simulator market steps per second
    warmup: float | None = None  # s before the RSS baseline; default max(20, 15% of seconds)
    first_fault: float = 8.0  # s after the workers start
    gap: tuple[float, float] = (4.0, 12.0)  # s between a recovery and the next fault
    recovery: float = 30.0  # s every connection has to deliver again after a fault
    settle: float = 15.0  # s fds/threads may take to come back after close
    schedule: Sequence[str] | None = None
    faults: Sequence[str] | None = None  # the pool to draw from (default: all single faults)
    seed: int | None = None
    rss_limit_mb: float = 20.0
    close_broken: bool = True  # close while every server is down (see break_everything)
    log_path: Path | None = None

    @property
    def warmup_seconds(self) -> float:
        return self.warmup if self.warmup is not None else max(20.0, 0.15 * self.seconds)


def mix(total: int) -> dict[str, int]:
    """Connections per kind: at least one of each, the rest shared by WEIGHTS (largest
    remainder), so a short run still covers every kind."""
    if total < len(KINDS):
        raise ValueError(f"at least {len(KINDS)} connections (one per kind)")
    spare = total - len(KINDS)
    weight = sum(WEIGHTS.values())
    exact = {kind: spare * WEIGHTS[kind] / weight for kind in KINDS}
    counts = {kind: 1 + int(exact[kind]) for kind in KINDS}
    by_remainder = sorted(KINDS, key=lambda kind: exact[kind] - int(exact[kind]), reverse=True)
    for kind in by_remainder[: total - sum(counts.values())]:
        counts[kind] += 1
    return counts


# -- what is measured per connection ------------------------------------------------------------


@dataclass(eq=False)
class Tracked:
    """One connection and its counters. `fresh_ms` is the production time (wall clock, ms) of
    the newest thing it delivered: the proof that it works after a fault at time T is
    `fresh_ms > T`, which a message buffered before the fault cannot fake."""

    kind: str
    name: str
    conn: Any
    table: str = ""
    delivered: int = 0
    fresh_ms: int = 0
    written: int = 0
    refused: int = 0  # write() gave 0, or exec() gave None
    pings: int = 0  # HTX heartbeats answered
    repeats: int = 0  # a publication read again or before an older one
    garbled: int = 0  # tcp lines that were not ours (a line cut by a dropped link)
    seq: int = 0
    last_seq: int = -1
    tail: bytes = b""
    recovered_at: float | None = None
    last_text: str = ""
    oddities: list[str] = field(default_factory=list)  # the first few repeats, as read

    def stats(self) -> Any:
        return self.conn.stats() if self.kind in STREAMS else None


def on_venue(tracked: Tracked, message: str | bytes) -> None:
    """An exchange push: answer HTX's heartbeat (it drops us after two misses), else count
    the event and take its timestamp."""
    text = message if isinstance(message, str) else message.decode(errors="replace")
    if tracked.kind == "huobi" and text.startswith('{"ping"'):
        tracked.conn.write(text.replace("ping", "pong", 1))
        tracked.pings += 1
        return
    tracked.delivered += 1
    stamp = STAMP.search(text)
    if stamp:
        tracked.fresh_ms = max(tracked.fresh_ms, int(stamp.group(1)))


def on_publication(tracked: Tracked, text: str) -> None:
    """One of our own `seq wall_ms` publications, read back: count, check order, timestamp."""
    seq_text, _, stamp = text.partition(" ")
    if not (seq_text.isdigit() and stamp.isdigit()):
        tracked.garbled += 1
        return
    seq = int(seq_text)
    tracked.delivered += 1
    if seq <= tracked.last_seq:
        tracked.repeats += 1
        if len(tracked.oddities) < 5:
            tracked.oddities.append(f"{tracked.name}: read {text!r} after {tracked.last_text!r}")
    tracked.last_seq = max(tracked.last_seq, seq)
    tracked.last_text = text
    tracked.fresh_ms = max(tracked.fresh_ms, int(stamp))


def on_tcp(tracked: Tracked, chunk: bytes) -> None:
    """Echoed bytes: split into lines (a chunk may end mid-line; the rest comes next)."""
    lines = (tracked.tail + chunk).split(b"\n")
    tracked.tail = lines.pop()
    for line in lines:
        on_publication(tracked, line.decode(errors="replace"))


def on_message(tracked: Tracked, message: str | bytes) -> None:
    if tracked.kind in VENUES:
        on_venue(tracked, message)
    elif isinstance(message, bytes):
        on_tcp(tracked, message)
    else:
        on_publication(tracked, message)


# -- workers: readers, the writer, database loops ---------------------------------------------


def drain(tracked: Tracked) -> None:
    """Read what is buffered (bounded, so one busy feed cannot starve the others)."""
    for _ in range(500):
        message = tracked.conn.read(-1)
        if message is None:
            return
        if message == "":  # down: a line cut by the drop will not be completed
            tracked.tail = b""
            return
        on_message(tracked, message)


def read_loop(group: list[Tracked], stop: threading.Event) -> None:
    """One reader thread: `dial.wait` on its share of the streams, as a strategy would."""
    by_id = {id(tracked.conn): tracked for tracked in group}
    conns = [tracked.conn for tracked in group]
    while not stop.is_set():
        for conn in dial.wait(conns, 200):
            drain(by_id[id(conn)])


def write_loop(writers: list[Tracked], rate: float, stop: threading.Event) -> None:
    """Publish `seq wall_ms` on every broker/tcp connection `rate` times a second."""
    period = 1.0 / rate
    tick = time.monotonic()
    while not stop.is_set():
        for tracked in writers:
            payload = f"{tracked.seq} {now_ms()}" + ("\n" if tracked.kind == "tcp" else "")
            if tracked.conn.write(payload):
                tracked.written += 1
                tracked.seq += 1
            else:
                tracked.refused += 1
        tick += period
        stop.wait(max(0.0, tick - time.monotonic()))


def exec_once(tracked: Tracked, round_: int) -> None:
    """INSERT most of the time; every 5th round a SELECT, every 20th a DELETE of old rows
    (the tables stay small, so RSS measures the library and not SQLite's page cache)."""
    started = now_ms()
    conn, table, name = tracked.conn, tracked.table, tracked.name
    if round_ % 20 == 19:
        result = conn.exec(
            f"DELETE FROM {table} WHERE conn = ? AND seq < ?", name, tracked.seq - 50, timeout=5
        )
    elif round_ % 5 == 4:
        result = conn.exec(f"SELECT COUNT(*) FROM {table} WHERE conn = ?", name, timeout=5)
    else:
        result = conn.exec(
            f"INSERT INTO {table} (conn, seq, ts) VALUES (?, ?, ?)",
            name,
            tracked.seq,
            started,
            timeout=5,
        )
        tracked.seq += result is not None
        tracked.written += result is not None
    if result is None:
        tracked.refused += 1
    else:
        tracked.delivered += 1
        tracked.fresh_ms = max(tracked.fresh_ms, started)


def db_loop(group: list[Tracked], rate: float, stop: threading.Event) -> None:
    """One thread per database kind, each connection `rate` statements a second."""
    round_ = 0
    tick = time.monotonic()
    while not stop.is_set():
        for tracked in group:
            exec_once(tracked, round_)
        round_ += 1
        tick += 1.0 / rate
        stop.wait(max(0.0, tick - time.monotonic()))


@dataclass
class Workers:
    """The threads that use the connections; stopped (and joined) before they are closed."""

    stop: threading.Event
    threads: list[threading.Thread]

    @classmethod
    def start(cls, tracked: list[Tracked], config: Config) -> Workers:
        stop = threading.Event()
        streams = [t for t in tracked if t.kind in STREAMS]
        jobs: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            (f"soak-reader-{i}", read_loop, (streams[i :: config.readers], stop))
            for i in range(config.readers)
        ]
        writers = [t for t in tracked if t.kind in (*BROKERS, "tcp")]
        jobs.append(("soak-writer", write_loop, (writers, config.write_rate, stop)))
        for kind in DATABASES:
            group = [t for t in tracked if t.kind == kind]
            jobs.append((f"soak-{kind}", db_loop, (group, config.write_rate, stop)))
        threads = [threading.Thread(target=f, args=a, name=n, daemon=True) for n, f, a in jobs]
        for thread in threads:
            thread.start()
        return cls(stop, threads)

    def join(self) -> list[str]:
        """Stop every worker; returns the names of those that did not end (stuck in a call)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        return [thread.name for thread in self.threads if thread.is_alive()]


# -- servers -------------------------------------------------------------------------------------


class _Echo(asyncio.Protocol):
    def __init__(self, clients: set[asyncio.Transport]) -> None:
        self.clients = clients

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.clients.add(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.clients.discard(self.transport)


class EchoServer:
    """A tcp echo server on a loop thread of its own that can drop every client (TCP abort)
    or stop listening for a while and come back on the same port."""

    def __init__(self) -> None:
        self.port = base.free_port()
        self.clients: set[asyncio.Transport] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="soak-echo", daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self.server = await self.loop.create_server(lambda: _Echo(self.clients), HOST, self.port)

    async def _drop(self, listen: bool) -> int:
        dropped = len(self.clients)
        if not listen and self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for transport in list(self.clients):
            transport.abort()
        return dropped

    def drop_all(self) -> int:
        return int(self._call(self._drop(listen=True)))

    def go_away(self) -> int:
        """Stop listening and abort every client; returns how many there were."""
        return int(self._call(self._drop(listen=False)))

    def come_back(self) -> None:
        self._call(self._listen())

    def restart(self, down: float) -> int:
        dropped = self.go_away()
        time.sleep(down)
        self.come_back()
        return dropped

    def close(self) -> None:
        self._call(self._drop(listen=False))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Lab:
    """Every server of the run, and the proxies between the brokers and us."""

    run_id: str
    tmp: Path
    sim: Simulator
    echo: EchoServer
    proxies: dict[str, FaultProxy]
    private: dict[str, tuple[int, Any]]  # mqtt/nats/kafka -> (port, process)
    pg_port: int = POSTGRES_PORT
    mysql_port: int = MARIADB_PORT

    def restart_broker(self, kind: str, down: float) -> None:
        """Kill -9 the private broker (as a crash) and start it again on its port."""
        port, process = self.private[kind]
        base.kill(process)
        time.sleep(down)
        starter = start_mosquitto if kind == "mqtt" else start_nats
        self.private[kind] = (port, starter(port))

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        for _, process in self.private.values():
            base.stop(process)
        self.sim.stop()
        self.echo.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_kafka(proxy_port: int, broker_port: int) -> Any:
    """A private tansu that advertises the proxy, so every link aiokafka opens after the
    bootstrap one goes through the proxy too."""
    argv = [tansu_binary(), "broker", "--listener-url", f"tcp://{HOST}:{broker_port}"]
    argv += ["--advertised-listener-url", f"tcp://{HOST}:{proxy_port}"]
    return base.start(f"tansu-soak-{broker_port}", argv, broker_port)


def ensure_shared_servers() -> None:
    """PostgreSQL, MariaDB and RabbitMQ on their default ports, as the tests' fixtures do."""
    if not base.port_open(POSTGRES_PORT):
        PrivatePostgres(port=POSTGRES_PORT).start()
    if not base.port_open(MARIADB_PORT):
        PrivateMariadb(port=MARIADB_PORT).start()
    if not base.port_open(RABBITMQ_PORT):
        start_rabbitmq()


def start_lab(config: Config) -> Lab:
    ensure_shared_servers()
    mqtt_port, nats_port, kafka_port = base.free_port(), base.free_port(), base.free_port()
    private = {"mqtt": (mqtt_port, start_mosquitto(mqtt_port))}
    private["nats"] = (nats_port, start_nats(nats_port))
    proxies = {
        "mqtt": FaultProxy((HOST, mqtt_port)),
        "nats": FaultProxy((HOST, nats_port)),
        "amqp": FaultProxy((HOST, RABBITMQ_PORT)),
        "kafka": FaultProxy((HOST, kafka_port)),
    }
    private["kafka"] = (kafka_port, start_kafka(proxies["kafka"].port, kafka_port))
    sim = Simulator(rate=config.sim_rate, seed=config.seed).start()
    echo = EchoServer()
    PORT_NAMES.update({port: venue for venue, port in sim.ports.items()})
    PORT_NAMES.update({proxy.port: f"{kind} proxy" for kind, proxy in proxies.items()})
    PORT_NAMES.update({port: kind for kind, (port, _) in private.items()})
    PORT_NAMES.update({echo.port: "echo", RABBITMQ_PORT: "rabbitmq"})
    PORT_NAMES.update({POSTGRES_PORT: "postgres", MARIADB_PORT: "mariadb"})
    return Lab(
        run_id=uuid.uuid4().hex[:8],
        tmp=Path(tempfile.mkdtemp(prefix="dialkit-soak-")),
        sim=sim,
        echo=echo,
        proxies=proxies,
        private=private,
    )


# -- dialling ------------------------------------------------------------------------------------


def venue_address(lab: Lab, kind: str, index: int) -> str:
    """A subscription per venue (payload re-sent after every reconnect); every other
    connection adds heartbeats or exponential backoff, so both code paths run."""
    coin = ("btc", "eth")[index % 2]
    extra = "&backoff=exp&backoffMax=2000" if index % 2 else ""
    if kind == "binance":
        sub = (
            f'{{"method":"SUBSCRIBE","params":["{coin}usdt@miniTicker","{coin}usdt@trade"],"id":1}}'
        )
        beat = "&ping=10&pong=5" if index % 3 == 0 else ""
        return f"{lab.sim.base_url('binance')}/ws|{RECONNECT}{extra}{beat}&payload={sub}"
    if kind == "okx":
        arg = f'{{"channel":"tickers","instId":"{coin.upper()}-USDT"}}'
        beat = "&ping=5&pingText=ping&pong=5" if index % 3 == 0 else ""
        payload = f'{{"op":"subscribe","args":[{arg}]}}'
        return f"{lab.sim.url('okx')}|{RECONNECT}{extra}{beat}&payload={payload}"
    sub = f'{{"sub":"market.{coin}usdt.ticker","id":"soak"}}'
    return f"{lab.sim.url('huobi')}|compress=gzip&{RECONNECT}{extra}&payload={sub}"


def address(lab: Lab, kind: str, index: int) -> str:
    name = f"soak-{lab.run_id}-{kind}-{index}"
    if kind in VENUES:
        return venue_address(lab, kind, index)
    if kind == "tcp":
        return f"tcp://{HOST}:{lab.echo.port}|{RECONNECT}"
    port = lab.proxies[kind].port if kind in BROKERS else 0
    if kind == "mqtt":
        return f"mqtt://{HOST}:{port}?topic=soak/{name}|{RECONNECT}"
    if kind == "nats":
        return f"nats://{HOST}:{port}?topic={name.replace('-', '.')}|{RECONNECT}"
    if kind == "amqp":
        return f"amqp://guest:guest@{HOST}:{port}/?queue={name}|{RECONNECT}"
    if kind == "kafka":
        return f"kafka://{HOST}:{port}/{name}|{RECONNECT}"
    if kind == "postgres":
        return PG_ADDRESS.format(port=lab.pg_port)
    if kind == "mysql":
        return MYSQL_ADDRESS.format(port=lab.mysql_port)
    return f"sqlite3://{lab.tmp / (name + '.db')}"


def table_for(lab: Lab, kind: str) -> str:
    return f"soak_{lab.run_id}" if kind in DATABASES else ""


def dial_one(lab: Lab, kind: str, index: int) -> Tracked:
    target = address(lab, kind, index)
    conn = Dial(target, 30)
    if conn is None:
        raise RuntimeError(f"{kind} #{index}: {dial.last_error()}")
    tracked = Tracked(kind, f"{kind}-{index}", conn, table_for(lab, kind))
    if kind == "sqlite" or (kind in DATABASES and index == 0):
        create_table(tracked)
    return tracked


def create_table(tracked: Tracked) -> None:
    ddl = f"CREATE TABLE IF NOT EXISTS {tracked.table} (conn VARCHAR(40), seq INTEGER, ts BIGINT)"
    if tracked.conn.exec(ddl) is None:
        raise RuntimeError(f"{tracked.name}: {dial.last_error()}")


def dial_all(lab: Lab, counts: dict[str, int]) -> list[Tracked]:
    """Dial in parallel (a Kafka connect takes a second or two); the first database
    connection of each kind creates the table before the others use it."""
    firsts = [(kind, 0) for kind in DATABASES if counts[kind]]
    rest = [(k, i) for k, n in counts.items() for i in range(n) if (k, i) not in firsts]
    tracked = [dial_one(lab, kind, index) for kind, index in firsts]
    with ThreadPoolExecutor(8, thread_name_prefix="soak-dial") as pool:
        tracked += pool.map(lambda item: dial_one(lab, *item), rest)
    return sorted(tracked, key=lambda t: (KINDS.index(t.kind), t.name))


def close_all(tracked: Iterable[Tracked]) -> None:
    with ThreadPoolExecutor(8, thread_name_prefix="soak-close") as pool:
        list(pool.map(lambda t: t.conn.close(), tracked))


def warm_up(lab: Lab) -> None:
    """Dial and close one connection of each kind before the baseline is taken: client
    libraries imported, dial's reactor thread started, as in any process after its first
    connection."""
    for kind in KINDS:
        conn = Dial(address(lab, kind, 999), 30)
        if conn is None:
            raise RuntimeError(f"warm-up {kind}: {dial.last_error()}")
        conn.close()


def drop_tables(lab: Lab) -> None:
    for kind in ("postgres", "mysql"):
        with contextlib.suppress(Exception):
            conn = Dial(address(lab, kind, 0), 10)
            if conn is not None:
                conn.exec(f"DROP TABLE IF EXISTS {table_for(lab, kind)}")
                conn.close()


def delete_queues(lab: Lab, count: int) -> None:
    """Our AMQP queues are neither exclusive nor auto-deleted: remove them from the shared
    broker once the run is over."""
    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect(f"amqp://guest:guest@{HOST}:{RABBITMQ_PORT}/")
        async with connection:
            channel = await connection.channel()
            for index in [*range(count), 999]:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(f"soak-{lab.run_id}-amqp-{index}")

    with contextlib.suppress(Exception):
        asyncio.run(delete())


# -- faults ------------------------------------------------------------------------------------

#: what a fault did, and the kinds whose links it went for
Outcome = tuple[str, tuple[str, ...]]


def own_ports(port: int) -> list[int]:
    """Local ports of this process's TCP connections to `port` (so only our sessions on a
    shared server are touched)."""
    return [
        conn.laddr.port
        for conn in psutil.Process().net_connections("tcp")
        if conn.raddr and conn.raddr.port == port
    ]


def terminate_postgres(lab: Lab) -> int:
    control = Dial(PG_ADDRESS.format(port=lab.pg_port), 10)
    if control is None:
        return 0
    try:
        result = control.exec(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE client_port = ANY(?) AND pid <> pg_backend_pid()",
            own_ports(lab.pg_port),
        )
    finally:
        control.close()
    return int(result["values"][0][0]) if result else 0


def kill_mysql(lab: Lab) -> int:
    control = Dial(MYSQL_ADDRESS.format(port=lab.mysql_port), 10)
    if control is None:
        return 0
    killed = 0
    try:
        ours = set(own_ports(lab.mysql_port))
        rows = control.exec(
            "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
        )
        for session, host in rows["values"] if rows else []:
            port = str(host).rpartition(":")[2]
            if port.isdigit() and int(port) in ours:
                killed += control.exec(f"KILL {int(session)}") is not None
    finally:
        control.close()
    return killed


def proxy_reset(lab: Lab, kinds: Sequence[str]) -> str:
    for kind in kinds:
        lab.proxies[kind].reset(mid_frame=False)
    return f"every link via the {'/'.join(kinds)} proxy reset (RST)"


def fault_proxy_cut(lab: Lab, rng: random.Random) -> Outcome:
    kind = rng.choice(BROKERS)
    proxy = lab.proxies[kind]
    proxy.reset("to_client", mid_frame=True)
    try:
        cut = proxy.wait_reset(10)
    except TimeoutError:
        return f"{kind}: no chunk went by within 10 s", (kind,)
    return f"{kind}: a {cut.chunk}-byte chunk cut after {cut.forwarded} bytes, then RST", (kind,)


def fault_storm(lab: Lab, rng: random.Random) -> Outcome:
    """Every link of every kind killed at once: what a network blip or a host failover does."""
    ws = lab.sim.drop_all(abrupt=True)
    proxy_reset(lab, BROKERS)
    tcp = lab.echo.drop_all()
    pg, my = terminate_postgres(lab), kill_mysql(lab)
    return f"{ws} ws aborted, brokers reset, {tcp} tcp, {pg} pg, {my} mysql", (*STREAMS, "mysql")


def fault_restarts(lab: Lab, rng: random.Random) -> Outcome:
    """Every server we own goes away together and comes back on the same ports."""
    down = rng.uniform(0.5, 2.0)
    lab.sim.stop()
    base.kill(lab.private["mqtt"][1])
    base.kill(lab.private["nats"][1])
    tcp = lab.echo.restart(down)
    lab.sim.start()
    lab.restart_broker("mqtt", 0)
    lab.restart_broker("nats", 0)
    return f"simulator, mosquitto, nats and echo down {down:.1f} s ({tcp} tcp)", (
        *VENUES,
        "mqtt",
        "nats",
        "tcp",
    )


def fault_sim_restart(lab: Lab, rng: random.Random) -> Outcome:
    down = rng.uniform(0.5, 3.0)
    lab.sim.stop()
    time.sleep(down)
    lab.sim.start()
    return f"simulator stopped for {down:.1f} s", VENUES


def fault_broker_restart(kind: str) -> Callable[[Lab, random.Random], Outcome]:
    def fault(lab: Lab, rng: random.Random) -> Outcome:
        down = rng.uniform(0.3, 2.0)
        lab.restart_broker(kind, down)
        return f"private {kind} broker killed (-9), back after {down:.1f} s", (kind,)

    return fault


def fault_tcp_restart(lab: Lab, rng: random.Random) -> Outcome:
    down = rng.uniform(0.3, 2.0)
    return f"echo server gone for {down:.1f} s ({lab.echo.restart(down)} clients)", ("tcp",)


FAULTS: dict[str, Callable[[Lab, random.Random], Outcome]] = {
    "sim_drop": lambda lab, rng: (f"{lab.sim.drop_all()} ws closed (1012)", VENUES),
    "sim_abort": lambda lab, rng: (f"{lab.sim.drop_all(abrupt=True)} ws aborted", VENUES),
    "sim_restart": fault_sim_restart,
    "proxy_reset": lambda lab, rng: (lambda k: (proxy_reset(lab, [k]), (k,)))(rng.choice(BROKERS)),
    "proxy_cut": fault_proxy_cut,
    "mqtt_restart": fault_broker_restart("mqtt"),
    "nats_restart": fault_broker_restart("nats"),
    "amqp_close": lambda lab, rng: (
        f"rabbitmqctl closed {close_own_rabbitmq_connections()} of our connections",
        ("amqp",),
    ),
    "pg_terminate": lambda lab, rng: (f"{terminate_postgres(lab)} backends", ("postgres",)),
    "mysql_kill": lambda lab, rng: (f"{kill_mysql(lab)} sessions killed", ("mysql",)),
    "tcp_drop": lambda lab, rng: (f"{lab.echo.drop_all()} echo clients aborted", ("tcp",)),
    "tcp_restart": fault_tcp_restart,
    "storm": fault_storm,
    "restarts": fault_restarts,
}
SINGLE_FAULTS = tuple(name for name in FAULTS if name not in ("storm", "restarts"))


def break_everything(lab: Lab) -> None:
    """The end of the run: every server gone or unreachable, so that close() finds
    connections in the middle of reconnect attempts (refused, reset, or hanging in a
    blackhole) and still has to free everything."""
    lab.sim.stop()
    for kind in ("mqtt", "nats"):
        base.kill(lab.private[kind][1])
    for kind in ("amqp", "kafka"):
        lab.proxies[kind].blackhole()
        lab.proxies[kind].reset(mid_frame=False)
    lab.echo.go_away()
    time.sleep(1.5)


def mend(lab: Lab) -> None:
    """Every server back as it was when the baseline was taken (same threads and listening
    sockets on our side), so that what is left after close() is the connections' doing."""
    lab.sim.start()
    for kind in ("mqtt", "nats"):
        lab.restart_broker(kind, 0)
    for proxy in lab.proxies.values():
        proxy.resume()
    lab.echo.come_back()


@dataclass
class FaultResult:
    """One injected fault: when (s into the run), what it did, how long until every
    connection delivered again, and who did not."""

    name: str
    at: float
    what: str
    targets: tuple[str, ...]
    recovered: float | None  # s from the end of the fault to the last connection delivering
    per_kind: dict[str, float]  # kind -> s until its last connection delivered again
    stuck: list[str]  # connections that delivered nothing fresh within the deadline
    hit: dict[str, tuple[int, int]]  # kind -> (connections whose reconnects grew, connections)


def reconnects(tracked: list[Tracked]) -> dict[str, int]:
    return {t.name: t.conn.reconnects for t in tracked if t.kind in STREAMS}


def wait_recovery(
    tracked: list[Tracked], since_ms: int, seconds: float
) -> tuple[float | None, dict[str, float], list[str]]:
    """Poll until every connection delivered something produced after `since_ms`."""
    start = time.monotonic()
    for t in tracked:
        t.recovered_at = None
    while True:
        elapsed = time.monotonic() - start
        for t in tracked:
            if t.recovered_at is None and t.fresh_ms > since_ms:
                t.recovered_at = elapsed
        waiting = [t for t in tracked if t.recovered_at is None]
        if not waiting or elapsed > seconds:
            break
        time.sleep(0.05)
    per_kind: dict[str, float] = {}
    for t in tracked:
        if t.recovered_at is not None:
            per_kind[t.kind] = max(per_kind.get(t.kind, 0.0), t.recovered_at)
    stuck = [f"{t.name} {t.stats()}" for t in waiting]
    return (None if waiting else elapsed), per_kind, stuck


def inject(
    name: str, lab: Lab, tracked: list[Tracked], rng: random.Random, config: Config, t0: float
) -> FaultResult:
    at = time.monotonic() - t0
    before = reconnects(tracked)
    what, targets = FAULTS[name](lab, rng)
    recovered, per_kind, stuck = wait_recovery(tracked, now_ms(), config.recovery)
    after = reconnects(tracked)
    hit: dict[str, tuple[int, int]] = {}
    for t in tracked:
        if t.kind in targets and t.kind in STREAMS:
            grew, total = hit.get(t.kind, (0, 0))
            hit[t.kind] = (grew + (after[t.name] > before[t.name]), total + 1)
    return FaultResult(name, at, what, targets, recovered, per_kind, stuck, hit)


def fault_plan(config: Config, rng: random.Random) -> Iterable[str]:
    """The schedule when given; else each fault of the pool once (shuffled), then at random."""
    if config.schedule is not None:
        yield from config.schedule
        return
    pool = list(config.faults or SINGLE_FAULTS) + (
        ["storm", "restarts"] if not config.faults else []
    )
    first = pool[:]
    rng.shuffle(first)
    yield from first
    while True:
        yield rng.choice(pool)


# -- process-wide observation ------------------------------------------------------------------


@dataclass
class Footprint:
    """Open file descriptors and threads of this process."""

    fds: int
    threads: int
    os_threads: int
    names: list[str] = field(default_factory=list)
    files: dict[int, str] = field(default_factory=dict)  # fd -> what it is

    @classmethod
    def now(cls) -> Footprint:
        gc.collect()
        with PROC_LOCK:  # not while the sampler has /proc/self/statm open
            files = describe_fds()
        return cls(
            fds=len(files),
            threads=threading.active_count(),
            os_threads=len(os.listdir("/proc/self/task")),
            names=sorted(t.name for t in threading.enumerate()),
            files=files,
        )


def describe_fds() -> dict[int, str]:
    """Every open fd: its /proc link, and for a socket its addresses and TCP state."""
    sockets = {c.fd: c for c in psutil.Process().net_connections("all") if c.fd >= 0}
    files: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            files[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    for fd, conn in sockets.items():
        if fd in files:
            files[fd] = f"socket {port_name(conn.laddr)}{peer_name(conn.raddr)} {conn.status}"
    return files


def port_name(address: Any) -> str:
    port = getattr(address, "port", None)
    if port is None:
        return str(address or "")
    return f"{port}({PORT_NAMES[port]})" if port in PORT_NAMES else str(port)


def peer_name(address: Any) -> str:
    return f" -> {port_name(address)}" if address else ""


def quiet_footprint(seconds: float = 10.0) -> Footprint:
    """The baseline, once no socket of ours is half-way closed (the proxies finish closing
    the warm-up's links a moment after the clients did)."""
    deadline = time.monotonic() + seconds
    while True:
        now = Footprint.now()
        closing = [what for what in now.files.values() if re.search(r"_WAIT|LAST_ACK", what)]
        if not closing or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def settle_to(baseline: Footprint, seconds: float, stable: float = 3.0) -> tuple[Footprint, float]:
    """Wait for fds and threads to come back to `baseline`; give up after `seconds`, or once
    they stayed the same for `stable` seconds (what is left then is not on its way out)."""
    start = changed = time.monotonic()
    last = Footprint.now()
    while True:
        now = Footprint.now()
        if (now.fds, now.threads) != (last.fds, last.threads):
            changed, last = time.monotonic(), now
        back = now.fds <= baseline.fds and now.threads <= baseline.threads
        waited = time.monotonic() - start
        if back or waited > seconds or time.monotonic() - changed > stable:
            return now, waited
        time.sleep(0.2)


class Sampler:
    """RSS every second on a thread of its own (started before the baseline, so it is part
    of it)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.samples: list[tuple[float, int]] = []  # (monotonic, rss bytes)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            with PROC_LOCK:
                self.samples.append((time.monotonic(), self.process.memory_info().rss))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def growth(self, after: float) -> tuple[float, float, float]:
        """(RSS at `after`, the highest RSS since, MB/min trend since), in MB."""
        late = [(t, rss / 2**20) for t, rss in self.samples if t >= after]
        if len(late) < 2:
            return 0.0, 0.0, 0.0
        start_mb = late[0][1]
        peak = max(mb for _, mb in late)
        slope = statistics.linear_regression([t for t, _ in late], [mb for _, mb in late]).slope
        return start_mb, peak, slope * 60

    def curve(self, since: float) -> list[tuple[float, float]]:
        """(seconds since `since`, RSS MB) for every sample from then on."""
        return [(t - since, rss / 2**20) for t, rss in self.samples if t >= since]


class CountingHandler(logging.Handler):
    """Counts WARNING+ records per message shape, and those that carry a traceback."""

    def __init__(self, log: TextIO | None) -> None:
        super().__init__(logging.WARNING)
        self.log = log
        self.shapes: Counter[str] = Counter()
        self.tracebacks: list[tuple[str, str]] = []  # (logger, formatted record)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            text = f"{record.name}: <unformattable {record.msg!r}>"
        shape = re.sub(r"\d+", "N", f"{record.levelname} {record.name}: {record.getMessage()}")
        self.shapes[shape[:140]] += 1
        if record.exc_info or "Traceback" in text:
            self.tracebacks.append((record.name, text))
        if self.log is not None:
            self.log.write(text + "\n")


class Hooks:
    """Counters for what a long-running process must never see: an exception escaping a
    thread or the main thread, an unraisable one (a failing __del__, a task garbage-collected
    with its exception), a traceback in the logs; plus ResourceWarnings (unclosed sockets)."""

    def __init__(self, log_path: Path | None) -> None:
        self.thread_errors: list[str] = []
        self.main_errors: list[str] = []
        self.unraisable: list[str] = []
        self.resource_warnings: list[str] = []
        self._log = open(log_path, "a") if log_path else None  # noqa: SIM115
        self.handler = CountingHandler(self._log)
        self._saved: dict[str, Any] = {}

    @property
    def unhandled(self) -> int:
        return sum(
            map(len, (self.thread_errors, self.main_errors, self.unraisable, self.tracebacks))
        )

    @property
    def tracebacks(self) -> list[tuple[str, str]]:
        return self.handler.tracebacks

    def install(self) -> None:
        root = logging.getLogger()
        self._saved = {
            "thread": threading.excepthook,
            "sys": sys.excepthook,
            "unraisable": sys.unraisablehook,
            "showwarning": warnings.showwarning,
            "level": root.level,
            "filters": warnings.filters[:],
        }
        threading.excepthook = self._on_thread
        sys.excepthook = self._on_main
        sys.unraisablehook = self._on_unraisable
        warnings.showwarning = self._on_warning
        warnings.simplefilter("always", ResourceWarning)
        if root.getEffectiveLevel() > logging.WARNING:
            root.setLevel(logging.WARNING)
        root.addHandler(self.handler)

    def restore(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        root.setLevel(self._saved["level"])
        threading.excepthook = self._saved["thread"]
        sys.excepthook = self._saved["sys"]
        sys.unraisablehook = self._saved["unraisable"]
        warnings.showwarning = self._saved["showwarning"]
        warnings.filters[:] = self._saved["filters"]
        if self._log is not None:
            self._log.close()

    def _on_thread(self, args: Any) -> None:
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        self.thread_errors.append(f"thread {getattr(args.thread, 'name', '?')}: {text}")
        self._saved["thread"](args)

    def _on_main(self, kind: Any, value: Any, tb: Any) -> None:
        self.main_errors.append("".join(traceback.format_exception(kind, value, tb)))
        self._saved["sys"](kind, value, tb)

    def _on_unraisable(self, unraisable: Any) -> None:
        text = "".join(
            traceback.format_exception(
                unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback
            )
        )
        self.unraisable.append(
            f"{unraisable.err_msg or 'unraisable'} {unraisable.object!r}: {text}"
        )
        self._saved["unraisable"](unraisable)

    def _on_warning(
        self, message: Any, category: Any, filename: str, lineno: int, *rest: Any
    ) -> None:
        if issubclass(category, ResourceWarning):
            self.resource_warnings.append(f"{filename}:{lineno}: {message}")
        else:
            self._saved["showwarning"](message, category, filename, lineno, *rest)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class KindTotals:
    connections: int = 0
    delivered: int = 0
    written: int = 0
    refused: int = 0
    dropped: int = 0
    reconnects: int = 0
    repeats: int = 0
    garbled: int = 0
    pings: int = 0
    oddities: list[str] = field(default_factory=list)


@dataclass
class Report:
    config: Config
    seconds: float
    kinds: dict[str, KindTotals]
    faults: list[FaultResult]
    rss_start_mb: float  # when the connections were dialled
    rss_warm_mb: float  # at the end of the warm-up
    rss_peak_mb: float  # the highest after the warm-up
    rss_trend_mb_min: float
    before: Footprint
    after: Footprint
    settled_in: float
    stuck_workers: list[str]
    zombies: list[str]  # closed connections that were connected again once servers came back
    hooks: Hooks
    rss_curve: list[tuple[float, float]]  # (s since the connections were dialled, MB)

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_warm_mb

    @property
    def not_recovered(self) -> list[FaultResult]:
        return [fault for fault in self.faults if fault.recovered is None]

    def verdicts(self) -> dict[str, bool]:
        return {
            "rss": self.rss_growth_mb < self.config.rss_limit_mb,
            "fds": self.after.fds <= self.before.fds,
            "closed": not self.zombies,
            "threads": self.after.threads <= self.before.threads,
            "unhandled": self.hooks.unhandled == 0,
            "recovered": not self.not_recovered and not self.stuck_workers,
        }

    @property
    def passed(self) -> bool:
        return all(self.verdicts().values())


def totals(tracked: list[Tracked]) -> dict[str, KindTotals]:
    out: dict[str, KindTotals] = {}
    for t in tracked:
        kind = out.setdefault(t.kind, KindTotals())
        kind.connections += 1
        kind.delivered += t.delivered
        kind.written += t.written
        kind.refused += t.refused
        kind.repeats += t.repeats
        kind.garbled += t.garbled
        kind.pings += t.pings
        kind.oddities += t.oddities
        stats = t.stats()
        if stats is not None:
            kind.dropped += stats.dropped
            kind.reconnects += stats.reconnects
    return out


def drive(
    lab: Lab, tracked: list[Tracked], config: Config, rng: random.Random, t0: float, out: TextIO
) -> list[FaultResult]:
    """Inject faults until the time is up (and a fixed schedule is done), one at a time,
    each followed by its recovery check."""
    results: list[FaultResult] = []
    plan = iter(fault_plan(config, rng))
    pause = config.first_fault
    while True:
        left = config.seconds - (time.monotonic() - t0)
        scheduled = config.schedule is not None
        pending = scheduled and len(results) < len(config.schedule or ())
        if not pending and (scheduled or left <= pause):
            time.sleep(max(0.0, left))
            return results
        time.sleep(pause)
        result = inject(next(plan), lab, tracked, rng, config, t0)
        results.append(result)
        print(format_fault(result), file=out, flush=True)
        pause = rng.uniform(*config.gap)


def run(config: Config, out: TextIO = sys.stdout) -> Report:
    """Everything: servers up, baseline, dial, work under faults, close, measure, servers down."""
    rng = random.Random(config.seed)
    hooks = Hooks(config.log_path)
    hooks.install()
    lab = start_lab(config)
    tracked: list[Tracked] = []
    try:
        warm_up(lab)
        sampler = Sampler()
        before = quiet_footprint()
        rss_start = psutil.Process().memory_info().rss / 2**20
        counts = mix(config.connections)
        tracked = dial_all(lab, counts)
        print(f"soak: {len(tracked)} connections {counts}", file=out, flush=True)
        workers = Workers.start(tracked, config)
        t0 = time.monotonic()
        faults = drive(lab, tracked, config, rng, t0, out)
        seconds = time.monotonic() - t0
        stuck_workers = workers.join()
        kinds = totals(tracked)
        if config.close_broken:
            break_everything(lab)
        close_all(tracked)
        if config.close_broken:
            mend(lab)
        after, settled_in = settle_to(before, config.settle)
        zombies = [
            f"{t.name} {t.stats()}" for t in tracked if t.kind in STREAMS and t.conn.connected
        ]
        sampler.close()
        warm, peak, trend = sampler.growth(t0 + config.warmup_seconds)
        curve = sampler.curve(t0)
    finally:
        close_all(tracked)  # idempotent; here for a run that failed half-way
        lab.close()
        drop_tables(lab)
        delete_queues(lab, len(tracked))
        hooks.restore()
    return Report(
        config,
        seconds,
        kinds,
        faults,
        rss_start,
        warm,
        peak,
        trend,
        before,
        after,
        settled_in,
        stuck_workers,
        zombies,
        hooks,
        curve,
    )


# -- printing -----------------------------------------------------------------------------------


def format_fault(fault: FaultResult) -> str:
    took = (
        "NOT RECOVERED" if fault.recovered is None else f"all deliver in {fault.recovered:5.2f} s"
    )
    hit = " ".join(f"{kind} {grew}/{n}" for kind, (grew, n) in fault.hit.items())
    line = f"  {fault.at:7.1f} s  {fault.name:<12} {took} | {fault.what}"
    line += f" | reconnected: {hit}" if hit else ""
    for stuck in fault.stuck[:10]:
        line += f"\n      stuck: {stuck}"
    return line


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def exception_groups(hooks: Hooks) -> Counter[str]:
    """Unhandled exceptions grouped by where they surfaced and their last line (the
    exception itself), so that 40 copies of one defect read as one line."""
    groups: Counter[str] = Counter()
    sources = [("thread", hooks.thread_errors), ("unraisable", hooks.unraisable)]
    sources += [("main", hooks.main_errors)]
    sources += [(f"log {name}", [text]) for name, text in hooks.tracebacks]
    for where, texts in sources:
        for text in texts:
            lines = [line for line in text.strip().splitlines() if line.strip()]
            head = lines[0] if where.startswith("log") else ""
            last = lines[-1] if lines else ""
            shape = re.sub(r"\d+", "N", f"{where}: {head[24:]} | {last}".strip())
            groups[shape[:220]] += 1
    return groups


def lost(kind: str, totals: KindTotals) -> str:
    """Publications accepted by write() that never came back (in flight when a link broke)."""
    if kind not in (*BROKERS, "tcp"):
        return "-"
    return str(totals.written - (totals.delivered - totals.repeats))


def kinds_table(report: Report) -> list[str]:
    lines = [
        f"{'kind':<9}{'conns':>6}{'delivered':>11}{'written':>9}{'refused':>9}{'dropped':>9}"
        f"{'reconn':>8}{'repeats':>9}{'lost':>6}{'garbled':>8}"
    ]
    for kind in KINDS:
        k = report.kinds.get(kind)
        if k is not None:
            lines.append(
                f"{kind:<9}{k.connections:>6}{k.delivered:>11}{k.written:>9}{k.refused:>9}"
                f"{k.dropped:>9}{k.reconnects:>8}{k.repeats:>9}{lost(kind, k):>6}{k.garbled:>8}"
            )
    lines.append(
        "(written: publications or INSERTs accepted; refused: write() 0 or exec() None, "
        "expected while a link is down; dropped: ring-buffer overflow; repeats: a "
        "publication read again or after a newer one; lost: written, never read)"
    )
    lines += [f"  {odd}" for k in report.kinds.values() for odd in k.oddities[:3]]
    return lines


def recovery_lines(report: Report) -> list[str]:
    times = [f.recovered for f in report.faults if f.recovered is not None]
    if not times:
        return []
    worst: dict[str, float] = {}
    for fault in report.faults:
        for kind, took in fault.per_kind.items():
            if kind in fault.targets:
                worst[kind] = max(worst.get(kind, 0.0), took)
    return [
        f"recovery (every connection delivering again): median {statistics.median(times):.2f} s,"
        f" max {max(times):.2f} s; {len(report.not_recovered)} faults not recovered within "
        f"{report.config.recovery:.0f} s",
        "  slowest per kind: " + ", ".join(f"{k} {t:.2f} s" for k, t in sorted(worst.items())),
    ]


def fd_changes(before: Footprint, after: Footprint) -> tuple[list[str], list[str]]:
    """What is open after and was not before, and the reverse (fd numbers aside: the
    servers restarted by the faults reopen their sockets under other numbers)."""
    was, now = Counter(before.files.values()), Counter(after.files.values())
    return sorted((now - was).elements()), sorted((was - now).elements())


def milestones(report: Report, count: int = 10) -> list[tuple[float, float]]:
    """About `count` evenly spaced RSS samples: enough to tell a plateau from a slope."""
    curve = report.rss_curve
    step = max(1, -(-len(curve) // count))
    return curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])


def resource_lines(report: Report) -> list[str]:
    v, b, a = report.verdicts(), report.before, report.after
    lines = [
        f"RSS: {report.rss_start_mb:.1f} MB when dialled, {report.rss_warm_mb:.1f} MB after the "
        f"{report.config.warmup_seconds:.0f} s warm-up, peak {report.rss_peak_mb:.1f} MB: growth "
        f"{report.rss_growth_mb:.1f} MB (trend {report.rss_trend_mb_min:+.2f} MB/min; target "
        f"< {report.config.rss_limit_mb:g} MB) {verdict(v['rss'])}",
        "  RSS over the run: " + ", ".join(f"{t:.0f} s {mb:.1f}" for t, mb in milestones(report)),
        f"fds: {b.fds} before dialling, {a.fds} after close ({report.settled_in:.1f} s later) "
        f"{verdict(v['fds'])}",
        f"threads: {b.threads} before dialling, {a.threads} after close (OS threads "
        f"{b.os_threads} -> {a.os_threads}) {verdict(v['threads'])}",
    ]
    extra = sorted((Counter(a.names) - Counter(b.names)).elements())
    if extra:
        lines.append(f"  threads left: {extra}")
    lines.append(
        f"closed connections connected again once the servers were back: {len(report.zombies)} "
        f"{verdict(v['closed'])}"
    )
    lines += [f"  {zombie}" for zombie in report.zombies[:5]]
    new, gone = fd_changes(b, a)
    if new or gone:
        lines.append(f"  fds new: {new}; gone: {gone}")
    return lines


def exception_lines(report: Report) -> list[str]:
    h, v = report.hooks, report.verdicts()
    lines = [
        f"unhandled exceptions: {h.unhandled} (threads {len(h.thread_errors)}, main "
        f"{len(h.main_errors)}, unraisable {len(h.unraisable)}, WARNING+ records with a "
        f"traceback {len(h.tracebacks)}) {verdict(v['unhandled'])}; "
        f"ResourceWarnings {len(h.resource_warnings)}"
    ]
    lines += [f"  {n:5d} x {shape}" for shape, n in exception_groups(h).most_common(10)]
    lines += [f"  ResourceWarning: {text}" for text in h.resource_warnings[:5]]
    lines.append(f"WARNING+ log records: {sum(h.handler.shapes.values())}, most common:")
    lines += [f"  {n:6d}  {shape}" for shape, n in h.handler.shapes.most_common(8)]
    return lines


def print_report(report: Report, out: TextIO = sys.stdout) -> None:
    total = sum(k.connections for k in report.kinds.values())
    lines = [
        f"\nsoak: {total} connections for {report.seconds / 60:.1f} min, "
        f"{len(report.faults)} faults, seed {report.config.seed}",
        *kinds_table(report),
        *recovery_lines(report),
        f"recovery after every fault: {verdict(report.verdicts()['recovered'])}"
        + (f" (workers stuck: {report.stuck_workers})" if report.stuck_workers else ""),
        *resource_lines(report),
        *exception_lines(report),
        f"targets: {'all met' if report.passed else 'NOT met'}",
    ]
    print("\n".join(lines), file=out, flush=True)


def report_json(report: Report) -> dict[str, Any]:
    """Everything tests/test_soak.py asserts on, as plain JSON."""
    h = report.hooks
    return {
        "seconds": report.seconds,
        "kinds": {kind: vars(totals) for kind, totals in report.kinds.items()},
        "faults": [vars(fault) for fault in report.faults],
        "rss_mb": {
            "start": report.rss_start_mb,
            "warm": report.rss_warm_mb,
            "peak": report.rss_peak_mb,
            "growth": report.rss_growth_mb,
            "trend_per_min": report.rss_trend_mb_min,
            "curve": report.rss_curve,
        },
        "before": vars(report.before),
        "after": vars(report.after),
        "settled_in": report.settled_in,
        "stuck_workers": report.stuck_workers,
        "zombies": report.zombies,
        "exceptions": {
            "thread": h.thread_errors,
            "main": h.main_errors,
            "unraisable": h.unraisable,
            "logged": [{"logger": name, "text": text} for name, text in h.tracebacks],
            "resource_warnings": h.resource_warnings,
        },
        "verdicts": report.verdicts(),
    }


def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--minutes", type=float, default=10.0)
    add("--seconds", type=float, help="run length in seconds (instead of --minutes)")
    add("--connections", type=int, default=100)
    add("--readers", type=int, default=4, help="reader threads, each on dial.wait")
    add("--rate", type=float, default=5.0, help="writes/statements per second per connection")
    add("--faults", help=f"comma-separated pool to draw from (default: all of {','.join(FAULTS)})")
    add("--schedule", help="comma-separated faults to inject in this order instead")
    add("--first-fault", type=float, default=8.0, help="seconds before the first fault")
    add("--gap", default="4,12", help="MIN,MAX seconds from a recovery to the next fault")
    add("--warmup", type=float, help="seconds before the RSS baseline (default 15%%, >= 20)")
    add("--rss-limit", type=float, default=20.0, help="MB of RSS growth allowed after warm-up")
    add("--settle", type=float, default=15.0, help="seconds fds/threads may take after close")
    add(
        "--close-broken",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="close while every server is down, then bring them back (default: yes)",
    )
    add("--seed", type=int)
    add("--log", type=Path, help="append every WARNING+ record (with tracebacks) here")
    add("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    faults = args.faults.split(",") if args.faults else None
    schedule = args.schedule.split(",") if args.schedule else None
    low, _, high = args.gap.partition(",")
    unknown = sorted((set(faults or ()) | set(schedule or ())) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {unknown}; choose from {','.join(FAULTS)}")
    config = Config(
        seconds=args.seconds if args.seconds is not None else args.minutes * 60,
        connections=args.connections,
        readers=args.readers,
        write_rate=args.rate,
        warmup=args.warmup,
        first_fault=args.first_fault,
        gap=(float(low), float(high or low)),
        settle=args.settle,
        schedule=schedule,
        faults=faults,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        rss_limit_mb=args.rss_limit,
        close_broken=args.close_broken,
        log_path=args.log,
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    report = run(config)
    print_report(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report_json(report), indent=1, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
