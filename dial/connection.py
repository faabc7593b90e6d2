"""The synchronous connection object returned by `Dial` for streaming schemes.

`read()` never touches the event loop: it pops from the ring buffer the reactor fills.
`write()` queues the message for the session's drain task and returns at once; it returns 0
when the link is down or closed. `close()` may be called from any thread, any number of times,
and releases a reader blocked in another thread.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .address import redact
from .buffer import CAPACITY, DISCONNECTED, Message, MessageBuffer
from .envelope import (
    Envelope,
    HeadersArg,
    Record,
    envelope_of,
    envelopes_of,
    needs_meta,
    payload_of,
    payloads_of,
    record_of,
)
from .errors import ArgumentError
from .reactor import reactor
from .session import Session
from .validation import batch_limit, outgoing, read_timeout, write_timeout

__all__ = ["Connection", "SessionView", "Stats", "session_of"]

#: writes queued but not yet sent before `write()` starts waiting for the sender to catch up
OUTBOX_LIMIT = 10_000
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Stats:
    """A snapshot of one connection's counters (since Dial, across reconnects)."""

    connected: bool
    messages_in: int
    messages_out: int
    bytes_out: int
    buffered: int
    dropped: int  # messages discarded because the 2000-message buffer was full
    reconnects: int
    send_errors: int
    last_error: str | None  # why the link last went down
    bytes_in: int = 0  # wire bytes for ws/tcp/tls/unix, message bytes otherwise
    last_message_age: float | None = None  # seconds since the last data message, None: none yet
    last_rtt: float | None = None  # seconds, the last heartbeat round trip (ping= or ping())
    heartbeats_missed: int = 0  # pongs that did not come back within the deadline
    stale_restarts: int = 0  # links dropped by the idle= watchdog
    uptime: float | None = None  # seconds the current link has been up, None while down
    on_connect_failures: int = 0  # connect attempts failed by the on_connect hook
    last_send_error: str | None = None  # why the last write failed (confirm=true: not confirmed)


class SessionView:
    """State shared by the sync and the asyncio connection objects, read off the session."""

    _session: Session
    _buffer: MessageBuffer

    @property
    def scheme(self) -> str:
        """The address's scheme, e.g. "wss"."""
        return self._session.address.scheme

    @property
    def connected(self) -> bool:
        return self._session.state == "open"

    @property
    def dropped(self) -> int:
        """Messages discarded because the buffer was full (read(-2) skips are not counted)."""
        return self._buffer.dropped

    @property
    def reconnects(self) -> int:
        return self._session.reconnects

    def stats(self) -> Stats:
        return session_stats(self._session)

    def _bind(self, session: Session) -> None:
        """What both connection objects read off the session once, for their hot paths."""
        self._session = session
        self._buffer = session.buffer
        self._meta = session.address.options.meta  # the buffer holds Envelopes
        self._refusal = session.transport.write_refusal()

    def _waits_for_reconnect(self) -> bool:
        """A drained, down link that will come back: wait for it rather than spin."""
        session = self._session
        return session.address.options.reconnect and session.state not in ("closed", "open")

    def _outgoing(
        self,
        data: object,
        key: str | bytes | None,
        headers: HeadersArg | None,
    ) -> tuple[Message | Record, int]:
        """`write()`'s arguments as what the session queues, and the payload's size; checked
        whether or not the link is up, so a bad write fails the same way either way."""
        message, size = outgoing(data)
        if self._refusal is not None:
            raise ArgumentError(f"write() refused: {self._refusal}")
        if key is None and headers is None:
            return message, size
        transport = self._session.transport
        return record_of(
            message,
            key,
            headers,
            scheme=self._session.address.scheme,
            accepted=transport.record_fields,
        ), size

    if not TYPE_CHECKING:  # at run time only: a type checker must still see no exec

        def __getattr__(self, name: str) -> Any:
            if name in ("exec", "fd"):
                raise AttributeError(
                    f"a stream has no {name}(): that is for databases (sqlite3://, mysql://, "
                    "postgres://, clickhouse://); a stream has read() and write()",
                    name=name,
                    obj=self,
                )
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )


