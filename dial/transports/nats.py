"""`nats://[user[:pwd]@]host[:4222]?topic=SUBJECT[&queue=GROUP]`

nats-py with its own reconnect turned off: a broken link is reported to the session once,
and `connect()` builds a new client and subscribes again. Publishing only appends to nats-py's
pending buffer (flushed by its flusher task), so `send` costs no round trip.

Received messages of the subscription go from nats-py's protocol parser straight to the
buffer (`_Client._process_msg`: no message object, queue or task switch per message; nats-py's
own callback path stays as the fallback).

Backpressure: when the ring buffer is past its high-water mark (`pause_reading`), nats-py's
read loop stops reading the socket (what the parser still had goes aside and comes first on
resume), so the backlog stays in the kernel's socket buffers and at the server. Core NATS
bounds that: a client that reads nothing for long enough is cut off by the server as a slow
consumer (its `write_deadline`, 10 s by default, or `max_pending`, 64 MB) and what the server
held for it is lost; Dial then reconnects (`reconnect=true`). While a confirmed write waits
for its answer, which comes on the same socket, reading goes on but deliveries still wait:
messages are held aside (up to `HELD_LIMIT`; beyond that the oldest are dropped and counted
in `dropped`).

`confirm=true` publishes through JetStream: the subject must be stored by a stream (checked at
connect), and a write is confirmed by the stream's publish acknowledgement. Core NATS has no
acknowledgement of its own (a flush only proves the server read the bytes, not that anyone
keeps them), so without a stream `Dial` fails with a reason saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from ..address import Address, split_host_port
from ..buffer import Message, text_message
from ..envelope import Record
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_target
from ._teardown import run_to_end
from .base import Receiver, StreamTransport

__all__ = ["NatsTransport"]

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them).
logging.getLogger("nats").addHandler(logging.NullHandler())

QUERY = frozenset({"topic", "queue"})
DEFAULT_PORT = 4222
CONNECT_TIMEOUT = 5  # seconds nats-py allows for one TCP connect + INFO/CONNECT exchange
CLOSE_TIMEOUT = 3.0
HELD_LIMIT = 65_536  # messages parsed while paused (or read for a confirmation), held aside


class _Client(NatsClient):
    """nats-py's client with a short path for the data subscription: its messages go from
    the protocol parser to `dial_sink` (payload bytes only) instead of through a message
    object, the subscription's queue and its task."""

    dial_sid = -1
    dial_sink: Callable[[bytes], None] | None = None

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        if sid == self.dial_sid:
            sink = self.dial_sink
            if sink is not None:
                sink(data)
                return
        await super()._process_msg(sid, subject, reply, data, headers)


