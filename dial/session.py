"""The connect / reconnect supervisor, written once for every streaming transport.

A `Session` lives on the reactor thread. It connects its transport, sends the `payload`
after every successful connect, keeps the buffer's connected flag true only while the link is
usable, serialises outgoing messages through one drain task, and - with `reconnect=true` -
reconnects every `interval` ms after a loss until it succeeds or the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from .address import Address, redact
from .buffer import Message, MessageBuffer
from .errors import ConnectError, DialError
from .transports.base import Receiver, StreamTransport

__all__ = ["Session"]

log = logging.getLogger("dial")

CLOSE_FLUSH_SECONDS = 2.0


class Session(Receiver):
    def __init__(self, address: Address, transport: StreamTransport, buffer: MessageBuffer):
        self.address = address
        self.transport = transport
        self.buffer = buffer
        self.deliver = buffer.put  # the hot path: transports call the buffer directly
        self.state = "new"  # new -> open <-> down -> closed
        self.reconnects = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.send_errors = 0
        self.last_reason: str | None = None
        self._early_loss: str | None = None
        self.connected_at: float | None = None
        self._outbox: deque[Message] = deque()
        self._drain_idle = True
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return redact(self.address.url)

    # -- lifecycle (reactor thread) ---------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """First connect. Raises DialError; on failure nothing is left running."""
        self.loop = self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        if self.transport.flow_control:
            self.buffer.set_flow_control(self)
        try:
            await asyncio.wait_for(self._connect_once(), timeout)
        except asyncio.TimeoutError:
            await self._abandon()
            raise ConnectError(f"no connection within {timeout:g} s") from None
        except BaseException:
            await self._abandon()
            raise
        self._spawn(self._drain_forever())

    async def _connect_once(self) -> None:
        self.state, self._early_loss = "connecting", None
        await self.transport.connect(self)
        self.state = "open"
        self.connected_at = time.time()
        payload = self.address.options.payload
        if payload is not None and self._early_loss is None:
            await self.transport.send(payload)
            self._count_out(payload)
        self.buffer.set_connected(True)
        if self._early_loss is not None:  # the link died before connect() even returned
            self.lost(self._early_loss)

    async def _abandon(self) -> None:
        self.state = "closed"
        await self._close_transport()

    # FlowControl, for the buffer: only ever called on the reactor thread
    def pause(self) -> None:
        self.transport.pause_reading()

    def resume(self) -> None:
        self.transport.resume_reading()

    def lost(self, reason: str) -> None:
        """Called by the transport when a live link breaks."""
        if self.state == "connecting":
            self._early_loss = reason
            return
        if self.state != "open":
            return
        self.state = "down"
        self.last_reason = reason
        self.buffer.set_connected(False)
        self._outbox.clear()
        if self.address.options.reconnect:
            log.warning("%s: disconnected (%s); reconnecting", self.name, reason)
            self._spawn(self._reconnect_forever())
        else:
            log.warning("%s: disconnected (%s)", self.name, reason)

    async def _reconnect_forever(self) -> None:
        interval = self.address.options.interval / 1000.0
        await self._close_transport()
        while self.state == "down":
            await asyncio.sleep(interval)
            if self.state != "down":
                return
            try:
                await asyncio.wait_for(self._connect_once(), max(interval * 5, 10.0))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # any failure: try again after interval
                self.state = "down"
                self.last_reason = describe_error(exc)
                log.info("%s: reconnect failed (%s)", self.name, self.last_reason)
                await self._close_transport()
                continue
            self.reconnects += 1
            log.warning("%s: reconnected (#%d)", self.name, self.reconnects)

    async def aclose(self) -> None:
        if self.state == "closed":
            return
        was_open = self.state == "open"
        self.state = "closed"
        if was_open and self._outbox:
            try:
                await asyncio.wait_for(self._flush(), CLOSE_FLUSH_SECONDS)
            except (asyncio.TimeoutError, Exception):
                pass
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_FLUSH_SECONDS)
        await self._close_transport()
        self.buffer.set_connected(False)

    async def _close_transport(self) -> None:
        try:
            await self.transport.close()
        except Exception as exc:  # closing must never raise to the user
            log.debug("%s: error while closing: %s", self.name, describe_error(exc))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- outgoing path ----------------------------------------------------------------------

    def enqueue(self, data: Message) -> None:
        """Queue a message from any thread; the drain task sends it in order."""
        self._outbox.append(data)
        if self._drain_idle:
            self._drain_idle = False
            assert self._loop is not None and self._kick is not None
            self._loop.call_soon_threadsafe(self._kick.set)

    def pending(self) -> int:
        return len(self._outbox)

    async def _drain_forever(self) -> None:
        assert self._kick is not None
        while True:
            await self._kick.wait()
            self._kick.clear()
            await self._flush()
            self._drain_idle = True
            if self._outbox:  # raced with enqueue(): keep going ourselves
                self._drain_idle = False
                self._kick.set()

    async def _flush(self) -> None:
        outbox, send = self._outbox, self.transport.send
        while outbox:
            data = outbox.popleft()
            try:
                await send(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.send_errors += 1
                log.warning("%s: send failed: %s", self.name, describe_error(exc))
                continue
            self._count_out(data)

    def _count_out(self, data: Message) -> None:
        self.messages_out += 1
        self.bytes_out += len(data.encode() if isinstance(data, str) else data)


def describe_error(exc: BaseException) -> str:
    """A one-line, credential-free reason for logs and `last_error()`."""
    if isinstance(exc, DialError):
        return redact(str(exc))
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return redact(f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text)
