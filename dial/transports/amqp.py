"""`amqp://[user:pwd@]host[:5672]/[vhost]?queue=Q[&exchange=X&routing_key=K&durable=true&confirm=true]`

aio-pika's plain (non-robust) connection: a broken link is reported to the session once and
`connect()` declares and consumes again. aio-pika sets up the connection, channel, queue and
bindings; the two hot paths use its aiormq channel directly (one task per delivery instead
of two, no per-message wrapper objects).

Deliveries are acknowledged once they are in the ring buffer (one `multiple` ack per burst),
so what the broker handed to a link that died before acknowledging it goes back to the queue
and is delivered again: a consumer loses nothing with its link. After a loss a message can
therefore arrive twice, and one a dead link held comes after newer ones.

Backpressure: the consumer's prefetch (`basic.qos`) is `PREFETCH`, well under the ring
buffer's free room above its high-water mark. While the buffer is past that mark
(`pause_reading`) acknowledgements are held back, so the broker stops after `PREFETCH`
unacknowledged deliveries and keeps the rest of the queue: a slow reader loses nothing. The
socket itself is still read (heartbeats, publisher confirms). RabbitMQ closes a channel whose
delivery stays unacknowledged past its `consumer_timeout` (30 min by default): a reader that
stops that long gets a reconnect, and the unacknowledged deliveries again.

Publisher confirms (`confirm=true`, the `|confirm=true` option or the `confirm` query
parameter): every publish is acknowledged by the broker, and a write is confirmed by its ack.
Confirmed publishes are `mandatory`: a message no queue is bound to receive comes back
(basic.return) and its write fails with the broker's reason (312 NO_ROUTE), instead of being
"confirmed" into nowhere.

`write(data, key=..., headers=...)`: `key` is this message's routing key (instead of the
address's `routing_key`), `headers` its AMQP headers table (a value that is UTF-8 text goes as
a string, so a headers exchange matches it; other bytes as a byte array).

With `meta=true` each delivery is an `Envelope`: `topic` is its routing key, `redelivered`
the broker's flag, `timestamp` the `timestamp` property when the publisher set it, and
`headers` its headers table (values as bytes: text UTF-8 encoded, numbers and booleans as
their text) followed by what the broker and the basic properties say about it, under
`amqp-` names: `amqp-exchange` (the exchange it was published to, empty for the default
exchange), then those set of `amqp-content-type`, `amqp-content-encoding`,
`amqp-message-id`, `amqp-correlation-id`, `amqp-reply-to`, `amqp-type`, `amqp-app-id`,
`amqp-user-id`, `amqp-expiration`.

`ack=manual` (implies meta): nothing is acknowledged until `conn.ack(envelopes)`; an envelope's
token is the delivery tag of the channel that delivered it, so an ack for a message of an
earlier link is skipped (logged at debug; the broker requeued it with that link and delivers
it again, with `redelivered` set). An envelope another connection read (even one with the
same address) is refused with ArgumentError, before anything of that `ack()` is sent. At most
`PREFETCH` (400) deliveries are unacknowledged at a time: a reader that never acknowledges
stalls there, receiving nothing more until it acks (or its link is restarted).

A dead flow (the broker's side of the old connection still open, nothing arriving) leaves
the broker holding the old consumer, which it would deal every other message. With `ping`,
the AMQP heartbeat asked of the broker follows it (`ping + pong` rounded up, 1 to 60 s), so
the broker drops such a connection within about three heartbeats; and after a link the
heartbeat found dead, the next consumer has a higher priority (`x-priority`) than the old one
until the broker must have dropped it, so it gets every message meanwhile. It then consumes
at the normal priority again (other consumers of the queue share it round-robin again).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.connection import make_url
from aio_pika.exceptions import ChannelClosed
from aiormq.connection import TCPTransportFactory
from pamqp.commands import Basic
from yarl import URL

from ..address import Address, redact, split_host_port
from ..buffer import CAPACITY, Message, text_message
from ..envelope import Envelope, Headers, Record, received_now
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_bool, parse_target
from ._teardown import run_to_end
from .base import Receiver, StreamTransport, refuse_foreign

__all__ = ["AmqpTransport"]

log = logging.getLogger("dial")

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them, except what `_LinkLossFilter` below turns into one debug line).
logging.getLogger("aiormq").addHandler(logging.NullHandler())
logging.getLogger("aio_pika").addHandler(logging.NullHandler())

QUERY = frozenset({"queue", "exchange", "routing_key", "durable", "confirm"})
DEFAULT_PORT = 5672
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0  # s the broker gets to answer Connection.Close before the socket is dropped
ABORTED_CLOSE_TIMEOUT = 0.2  # s for the close of a link whose socket is already dropped
DRAIN_EVERY = 256
ACK_DELAY = 0.005  # s a delivery may wait for its ack, so that one ack covers a burst
ACK_EVERY = 256  # deliveries after which the ack goes at once
PREFETCH = CAPACITY // 5  # unacknowledged deliveries per consumer: what may come once paused
NEW_EXCHANGE_TYPE = aio_pika.ExchangeType.TOPIC
MAX_HEARTBEAT = 60  # s, the AMQP heartbeat without `ping` (aiormq's and RabbitMQ's default)
GHOST_HEARTBEATS = 3  # a broker drops a silent connection within about 2.5 heartbeats
MAX_ROUTING_KEY = 255  # bytes (AMQP shortstr)
#: basic properties reported as `amqp-` headers in envelopes, in this order
REPORTED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "reply_to",
    "type",
    "app_id",
    "user_id",
    "expiration",
)


class _LinkLossFilter(logging.Filter):
    """aiormq logs every lost link (a reset, an EOF) at WARNING with the full traceback, and
    a failed connect at ERROR; Dial already reports both as one reason (`last_error`, its own
    log). Such a record becomes one DEBUG line without the traceback, or is dropped when the
    logger is not enabled for DEBUG; anything else (a malformed frame) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG:
            return True
        error = _link_error(record)
        if error is None:
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        text = f"{record.getMessage()} ({error.__class__.__name__}: {error})"
        record.msg, record.args = text.replace("%", "%%"), ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def _link_error(record: logging.LogRecord) -> BaseException | None:
    """The connection error a record is about: its exc_info, or an exception argument."""
    candidates: list[object] = []
    if record.exc_info and record.exc_info[1] is not None:
        candidates.append(record.exc_info[1])
    elif isinstance(record.args, tuple):
        candidates.extend(record.args)
    for error in candidates:
        if isinstance(error, OSError | EOFError):  # AMQPConnectionError is a ConnectionError
            return error
    return None


