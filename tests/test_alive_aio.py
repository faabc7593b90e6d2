"""`dial.aio`: the same semantics as `Dial`, awaited, with the session on the caller's loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dial
import dial.aio
from dial.tracking import Tracker
from tests.servers.alive import AliveServer


@pytest.fixture
def server() -> Iterator[AliveServer]:
    instance = AliveServer()
    yield instance
    instance.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_read_write_and_timeouts(server: AliveServer) -> None:
    async def main() -> None:
        ws = await dial.aio.dial(server.url, raise_errors=True)
        assert repr(ws).startswith("<AsyncConnection ws://127.0.0.1")
        assert await ws.write("one") == 3
        assert await ws.write(b"\xff\x00") == 2
        assert await ws.read() == "one"
        assert await ws.read(2000) == b"\xff\x00"  # a binary frame: bytes
        assert await ws.read(-1) is None
        started = time.monotonic()
        assert await ws.read(100) is None
        assert 0.09 <= time.monotonic() - started < 2
        for i in range(5):
            await ws.write(f"m{i}")
        await asyncio.sleep(0.2)
        assert await ws.read(-2) == "m4"  # newest, the rest discarded
        assert await ws.read(-1) is None
        with pytest.raises(TypeError):
            await ws.write(123)  # type: ignore[arg-type]
        await ws.close()
        await ws.close()  # idempotent
        assert await ws.read() == ""
        assert await ws.write("x") == 0

    run(main())


def test_session_runs_on_the_callers_loop(server: AliveServer) -> None:
    async def main() -> None:
        async with await dial.aio.dial(f"{server.url}|ping=0.05") as ws:
            assert ws._session.loop is asyncio.get_running_loop()
            await asyncio.sleep(0.3)
            assert ws.stats().last_rtt is not None  # heartbeats ran here
            rtt = await ws.ping(2)
            assert rtt is not None and rtt > 0

    run(main())


def test_a_pending_read_is_released_by_data_and_by_close(server: AliveServer) -> None:
    async def main() -> None:
        ws = await dial.aio.dial(server.url, raise_errors=True)
        reader = asyncio.ensure_future(ws.read())
        await asyncio.sleep(0.1)
        assert not reader.done()
        await ws.write("hello")
        assert await reader == "hello"
        reader = asyncio.ensure_future(ws.read(5000))
        await asyncio.sleep(0.1)
        await ws.close()
        assert await reader == ""

    run(main())


def test_async_for_survives_a_reconnect_and_ends_on_close(server: AliveServer) -> None:
    async def main() -> None:
        ws = await dial.aio.dial(
            f"{server.url}|reconnect=true&interval=50&payload=subscribe:t", raise_errors=True
        )
        seen = []

        async def consume() -> None:
            async for message in ws:
                seen.append(message)
                if message == "subscribed:t" and seen.count("subscribed:t") == 2:
                    await ws.write("after reconnect")
                if message == "after reconnect":
                    await ws.close()

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        for connection in server.live():
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(connection.close(), server.loop)
            )
        await asyncio.wait_for(consumer, 10)
        assert seen == ["subscribed:t", "subscribed:t", "after reconnect"]
        assert ws.reconnects == 1

    run(main())


def test_async_for_ends_when_the_link_drops_without_reconnect(server: AliveServer) -> None:
    async def main() -> None:
        ws = await dial.aio.dial(server.url, raise_errors=True)
        await ws.write("last")
        await asyncio.sleep(0.1)
        for connection in server.live():
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(connection.close(), server.loop)
            )
        assert [message async for message in ws] == ["last"]
        await ws.close()

    run(main())


def test_failures_return_none_with_a_reason() -> None:
    async def main() -> None:
        assert await dial.aio.dial("ws://127.0.0.1:1/x|bogus=1") is None
        assert "unknown option 'bogus'" in (dial.last_error() or "")
        assert await dial.aio.dial("ws://127.0.0.1:1/x", timeout=2) is None
        assert "refused" in (dial.last_error() or "")
        with pytest.raises(dial.DialError, match="ping"):
            await dial.aio.dial("tcp://127.0.0.1:1|ping=1", raise_errors=True)

    run(main())


def test_tracked_requests_on_the_async_api(server: AliveServer) -> None:
    async def main() -> None:
        ws = await dial.aio.dial(server.url, raise_errors=True)
        tracker = Tracker(ws, timeout=1)
        responses = await asyncio.gather(
            *(tracker.acall("add_order", {"cl_ord_id": i}) for i in range(20))
        )
        assert [r["result"]["cl_ord_id"] for r in responses] == list(range(20))
        assert await tracker.acall("add_order", {"ignore": True}, timeout=0.2) is None
        assert tracker.pending() == 0
        await ws.close()

    run(main())


def test_async_wait_over_several_connections(server: AliveServer) -> None:
    async def main() -> None:
        feeds = [await dial.aio.dial(server.url, raise_errors=True) for _ in range(5)]
        assert await dial.aio.wait(feeds, 100) == []
        await feeds[2].write("x")
        assert await dial.aio.wait(feeds, 5000) == [feeds[2]]
        for feed in feeds:
            await feed.close()

    run(main())


def test_database_exec_is_awaitable(tmp_path: Any) -> None:
    async def main() -> None:
        db = await dial.aio.dial(f"sqlite3://{tmp_path / 'aio.db'}", raise_errors=True)
        await db.exec("CREATE TABLE t (id INTEGER, name TEXT)")
        await db.exec("INSERT INTO t VALUES (?, ?)", 1, "one")
        rows = await db.exec("SELECT id, name FROM t")
        assert rows == {"columns": ["id", "name"], "values": [[1, "one"]]}
        handle = db.fd()
        again = await dial.aio.dial(handle)
        assert (await again.exec("SELECT count(*) AS n FROM t"))["values"] == [[1]]
        with pytest.raises(dial.DialError, match="no such table"):
            await db.exec("SELECT * FROM missing")
        await again.close()
        await db.release()
        assert db.closed

    run(main())
