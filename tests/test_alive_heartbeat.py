"""Heartbeats (`ping`, `pong`, `pingText`), the idle watchdog, backoff and per-connection stats,
against a real local WebSocket server that can go silent while keeping its TCP socket open."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator

import pytest

import dial
from dial import Dial
from dial.address import parse
from dial.buffer import MessageBuffer
from dial.session import Session
from dial.transports.websocket import WebSocketTransport
from tests.servers.alive import AliveServer
from tests.servers.base import free_port


@pytest.fixture
def server(ws_engine: str) -> Iterator[AliveServer]:
    """The WebSocket server; every test using it runs once per WebSocket engine."""
    instance = AliveServer()
    yield instance
    instance.close()


def wait_until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds it took `condition` to become true; fails after `seconds`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"condition not met within {seconds} s")
        time.sleep(0.005)
    return time.monotonic() - start


def client_sockets_to(port: int) -> list:
    """This process's open TCP connections to `port` (the client ends)."""
    import psutil

    return [
        c
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def read_until(conn: dial.connection.Connection, wanted: str, seconds: float = 5.0) -> list:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = conn.read(100)
        if message is None or message == "":
            continue
        seen.append(message)
        if message == wanted:
            return seen
    pytest.fail(f"{wanted!r} never read; got {seen}")


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ("ping=0", "ping='0': expected seconds > 0"),
        ("ping=abc", "ping='abc': expected seconds > 0"),
        ("ping=nan", "expected seconds > 0"),
        ("ping=5&pong=-1", "pong='-1'"),
        ("pong=5", "pong needs ping="),
        ("pingText=ping", "pingText needs ping="),
        ("ping=5&pongText=pong", "pongText needs pingText="),
        ("idle=0", "idle='0'"),
        ("backoff=linear", "backoff='linear': expected one of fixed, exp"),
        ("backoffMax=5000", "backoffMax needs backoff="),
        ("backoff=fixed&backoffMax=5000", "backoffMax only applies to backoff=exp"),
        ("backoff=exp&backoffMax=0", "backoffMax='0'"),
    ],
)
def test_bad_keepalive_options_give_clear_reasons(options: str, reason: str) -> None:
    assert Dial(f"ws://127.0.0.1:1/x|{options}") is None
    assert reason in (dial.last_error() or "")


def test_options_parse_to_typed_values() -> None:
    options = parse(
        "wss://h/ws|ping=15&pong=2.5&pingText=ping&pongText=pong&idle=30&backoff=exp"
        "&backoffMax=60000&payload=x&y=1"
    ).options
    assert (options.ping, options.pong, options.ping_text, options.pong_text) == (
        15.0,
        2.5,
        "ping",
        "pong",
    )
    assert (options.idle, options.backoff, options.backoff_max) == (30.0, "exp", 60000)
    assert options.payload == "x&y=1"


def test_ping_on_a_transport_without_ping_frames_needs_ping_text() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert Dial(f"tcp://127.0.0.1:{port}|ping=5") is None
        assert "pingText" in (dial.last_error() or "")
        conn = Dial(f"tcp://127.0.0.1:{port}|ping=5&pingText=PING")
        assert conn is not None
        conn.close()


# -- heartbeats ------------------------------------------------------------------------------