logging.getLogger("aiormq.connection").addFilter(_LinkLossFilter())


class _Socket(TCPTransportFactory):
    """aiormq's plain TCP transport, remembering its socket: a link the heartbeat found dead
    is dropped at once (no Connection.Close to send, no Close-Ok to wait for), and a close
    the broker never answers ends by dropping it."""

    writer: asyncio.StreamWriter | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await super().create(url, **kwargs)
        self.writer = writer
        return reader, writer

    def abort(self) -> None:
        writer = self.writer
        if writer is not None:
            writer.transport.abort()


class _Acks:
    """Acknowledges deliveries once they are in the buffer: the channel's delivery tags only
    grow, so one `multiple` ack covers everything up to a tag. One task sends them, one at a
    time, at most every ACK_DELAY s (or every ACK_EVERY deliveries): a flood costs a few
    hundred acks a second, and a lost link leaves at most that much to be delivered twice."""

    def __init__(self, channel: Any, held: bool = False) -> None:
        self.channel = channel
        self.received = 0  # the highest delivery tag handed to the buffer
        self.acked = 0
        self.held = held  # the buffer is full: no acks, so the broker stops at the prefetch
        self.task: asyncio.Task[None] | None = None

    def note(self, tag: int) -> None:
        self.received = tag
        if self.task is None and not self.held:
            self.task = asyncio.ensure_future(self._send())

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        if self.task is None and self.acked < self.received:
            self.task = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self.acked < self.received and not self.held:
                if self.received - self.acked < ACK_EVERY:
                    await asyncio.sleep(ACK_DELAY)  # the rest of this burst first
                    if self.held:
                        break
                tag = self.received
                await self.channel.basic_ack(tag, multiple=True, wait=False)
                self.acked = tag
        except Exception:  # the link is gone: the broker requeues what was not acked
            pass
        finally:
            self.task = None

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def last(self) -> None:
        """Before a graceful close: acknowledge what is still unacknowledged (the frame goes
        out ahead of Connection.Close), so the next consumer does not get it again."""
        self.stop()
        if self.acked < self.received:
            try:
                ack = self.channel.basic_ack(self.received, multiple=True, wait=False)
                await asyncio.wait_for(ack, ABORTED_CLOSE_TIMEOUT)
            except Exception:  # the link is going anyway
                pass


