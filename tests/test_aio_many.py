"""`dial.aio` with many connections on one loop: every parked reader is woken, nothing is
lost, and closing them one after another completes (benchmarks/fan_in.py --api aio)."""

from __future__ import annotations

import asyncio
from typing import Any

import dial.aio
from dial.aio import AsyncConnection
from tests.conftest import WsServer

CONNECTIONS = 200
MESSAGES = 50


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))  # a missed wake-up fails, never hangs


async def dial_all(url: str) -> list[AsyncConnection]:
    """Dial in turn on this loop, as the benchmark does."""
    conns = []
    for _ in range(CONNECTIONS):
        conn = await dial.aio.dial(url, timeout=10, raise_errors=True)
        assert isinstance(conn, AsyncConnection)
        conns.append(conn)
    return conns


async def read_until(conn: AsyncConnection, count: int) -> list[str | bytes]:
    """What one reading task does: batches with a timeout until `count` have come."""
    received: list[str | bytes] = []
    while len(received) < count:
        batch = await conn.read_many(2000, 500)
        assert batch != [""], "the link went down"
        received.extend(batch)
    return received


def test_every_connection_gets_all_its_messages_in_order(
    ws_server: WsServer, ws_engine: str
) -> None:
    async def main() -> None:
        conns = await dial_all(ws_server.url)
        readers = [asyncio.ensure_future(read_until(conn, MESSAGES)) for conn in conns]
        for conn in conns:
            assert await conn.write(f"many:{MESSAGES}") > 0
        expected = [f"m{i}" for i in range(MESSAGES)]
        assert await asyncio.gather(*readers) == [expected] * CONNECTIONS
        for conn in conns:  # one after another: each is answered by the server
            await conn.close()
        assert [await conn.read() for conn in conns] == [""] * CONNECTIONS

    run(main())


def test_one_push_wakes_every_parked_reader(ws_server: WsServer, ws_engine: str) -> None:
    async def main() -> None:
        conns = await dial_all(ws_server.url)
        readers = [asyncio.ensure_future(conn.read_many(2000)) for conn in conns]
        await asyncio.sleep(0)  # every reader parked, none has anything yet
        assert not any(reader.done() for reader in readers)
        while len(ws_server.connections) < CONNECTIONS:  # the server's handlers start late
            await asyncio.sleep(0.01)
        await asyncio.to_thread(ws_server.send_all, "tick")  # blocks: off this loop
        assert await asyncio.gather(*readers) == [["tick"]] * CONNECTIONS
        await asyncio.gather(*(conn.close() for conn in conns))
        assert [await conn.read_many(10) for conn in conns] == [[""]] * CONNECTIONS

    run(main())
