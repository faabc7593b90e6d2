"""`dial.wait(connections, timeout)`: one thread serving many connections without polling."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator

import pytest

import dial
from dial import Dial
from tests.servers.alive import AliveServer

CONNECTIONS = 50
PER_CONNECTION = 200


@pytest.fixture
def server() -> Iterator[AliveServer]:
    instance = AliveServer()
    yield instance
    instance.close()


@pytest.fixture
def feeds(server: AliveServer) -> Iterator[list]:
    conns = [Dial(f"{server.url}/feed{i}", raise_errors=True) for i in range(CONNECTIONS)]
    deadline = time.monotonic() + 5
    while len(server.live()) < CONNECTIONS and time.monotonic() < deadline:
        time.sleep(0.01)
    yield conns
    for conn in conns:
        conn.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def test_wait_over_50_connections_delivers_every_message(server: AliveServer, feeds: list) -> None:
    index_of = {id(conn): i for i, conn in enumerate(feeds)}
    received: list[list[str]] = [[] for _ in feeds]
    sender = threading.Thread(
        target=server.send_each, args=(lambda c, i: f"{c}:{i}", PER_CONNECTION)
    )
    sender.start()
    total, wakeups = CONNECTIONS * PER_CONNECTION, 0
    deadline = time.monotonic() + 30
    while sum(map(len, received)) < total and time.monotonic() < deadline:
        ready = dial.wait(feeds, 1000)
        wakeups += 1
        for conn in ready:
            while (message := conn.read(-1)) is not None:
                assert message != ""
                received[index_of[id(conn)]].append(message)
    sender.join(10)
    # server connection c may be any of our connections: each got one sender's stream
    assert all(len(got) == PER_CONNECTION for got in received)
    assert sorted(int(got[0].split(":")[0]) for got in received) == list(range(CONNECTIONS))
    for got in received:
        origin = got[0].split(":")[0]
        assert got == [f"{origin}:{i}" for i in range(PER_CONNECTION)]  # all, in order
    assert sum(conn.dropped for conn in feeds) == 0
    assert wakeups <= total  # many messages per wake-up, not a spin


def test_idle_wait_uses_no_cpu(feeds: list) -> None:
    dial.wait(feeds, 50)  # warm up
    wall, cpu = time.monotonic(), cpu_seconds()
    assert dial.wait(feeds, 1000) == []
    wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
    assert wall >= 0.95
    assert cpu < 0.05, f"an idle wait burned {cpu:.3f} s of CPU in {wall:.2f} s"


def test_wait_returns_as_soon_as_one_connection_has_data(server: AliveServer, feeds: list) -> None:
    target = feeds[17]
    target.write("wake up")  # echoed back by the server on that connection only
    started = time.monotonic()
    ready = dial.wait(feeds, 5000)
    assert time.monotonic() - started < 4
    assert ready == [target]
    assert target.read(-1) == "wake up"


def test_wait_timeouts_follow_read_semantics(feeds: list) -> None:
    assert dial.wait(feeds, -1) == []  # only checks
    assert dial.wait(feeds, 0) == []
    started = time.monotonic()
    assert dial.wait(feeds[:3], 150) == []
    assert 0.14 <= time.monotonic() - started < 2
    assert dial.wait([], None) == []  # nothing to wait for: no hang


def test_blocking_wait_is_released_by_a_message_from_another_thread(feeds: list) -> None:
    timer = threading.Timer(0.2, feeds[3].write, args=("late",))
    timer.start()
    assert dial.wait(feeds) == [feeds[3]]
    timer.join()


def test_dead_connections_are_readable_reconnecting_ones_are_not(server: AliveServer) -> None:
    plain = Dial(server.url, raise_errors=True)
    resilient = Dial(f"{server.url}|reconnect=true&interval=5000", raise_errors=True)
    try:
        for connection in server.live():
            server.run(connection.close())
        deadline = time.monotonic() + 5
        while (plain.connected or resilient.connected) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dial.wait([plain, resilient], 100) == [plain]
        assert plain.read() == ""
        resilient.close()
        assert dial.wait([resilient], 100) == [resilient]  # closed: read() gives "" at once
    finally:
        plain.close()
        resilient.close()


def test_wait_rejects_what_is_not_a_stream_connection() -> None:
    with pytest.raises(TypeError, match="streaming connections"):
        dial.wait(["ws://not-a-connection"], 10)


def test_repeated_waits_do_not_pile_up_listeners(feeds: list) -> None:
    """The thread's watch on a list stays registered between calls (one listener per
    connection, however many waits), and is let go once other lists push it out."""
    for _ in range(20):
        dial.wait(feeds, 1)
    assert all(len(conn._buffer._listeners) == 1 for conn in feeds)
    watched = dial.select.WATCHED
    for i in range(watched):  # as many other lists as a thread keeps watched
        dial.wait(feeds[i : i + 1], 1)
    assert all(len(conn._buffer._listeners) == 1 for conn in feeds[:watched])
    assert all(conn._buffer._listeners == [] for conn in feeds[watched:])