class AmqpTransport(StreamTransport):
    """Consumes queue `queue`; publishes to `exchange` (default: the default exchange) with
    `routing_key` (default: the queue name), so by default a connection reads its own writes."""

    supported_options = frozenset({"confirm", "ack"})
    record_fields = frozenset({"key", "headers"})
    flow_control = True
    holds_backlog = True
    counts_bytes_in = True  # body sizes, counted before decoding

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        target = parse_target("amqp", address.target, QUERY)
        shown = f"amqp://{target.authority}"
        self.host, self.port = split_host_port(target.authority, "amqp", DEFAULT_PORT)
        self.vhost = target.path or "/"
        query = target.query
        queue = query.get("queue")
        if not queue:
            raise AddressError(f"{shown}: missing queue, e.g. amqp://{target.authority}/?queue=Q")
        if len(queue.encode()) > 255:
            raise AddressError(f"{shown}: queue name longer than 255 bytes")
        self.queue = queue
        self.exchange = query.get("exchange", "")
        self.routing_key = query.get("routing_key", queue)
        if len(self.routing_key.encode()) > 255:
            raise AddressError(f"{shown}: routing_key longer than 255 bytes")
        durable = query.get("durable")
        self.durable = None if durable is None else parse_bool("amqp", "durable", durable)
        self.confirm = (
            parse_bool("amqp", "confirm", query.get("confirm", "false")) or address.options.confirm
        )
        self.user = target.user if target.user is not None else "guest"
        self.password = target.password if target.password is not None else "guest"
        self.heartbeat = amqp_heartbeat(address)
        self.manual = address.options.ack == "manual"
        self.source = redact(address.url)
        self._mark = object()  # ack=manual tokens: (this connection's mark, link id, tag)
        self._link_id: object | None = None  # the current link's
        self._unacked: set[int] = set()  # ack=manual: delivery tags of this link not acked
        self._connection: Any = None
        self._socket: _Socket | None = None
        self._channel: Any = None
        self._underlay: Any = None
        self._receiver: Receiver | None = None
        self._unwaited = 0
        self._acks: _Acks | None = None
        self._held = False  # the buffer is full: acknowledgements wait
        self._aborted = False
        self._priority = 0  # x-priority of the current link's consumer
        self._ghosts: list[tuple[int, float]] = []  # (priority, monotonic time it must be gone)
        self._demoter: asyncio.Task[None] | None = None

    @property
    def confirms(self) -> bool:
        return self.confirm

    @property
    def where(self) -> str:
        vhost = "" if self.vhost == "/" else self.vhost
        return f"amqp://{self.host}:{self.port}/{vhost}"

    async def connect(self, receiver: Receiver) -> None:
        await self.close()
        # aio_pika.connect() in pieces: a connection that failed to open must still be
        # closed here, or its __del__ schedules a close() coroutine nobody awaits.
        url = make_url(
            host=self.host,
            port=self.port,
            login=self.user,
            password=self.password,
            virtualhost=self.vhost,
            heartbeat=self.heartbeat,
        )
        connection = aio_pika.Connection(url, client_properties={"connection_name": "dialkit"})
        socket = _Socket()
        connection.kwargs["transport_factory"] = socket  # handed on to aiormq.Connection
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT)
        except BaseException as exc:
            await _close_quietly(connection, socket, 0.0)
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            raise ConnectError(f"{self.where}: {describe(exc)}") from None
        self._connection, self._socket = connection, socket
        try:
            await self._declare_and_consume(connection, receiver)
        except BaseException:
            await self.close()
            raise
        self._receiver = receiver

        def on_close(_sender: Any, exc: BaseException | None = None) -> None:
            if self._receiver is receiver:
                self._receiver = None
                why = describe(exc) if exc is not None else "closed"
                receiver.lost(f"amqp connection lost: {why}")

        connection.close_callbacks.add(on_close)
        self._channel.close_callbacks.add(on_close)

    async def _declare_and_consume(self, connection: Any, receiver: Receiver) -> None:
        where = self.where
        try:
            durable = self.durable
            if durable is None:  # use an existing queue as it is; create a plain one otherwise
                exists = await _exists(connection, "queue", self.queue)
                durable = False
            else:
                exists = False
            channel = await connection.channel(publisher_confirms=self.confirm)
            self._channel = channel
            if exists:
                queue = await channel.declare_queue(self.queue, passive=True)
            else:
                queue = await channel.declare_queue(self.queue, durable=durable)
            if self.exchange:
                if not await _exists(connection, "exchange", self.exchange):
                    await channel.declare_exchange(
                        self.exchange, NEW_EXCHANGE_TYPE, durable=bool(self.durable)
                    )
                await queue.bind(self.exchange, routing_key=self.routing_key)
            underlay = await channel.get_underlay_channel()
            await underlay.basic_qos(prefetch_count=PREFETCH)
            on_delivery = self._delivery_handler(underlay, receiver)
            priority, ghosts_gone_in = self._consumer_priority()
            arguments = {"x-priority": priority} if priority else None
            consumed = await underlay.basic_consume(
                queue.name, on_delivery, no_ack=False, arguments=arguments
            )
        except asyncio.CancelledError:
            raise
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise ConnectError(
                f"{where}: queue {self.queue!r} already exists with other settings "
                f"(durable={self.durable}): {describe(exc)}"
            ) from None
        except Exception as exc:
            raise ConnectError(
                f"{where}: setting up queue {self.queue!r} failed: {describe(exc)}"
            ) from None
        self._underlay = underlay
        self._priority = priority
        if priority:
            self._demoter = asyncio.ensure_future(
                self._demote(underlay, queue.name, on_delivery, consumed, ghosts_gone_in)
            )

    def _delivery_handler(
        self, underlay: Any, receiver: Receiver
    ) -> Callable[[Any], Awaitable[None]]:
        """The consumer callback of a new link, chosen once: bare bodies acknowledged once
        buffered (the default), envelopes acknowledged the same way (`meta=true`), or
        envelopes left for `ack()` (`ack=manual`)."""
        deliver = receiver.deliver
        if self.manual:
            self._acks = None
            mark, link_id = self._mark, object()
            self._link_id = link_id
            unacked = self._unacked = set()
            source = self.source

            async def on_manual(message: Any) -> None:
                body = message.body
                receiver.bytes_in += len(body)
                tag = message.delivery.delivery_tag
                unacked.add(tag)
                deliver(_envelope(message, source, (mark, link_id, tag)))

            return on_manual
        acks = self._acks = _Acks(underlay, self._held)
        note = acks.note
        if self.meta:
            source = self.source

            async def on_enveloped(message: Any) -> None:
                body = message.body
                receiver.bytes_in += len(body)
                deliver(_envelope(message, source, None))
                note(message.delivery.delivery_tag)

            return on_enveloped

        async def on_delivery(message: Any) -> None:
            body = message.body
            receiver.bytes_in += len(body)
            deliver(text_message(body))
            note(message.delivery.delivery_tag)

        return on_delivery

    async def ack(self, envelopes: Sequence[Envelope]) -> None:
        """`ack=manual`: acknowledge what these envelopes delivered on the current link;
        envelopes of an earlier link (requeued with it) and repeats are skipped, envelopes
        of another connection refused (ArgumentError, before anything is acknowledged). One
        `multiple` ack covers the oldest run of tags, single acks the rest."""
        refuse_foreign(
            envelopes,
            source=self.source,
            mark=self._mark,
            size=3,
            reader=f"amqp:// connection (queue {self.queue})",
        )
        underlay, link_id, unacked = self._underlay, self._link_id, self._unacked
        if underlay is None or link_id is None:
            raise ConnectionError("amqp link is down")
        tags = {e.token[2] for e in envelopes if e.token[1] is link_id} & unacked
        if len(tags) < len(envelopes):  # requeued with their link, or acknowledged already
            log.debug(
                "%s: ack() skipped %d envelope(s) of an earlier link or acknowledged already",
                self.source,
                len(envelopes) - len(tags),
            )
        if not tags:
            return
        unacked -= tags
        oldest_left = min(unacked) if unacked else None
        covered = [tag for tag in tags if oldest_left is None or tag < oldest_left]
        try:
            if covered:
                await underlay.basic_ack(max(covered), multiple=True, wait=False)
            for tag in sorted(tags.difference(covered)):
                await underlay.basic_ack(tag, multiple=False, wait=False)
        except aiormq.exceptions.AMQPError as exc:  # the channel closed under us
            raise ConnectionError(f"amqp link is down: {describe(exc)}") from None

    def _consumer_priority(self) -> tuple[int, float]:
        """The priority for a new consumer: above every consumer of an earlier link that the
        broker may still hold (0 when none), and the seconds until it must have dropped them."""
        now = time.monotonic()
        self._ghosts = [(p, gone) for p, gone in self._ghosts if gone > now]
        if not self._ghosts:
            return 0, 0.0
        return 1 + max(p for p, _ in self._ghosts), max(g for _, g in self._ghosts) - now

    async def _demote(
        self, underlay: Any, queue: str, on_delivery: Any, consumed: Any, delay: float
    ) -> None:
        """Consume at the normal priority again once the broker must have dropped the old
        consumers: a new consumer first, then cancel the prioritised one. Both deliver on
        this channel, in order, so nothing is lost or reordered on the way."""
        await asyncio.sleep(delay)
        try:
            await underlay.basic_consume(queue, on_delivery, no_ack=False)
            self._priority = 0
            await underlay.basic_cancel(consumed.consumer_tag)
        except Exception:  # the link is going: its loss is reported by its close callback
            pass

    def abort(self) -> None:
        self._receiver = None
        self._underlay = None
        self._aborted = True
        if self._connection is not None:
            # The broker hears nothing of a dead flow until its own heartbeat runs out, and
            # deals messages to this link's consumer until then: outrank it meanwhile.
            heartbeat = self.heartbeat or MAX_HEARTBEAT
            gone = time.monotonic() + GHOST_HEARTBEATS * heartbeat + 1.0
            self._ghosts.append((self._priority, gone))
        if self._socket is not None:
            self._socket.abort()

    def pause_reading(self) -> None:
        self._held = True
        if self._acks is not None:
            self._acks.hold()

    def resume_reading(self) -> None:
        self._held = False
        if self._acks is not None:
            self._acks.release()

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[Any]:
        """Publish on the confirming channel; the future is done with the broker's ack. The
        frames are queued in order now (the task's first step, before any other send runs);
        the task then waits for the ack."""
        underlay = self._underlay
        if underlay is None:
            raise ConnectionError("amqp link is down")
        body, routing_key, properties = self._outgoing(data)
        publish = asyncio.ensure_future(
            self._publish_confirmed(underlay, body, routing_key, properties)
        )
        await asyncio.sleep(0)  # let it queue its frames before the next message's
        return publish

    async def _publish_confirmed(
        self, underlay: Any, body: bytes, routing_key: str, properties: Any, wait: bool = False
    ) -> None:
        try:
            reply = await underlay.basic_publish(
                body,
                exchange=self.exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,  # an unroutable message comes back instead of being "confirmed"
                wait=wait,
            )
        except aiormq.exceptions.PublishError as exc:  # a channel with on_return_raises
            reply = exc.message
        if isinstance(reply, Basic.Ack):
            return
        returned = getattr(reply, "delivery", None)
        if isinstance(returned, Basic.Return):
            exchange = f"exchange {self.exchange!r}" if self.exchange else "the default exchange"
            raise ConnectionError(
                f"broker returned the message: {returned.reply_code} {returned.reply_text} "
                f"(no queue bound for routing key {routing_key!r} on {exchange})"
            )
        raise ConnectionError(f"broker did not confirm the message ({reply!r})")

    def _outgoing(self, data: Message | Record) -> tuple[bytes, str, Any]:
        """(body, routing key, properties or None) of a message to publish."""
        if not isinstance(data, Record):
            return (data.encode() if isinstance(data, str) else data), self.routing_key, None
        value = data.value
        body = value.encode() if isinstance(value, str) else value
        routing_key = self.routing_key if data.key is None else _routing_key(data.key)
        properties = None
        if data.headers:
            properties = Basic.Properties(delivery_mode=1, headers=_header_table(data.headers))
        return body, routing_key, properties

    async def send(self, data: Message) -> None:
        await self._publish(data.encode() if isinstance(data, str) else data, self.routing_key)

    async def send_record(self, record: Record) -> None:
        await self._publish(*self._outgoing(record))

    async def _publish(self, body: bytes, routing_key: str, properties: Any = None) -> None:
        underlay = self._underlay
        if underlay is None:
            raise ConnectionError("amqp link is down")
        if self.confirm:  # one broker round trip per message: the safe, slow mode
            await self._publish_confirmed(underlay, body, routing_key, properties, wait=True)
            return
        # Hand the frames to aiormq's writer task; wait for the socket only every
        # DRAIN_EVERY messages, which bounds the writer's queue without a wait per message.
        self._unwaited += 1
        wait = self._unwaited >= DRAIN_EVERY
        if wait:
            self._unwaited = 0
        await underlay.basic_publish(
            body, exchange=self.exchange, routing_key=routing_key, properties=properties, wait=wait
        )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        socket, self._socket = self._socket, None
        aborted, self._aborted = self._aborted, False
        acks, self._acks = self._acks, None
        demoter, self._demoter = self._demoter, None
        self._channel = self._underlay = None
        self._receiver = None
        self._link_id = None
        self._unacked = set()
        if demoter is not None:
            demoter.cancel()
        if acks is not None:
            acks.stop()
        if connection is not None:
            if aborted:
                await _close_quietly(connection, socket, ABORTED_CLOSE_TIMEOUT)
            else:
                await _close_quietly(connection, socket, CLOSE_TIMEOUT, acks)

    def describe(self) -> str:
        return f"queue={self.queue}" + (f" exchange={self.exchange}" if self.exchange else "")