@pytest.mark.parametrize("ping_text", [False, True], ids=["ws-ping-frame", "okx-text-ping"])
def test_silent_server_is_detected_within_ping_plus_deadline_and_resubscribed(
    server: AliveServer, ping_text: bool
) -> None:
    ping, pong = 0.3, 0.4
    options = f"ping={ping}&pong={pong}&reconnect=true&interval=50&payload=subscribe:book"
    if ping_text:
        options += "&pingText=ping"
    conn = Dial(f"{server.url}|{options}", raise_errors=True)
    try:
        assert conn.read(2000) == "subscribed:book"
        wait_until(lambda: conn.stats().last_rtt is not None, 3)  # heartbeats answered
        assert conn.reconnects == 0

        stalled = server.live()[0]
        server.stall(stalled)  # no more pongs, but the TCP connection stays open
        stalled_at = time.monotonic()
        wait_until(lambda: not conn.connected or conn.reconnects > 0, ping + pong + 2)
        detected = time.monotonic() - stalled_at
        # the next ping goes out at most `ping` s after the stall, then `pong` s to give up
        assert detected <= ping + pong + 0.3, detected

        wait_until(lambda: conn.reconnects == 1, 5)
        assert read_until(conn, "subscribed:book")[-1] == "subscribed:book"
        assert server.subscriptions == ["book", "book"]  # the payload was sent again
        stats = conn.stats()
        assert stats.heartbeats_missed == 1
        assert stats.last_error == f"no pong within {pong:g} s"
        assert stats.connected
        # and the new link is healthy: no further restarts while heartbeats are answered
        time.sleep(3 * ping)
        assert conn.reconnects == 1
    finally:
        conn.close()


def test_text_pongs_are_swallowed_and_data_still_flows(server: AliveServer) -> None:
    conn = Dial(f"{server.url}|ping=0.05&pingText=ping", raise_errors=True)
    try:
        wait_until(lambda: server.text_pings >= 5, 3)
        conn.write("data")
        assert conn.read(2000) == "data"
        assert conn.read(200) is None  # no "pong" ever reaches read()
        assert conn.stats().last_rtt is not None
    finally:
        conn.close()


def test_silent_server_without_reconnect_ends_the_connection(server: AliveServer) -> None:
    conn = Dial(f"{server.url}|ping=0.2&pong=0.2", raise_errors=True)
    try:
        conn.write("before")
        assert conn.read(2000) == "before"
        assert len(client_sockets_to(server.port)) == 1
        server.stall(server.live()[0])
        wait_until(lambda: not conn.connected, 3)
        assert conn.read() == ""  # drained and down: at once
        assert conn.write("x") == 0
        # our side dropped the dead socket (the stalled server reads nothing, so cannot tell)
        wait_until(lambda: not client_sockets_to(server.port), 3)
    finally:
        conn.close()


def test_ping_on_demand_measures_a_round_trip(server: AliveServer) -> None:
    conn = Dial(server.url, raise_errors=True)
    try:
        rtt = conn.ping(timeout=2)
        assert rtt is not None and 0 < rtt < 2
        assert conn.stats().last_rtt == rtt
        server.stall(server.live()[0])
        assert conn.ping(timeout=0.3) is None  # unanswered: None, not an exception
        assert conn.connected  # an on-demand ping does not decide the link's fate
    finally:
        conn.close()


# -- idle ------------------------------------------------------------------------------------


def test_quiet_channel_with_working_heartbeats_is_not_restarted(server: AliveServer) -> None:
    conn = Dial(f"{server.url}|ping=0.1&pingText=ping&reconnect=true", raise_errors=True)
    try:
        time.sleep(1.5)  # no data at all, ~15 heartbeats answered
        assert server.text_pings >= 8
        assert conn.reconnects == 0 and conn.connected
        assert conn.stats().stale_restarts == 0
    finally:
        conn.close()


def test_fed_channel_is_not_stale(server: AliveServer) -> None:
    conn = Dial(f"{server.url}|idle=0.6&reconnect=true", raise_errors=True)
    try:
        for i in range(10):  # a message every 0.2 s for 2 s: never 0.6 s of silence
            server.send_all([f"tick {i}"])
            time.sleep(0.2)
        assert conn.reconnects == 0
        assert [conn.read(-1) for _ in range(10)] == [f"tick {i}" for i in range(10)]
    finally:
        conn.close()


def test_stale_channel_is_restarted_within_idle_although_heartbeats_work(
    server: AliveServer,
) -> None:
    idle = 0.6
    conn = Dial(
        f"{server.url}|idle={idle}&ping=0.1&pingText=ping&reconnect=true&interval=50"
        "&payload=subscribe:trades",
        raise_errors=True,
    )
    try:
        assert conn.read(2000) == "subscribed:trades"
        last_message = time.monotonic()
        wait_until(lambda: conn.stats().stale_restarts >= 1, idle + 2)
        restarted_after = time.monotonic() - last_message
        assert restarted_after <= idle + 0.3, restarted_after
        assert server.text_pings >= 3  # pongs kept coming: they are not data
        assert conn.stats().last_error == f"no message for {idle:g} s (stale feed)"
        wait_until(lambda: conn.reconnects >= 1, 3)
        assert read_until(conn, "subscribed:trades")
    finally:
        conn.close()


