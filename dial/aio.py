"""The asyncio face of dialkit: the same addresses, transports and semantics as `Dial`.

    import dial.aio

    async def main():
        ws = await dial.aio.dial("wss://host/ws|ping=20&reconnect=true&payload=...")
        await ws.write('{"op": "subscribe"}')
        async for message in ws:          # ends when the link is closed or down for good
            ...
        await ws.close()

A streaming connection runs its session (transport, heartbeats, reconnects) on *your* running
loop: a received message goes from the socket to `await read()` without crossing a thread.
So everything about one connection must happen on the loop that dialled it, and a blocked
loop delays its heartbeats too. Database connections (`exec`) are shared with the sync API:
`await conn.exec(...)` runs the blocking `exec` in a worker thread (`asyncio.to_thread`), so
it never blocks your loop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable
from typing import Any, Literal, overload

from .address import redact
from .buffer import CAPACITY, Item, Message
from .connection import OUTBOX_LIMIT, SessionView
from .databases.connection import AsyncDatabaseConnection, DatabaseConnection
from .dialer import Hook, dial_failed, resolve
from .envelope import (
    Envelope,
    HeadersArg,
    envelope_of,
    envelopes_of,
    needs_meta,
    payload_of,
    payloads_of,
)
from .errors import remember
from .link import AsyncLink, OnConnect
from .select import ready, sessions_of
from .session import DEFAULT_ON_CONNECT_TIMEOUT, Session
from .validation import (
    batch_limit,
    batch_timeout,
    dial_timeout,
    read_timeout,
    write_timeout,
)

__all__ = ["AsyncConnection", "AsyncDatabaseConnection", "AsyncLink", "dial", "wait"]


@overload
async def dial(
    address: int,
    timeout: float | None = None,
    *,
    raise_errors: Literal[True],
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> AsyncDatabaseConnection: ...
@overload
async def dial(
    address: int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> AsyncDatabaseConnection | None: ...
@overload
async def dial(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: Literal[True],
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> AsyncConnection | AsyncDatabaseConnection: ...
@overload
async def dial(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> AsyncConnection | AsyncDatabaseConnection | None: ...


async def dial(
    address: str | int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> AsyncConnection | AsyncDatabaseConnection | None:
    """`await dial.aio.dial(address)`: an `AsyncConnection` (streams) or
    `AsyncDatabaseConnection` (databases, or an `fd()` handle), or None on failure with the
    reason in `dial.last_error()` (`raise_errors=True` raises the `DialError` instead).
    Addresses, options and units are those of `dial.Dial`.

    `on_connect`: as for `Dial`; an `async def hook(link)` gets an `AsyncLink` (`await
    link.send(...)`, `await link.recv(timeout)`) and runs on this loop, a plain function
    gets a blocking `Link` and runs in a thread."""
    try:
        hook = Hook.checked(on_connect, on_connect_timeout)
        seconds = dial_timeout(timeout)
        target = resolve(address, raise_errors, hook)
        connection: AsyncConnection | AsyncDatabaseConnection
        if isinstance(target, Session):
            await target.open(seconds)
            connection = AsyncConnection(target)
        else:
            sync: DatabaseConnection = await asyncio.to_thread(target, seconds)
            connection = AsyncDatabaseConnection(sync)
    except Exception as exc:
        dial_failed("dial", address, exc, raise_errors)
        return None
    remember(None)
    return connection


class AsyncConnection(SessionView):
    """`await read(timeout)`, `await write(data)`, `await close()`, `async for message in conn`."""

    def __init__(self, session: Session) -> None:
        self._bind(session)
        self._loop = session.loop
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        weakref.finalize(self, _close_abandoned, session, self._loop)

    async def read(self, timeout: int | float | None = None) -> Message | None:
        """As `Connection.read`: None waits for a message; -1 the oldest or None at once; -2
        the newest (the rest discarded) or None; N > 0 waits up to N ms. Down and drained:
        `""` at once."""
        message = await self._read_item(timeout)
        return payload_of(message) if self._meta else message  # type: ignore[return-value]

    async def read_message(self, timeout: int | float | None = None) -> Envelope | None:
        """As `Connection.read_message`: the next message with its `Envelope` (needs
        `meta=true`); None when nothing came in time or the link is down and drained for
        good. While a reconnect is due it waits for it (up to `timeout`)."""
        needs_meta(self._session.address, "read_message()")
        return envelope_of(await self._read_item(timeout, through_reconnect=True))

    async def ack(self, messages: Envelope | Iterable[Envelope]) -> None:
        """As `Connection.ack`: acknowledge messages read with `read_message()` (`ack=manual`)."""
        envelopes = envelopes_of(messages)
        self._session.check_ack()
        await self._session.ack(envelopes)

    async def _read_item(
        self, timeout: int | float | None, *, through_reconnect: bool = False
    ) -> Item | None:
        """The next buffered item. Down and drained: `""` at once, or with
        `through_reconnect` (and a reconnect due) a wait for the link to come back."""
        buffer = self._buffer
        milliseconds = None if timeout is None else read_timeout(timeout)
        if milliseconds is not None and milliseconds < 0:
            return buffer.read(milliseconds)
        message = buffer.read(-1)
        if message is not None and not (message == "" and through_reconnect):
            return message
        deadline = None if milliseconds is None else time.monotonic() + milliseconds / 1000.0
        while True:
            waiting = through_reconnect and self._waits_for_reconnect()
            if message == "" and not waiting:
                return message
            if deadline is not None and deadline <= time.monotonic():
                return None
            await self._changed(deadline, through_reconnect=waiting)
            message = buffer.read(-1)
            if message is not None and message != "":
                return message

    async def read_many(
        self, max: int = CAPACITY, timeout: int | float | None = None
    ) -> list[Message]:
        """As `Connection.read_many`: up to `max` buffered messages, oldest first, in one
        call; None waits for the first, -1 does not wait, N > 0 waits up to N ms. `[]` when
        nothing came in time, `[""]` once down (or closed) and drained."""
        limit = batch_limit(max)
        buffer = self._buffer
        milliseconds = None if timeout is None else batch_timeout(timeout)
        batch = buffer.read_many(limit, -1)
        if batch or (milliseconds is not None and milliseconds < 0):
            return payloads_of(batch) if self._meta else batch  # type: ignore[return-value]
        deadline = None if milliseconds is None else time.monotonic() + milliseconds / 1000.0
        while True:
            if deadline is not None and deadline <= time.monotonic():
                return []
            await self._changed(deadline)
            batch = buffer.read_many(limit, -1)
            if batch:
                return payloads_of(batch) if self._meta else batch  # type: ignore[return-value]

    async def _changed(self, deadline: float | None, *, through_reconnect: bool = False) -> None:
        """Sleep until a message arrives, the link drops (unless `through_reconnect`: then
        only closing counts), or `deadline` passes."""
        loop = self._loop
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._buffer.add_listener(self._wake)
        timer = None
        if deadline is not None:
            timer = loop.call_at(
                loop.time() + max(0.0, deadline - time.monotonic()), _settle, waiter
            )
        try:
            buffer = self._buffer
            if not len(buffer) and (
                buffer.connected or (through_reconnect and self._session.state == "down")
            ):
                await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.remove(waiter)
            if not self._waiters:
                self._buffer.remove_listener(self._wake)

    def _wake(self) -> None:  # buffer listener: on this loop, per put while someone waits
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def write(
        self,
        data: str | bytes,
        timeout: float | None = None,
        *,
        key: str | bytes | None = None,
        headers: HeadersArg | None = None,
    ) -> int:
        """Send one message; its size in bytes, or 0 when the link is down or closed. The
        message is queued in order and sent by the session; waits only when `OUTBOX_LIMIT`
        messages are already queued (up to `timeout` s). With `confirm=true`: returns once
        the broker accepted it (up to `timeout` s, None: 30 s), else 0. `key` and `headers`
        as for `Connection.write`."""
        session = self._session
        message, size = self._outgoing(data, key, headers)
        if session.confirm:
            wait = None if timeout is None else write_timeout(timeout)
            return 0 if await session.write_confirmed_async(message, wait) else size
        if session.state != "open":
            return 0
        wait = None if timeout is None else write_timeout(timeout)
        if session.pending() >= OUTBOX_LIMIT:
            deadline = None if wait is None else time.monotonic() + wait
            while session.pending() >= OUTBOX_LIMIT:  # the sender is behind: let it run
                if session.state != "open" or (deadline and time.monotonic() > deadline):
                    return 0
                await asyncio.sleep(0.001)
        session.enqueue(message)
        return size

    async def ping(self, timeout: float = 10.0) -> float | None:
        """One heartbeat round trip in seconds, or None (link down, no answer in time)."""
        try:
            return await self._session.ping(timeout)
        except (asyncio.TimeoutError, ConnectionError, NotImplementedError):
            return None

    async def close(self) -> None:
        """Close the link; idempotent. A pending `read()` returns `""`."""
        if self._closed:
            return
        self._closed = True
        self._buffer.set_connected(False)
        await self._session.aclose()

    aclose = close

    def __aiter__(self) -> AsyncConnection:
        return self

    async def __anext__(self) -> Message:
        """The next message; waits through reconnects, stops when closed or down for good."""
        try:
            item = self._buffer.take()  # the hot path: already buffered
            return payload_of(item) if self._meta else item  # type: ignore[return-value]
        except IndexError:
            pass
        while True:
            message = await self.read()
            if message != "":
                return message  # type: ignore[return-value]
            session = self._session
            if self._closed or session.state == "closed" or not session.address.options.reconnect:
                raise StopAsyncIteration
            await self._changed(None, through_reconnect=True)  # wait for the next message

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._session.state
        return f"<AsyncConnection {redact(self._session.address.url)} {state}>"

    def __bool__(self) -> bool:
        return True


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _close_abandoned(session: Session, loop: asyncio.AbstractEventLoop) -> None:
    if session.state == "closed" or loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(session.aclose()))
    except RuntimeError:  # the loop is shutting down
        pass


async def wait(
    connections: Iterable[AsyncConnection], timeout: float | None = None
) -> list[AsyncConnection]:
    """`dial.wait` for `AsyncConnection`s on this loop: the readable ones, in order
    (timeout in ms; None waits, <= 0 only checks, N > 0 at most N ms then `[]`)."""
    candidates = list(connections)
    sessions = sessions_of(candidates)
    found = ready(candidates, sessions)
    if found or not candidates or (timeout is not None and timeout <= 0):
        return found
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout / 1000.0
    while True:
        waiter = loop.create_future()

        def wake(waiter: asyncio.Future[None] = waiter) -> None:
            if not waiter.done():
                waiter.set_result(None)

        for session in sessions:
            session.buffer.add_listener(wake)
        timer = None if deadline is None else loop.call_at(deadline, wake)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            for session in sessions:
                session.buffer.remove_listener(wake)
        found = ready(candidates, sessions)
        if found or (deadline is not None and loop.time() >= deadline):
            return found