class NatsTransport(StreamTransport):
    """Subscribes to subject `topic` (optionally in queue group `queue`) and publishes to it."""

    supported_options = frozenset({"confirm"})
    flow_control = True
    holds_backlog = True
    counts_bytes_in = True  # payload sizes, counted before decoding

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self._report_gone: Callable[[], Awaitable[None]] | None = None  # the link's on_gone
        self._gone_report: asyncio.Future[None] | None = None
        target = parse_target("nats", address.target, QUERY)
        shown = f"nats://{target.authority}"
        if target.path:
            raise AddressError(
                f"{shown}: unexpected path {target.path!r}; give the subject as ?topic=NAME"
            )
        self.host, self.port = split_host_port(target.authority, "nats", DEFAULT_PORT)
        subject = target.query.get("topic")
        if not subject:
            raise AddressError(f"{shown}: missing topic, e.g. nats://{target.authority}?topic=S")
        if any(ch.isspace() for ch in subject):
            raise AddressError(f"{shown}: topic {subject!r} contains whitespace")
        self.subject = subject
        self.queue = target.query.get("queue", "")
        if self.confirms and any(token in ("*", ">") for token in subject.split(".")):
            raise AddressError(
                f"{shown}: confirm=true publishes to the topic, and {subject!r} is a wildcard"
            )
        self.user, self.password = target.user, target.password
        self._client: Any = None
        self._receiver: Receiver | None = None
        self._js: Any = None  # JetStream context (confirm=true)
        self._stream = ""  # the stream that stores the subject (confirm=true)
        self._paused = False  # the ring buffer is full: hold deliveries and socket reads
        self._flowing: asyncio.Event | None = None  # set while the socket may be read
        self._delivering: asyncio.Event | None = None  # set while messages may go to the buffer
        self._unconfirmed: set[asyncio.Future[Any]] = set()  # this link's publishes in flight
        self._held: deque[Message] = deque()  # parsed while paused, not yet in the buffer
        self._deliver: Callable[[Message], None] | None = None  # the session's, kept

    def _credentials(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        if self.password is None:  # nats://TOKEN@host, the NATS URL convention
            return {"token": self.user}
        return {"user": self.user, "password": self.password}

    async def connect(self, receiver: Receiver) -> None:
        await self.close()
        where = f"nats://{self.host}:{self.port}"
        errors: list[BaseException] = []
        live = {"up": False}

        async def on_error(exc: BaseException) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):  # nats-py's queue overflowed
                receiver.discarded(1)
                return
            errors.append(exc)

        async def on_gone() -> None:
            if live["up"] and self._receiver is receiver:
                live["up"] = False
                cause = errors[-1] if errors else None
                why = describe(cause) if cause is not None else "connection closed"
                receiver.lost(f"nats connection lost: {why}")

        deliver = receiver.deliver
        self._flow_event()
        delivering = self._delivering
        assert delivering is not None

        async def on_message(msg: Any) -> None:  # nats-py's own path: the fallback
            if not delivering.is_set():  # the reader is behind: wait for it
                await delivering.wait()
            data = msg.data
            receiver.bytes_in += len(data)
            deliver(text_message(data))

        held = self._held  # kept across links: what an earlier one parsed still comes first
        self._deliver = deliver

        def sink(data: bytes) -> None:  # the short path, from the parser
            receiver.bytes_in += len(data)
            if self._paused or held:
                held.append(text_message(data))
                if len(held) > HELD_LIMIT:
                    held.popleft()
                    receiver.discarded(1)
                return
            deliver(text_message(data))

        client = _Client()
        try:
            await client.connect(
                servers=[f"nats://{self.host}:{self.port}"],
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                # a heartbeat bounds a connect attempt; nats-py's own timeout must not outlast it
                # (annotated int, but only ever handed to asyncio.wait_for)
                connect_timeout=self.attempt_limit(CONNECT_TIMEOUT),  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_gone,
                closed_cb=on_gone,
                name="dialkit",
                **self._credentials(),
            )
        except BaseException as exc:
            # nats-py leaves the socket of a failed first connect open (it closes it only to
            # reconnect): a connect into a blackhole would leak one per attempt.
            await _close_client(client)
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            cause: BaseException = exc
            if isinstance(exc, nats.errors.NoServersError) and errors:
                cause = errors[-1]
            raise ConnectError(f"{where}: {describe(cause)}") from None
        self._client = client
        self._receiver = receiver
        self._report_gone, self._gone_report = on_gone, None
        self._unconfirmed = set()
        self._update_flow()
        try:
            # the short path is keyed on the subscription's id, set before its first message
            expected = getattr(client, "_sid", None)
            if isinstance(expected, int):
                client.dial_sid, client.dial_sink = expected + 1, sink
            subscription = await client.subscribe(self.subject, queue=self.queue, cb=on_message)
            if getattr(subscription, "_id", None) != client.dial_sid:  # another nats-py
                client.dial_sid, client.dial_sink = -1, None
            await client.flush(timeout=CONNECT_TIMEOUT)  # the server has the SUB before we go
            if self.confirms:
                await self._find_stream(client, where)
        except asyncio.CancelledError:
            await self.close()
            raise
        except ConnectError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise ConnectError(
                f"{where}: subscribe to {self.subject!r} failed: {describe(exc)}"
            ) from None
        if client.last_error is not None:  # e.g. a permissions violation on SUB
            error = client.last_error
            await self.close()
            raise ConnectError(f"{where}: subscribe to {self.subject!r} refused: {describe(error)}")
        self._gate_reads(client)
        live["up"] = True
        if held and not self._paused:  # resumed while the link was down
            self.resume_reading()

    async def _find_stream(self, client: Any, where: str) -> None:
        """confirm=true: the JetStream stream that stores the subject, or a clear refusal."""
        try:
            self._stream = await client.jsm().find_stream_name_by_subject(self.subject)
        except nats.js.errors.NotFoundError:
            raise ConnectError(
                f"{where}: confirm=true needs a JetStream stream that stores subject "
                f"{self.subject!r} (core NATS does not acknowledge a publish), and none does; "
                f"create one, e.g. `nats stream add --subjects {self.subject!r}`"
            ) from None
        except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            raise ConnectError(
                f"{where}: confirm=true needs JetStream, which this server does not offer "
                "(start nats-server with -js)"
            ) from None
        self._js = client.jetstream()

    def _gate_reads(self, client: Any) -> None:
        """Make nats-py's read loop wait while reading is paused: the socket is then left
        unread (asyncio's own flow control stops it once the stream reader's buffer is
        full). Pausing nats-py's asyncio transport directly would not hold: its
        StreamReader resumes the transport whenever its own buffer drains."""
        transport = getattr(client, "_transport", None)
        read = getattr(transport, "read", None)
        if transport is None or read is None:  # another nats-py layout: deliveries still
            return  # wait, and nats-py's queue (bounded, overflow counted) takes the rest
        flowing = self._flow_event()

        async def gated_read(size: int) -> bytes:
            if not flowing.is_set():
                await flowing.wait()
            data: bytes = await read(size)
            return data

        transport.read = gated_read

    def _flow_event(self) -> asyncio.Event:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._delivering = asyncio.Event()
            self._update_flow()
        return self._flowing

    def _update_flow(self) -> None:
        """Deliveries wait while paused; the socket is read unless paused, and also while a
        confirmation is due (it comes on the same socket, behind what the reader has not
        taken yet: that is then held aside)."""
        flowing, delivering = self._flowing, self._delivering
        if flowing is None or delivering is None:
            return
        if not self._paused:
            delivering.set()
        else:
            delivering.clear()
        if not self._paused or self._unconfirmed:
            flowing.set()
        else:
            flowing.clear()

    def pause_reading(self) -> None:
        self._paused = True
        self._update_flow()

    def resume_reading(self) -> None:
        self._paused = False
        held, deliver = self._held, self._deliver
        if held and deliver is not None:  # what was parsed meanwhile goes first
            while held and not self._paused:
                deliver(held.popleft())
        self._update_flow()

    def _link_down(self) -> ConnectionError:
        """A send found the client disconnected: make sure the session hears of it too (nats-py
        may not have called back yet), so the link is redialled instead of staying "open"."""
        if self._report_gone is not None and self._gone_report is None:
            self._gone_report = asyncio.ensure_future(self._report_gone())
        return ConnectionError("nats link is down")

    async def send(self, data: Message) -> None:
        client = self._client
        if client is None or not client.is_connected:
            raise self._link_down()
        await client.publish(self.subject, data.encode() if isinstance(data, str) else data)

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[Any]:
        """Publish through JetStream; the future is done with the stream's PubAck (an
        exception: the stream refused it, or no stream answered)."""
        if isinstance(data, Record):  # record_fields is empty: write() refused it
            raise TypeError("nats:// messages carry no key or headers")
        client, js = self._client, self._js
        if client is None or js is None or not client.is_connected:
            raise self._link_down()
        body = data.encode() if isinstance(data, str) else data
        ack: asyncio.Future[Any] = await js.publish_async(self.subject, body, stream=self._stream)
        pending = self._unconfirmed
        pending.add(ack)
        self._update_flow()

        def answered(future: asyncio.Future[Any]) -> None:
            pending.discard(future)
            if pending is self._unconfirmed:
                self._update_flow()

        ack.add_done_callback(answered)
        return ack

    async def close(self) -> None:
        client, self._client = self._client, None
        self._receiver = None
        self._js = None
        unconfirmed, self._unconfirmed = self._unconfirmed, set()
        for future in unconfirmed:  # no answer can come on a closed client
            if not future.done():
                future.set_exception(ConnectionError("nats link closed before the answer"))
                future.exception()
        if client is not None:  # its read loop and subscription tasks are cancelled
            await _close_client(client)

    def describe(self) -> str:
        return f"topic={self.subject}" + (f" queue={self.queue}" if self.queue else "")


async def _close_client(client: Any) -> None:
    """Close a nats-py client within CLOSE_TIMEOUT, to the end even if the caller is
    cancelled meanwhile."""
    if not client.is_closed:
        await run_to_end(_quietly(client.close(), CLOSE_TIMEOUT))


async def _quietly(step: Awaitable[None], seconds: float) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except Exception:  # closing a broken link may fail: nothing else to do
        pass


def describe(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization failed (wrong user, password or token)"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server reachable"
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError):
        return os_reason(exc)
    text = str(exc).strip() or exc.__class__.__name__
    if "authorization violation" in text.lower():
        return "authorization failed (wrong user, password or token)"
    return text.removeprefix("nats: ")