# -- backoff ---------------------------------------------------------------------------------


def session_for(options: str) -> Session:
    address = parse(f"ws://127.0.0.1:9/x|{options}")
    return Session(address, WebSocketTransport(address), MessageBuffer())


def test_fixed_interval_is_the_default() -> None:
    session = session_for("reconnect=true&interval=250")
    assert [session.next_delay() for _ in range(5)] == [0.25] * 5


def test_exponential_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    session = session_for("reconnect=true&interval=100&backoff=exp&backoffMax=2000")
    delays = [session.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.1 * 2**step) for step in range(12)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) > 6  # jittered, not a fixed ladder


def test_backoff_restarts_after_a_link_that_stayed_up(server: AliveServer) -> None:
    conn = Dial(
        f"{server.url}|reconnect=true&interval=50&backoff=exp&backoffMax=200&ping=0.1&pong=0.1",
        raise_errors=True,
    )
    session = conn._session
    try:
        session._backoff_step = 10
        time.sleep(0.3)  # up longer than backoffMax
        server.stall(server.live()[0])
        wait_until(lambda: conn.reconnects == 1, 5)
        assert session._backoff_step == 1  # reset, then one step for this reconnect
    finally:
        conn.close()


def test_exponential_backoff_reconnects_once_the_server_is_back(ws_engine: str) -> None:
    port = free_port()
    server = AliveServer(port=port)
    conn = Dial(
        f"{server.url}|reconnect=true&interval=20&backoff=exp&backoffMax=300&payload=subscribe:a",
        raise_errors=True,
    )
    try:
        assert conn.read(2000) == "subscribed:a"
        server.close()
        wait_until(lambda: not conn.connected, 5)
        time.sleep(0.6)  # attempts at ~20, 40, 80, 160 ms... then capped at 300 ms
        assert conn._session._backoff_step >= 3
        assert "refused" in (conn.stats().last_error or "")
        server = AliveServer(port=port)
        wait_until(lambda: conn.reconnects == 1, 3)  # within one capped delay
        assert read_until(conn, "subscribed:a")
    finally:
        conn.close()
        server.close()


# -- stats -----------------------------------------------------------------------------------


def test_stats_count_both_directions_bytes_and_message_age(server: AliveServer) -> None:
    conn = Dial(server.url, raise_errors=True)
    try:
        assert conn.stats().last_message_age is None
        for i in range(5):
            assert conn.write(f"msg {i}") == 5
        for i in range(5):
            assert conn.read(2000) == f"msg {i}"
        stats = conn.stats()
        assert (stats.messages_in, stats.messages_out, stats.bytes_out) == (5, 5, 25)
        assert stats.bytes_in >= 25 + 5 * 2  # wire bytes: payload plus frame headers
        assert stats.last_message_age is not None and 0 <= stats.last_message_age < 2
        assert stats.uptime is not None and stats.uptime > 0
        time.sleep(0.3)
        assert conn.stats().last_message_age >= 0.3
    finally:
        conn.close()
    assert conn.stats().uptime is None


def test_watchdog_tasks_end_with_the_connection(server: AliveServer) -> None:
    conn = Dial(f"{server.url}|ping=0.05&idle=5", raise_errors=True)
    session = conn._session
    time.sleep(0.2)
    assert len(session._link_tasks) == 2
    conn.close()
    assert session._tasks == set()  # heartbeat, idle watch and drain all finished

    async def count_tasks() -> int:
        names = [t.get_coro().__qualname__ for t in asyncio.all_tasks()]
        return len([n for n in names if n.startswith("Session.")])

    assert dial.reactor.reactor.call(count_tasks(), 5) == 0
