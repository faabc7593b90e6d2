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

With `confirm=true` a write is a `_Confirm`: it goes through the same outbox, in order, to the
transport's `send_confirmed()`, and its writer learns the broker's answer (or why none can
come: the link dropped first, the writer's timeout ran out). Without it, writes are fire and
forget, but what a lost link takes with it is still counted in `send_errors`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from .address import Address, redact
from .buffer import Item, Message, MessageBuffer
from .envelope import Envelope, Record
from .errors import ArgumentError, ConnectError, DialError, describe_error
from .link import AsyncLink, Link, OnConnect, is_async_hook, run_in_thread
from .transports.base import Receiver, StreamTransport

__all__ = ["DEFAULT_ON_CONNECT_TIMEOUT", "HookFailed", "Session"]

log = logging.getLogger("dial")

CLOSE_FLUSH_SECONDS = 2.0
DEFAULT_ON_CONNECT_TIMEOUT = 10.0  # seconds an on_connect hook may take
DEFAULT_CONFIRM_TIMEOUT = 30.0  # seconds a confirmed write() waits when given no timeout


class _Confirm:
    """One confirmed write on its way: `settle(None)` once the broker has it, `settle(reason)`
    when it failed. Settled once, on the loop thread; `abandoned` when its writer stopped
    waiting (it is then never sent if it was still queued)."""

    __slots__ = ("abandoned", "data", "settle", "settled")

    def __init__(self, data: Message | Record, settle: Callable[[str | None], None]) -> None:
        self.data = data
        self.settle = settle
        self.settled = False
        self.abandoned = False


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
        self.last_send_error: str | None = None  # why the last write failed
        self.confirm = transport.confirms
        self._unconfirmed: set[_Confirm] = set()  # sent, the broker's answer still due
        self._held_since: float | None = None  # reading paused for the reader (held source)
        self._held_until = 0.0  # time.monotonic() of the last resume
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
        self._interceptors: list[Callable[[Item], bool]] = []
        self._pong_waiter: asyncio.Future[None] | None = None
        if address.options.ping_text is not None:
            self.add_interceptor(self._take_text_pong)
        self._outbox: deque[Message | Record | _Confirm] = deque()
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
            self.buffer.set_flow_control(self, hold=self.transport.holds_backlog)
        try:
            await self._connect_once(timeout)
        except BaseException:
            await self._abandon()
            raise
        self._spawn(self._drain_forever())

    async def _connect_once(self, timeout: float) -> None:
        """Connect, send `payload`, run the hook; only then is the link usable. `timeout`
        bounds the connect and payload; the hook has its own `on_connect_timeout`."""
        self._stop_if_closed()
        self.state, self._early_loss = "connecting", None
        link = None
        if self.on_connect is not None:  # hold messages from the first byte, for the hook
            link = self._hook_link = AsyncLink(self._send_now, self.name)
            self._install_interceptors()
        try:
            try:
                await _within(self._link_up(), timeout)
            except asyncio.TimeoutError:
                raise ConnectError(f"no connection within {timeout:g} s") from None
            if link is not None:
                await self._run_on_connect(link)
            self._stop_if_closed()  # closed meanwhile: "closed" must win over "open"
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

    def _release(self, link: AsyncLink) -> list[Item]:
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
        if self.transport.holds_backlog:
            self._held_since = time.monotonic()
        self.transport.pause_reading()

    def resume(self) -> None:
        if self._held_since is not None:
            self._held_since = None
            self._held_until = time.monotonic()
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
        self._discard_outbox(f"link lost before it was sent ({reason})")
        self._fail_unconfirmed(f"link lost before the broker confirmed it ({reason})")
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
                if self.state == "closed":  # what the attempt opened goes with it
                    await self._close_transport()
                raise
            except BaseException as exc:  # any failure: try again after interval
                if self.state == "closed":  # a close whose cancellation the attempt swallowed
                    await self._close_transport()
                    return
                self.state = "down"
                self.last_reason = describe_error(exc)
                level = logging.WARNING if isinstance(exc, HookFailed) else logging.INFO
                log.log(level, "%s: reconnect failed (%s)", self.name, self.last_reason)
                await self._close_transport()
                continue
            self.reconnects += 1
            log.warning("%s: reconnected (#%d)", self.name, self.reconnects)

    def _stop_if_closed(self) -> None:
        """End a connect attempt that `aclose()` overtook. Before Python 3.12 `wait_for` may
        swallow the cancellation (python/cpython#86296) and let the attempt go on; without
        this check a closed connection could reconnect and live on unseen."""
        if self.state == "closed":
            raise asyncio.CancelledError

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
        if was_open and self._unconfirmed:  # the broker's answers to what went out last
            try:
                await asyncio.wait_for(self._confirmed_all(), CLOSE_FLUSH_SECONDS)
            except (asyncio.TimeoutError, Exception):
                pass
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_FLUSH_SECONDS)
        await self._close_transport()
        self._discard_outbox("connection closed before it was sent")
        self._fail_unconfirmed("connection closed before the broker confirmed it")
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
            if self._held_since is not None:
                continue  # reading is paused for the reader: an answer could not get in
            try:
                await self.ping(deadline)
            except asyncio.TimeoutError:
                self._link_failed(f"no pong within {deadline:g} s")
                self.heartbeats_missed += 1  # after the reason: stats() readers see both
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

    def _take_text_pong(self, message: Item) -> bool:
        if type(message) is Envelope:
            message = message.value
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
            if self._held_since is not None:  # paused for the reader: quiet, not stale
                await asyncio.sleep(idle)
                continue
            remaining = max(buffer.last_at, started, self._held_until) + idle - time.monotonic()
            if remaining <= 0:
                self._link_failed(f"no message for {idle:g} s (stale feed)")
                self.stale_restarts += 1  # after the reason: stats() readers see both
                return
            await asyncio.sleep(remaining)

    # -- incoming path ----------------------------------------------------------------------

    def _deliver_counting(self, message: Item) -> None:
        """`deliver` for transports that do not count wire bytes themselves."""
        value = message.value if isinstance(message, Envelope) else message
        size = len(value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value)
        self.bytes_in += size
        self.buffer.put(message)

    def add_interceptor(self, intercept: Callable[[Item], bool]) -> None:
        """See every received message before the buffer; returning True consumes it.
        Runs on the loop thread for every message, so it must be cheap."""
        self._interceptors.append(intercept)
        self._install_interceptors()

    def remove_interceptor(self, intercept: Callable[[Item], bool]) -> None:
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

    def check_ack(self) -> None:
        if self.address.options.ack != "manual":
            raise ArgumentError(
                "ack() needs ack=manual in the address (otherwise dialkit acknowledges each "
                "message itself once it is buffered)"
            )

    async def ack(self, envelopes: tuple[Envelope, ...]) -> None:
        """Acknowledge received messages to the broker (`ack=manual`, see `Connection.ack`);
        `envelopes` checked by `envelopes_of` and `check_ack` in the caller's thread."""
        if not envelopes:
            return
        if self.state != "open":
            raise ConnectionResetError(f"not connected ({self.last_reason or self.state})")
        await self.transport.ack(envelopes)

    def discarded(self, count: int) -> None:
        self.buffer.dropped += count

    def send_failed(self, count: int, reason: str) -> None:
        self.send_errors += count
        self.last_send_error = reason
        log.warning("%s: %d message(s) not delivered: %s", self.name, count, reason)

    def consumed(self) -> None:
        """An interceptor took a data message: count it as received (for stats and `idle`)."""
        self.buffer.received += 1
        self.buffer.last_at = time.monotonic()

    # -- outgoing path ----------------------------------------------------------------------

    def enqueue(self, data: Message | Record | _Confirm) -> None:
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
            if type(data) is _Confirm:
                await self._send_confirmed(data)
                continue
            try:
                if type(data) is Record:
                    await self.transport.send_record(data)
                else:
                    await send(data)  # type: ignore[arg-type]  # a Message: the rest went above
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.send_errors += 1
                self.last_send_error = reason = f"send failed: {describe_error(exc)}"
                log.warning("%s: %s", self.name, reason)
                continue
            self._count_out(data)  # type: ignore[arg-type]

    def _count_out(self, data: Message | Record) -> None:
        self.messages_out += 1
        if type(data) is Record:
            self.bytes_out += data.size
        else:
            self.bytes_out += len(data.encode() if isinstance(data, str) else data)  # type: ignore[arg-type]

    def _discard_outbox(self, reason: str) -> None:
        """What was queued but not sent goes nowhere now: fail confirmed writes, count the
        rest as send errors (they used to vanish silently)."""
        outbox = self._outbox
        if not outbox:
            return
        items = list(outbox)
        outbox.clear()
        plain = 0
        for item in items:
            if type(item) is _Confirm:
                self._write_failed(item, reason)
            else:
                plain += 1
        if plain:
            self.send_errors += plain
            self.last_send_error = reason
            log.warning("%s: %d queued write(s) discarded: %s", self.name, plain, reason)

    # -- confirmed writes (confirm=true) ----------------------------------------------------

    async def _send_confirmed(self, item: _Confirm) -> None:
        if item.abandoned:  # its writer gave up (and was told so) before it went out
            return
        try:
            receipt = await self.transport.send_confirmed(item.data)
        except asyncio.CancelledError:
            self._write_failed(item, "connection closed before it was sent")
            raise
        except Exception as exc:
            self._write_failed(item, f"send failed: {describe_error(exc)}")
            return
        if receipt.done():
            self._confirmed(item, receipt)
            return
        self._unconfirmed.add(item)
        receipt.add_done_callback(lambda future: self._confirmed(item, future))

    def _confirmed(self, item: _Confirm, receipt: asyncio.Future[Any]) -> None:
        """The broker answered (or the transport gave up on an answer)."""
        self._unconfirmed.discard(item)
        if item.settled:  # already failed: the link dropped first, or the writer gave up
            if not receipt.cancelled():
                receipt.exception()  # retrieved: nobody else looks at it
            return
        if receipt.cancelled():
            self._write_failed(item, "not confirmed: the link went away first")
            return
        error = receipt.exception()
        if error is not None:
            self._write_failed(item, f"not confirmed: {describe_error(error)}")
            return
        item.settled = True
        self._count_out(item.data)
        item.settle(None)

    def _write_failed(self, item: _Confirm, reason: str) -> None:
        self._unconfirmed.discard(item)
        if item.settled:
            return
        item.settled = True
        self.send_errors += 1
        self.last_send_error = reason
        log.info("%s: write not confirmed: %s", self.name, reason)
        item.settle(reason)

    def _fail_unconfirmed(self, reason: str) -> None:
        for item in list(self._unconfirmed):
            self._write_failed(item, reason)

    async def _confirmed_all(self) -> None:
        while self._unconfirmed:
            await asyncio.sleep(0.01)

    def confirm_many(
        self, data: Sequence[Message | Record], settle: Callable[[str | None], None]
    ) -> Callable[[str], None]:
        """Queue every item as a confirmed write, in order, from any thread, without waiting
        (`dial.pipe` keeps several batches in flight this way). `settle` is called once per
        item on the loop thread: None once confirmed, else why not. Returns `give_up(reason)`,
        callable from any thread: whatever is still unanswered fails with `reason`, and what
        is still queued is never sent."""
        items = [_Confirm(item, settle) for item in data]
        for item in items:
            self.enqueue(item)

        def give_up_all(reason: str) -> None:
            for item in items:
                self._give_up(item, reason)

        def give_up(reason: str) -> None:
            loop = self._loop
            try:
                if loop is None or loop.is_closed():
                    raise RuntimeError("no loop")
                loop.call_soon_threadsafe(give_up_all, reason)
            except RuntimeError:  # the loop is gone: nothing will answer any more
                for item in items:
                    if not item.settled:
                        item.settled = True
                        settle(reason)

        return give_up

    def _give_up(self, item: _Confirm, reason: str) -> None:
        """The writer stopped waiting (loop thread): it was told `reason`; a message still
        queued is never sent, one already sent may still reach the broker."""
        item.abandoned = True
        self._write_failed(item, reason)

    def _refused(self) -> str:
        """Why a confirmed write cannot even be queued now."""
        reason = (
            "connection closed"
            if self.state == "closed"
            else f"not connected ({self.last_reason or self.state})"
        )
        self.last_send_error = reason
        return reason

    def write_confirmed(self, data: Message | Record, timeout: float | None) -> str | None:
        """A confirmed write from a plain thread: queue `data` and block until the broker
        accepted it (None) or it failed (the reason; also in `last_send_error`). `timeout`
        bounds the whole wait (None: `DEFAULT_CONFIRM_TIMEOUT`)."""
        from .connection import OUTBOX_LIMIT  # the sync facade's limit on queued writes

        if self.state != "open":
            return self._refused()
        loop = self._loop
        assert loop is not None
        if threading.get_ident() == self.loop_thread:
            self.last_send_error = reason = (
                "a confirmed write() cannot wait on the event loop's own thread "
                "(use dial.aio's `await conn.write()` there)"
            )
            return reason
        seconds = DEFAULT_CONFIRM_TIMEOUT if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + seconds
        while len(self._outbox) >= OUTBOX_LIMIT:  # many writers at once: let them through
            if self.state != "open":
                return self._refused()
            if time.monotonic() >= deadline:
                self.last_send_error = reason = f"not sent within {seconds:g} s (queue full)"
                return reason
            time.sleep(0.0005)
        done = threading.Event()
        outcome: list[str | None] = []

        def settle(error: str | None) -> None:
            outcome.append(error)
            done.set()

        item = _Confirm(data, settle)
        self.enqueue(item)
        if done.wait(max(0.0, deadline - time.monotonic())):
            return outcome[0]
        reason = f"not confirmed within {seconds:g} s"
        try:
            loop.call_soon_threadsafe(self._give_up, item, reason)
        except RuntimeError:  # the loop is gone: so is the link
            self.last_send_error = reason
            return reason
        # The item is settled exactly once: by `_give_up`, or by a confirmation that came in
        # first. Take that final word, so a confirmed message is never reported as lost (a
        # retrying strategy would send it twice).
        if done.wait(CLOSE_FLUSH_SECONDS):
            return outcome[0]
        self.last_send_error = reason
        return reason

    async def write_confirmed_async(
        self, data: Message | Record, timeout: float | None
    ) -> str | None:
        """`write_confirmed` for `dial.aio`, on this session's loop: None once the broker
        accepted `data`, else the reason it failed."""
        from .connection import OUTBOX_LIMIT

        if self.state != "open":
            return self._refused()
        loop = asyncio.get_running_loop()
        seconds = DEFAULT_CONFIRM_TIMEOUT if timeout is None else max(0.0, timeout)
        deadline = time.monotonic() + seconds
        while len(self._outbox) >= OUTBOX_LIMIT:
            if self.state != "open":
                return self._refused()
            if time.monotonic() >= deadline:
                self.last_send_error = reason = f"not sent within {seconds:g} s (queue full)"
                return reason
            await asyncio.sleep(0.001)
        answer: asyncio.Future[str | None] = loop.create_future()

        def settle(error: str | None) -> None:
            if not answer.done():
                answer.set_result(error)

        item = _Confirm(data, settle)
        self.enqueue(item)
        try:
            return await asyncio.wait_for(
                asyncio.shield(answer), max(0.0, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            self._give_up(item, f"not confirmed within {seconds:g} s")
            return answer.result()
        except asyncio.CancelledError:
            self._give_up(item, "the writing task was cancelled")
            raise


async def _outcome(work: Awaitable[None]) -> Exception | None:
    """Await the hook; its exception is returned, so a timeout of the hook itself is told
    apart from a TimeoutError the hook raised (e.g. its `recv()` got no answer)."""
    try:
        await work
    except Exception as exc:
        return exc
    return None


async def _within(awaitable: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """`wait_for` without its pre-3.12 faults: on 3.11+ `asyncio.timeout` runs the coroutine
    in the caller's task, so a cancellation is never swallowed nor an exception left unread."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await awaitable
    return await asyncio.wait_for(awaitable, timeout)  # pragma: no cover - Python 3.10