def _routing_key(key: bytes) -> str:
    """A `write(key=...)` as a routing key: UTF-8 text of at most 255 bytes."""
    if len(key) > MAX_ROUTING_KEY:
        raise ValueError(f"routing key longer than {MAX_ROUTING_KEY} bytes")
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise ValueError("routing key is not UTF-8 text") from None


def _header_table(headers: Headers) -> dict[str, Any]:
    """`write(headers=...)` as an AMQP table: text values as strings (a headers exchange
    compares them with its string bindings), other bytes as byte arrays."""
    table: dict[str, Any] = {}
    for name, value in headers:
        try:
            table[name] = value.decode()
        except UnicodeDecodeError:
            table[name] = bytearray(value)
    return table


def _envelope(message: Any, source: str, token: Any) -> Envelope:
    """One delivery (aiormq's DeliveredMessage) as an `Envelope`, see the module doc."""
    delivery, properties = message.delivery, message.header.properties
    headers = [
        (str(name), _header_bytes(value)) for name, value in (properties.headers or {}).items()
    ]
    headers.append(("amqp-exchange", delivery.exchange.encode()))
    for name in REPORTED_PROPERTIES:
        value = getattr(properties, name, None)
        if value is not None:
            headers.append((f"amqp-{name.replace('_', '-')}", str(value).encode()))
    stamp = properties.timestamp
    return Envelope(
        text_message(message.body),
        source,
        received_now(),
        topic=delivery.routing_key,
        headers=tuple(headers),
        timestamp=_seconds(stamp) if stamp is not None else None,
        redelivered=bool(delivery.redelivered),
        token=token,
    )


