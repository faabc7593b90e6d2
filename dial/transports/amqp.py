"""`amqp://[user:pwd@]host[:5672]/[vhost]?queue=Q[&exchange=X&routing_key=K&durable=true&confirm=true]`

aio-pika's plain (non-robust) connection: a broken link is reported to the session once and
`connect()` declares and consumes again. aio-pika sets up the connection, channel, queue and
bindings; the two hot paths use its aiormq channel directly (one task per delivery instead
of two, no per-message wrapper objects). Deliveries are consumed with `no_ack`: the broker
hands them over once, and the ring buffer decides what a slow reader still sees.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.connection import make_url
from aio_pika.exceptions import ChannelClosed
from pamqp.commands import Basic

from ..address import Address, split_host_port
from ..buffer import Message, text_message
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_bool, parse_target
from .base import Receiver, StreamTransport

__all__ = ["AmqpTransport"]

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them).
logging.getLogger("aiormq").addHandler(logging.NullHandler())
logging.getLogger("aio_pika").addHandler(logging.NullHandler())

QUERY = frozenset({"queue", "exchange", "routing_key", "durable", "confirm"})
DEFAULT_PORT = 5672
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0
DRAIN_EVERY = 256
NEW_EXCHANGE_TYPE = aio_pika.ExchangeType.TOPIC


class AmqpTransport(StreamTransport):
    """Consumes queue `queue`; publishes to `exchange` (default: the default exchange) with
    `routing_key` (default: the queue name), so by default a connection reads its own writes."""

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
        self.confirm = parse_bool("amqp", "confirm", query.get("confirm", "false"))
        self.user = target.user if target.user is not None else "guest"
        self.password = target.password if target.password is not None else "guest"
        self._connection: Any = None
        self._channel: Any = None
        self._underlay: Any = None
        self._receiver: Receiver | None = None
        self._unwaited = 0

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
        )
        connection = aio_pika.Connection(url, client_properties={"connection_name": "dialkit"})
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT)
        except BaseException as exc:
            await _close_quietly(connection)
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            raise ConnectError(f"{self.where}: {describe(exc)}") from None
        self._connection = connection
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
            deliver = receiver.deliver

            async def on_delivery(message: Any) -> None:
                deliver(text_message(message.body))

            await underlay.basic_consume(queue.name, on_delivery, no_ack=True)
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

    async def send(self, data: Message) -> None:
        underlay = self._underlay
        if underlay is None:
            raise ConnectionError("amqp link is down")
        body = data.encode() if isinstance(data, str) else data
        if self.confirm:  # one broker round trip per message: the safe, slow mode
            reply = await underlay.basic_publish(
                body, exchange=self.exchange, routing_key=self.routing_key
            )
            if not isinstance(reply, Basic.Ack):
                raise ConnectionError(f"broker did not confirm the message ({reply!r})")
            return
        # Hand the frames to aiormq's writer task; wait for the socket only every
        # DRAIN_EVERY messages, which bounds the writer's queue without a wait per message.
        self._unwaited += 1
        wait = self._unwaited >= DRAIN_EVERY
        if wait:
            self._unwaited = 0
        await underlay.basic_publish(
            body, exchange=self.exchange, routing_key=self.routing_key, wait=wait
        )

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._underlay = None
        self._receiver = None
        if connection is not None:
            await _close_quietly(connection)

    def describe(self) -> str:
        return f"queue={self.queue}" + (f" exchange={self.exchange}" if self.exchange else "")


async def _close_quietly(connection: Any) -> None:
    if not connection.is_closed:
        try:
            await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
        except Exception:
            pass


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
