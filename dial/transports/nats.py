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
connect), and a write is confirmed by the stream's publish acknowledgement, which must come
within `PUBACK_TIMEOUT` s (else the write fails). Core NATS has no acknowledgement of its own
(a flush only proves the server read the bytes, not that anyone keeps them), so without a
stream `Dial` fails with a reason saying so.

`meta=true`: every message arrives as an `Envelope` with topic = the message's own subject
(useful with a wildcard topic) and its NATS headers as (name, bytes) pairs; kind "text".
`write(data, headers={...})` publishes with headers (NATS has no message key); header values
must be UTF-8 text.

`stream=NAME` reads and writes through JetStream (see `dial.transports.jetstream`):
`nats://host?topic=S|stream=ORDERS&durable=worker&deliver=all`. Reading pulls from a durable
(or ephemeral) consumer only while the reader keeps up, so the stream holds the backlog and
nothing is dropped; `ack=auto` acknowledges each message once it is in the buffer,
`ack=manual` only what `conn.ack()` is given (the rest is delivered again after the
consumer's ack wait, at once after a restart: close() returns unacknowledged messages to
the stream). A reader that never acknowledges stalls once the consumer's MaxAckPending
(1000 by default on the server) messages are out unacknowledged: nothing new comes until it
acks (after the ack wait the same ones come again). `ack()` refuses envelopes another
connection read (even one with the same address) with ArgumentError, before it sends any.
The envelope's offset is the stream sequence, timestamp the time the stream stored it,
redelivered whether it was delivered before. A stream is never created by Dial.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from ..address import Address, redact, split_host_port
from ..buffer import Item, Message, text_message
from ..envelope import Envelope, Headers, Record, received_now
from ..errors import AddressError, ConnectError
from . import jetstream
from ._query import os_reason, parse_target
from ._teardown import run_to_end
from .base import Receiver, StreamTransport, refuse_foreign

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
PUBACK_TIMEOUT = 5.0  # seconds a confirmed write waits for the stream's acknowledgement
# JetStream: deliver this message again in 1 s, when the server has dropped this link's pull
# request (given back at once, it raced to that request and was lost until the ack wait)
NAK = b'-NAK {"delay": 1000000000}'


#: the short path's sink: (subject, reply, payload, raw headers); an async one is awaited
Sink = Callable[[bytes, bytes, bytes, bytes], Awaitable[None] | None]


class _Client(NatsClient):
    """nats-py's client with a short path for the data subscription: its messages go from
    the protocol parser to `dial_sink` instead of through a message object, the
    subscription's queue and its task. The sink is chosen once per link: bare payloads, or
    envelopes (meta=true) return None; JetStream's (stream=) is async, as it acknowledges."""

    dial_sid = -1
    dial_sink: Sink | None = None

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        if sid == self.dial_sid:
            sink = self.dial_sink
            if sink is not None:
                pending = sink(subject, reply, data, headers)
                if pending is not None:
                    await pending
                return
        await super()._process_msg(sid, subject, reply, data, headers)