def session_of(connection: object) -> Session:
    """The session behind a streaming connection (sync or asyncio): what `dial.wait`,
    `Tracker` and `dial.fmz` work with. TypeError for anything else, e.g. a database."""
    if isinstance(connection, SessionView):
        return connection._session
    raise TypeError(
        f"a streaming connection from Dial() is needed, not {type(connection).__name__}"
    )


class Connection(SessionView):
    """A live link: `read(timeout)`, `write(data)`, `close()`; a context manager."""

    def __init__(self, session: Session) -> None:
        self._bind(session)
        self._closed = False
        # A connection dropped without close() must not leave its socket and tasks behind.
        weakref.finalize(self, _close_abandoned, session)

    # -- the FMZ surface --------------------------------------------------------------------

    def read(self, timeout: int | float | None = None) -> Message | None:
        """None: block until a message; -1: oldest or None at once; -2: newest, discarding
        the rest, or None; N > 0: wait up to N ms. Disconnected and drained: "" at once."""
        message = self._buffer.read(timeout)
        return payload_of(message) if self._meta else message  # type: ignore[return-value]

    def read_message(self, timeout: int | float | None = None) -> Envelope | None:
        """As `read()`, with the message's `Envelope` (topic, partition, offset, key,
        headers, timestamps); needs `meta=true` in the address. None when nothing came in
        time, or once the link is down and drained for good (`connected` tells which).
        While a reconnect is due it waits for it (up to `timeout`) instead of returning at
        once, so a `while True: read_message()` loop does not spin."""
        needs_meta(self._session.address, "read_message()")
        buffer = self._buffer
        item = buffer.read(timeout)
        if item != DISCONNECTED or not self._waits_for_reconnect():
            return envelope_of(item)
        milliseconds = None if timeout is None else read_timeout(timeout)
        if milliseconds is not None and milliseconds < 0:
            return None
        deadline = None if milliseconds is None else time.monotonic() + milliseconds / 1000.0
        while buffer.wait_for_message(lambda: not self._waits_for_reconnect(), deadline):
            item = buffer.read(-1)
            if item is not None and item != DISCONNECTED:
                return envelope_of(item)
            if not self._waits_for_reconnect():
                return None
        return None

    def ack(self, messages: Envelope | Iterable[Envelope], timeout: float = 10.0) -> None:
        """Acknowledge messages read with `read_message()` (`ack=manual`): the broker then
        never delivers them again. Until then a reconnect, restart or rebalance redelivers
        them (at least once). Kafka commits by partition: acknowledging an offset also
        acknowledges the earlier ones of its partition. Raises ConnectionError when the link
        is down, ArgumentError for envelopes this connection did not read, TimeoutError when
        the broker did not answer within `timeout` s (the ack may still have been applied)."""
        envelopes = envelopes_of(messages)
        self._session.check_ack()
        seconds = write_timeout(timeout)
        try:
            reactor.call(self._session.ack(envelopes), seconds)
        except (TimeoutError, asyncio.TimeoutError):
            raise TimeoutError(
                f"ack() not confirmed within {seconds:g} s; it may still have been applied"
            ) from None

    def read_many(self, max: int = CAPACITY, timeout: int | float | None = None) -> list[Message]:
        """Everything buffered (up to `max` messages), oldest first, in one call: a hot loop
        pays the hand-over from the reactor once per batch instead of once per message.

        `timeout` in milliseconds as for `read()`: None waits for the first message, -1 (any
        negative) takes what is there without waiting, N > 0 waits up to N ms. Returns `[]`
        when nothing came in time, and `[""]` - `read()`'s disconnect marker as the only
        element - once the link is down (or closed) and the buffer drained; messages buffered
        before a loss still come first. -2 is refused: use `read(-2)` for the newest."""
        batch = self._buffer.read_many(batch_limit(max), timeout)
        return payloads_of(batch) if self._meta else batch  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Message]:
        """`for message in conn:` every message, oldest first, blocking while none is
        buffered. Waits through reconnects (`reconnect=true`); ends when the connection is
        closed, or lost without `reconnect`. Leaving the loop loses nothing: what it did not
        take stays buffered for the next read."""
        buffer, session = self._buffer, self._session
        take, reconnect = buffer.take, session.address.options.reconnect

        def closed() -> bool:
            return self._closed or session.state == "closed"

        while True:
            try:
                message = take()
            except IndexError:
                if buffer.connected:
                    buffer.wait_for_items(None)  # a message, or the link going down
                elif closed() or not reconnect:
                    return
                else:
                    buffer.wait_for_message(closed)  # through the reconnect
                continue
            yield payload_of(message) if self._meta else message  # type: ignore[misc]

    def write(
        self,
        data: str | bytes,
        timeout: float | None = None,
        *,
        key: str | bytes | None = None,
        headers: HeadersArg | None = None,
    ) -> int:
        """Send one message; returns its size in bytes, or 0 when it cannot be sent.

        The message is queued for the reactor and `write` returns at once. Only when
        `OUTBOX_LIMIT` messages are already waiting does it block, up to `timeout` seconds
        (None: as long as the link is up), for the sender to catch up.

        With `confirm=true` it returns the size only once the broker accepted the message,
        waiting up to `timeout` seconds (None: 30 s); 0 otherwise, the reason in
        `stats().last_send_error`.

        `key` (Kafka: the message key, which also picks the partition; AMQP: the routing
        key) and `headers` go with the message where the transport carries them."""
        session = self._session
        message, size = self._outgoing(data, key, headers)
        if session.confirm:
            wait = None if timeout is None else write_timeout(timeout)
            return 0 if session.write_confirmed(message, wait) else size
        if session.state != "open":
            return 0
        wait = None if timeout is None else write_timeout(timeout)
        if session.pending() >= OUTBOX_LIMIT and not self._wait_for_room(wait):
            return 0
        session.enqueue(message)
        return size

    def _wait_for_room(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        session = self._session
        while session.pending() >= OUTBOX_LIMIT:
            if session.state != "open" or (deadline is not None and time.monotonic() > deadline):
                return False
            time.sleep(0.0005)
        return True

    def close(self) -> None:
        """Close the link and free its resources; safe to call repeatedly and from any thread."""
        if self._closed:
            return
        self._closed = True
        self._buffer.set_connected(False)  # release blocked readers right away
        if reactor.in_loop_thread():
            reactor.submit(self._session.aclose())
            return
        try:
            reactor.call(self._session.aclose(), CLOSE_TIMEOUT)
        except (TimeoutError, RuntimeError):
            pass

    # -- extras ----------------------------------------------------------------------------

    def ping(self, timeout: float = 10.0) -> float | None:
        """Measure one heartbeat round trip now (a WebSocket ping frame, or `pingText`).
        Returns seconds, or None when the link is down or no answer came within `timeout`."""
        try:
            return reactor.call(self._session.ping(timeout), timeout + 1.0)
        except (asyncio.TimeoutError, TimeoutError, ConnectionError, NotImplementedError):
            return None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._session.state
        return f"<Connection {redact(self._session.address.url)} {state}>"

    def __bool__(self) -> bool:  # FMZ: `if client:` tests that Dial succeeded
        return True


def session_stats(session: Session) -> Stats:
    """The `Stats` of a session; shared with `dial.aio`."""
    buffer = session.buffer
    now = time.monotonic()
    is_open = session.state == "open"
    return Stats(
        connected=is_open,
        messages_in=buffer.received,
        messages_out=session.messages_out,
        bytes_out=session.bytes_out,
        buffered=len(buffer),
        dropped=buffer.dropped,
        reconnects=session.reconnects,
        send_errors=session.send_errors,
        last_error=session.last_reason,
        bytes_in=session.bytes_in,
        last_message_age=now - buffer.last_at if buffer.last_at else None,
        last_rtt=session.last_rtt,
        heartbeats_missed=session.heartbeats_missed,
        stale_restarts=session.stale_restarts,
        uptime=now - session.link_started if is_open else None,
        on_connect_failures=session.on_connect_failures,
        last_send_error=session.last_send_error,
    )


def _close_abandoned(session: Session) -> None:
    if session.state != "closed":
        try:
            reactor.submit(session.aclose())
        except RuntimeError:  # interpreter shutting down, loop gone
            pass
