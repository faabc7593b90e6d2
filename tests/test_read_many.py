"""Batch reads: `read_many(max, timeout)` and iteration (`for message in conn`, `async for`),
sync and asyncio, against a real WebSocket server; the same rules as `read()`."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import dial
import dial.aio
from dial import ArgumentError, Dial
from tests.conftest import WsServer, wait_until


def filled(ws_server: WsServer, count: int):
    conn = Dial(ws_server.url)
    assert conn, "dial failed"
    conn.write(f"many:{count}")
    assert wait_until(lambda: conn.stats().messages_in >= count)
    return conn


# -- read_many -------------------------------------------------------------------------------


def test_buffered_messages_come_as_one_list_oldest_first(ws_server: WsServer) -> None:
    with filled(ws_server, 10) as conn:
        assert conn.read_many(4) == ["m0", "m1", "m2", "m3"]
        assert conn.read() == "m4"
        assert conn.read_many() == [f"m{i}" for i in range(5, 10)]
        assert conn.read_many(timeout=-1) == []


def test_nothing_buffered_follows_the_read_timeout_rules(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        start = time.monotonic()
        assert conn.read_many(timeout=-1) == []  # at once
        assert time.monotonic() - start < 0.1
        start = time.monotonic()
        assert conn.read_many(timeout=300) == []  # milliseconds
        assert 0.25 <= time.monotonic() - start < 2
        threading.Timer(0.2, lambda: conn.write("many:3")).start()
        first = conn.read_many()  # no timeout: blocks for the first message
        assert first[0] == "m0"
        assert wait_until(lambda: conn.stats().messages_in == 3)
        assert first + conn.read_many(timeout=-1) == ["m0", "m1", "m2"]


def test_a_message_arriving_during_the_wait_is_returned(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        threading.Timer(0.2, lambda: ws_server.send_all("during")).start()
        start = time.monotonic()
        assert conn.read_many(timeout=3000) == ["during"]
        assert time.monotonic() - start < 2


def test_after_a_loss_buffered_messages_first_then_the_disconnect_marker(
    ws_server: WsServer,
) -> None:
    conn = filled(ws_server, 3)
    ws_server.drop_all()
    assert wait_until(lambda: not conn.connected)
    assert conn.read_many() == ["m0", "m1", "m2"]
    for timeout in (None, -1, 500):
        start = time.monotonic()
        assert conn.read_many(timeout=timeout) == [""]  # read()'s "", at once
        assert time.monotonic() - start < 0.2
    assert conn.read() == ""
    conn.close()
    assert conn.read_many() == [""]


def test_close_releases_a_read_many_blocked_in_another_thread(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    got: list = []
    reader = threading.Thread(target=lambda: got.append(conn.read_many()))
    reader.start()
    time.sleep(0.2)
    conn.close()
    reader.join(3)
    assert got == [[""]]


def test_bad_arguments_are_clear_errors(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        with pytest.raises(ArgumentError, match="at least 1"):
            conn.read_many(0)
        for bad in ("3", 2.5, True, None):
            with pytest.raises(TypeError, match="whole number of messages"):
                conn.read_many(bad)
        with pytest.raises(TypeError, match=r"read_many\(\) timeout must be a number"):
            conn.read_many(10, "100")
        with pytest.raises(ArgumentError, match=r"use read\(-2\)"):
            conn.read_many(10, -2)


def test_a_batch_reader_keeps_up_without_drops(ws_server: WsServer) -> None:
    """Flow control counts read_many as reading: a reader that keeps up loses nothing."""
    with Dial(ws_server.url) as conn:
        conn.write("many:30000")
        got: list = []
        while len(got) < 30000:
            batch = conn.read_many(timeout=10_000)  # a liveness guard: generous under load
            assert batch and batch != [""], (len(got), conn.stats())
            got += batch
        assert got == [f"m{i}" for i in range(30000)]
        assert conn.dropped == 0


def test_wait_then_read_many(ws_server: WsServer) -> None:
    quiet = Dial(ws_server.url)
    busy = filled(ws_server, 5)
    try:
        assert dial.wait([quiet, busy], 1000) == [busy]
        assert busy.read_many() == [f"m{i}" for i in range(5)]
        assert dial.wait([quiet, busy], 0) == []  # drained: nothing readable
    finally:
        quiet.close()
        busy.close()


# -- iteration -------------------------------------------------------------------------------


def test_iteration_yields_in_order_and_leaving_it_loses_nothing(ws_server: WsServer) -> None:
    with filled(ws_server, 10) as conn:
        seen = []
        for message in conn:
            seen.append(message)
            if len(seen) == 4:
                break
        assert seen == ["m0", "m1", "m2", "m3"]
        assert conn.read() == "m4"  # the rest is still buffered
        assert list(zip(range(5), conn, strict=False)) == [(i, f"m{i + 5}") for i in range(5)]


def test_iteration_ends_when_the_link_is_lost_without_reconnect(ws_server: WsServer) -> None:
    conn = filled(ws_server, 3)
    threading.Timer(0.2, ws_server.drop_all).start()
    assert list(conn) == ["m0", "m1", "m2"]  # then the loss ends the loop
    conn.close()


def test_iteration_ends_when_closed_from_another_thread(ws_server: WsServer) -> None:
    conn = Dial(f"{ws_server.url}|reconnect=true")
    threading.Timer(0.3, conn.close).start()
    start = time.monotonic()
    assert list(conn) == []
    assert time.monotonic() - start < 3


def test_iteration_waits_through_a_reconnect(ws_server: WsServer) -> None:
    conn = Dial(f"{ws_server.url}|reconnect=true&interval=100&payload=hello")
    seen = []
    for message in conn:
        seen.append(message)
        if len(seen) == 1:
            ws_server.drop_all()  # the next "hello" comes after the reconnect
        if len(seen) == 2:
            break
    assert seen == ["hello", "hello"]
    assert conn.reconnects == 1
    conn.close()


# -- asyncio ---------------------------------------------------------------------------------


def test_async_read_many_and_iteration(ws_server: WsServer) -> None:
    async def main() -> None:
        conn = await dial.aio.dial(ws_server.url, raise_errors=True)
        assert await conn.read_many(timeout=-1) == []
        start = time.monotonic()
        assert await conn.read_many(timeout=200) == []
        assert time.monotonic() - start >= 0.15
        await conn.write("many:10")
        first = await conn.read_many(3)  # waits for the first, takes what is there (<= 3)
        assert first and first == [f"m{i}" for i in range(len(first))]
        seen = list(first)
        async for message in conn:
            seen.append(message)
            if len(seen) == 6:
                break
        assert seen == [f"m{i}" for i in range(6)]
        await asyncio.sleep(0.1)
        assert await conn.read() == "m6"  # leaving `async for` lost nothing
        assert await conn.read_many() == ["m7", "m8", "m9"]
        with pytest.raises(ArgumentError):
            await conn.read_many(0)
        with pytest.raises(ArgumentError):
            await conn.read_many(5, -2)
        ready = await dial.aio.wait([conn], 0)
        assert ready == []
        await conn.close()
        assert await conn.read_many() == [""]

    asyncio.run(main())


def test_async_read_many_after_a_loss(ws_server: WsServer) -> None:
    async def main() -> None:
        conn = await dial.aio.dial(ws_server.url, raise_errors=True)
        await conn.write("many:2")
        while conn.stats().messages_in < 2:
            await asyncio.sleep(0.01)
        ws_server.drop_all()
        while conn.connected:
            await asyncio.sleep(0.01)
        assert await conn.read_many() == ["m0", "m1"]
        assert await conn.read_many(timeout=1000) == [""]
        await conn.close()

    asyncio.run(main())