class NatsTransport(StreamTransport):
    """Subscribes to subject `topic` (optionally in queue group `queue`) and publishes to it;
    with `stream=` reads it from a JetStream consumer instead."""

    supported_options = frozenset({"confirm", "stream", "durable", "deliver", "ack"})
    record_fields = frozenset({"headers"})
    flow_control = True
    holds_backlog = True
    counts_bytes_in = True  # payload sizes, counted before decoding

    def __init__(self, address: Address) -> None:
        options = address.options
        if options.ack == "manual" and options.stream is None:
            raise AddressError(
                "option ack=manual: core NATS has no acknowledgements; read through "
                "JetStream with stream=NAME (and durable=NAME to keep the position)"
            )
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
        self.stream = options.stream  # JetStream: read and write through this stream
        self.durable = options.durable
        if self.stream is not None and self.queue:
            raise AddressError(
                f"{shown}: queue= groups core NATS subscribers; with stream= connections "
                "that share one durable=NAME share its messages instead"
            )
        self._wildcard = any(token in ("*", ">") for token in subject.split("."))
        if self.confirms and self._wildcard:
            raise AddressError(
                f"{shown}: confirm=true publishes to the topic, and {subject!r} is a wildcard"
            )
        self.user, self.password = target.user, target.password
        self._source = redact(address.url)  # Envelope.source
        self._mark = object()  # this connection's, in its envelopes' tokens: (mark, ack subject)
        self._client: Any = None
        self._receiver: Receiver | None = None
        self._js: Any = None  # JetStream context (confirm=true)
        self._stream = ""  # the stream that stores the subject (confirm=true)
        self._paused = False  # the ring buffer is full: hold deliveries and socket reads
        self._flowing: asyncio.Event | None = None  # set while the socket may be read
        self._delivering: asyncio.Event | None = None  # set while messages may go to the buffer
        self._unconfirmed: set[asyncio.Future[Any]] = set()  # this link's publishes in flight
        self._held: deque[Item] = deque()  # parsed while paused, not yet in the buffer
        self._deliver: Callable[[Item], None] | None = None  # the session's, kept
        # JetStream reading (stream=)
        self._puller: jetstream.Puller | None = None
        self._pull_task: asyncio.Task[None] | None = None
        self._consumer = ""  # this link's consumer (the durable, or an ephemeral's name)
        self._resume_at = 0  # ephemeral: the stream sequence after the last one received
        self._unacked: dict[int, bytes] = {}  # ack=manual: stream sequence -> ack subject
        self._inbox: Any = None  # this link's pull inbox subscription

    def _credentials(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        if self.password is None:  # nats://TOKEN@host, the NATS URL convention
            return {"token": self.user}
        return {"user": self.user, "password": self.password}

    def write_refusal(self) -> str | None:
        if self._wildcard:
            return f"topic {self.subject!r} is a wildcard: a NATS message goes to one subject"
        return None

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

        def lose(reason: str) -> None:
            if live["up"] and self._receiver is receiver:
                live["up"] = False
                receiver.lost(reason)

        async def on_gone() -> None:
            cause = errors[-1] if errors else None
            why = describe(cause) if cause is not None else "connection closed"
            lose(f"nats connection lost: {why}")

        self._deliver = receiver.deliver
        self._flow_event()
        client: Any = _Client()
        sink: Sink
        if self.stream is not None:
            sink = self._jetstream_sink(receiver, lose)
        elif self.meta:
            sink = self._meta_sink(receiver)
        else:
            sink = self._plain_sink(receiver)
        try:
            await client.connect(
                servers=[f"nats://{self.host}:{self.port}"],
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                # a heartbeat bounds a connect attempt; nats-py's own timeout must not outlast it
                # (annotated int, but only ever handed to asyncio.wait_for)
                connect_timeout=self.attempt_limit(CONNECT_TIMEOUT),
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
            if self.stream is not None:
                await self._open_jetstream(client, sink, where)
            else:
                await self._subscribe(client, sink, receiver)
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
        if self._puller is not None:
            self._pull_task = asyncio.ensure_future(self._puller.run())
        else:
            self._gate_reads(client)
        live["up"] = True
        if self._held and not self._paused:  # resumed while the link was down
            self.resume_reading()

    async def _subscribe(self, client: Any, sink: Sink, receiver: Receiver) -> None:
        """Core NATS: subscribe to the subject, its messages going the short path."""
        # the short path is keyed on the subscription's id, set before its first message
        expected = getattr(client, "_sid", None)
        if isinstance(expected, int):
            client.dial_sid, client.dial_sink = expected + 1, sink
        subscription = await client.subscribe(
            self.subject, queue=self.queue, cb=self._fallback(receiver)
        )
        if getattr(subscription, "_id", None) != client.dial_sid:  # another nats-py
            client.dial_sid, client.dial_sink = -1, None
        await client.flush(timeout=CONNECT_TIMEOUT)  # the server has the SUB before we go

    def _fallback(self, receiver: Receiver) -> Callable[[Any], Awaitable[None]]:
        """nats-py's own callback path, for a nats-py whose ids the short path cannot key on."""
        deliver, delivering = receiver.deliver, self._delivering
        assert delivering is not None
        meta, source = self.meta, self._source

        async def on_message(msg: Any) -> None:
            if not delivering.is_set():  # the reader is behind: wait for it
                await delivering.wait()
            data = msg.data
            receiver.bytes_in += len(data)
            if not meta:
                deliver(text_message(data))
                return
            headers = tuple((k, v.encode()) for k, v in (msg.headers or {}).items())
            deliver(
                Envelope(
                    text_message(data), source, received_now(), "text", msg.subject, headers=headers
                )
            )

        return on_message

    def _plain_sink(self, receiver: Receiver) -> Sink:
        """The short path for bare messages, from the parser."""
        held = self._held  # kept across links: what an earlier one parsed still comes first
        deliver = receiver.deliver

        def sink(_subject: bytes, _reply: bytes, data: bytes, _headers: bytes) -> None:
            receiver.bytes_in += len(data)
            if self._paused or held:
                held.append(text_message(data))
                if len(held) > HELD_LIMIT:
                    held.popleft()
                    receiver.discarded(1)
                return
            deliver(text_message(data))

        return sink

    def _meta_sink(self, receiver: Receiver) -> Sink:
        """The short path with envelopes (meta=true): subject and headers kept."""
        held, deliver, source = self._held, receiver.deliver, self._source

        def sink(subject: bytes, _reply: bytes, data: bytes, headers: bytes) -> None:
            receiver.bytes_in += len(data)
            envelope = Envelope(
                text_message(data),
                source,
                received_now(),
                "text",
                subject.decode("utf-8", "surrogateescape"),
                headers=jetstream.parse_headers(headers) if headers else (),
            )
            if self._paused or held:
                held.append(envelope)
                if len(held) > HELD_LIMIT:
                    held.popleft()
                    receiver.discarded(1)
                return
            deliver(envelope)

        return sink

    # -- JetStream (stream=) ------------------------------------------------------------------

    async def _open_jetstream(self, client: Any, sink: Sink, where: str) -> None:
        """Find the stream, open the consumer, subscribe the pull inbox (short path only)."""
        assert self.stream is not None
        resume_at = min(self._unacked, default=self._resume_at)
        self._consumer = await jetstream.open_consumer(
            client,
            where,
            self.stream,
            self.subject,
            self.durable,
            self.address.options.deliver,
            resume_at,
        )
        inbox = client.new_inbox()
        expected = getattr(client, "_sid", None)
        if isinstance(expected, int):
            client.dial_sid, client.dial_sink = expected + 1, sink
        subscription = await client.subscribe(inbox)
        if getattr(subscription, "_id", None) != client.dial_sid:
            raise ConnectError(f"{where}: stream= needs nats-py 2.x (its subscription ids)")
        self._inbox = subscription
        await client.flush(timeout=CONNECT_TIMEOUT)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._consumer}"
        request = jetstream.pull_request()

        async def ask() -> None:
            if client.is_connected:
                await client.publish(next_subject, request, reply=inbox)

        self._puller = jetstream.Puller(ask)
        self._puller.paused = self._paused
        self._stream, self._js = self.stream, client.jetstream()

    def _jetstream_sink(self, receiver: Receiver, lose: Callable[[str], None]) -> Sink:
        """Stream messages from the pull inbox into the buffer; acknowledged at once
        (ack=auto) or kept for `ack()` (ack=manual). Inline statuses end a pull request."""
        deliver, source, meta, mark = receiver.deliver, self._source, self.meta, self._mark
        manual = self.address.options.ack == "manual"
        unacked = self._unacked

        async def sink(subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
            puller = self._puller
            if headers and (status := jetstream.pull_status(headers)) is not None:
                if puller is not None:
                    self._pull_status(puller, status, lose)
                return
            if puller is not None:
                puller.received()
            receiver.bytes_in += len(data)
            sequence, delivered, stamp = jetstream.ack_metadata(reply)
            if sequence >= self._resume_at:  # a redelivery of an older one must not move it back
                self._resume_at = sequence + 1
            value = text_message(data)
            if meta:
                deliver(
                    Envelope(
                        value,
                        source,
                        received_now(),
                        "text",
                        subject.decode("utf-8", "surrogateescape"),
                        offset=sequence,
                        headers=jetstream.parse_headers(headers) if headers else (),
                        timestamp=stamp / 1e9,
                        redelivered=delivered > 1,
                        token=(mark, reply),
                    )
                )
            else:
                deliver(value)
            if manual:
                unacked[sequence] = reply
            else:  # in the buffer: the stream may forget it
                client = self._client
                if client is not None and client.is_connected:
                    await client.publish(reply.decode())

        return sink

    def _pull_status(
        self, puller: jetstream.Puller, status: tuple[int, str], lose: Callable[[str], None]
    ) -> None:
        code, text = status
        if code == 100:  # idle heartbeat
            return
        if code == 503 or (code == 409 and "consumer" in text.lower()):
            consumer = f"JetStream consumer {self._consumer!r} of stream {self.stream!r}"
            lose(f"nats: {consumer} is gone ({code} {text})")
            return
        puller.request_over()  # 404 no messages, 408 expired, 409 e.g. max waiting

    async def ack(self, envelopes: Sequence[Envelope]) -> None:
        """ack=manual: acknowledge these messages, and return once the server has them."""
        refuse_foreign(
            envelopes,
            source=self._source,
            mark=self._mark,
            size=2,
            reader=f"nats:// connection (topic {self.subject}, stream {self.stream})",
        )
        client = self._client
        if client is None or not client.is_connected:
            raise self._link_down()
        unacked = self._unacked
        for envelope in envelopes:
            reply = envelope.token[1]
            await client.publish(reply.decode())
            if envelope.offset is not None and unacked.get(envelope.offset) == reply:
                del unacked[envelope.offset]
        await client.flush(timeout=CONNECT_TIMEOUT)

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
        if self._puller is not None:  # JetStream: no more pull requests; the stream waits
            self._puller.pause()
            return
        self._update_flow()

    def resume_reading(self) -> None:
        self._paused = False
        if self._puller is not None:
            self._puller.resume()
            return
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

    async def send_record(self, record: Record) -> None:
        """Publish with headers (`write(data, headers=...)`)."""
        client = self._client
        if client is None or not client.is_connected:
            raise self._link_down()
        value = record.value
        body = value.encode() if isinstance(value, str) else value
        headers = _outgoing_headers(record.headers)
        await client.publish(self.subject, body, headers=headers)

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[Any]:
        """Publish through JetStream; the future is done with the stream's PubAck (an
        exception: the stream refused it, no stream answered, or no answer came within
        PUBACK_TIMEOUT s)."""
        client, js = self._client, self._js
        if client is None or js is None or not client.is_connected:
            raise self._link_down()
        headers = None
        if isinstance(data, Record):
            headers, data = _outgoing_headers(data.headers), data.value
        body = data.encode() if isinstance(data, str) else data
        ack: asyncio.Future[Any] = await js.publish_async(
            self.subject, body, stream=self._stream, headers=headers
        )
        pending = self._unconfirmed
        pending.add(ack)
        self._update_flow()
        timer = asyncio.get_running_loop().call_later(PUBACK_TIMEOUT, _never_answered, ack)

        def answered(future: asyncio.Future[Any]) -> None:
            timer.cancel()
            pending.discard(future)
            if pending is self._unconfirmed:
                self._update_flow()

        ack.add_done_callback(answered)
        return ack

    async def close(self) -> None:
        client, self._client = self._client, None
        self._receiver = None
        self._js = None
        puller, self._puller = self._puller, None
        task, self._pull_task = self._pull_task, None
        if task is not None:
            task.cancel()
        unconfirmed, self._unconfirmed = self._unconfirmed, set()
        for future in unconfirmed:  # no answer can come on a closed client
            if not future.done():
                future.set_exception(ConnectionError("nats link closed before the answer"))
                future.exception()
        if client is not None:  # its read loop and subscription tasks are cancelled
            goodbye = None
            if puller is not None and client.is_connected:
                goodbye = self._goodbye(client)
            await _close_client(client, goodbye)

    def _goodbye(self, client: Any) -> Awaitable[None]:
        """What a JetStream reader tells the server before it leaves: unacknowledged
        messages (ack=manual) go back to the stream now rather than after the ack wait, and
        an ephemeral consumer is deleted."""
        if self._unacked:  # they come again: a new ephemeral starts at the oldest of them
            self._resume_at = min(self._unacked)
        unacked, self._unacked = list(self._unacked.values()), {}
        ephemeral = self._consumer if self.durable is None else ""
        stream, inbox, self._inbox = self.stream, self._inbox, None

        async def goodbye() -> None:
            if inbox is not None:  # first: what is given back must not go to this link
                await inbox.unsubscribe()
                await client.flush(timeout=CLOSE_TIMEOUT)
            for reply in unacked:
                await client.publish(reply.decode(), NAK)
            if ephemeral and stream is not None:
                await client.jsm().delete_consumer(stream, ephemeral)
            await client.flush(timeout=CLOSE_TIMEOUT)

        return goodbye()

    def describe(self) -> str:
        if self.stream is not None:
            return f"topic={self.subject} stream={self.stream}" + (
                f" durable={self.durable}" if self.durable else ""
            )
        return f"topic={self.subject}" + (f" queue={self.queue}" if self.queue else "")


def _outgoing_headers(headers: Headers) -> Any:
    """Headers for nats-py's publish (None when there are none)."""
    return jetstream.HeaderPairs(headers) if headers else None


class PubAckMissing(Exception):
    """No stream answered a confirmed publish in time (a stream deleted after Dial, a
    JetStream that went away): the write counts as failed."""


def _never_answered(ack: asyncio.Future[Any]) -> None:
    if not ack.done():
        ack.set_exception(PubAckMissing(f"no acknowledgement within {PUBACK_TIMEOUT:g} s"))


async def _close_client(client: Any, goodbye: Awaitable[None] | None = None) -> None:
    """Close a nats-py client within CLOSE_TIMEOUT (after `goodbye`, bounded the same way),
    to the end even if the caller is cancelled meanwhile."""
    if not client.is_closed:
        await run_to_end(_farewell(client, goodbye))


async def _farewell(client: Any, goodbye: Awaitable[None] | None) -> None:
    if goodbye is not None:
        await _quietly(goodbye, CLOSE_TIMEOUT)
    await _quietly(client.close(), CLOSE_TIMEOUT)


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