def _header_bytes(value: Any) -> bytes:
    """An AMQP table value as header bytes: text UTF-8 encoded, bytes as they are, booleans
    `true`/`false`, a timestamp ISO 8601, nested tables and arrays as their repr."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, datetime.datetime):
        return value.isoformat().encode()
    if value is None:
        return b""
    return str(value).encode("utf-8", "surrogateescape")


def _seconds(stamp: Any) -> float | None:
    """The `timestamp` property (pamqp gives an aware UTC datetime) as epoch seconds."""
    if isinstance(stamp, datetime.datetime):
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=datetime.timezone.utc)
        return float(stamp.timestamp())
    if isinstance(stamp, int | float):
        return float(stamp)
    return None


def amqp_heartbeat(address: Address) -> int | None:
    """The AMQP heartbeat (whole seconds) to ask for: with `ping`, about the Dial heartbeat
    deadline `ping + pong`, 1 to 60 s; None (the library default, 60 s) without it."""
    options = address.options
    if options.ping is None:
        return None
    deadline = options.ping + (options.pong or options.ping)
    return min(MAX_HEARTBEAT, max(1, math.ceil(deadline)))


async def _close_quietly(
    connection: Any, socket: _Socket | None, seconds: float, acks: _Acks | None = None
) -> None:
    """Close `connection`: the broker gets `seconds` to answer Connection.Close, then the
    socket is dropped and the close ends at once. A cancelled caller does not cut it short
    (`run_to_end`), and the connection ends marked closed in any case: an aio-pika Connection
    left open schedules `close()` from its `__del__` on whatever loop collects it."""
    if not connection.is_closed:
        closing = _close(connection, socket, seconds, acks)
        await run_to_end(closing, socket.abort if socket else None)


async def _close(
    connection: Any, socket: _Socket | None, seconds: float, acks: _Acks | None
) -> None:
    if acks is not None:
        await acks.last()
    closing = asyncio.ensure_future(connection.close())
    try:
        if seconds > 0:
            await asyncio.wait({closing}, timeout=seconds)
        if not closing.done():
            if socket is not None:
                socket.abort()
            await asyncio.wait({closing}, timeout=ABORTED_CLOSE_TIMEOUT)
    finally:
        if not closing.done():
            closing.cancel()
        elif not closing.cancelled():
            closing.exception()  # retrieved: closing a broken link may fail, nothing to do
        if not connection._closed.done():  # private; aio-pika has no public way to mark it
            connection._closed.set_result(True)


async def _exists(connection: Any, kind: str, name: str) -> bool:
    """Passive declare on a throwaway channel (a missing entity closes the channel)."""
    probe = await connection.channel(publisher_confirms=False)
    try:
        if kind == "queue":
            await probe.declare_queue(name, passive=True)
        else:
            await probe.get_exchange(name, ensure=True)
        return True
    except (ChannelClosed, aiormq.exceptions.ChannelNotFoundEntity):
        return False
    finally:
        if not probe.is_closed:
            await probe.close()


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return "authentication failed (wrong user or password)"
    if isinstance(exc, aiormq.exceptions.ConnectionNotAllowed):
        return "access to the virtual host refused (missing or not permitted)"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        return "the broker refused the virtual host (missing, or no permission for this user)"
    if isinstance(exc, OSError):
        return os_reason(exc)
    if isinstance(exc, aiormq.exceptions.AMQPError) and exc.args:
        frame = exc.args[0]
        text = getattr(frame, "reply_text", None) or str(frame)
        return str(text)
    return str(exc) or exc.__class__.__name__
