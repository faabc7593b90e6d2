"""The connect / reconnect supervisor, written once for every streaming transport.

A `Session` lives on one event loop (the reactor thread, or the caller's loop for `dial.aio`).
It connects its transport, sends the `payload` after every successful connect, then runs the
`on_connect` hook (a fresh login, see `dial.link`), keeps the buffer's connected flag true only
while the link is usable, serialises outgoing messages through one drain task, and - with
`reconnect=true` - reconnects after a loss (every `interval` ms, or with `backoff=exp` a capped
exponential delay with jitter) until it succeeds or the connection is closed.

Staying alive is decided here too, the same way for every transport: with `ping=S` a heartbeat
(the transport's ping frame, or the `pingText` message) goes out every S seconds and must be
answered within `pong` seconds; with `idle=S` a link that delivered no data message for S
seconds is stale. Either failure is treated exactly like a lost link.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .address import Address, redact
from .buffer import Message, MessageBuffer
from .errors import ConnectError, DialError, describe_error
from .link import AsyncLink, Link, OnConnect, is_async_hook, run_in_thread
from .transports.base import Receiver, StreamTransport

__all__ = ["DEFAULT_ON_CONNECT_TIMEOUT", "HookFailed", "Session"]

log = logging.getLogger("dial")

CLOSE_FLUSH_SECONDS = 2.0
DEFAULT_ON_CONNECT_TIMEOUT = 10.0  # seconds an on_connect hook may take


class HookFailed(ConnectError):
    """The `on_connect` hook raised or overran: this connect attempt failed."""


class Session(Receiver):
    def __init__(
        self,
        address: Address,
        transport: StreamTransport,
        buffer: MessageBuffer,
        *,
        on_connect: OnConnect | None = None,
        on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
    ):
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
        self.bytes_in = 0
        self.last_rtt: float | None = None  # seconds, of the last answered heartbeat
        self.heartbeats_missed = 0
        self.stale_restarts = 0
        self.on_connect = on_connect
        self.on_connect_timeout = on_connect_timeout
        self.on_connect_failures = 0
        self._hook_link: AsyncLink | None = None  # while the hook runs: holds every message
        if not transport.counts_bytes_in:
            self.deliver = self._deliver_counting
        self.link_started = 0.0  # time.monotonic() of the current link's connect
        self._link_tasks: set[asyncio.Task[Any]] = set()
        self._backoff_step = 0
        self._interceptors: list[Callable[[Message], bool]] = []
        self._pong_waiter: asyncio.Future[None] | None = None
        if address.options.ping_text is not None:
            self.add_interceptor(self._take_text_pong)
        self._outbox: deque[Message] = deque()
        self._drain_idle = True
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.loop_thread: int | None = None

    @property
    def name(self) -> str:
        return redact(self.address.url)

    # -- lifecycle (reactor thread) ---------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """First connect. Raises DialError; on failure nothing is left running."""
        self.loop = self._loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()
        self._kick = asyncio.Event()
        if self.transport.flow_control:
            self.buffer.set_flow_control(self)
        try:
            await self._connect_once(timeout)
        except BaseException:
            await self._abandon()
            raise
        self._spawn(self._drain_forever())

    async def _connect_once(self, timeout: float) -> None:
        """Connect, send `payload`, run the hook; only then is the link usable. `timeout`
        bounds the connect and payload; the hook has its own `on_connect_timeout`."""
        self.state, self._early_loss = "connecting", None
        link = None
        if self.on_connect is not None:  # hold messages from the first byte, for the hook
            link = self._hook_link = AsyncLink(self._send_now, self.name)
            self._install_interceptors()
        try:
            try:
                await asyncio.wait_for(self._link_up(), timeout)
            except asyncio.TimeoutError:
                raise ConnectError(f"no connection within {timeout:g} s") from None
            if link is not None:
                await self._run_on_connect(link)
        except BaseException:
            if link is not None:
                self._release(link)  # the attempt failed: what it held goes with it
            raise
        held = self._release(link) if link is not None else []
        self.state = "open"
        self.connected_at = time.time()
        self.link_started = time.monotonic()
        for message in held:  # what the hook did not take, in arrival order, before new ones
            self.buffer.put(message)
        self.buffer.set_connected(True)
        if self._early_loss is not None:  # the link died before it became usable
            self.lost(self._early_loss)
        else:
            self._start_watchdogs()

    async def _link_up(self) -> None:
        await self.transport.connect(self)
        payload = self.address.options.payload
        if payload is not None and self._early_loss is None:
            await self._send_now(payload)

    async def _send_now(self, data: Message) -> None:
        """Send on the link directly, ahead of the outbox (payload, the hook's sends)."""
        await self.transport.send(data)
        self._count_out(data)

    async def _run_on_connect(self, link: AsyncLink) -> None:
        """Run the hook (async: on this loop; plain: in a thread) within its timeout; any
        exception or overrun fails this connect attempt with the reason kept."""
        limit = self.on_connect_timeout
        try:
            error = await asyncio.wait_for(_outcome(self._call_hook(link)), limit)
        except asyncio.TimeoutError:
            reason = f"did not return within {limit:g} s"
        else:
            if error is None:
                return
            text = str(error)
            reason = redact(f"{error.__class__.__name__}: {text}" if text else repr(error))
        self.on_connect_failures += 1
        raise HookFailed(f"on_connect failed: {reason}")

    async def _call_hook(self, link: AsyncLink) -> None:
        hook = self.on_connect
        assert hook is not None and self._loop is not None
        if is_async_hook(hook):
            await hook(link)
        else:
            await run_in_thread(hook, Link(link, self._loop))

    def _release(self, link: AsyncLink) -> list[Message]:
        """End the hook's hold on incoming messages; returns what it did not take."""
        held = link.finish()
        self.buffer.dropped += link.dropped
        if self._hook_link is link:
            self._hook_link = None
            self._install_interceptors()
        return held

    async def _abandon(self) -> None:
        self.state = "closed"
        await self._close_transport()

    # FlowControl, for the buffer: only ever called on the reactor thread
    def pause(self) -> None:
        self.transport.pause_reading()

    def resume(self) -> None:
        self.transport.resume_reading()

    def lost(self, reason: str) -> None:
        """Called by the transport when a live link breaks (and by the watchdogs)."""
        if self.state == "connecting":
            self._early_loss = reason
            if self._hook_link is not None:
                self._hook_link.lost(reason)
            return
        if self.state != "open":
            return
        self.state = "down"
        self.last_reason = reason
        self.buffer.set_connected(False)
        self._outbox.clear()
        self._stop_watchdogs()
        waiter, self._pong_waiter = self._pong_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError(reason))
            waiter.exception()  # retrieved: nobody may be waiting for it
        if time.monotonic() - self.link_started >= self.address.options.backoff_max / 1000.0:
            self._backoff_step = 0  # the link was healthy for a while: start backoff afresh
        if self.address.options.reconnect:
            log.warning("%s: disconnected (%s); reconnecting", self.name, reason)
            self._spawn(self._reconnect_forever())
        else:
            log.warning("%s: disconnected (%s)", self.name, reason)

    def _link_failed(self, reason: str) -> None:
        """A watchdog found the link dead while its socket is still open: drop it."""
        if self.state != "open":
            return
        reconnect = self.address.options.reconnect
        try:
            self.transport.abort()
        except Exception as exc:  # best effort: close() below still runs
            log.debug("%s: abort failed: %s", self.name, describe_error(exc))
        self.lost(reason)
        if not reconnect:  # the reconnect loop closes the transport itself
            self._spawn(self._close_transport())

    def next_delay(self) -> float:
        """Seconds to wait before the next reconnect attempt."""
        options = self.address.options
        interval = options.interval / 1000.0
        if options.backoff != "exp":
            return interval
        cap = options.backoff_max / 1000.0
        delay = min(cap, interval * 2.0 ** min(self._backoff_step, 60))
        self._backoff_step += 1
        return delay / 2 + random.uniform(0, delay / 2)  # "equal jitter": never below half

    async def _reconnect_forever(self) -> None:
        interval = self.address.options.interval / 1000.0
        await self._close_transport()
        while self.state == "down":
            await asyncio.sleep(self.next_delay())
            if self.state != "down":
                return
            try:
                await self._connect_once(self.transport.attempt_limit(max(interval * 5, 10.0)))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # any failure: try again after interval
                self.state = "down"
                self.last_reason = describe_error(exc)
                level = logging.WARNING if isinstance(exc, HookFailed) else logging.INFO
                log.log(level, "%s: reconnect failed (%s)", self.name, self.last_reason)
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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- staying alive (loop thread) --------------------------------------------------------

    def _start_watchdogs(self) -> None:
        options = self.address.options
        if options.ping is not None:
            self._link_tasks.add(self._spawn(self._heartbeat_forever(options.ping)))
        if options.idle is not None:
            self._link_tasks.add(self._spawn(self._idle_watch(options.idle)))

    def _stop_watchdogs(self) -> None:
        current = asyncio.current_task() if self._loop is not None else None
        for task in self._link_tasks:
            if task is not current:
                task.cancel()
        self._link_tasks.clear()

    async def _heartbeat_forever(self, every: float) -> None:
        deadline = self.address.options.pong or every
        while self.state == "open":
            await asyncio.sleep(every)
            if self.state != "open":
                return
            try:
                await self.ping(deadline)
            except asyncio.TimeoutError:
                self.heartbeats_missed += 1
                self._link_failed(f"no pong within {deadline:g} s")
                return
            except (ConnectionError, DialError) as exc:
                self._link_failed(f"heartbeat failed: {describe_error(exc)}")
                return

    async def ping(self, timeout: float) -> float:
        """One heartbeat round trip in seconds (also kept as `last_rtt`). Raises
        asyncio.TimeoutError after `timeout` s, ConnectionError when the link is down."""
        if self.state != "open":
            raise ConnectionResetError("not connected")
        started = time.monotonic()
        await asyncio.wait_for(self._ping_once(), timeout)
        self.last_rtt = rtt = time.monotonic() - started
        return rtt

    async def _ping_once(self) -> None:
        text = self.address.options.ping_text
        if text is None:
            await self.transport.ping()
            return
        waiter = self._pong_waiter
        if waiter is None or waiter.done():
            assert self._loop is not None
            waiter = self._pong_waiter = self._loop.create_future()
            await self.transport.send(text)
        await asyncio.shield(waiter)

    def _take_text_pong(self, message: Message) -> bool:
        pong = self.address.options.pong_text
        if message != pong and not (
            isinstance(message, str) and len(message) <= len(pong) + 4 and message.strip() == pong
        ):
            return False
        waiter = self._pong_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True  # heartbeat answers are not data: read() never sees them

    async def _idle_watch(self, idle: float) -> None:
        buffer, started = self.buffer, self.link_started
        while self.state == "open":
            remaining = max(buffer.last_at, started) + idle - time.monotonic()
            if remaining <= 0:
                self.stale_restarts += 1
                self._link_failed(f"no message for {idle:g} s (stale feed)")
                return
            await asyncio.sleep(remaining)

    # -- incoming path ----------------------------------------------------------------------

    def _deliver_counting(self, message: Message) -> None:
        """`deliver` for transports that do not count wire bytes themselves."""
        size = len(
            message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
        )
        self.bytes_in += size
        self.buffer.put(message)

    def add_interceptor(self, intercept: Callable[[Message], bool]) -> None:
        """See every received message before the buffer; returning True consumes it.
        Runs on the loop thread for every message, so it must be cheap."""
        self._interceptors.append(intercept)
        self._install_interceptors()

    def remove_interceptor(self, intercept: Callable[[Message], bool]) -> None:
        try:
            self._interceptors.remove(intercept)
        except ValueError:
            return
        self._install_interceptors()

    def _install_interceptors(self) -> None:
        if self._hook_link is not None:  # the hook sees everything first; the rest after it
            self.buffer.set_intercept(self._hook_link.hold)
            return
        chain = tuple(self._interceptors)
        if not chain:
            self.buffer.set_intercept(None)
        elif len(chain) == 1:
            self.buffer.set_intercept(chain[0])
        else:
            self.buffer.set_intercept(lambda message: any(take(message) for take in chain))

    def consumed(self) -> None:
        """An interceptor took a data message: count it as received (for stats and `idle`)."""
        self.buffer.received += 1
        self.buffer.last_at = time.monotonic()

    # -- outgoing path ----------------------------------------------------------------------

    def enqueue(self, data: Message) -> None:
        """Queue a message from any thread; the drain task sends it in order."""
        self._outbox.append(data)
        if self._drain_idle:
            self._drain_idle = False
            assert self._loop is not None and self._kick is not None
            if threading.get_ident() == self.loop_thread:
                self._kick.set()  # already on the loop (dial.aio, callbacks): no self-pipe
            else:
                self._loop.call_soon_threadsafe(self._kick.set)

    def pending(self) -> int:
        return len(self._outbox)

    def readable(self) -> bool:
        """True when `read(-1)` would return at once with something other than None: a
        buffered message, or `""` because the link is closed or down for good."""
        if len(self.buffer):
            return True
        state = self.state
        return state == "closed" or (state == "down" and not self.address.options.reconnect)

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


async def _outcome(work: Awaitable[None]) -> Exception | None:
    """Await the hook; its exception is returned, so a timeout of the hook itself is told
    apart from a TimeoutError the hook raised (e.g. its `recv()` got no answer)."""
    try:
        await work
    except Exception as exc:
        return exc
    return None
