"""`kafka://host[:9092][,host2:9092...]/TOPIC[?group=G&offset=latest|earliest]`

aiokafka. Without `group` the consumer is assigned every partition of the topic and starts at
the end of each one (`offset=earliest`: at the beginning) at the first connect; after a
reconnect it continues from the next unread offset of each partition, so nothing produced
while the link was down is skipped (if the broker still has it). With `group` it joins that
consumer group and commits offsets automatically; `offset` then only applies when the group
has no committed offset yet.

Each connection writes to one partition, chosen at its first connect, so its own messages
are read back in the order they were written. Kafka has no single "connection": aiokafka
would retry a broken broker link forever, so this module reports the first broken broker
connection to the session (which reconnects when `reconnect=true`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Any

import aiokafka.errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.conn import CloseReason

from ..address import Address, split_host_port
from ..buffer import Message, text_message
from ..errors import AddressError, ConnectError
from ._query import parse_target
from .base import Receiver, StreamTransport

__all__ = ["KafkaTransport"]

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them).
logging.getLogger("aiokafka").addHandler(logging.NullHandler())

log = logging.getLogger("dial")

QUERY = frozenset({"group", "offset"})
DEFAULT_PORT = 9092
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
REQUEST_TIMEOUT_MS = 10_000
CLOSE_TIMEOUT = 3.0
MAX_BATCH_BYTES = 256 * 1024  # below the 1 MiB default message.max.bytes of a topic
LOST_CLOSE_TIMEOUT = 0.5
METADATA_TIMEOUT = 10.0
FETCH_WAIT_MS = 100  # how long the broker holds an empty fetch: the idle-latency bound
BROKEN = (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT)


class KafkaTransport(StreamTransport):
    """Consumes TOPIC (from the moment of Dial by default) and produces to it."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        target = parse_target("kafka", address.target, QUERY)
        shown = f"kafka://{target.authority}"
        if target.user is not None:
            raise AddressError(f"{shown}: credentials in kafka:// addresses are not supported")
        self.servers = [
            "{}:{}".format(*split_host_port(part, "kafka", DEFAULT_PORT))
            for part in target.authority.split(",")
        ]
        topic = target.path.strip("/")
        if not topic:
            raise AddressError(f"{shown}: missing topic, e.g. kafka://{target.authority}/TOPIC")
        if not TOPIC_NAME.match(topic) or topic in (".", ".."):
            raise AddressError(
                f"{shown}: bad topic {topic!r} (letters, digits, '.', '_', '-'; 1-249 chars)"
            )
        self.topic = topic
        self.group = target.query.get("group")
        offset = target.query.get("offset", "latest")
        if offset not in ("latest", "earliest"):
            raise AddressError(f"{shown}: offset={offset!r}: expected latest or earliest")
        self.offset = offset
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, no-group mode
        self._partition: int | None = None  # where this connection writes
        self._producer: Any = None
        self._consumer: Any = None
        self._fetcher: asyncio.Task[None] | None = None
        self._receiver: Receiver | None = None
        self._broken = False
        self._batch: Any = None
        self._shipping: set[asyncio.Task[None]] = set()
        self._ship_lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"kafka://{','.join(self.servers)}"

    async def connect(self, receiver: Receiver) -> None:
        await self.close()
        try:
            await self._start(receiver)
        except BaseException:
            await self.close()
            raise

    async def _start(self, receiver: Receiver) -> None:
        where = self.where
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            client_id="dialkit",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            enable_idempotence=False,
            max_batch_size=MAX_BATCH_BYTES,
        )
        self._producer = producer
        _watch_connections(producer.client, self._on_broker_link_closed)
        try:
            await producer.start()
            partitions = await asyncio.wait_for(
                producer.partitions_for(self.topic), METADATA_TIMEOUT
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ConnectError(f"{where}: {describe(exc)}") from None
        ordered = sorted(partitions)
        if self._partition is None or self._partition not in partitions:
            self._partition = random.choice(ordered)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            client_id="dialkit",
            group_id=self.group,
            enable_auto_commit=self.group is not None,
            auto_offset_reset=self.offset if self.group else "earliest",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            fetch_max_wait_ms=FETCH_WAIT_MS,
        )
        self._consumer = consumer
        _watch_connections(consumer._client, self._on_broker_link_closed)
        try:
            await consumer.start()
            if self.group is None:
                await self._assign(consumer, [TopicPartition(self.topic, p) for p in ordered])
            else:
                await self._join(consumer)
        except asyncio.CancelledError:
            raise
        except ConnectError:
            raise
        except Exception as exc:
            raise ConnectError(f"{where}: consumer setup failed: {describe(exc)}") from None
        self._receiver = receiver
        self._fetcher = asyncio.ensure_future(self._fetch_forever(consumer, receiver))

    async def _assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        first = not self._positions
        if not first:  # a cursor outside the log (retention, or a broker that lost its data)
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            known = self._positions.get(tp)
            if known is not None:
                inside = starts[tp] <= known <= ends[tp]
                consumer.seek(tp, known if inside else starts[tp])
            elif first and self.offset == "latest":
                await consumer.seek_to_end(tp)
            else:  # earliest, or a partition added since the first connect
                await consumer.seek_to_beginning(tp)
        for tp in partitions:  # resolve now: a message produced after Dial returns is read
            self._positions[tp] = await consumer.position(tp)

    async def _join(self, consumer: Any) -> None:
        assigned = asyncio.get_running_loop().create_future()

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                pass

            async def on_partitions_assigned(self, partitions: Any) -> None:
                if not assigned.done():
                    assigned.set_result(set(partitions))

        consumer.subscribe([self.topic], listener=Listener())
        # The group join happens in aiokafka's coordinator task; getmany drives nothing, so
        # just wait for the first assignment, then resolve the starting positions.
        partitions = await assigned
        for tp in partitions:
            await consumer.position(tp)

    async def _fetch_forever(self, consumer: Any, receiver: Receiver) -> None:
        deliver = receiver.deliver
        positions = self._positions
        track = self.group is None
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lose(receiver, f"kafka fetch failed: {describe(exc)}")
                return
            for tp, records in batches.items():
                for record in records:
                    value = record.value
                    if value is not None:  # a tombstone carries no message
                        deliver(text_message(value))
                if track and records:
                    positions[tp] = records[-1].offset + 1

    def _on_broker_link_closed(self, reason: Any) -> None:
        receiver = self._receiver
        if receiver is not None and reason in BROKEN:
            self._lose(receiver, f"kafka broker connection lost ({reason.name.lower()})")

    def _lose(self, receiver: Receiver, reason: str) -> None:
        if self._receiver is receiver:
            self._receiver = None
            self._broken = True
            receiver.lost(reason)

    async def send(self, data: Message) -> None:
        """Append to an open batch (no await); the batch is handed to aiokafka once the
        current burst of writes is done, or as soon as it is full."""
        producer = self._producer
        if producer is None or self._receiver is None:
            raise ConnectionError("kafka link is down")
        body = data.encode() if isinstance(data, str) else data
        batch = self._batch
        if batch is None:
            batch = self._open_batch(producer)
        if batch.append(key=None, value=body, timestamp=None) is None:  # full
            self._batch = None
            await self._ship(batch)
            batch = self._open_batch(producer)
            if batch.append(key=None, value=body, timestamp=None) is None:
                self._batch = None
                raise ValueError(f"message of {len(body)} bytes exceeds the batch size limit")

    def _open_batch(self, producer: Any) -> Any:
        self._batch = producer.create_batch()
        asyncio.get_running_loop().call_soon(self._ship_open_batch)
        return self._batch

    def _ship_open_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None and batch.record_count():
            task = asyncio.ensure_future(self._ship(batch))
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)

    async def _ship(self, batch: Any) -> None:
        async with self._ship_lock:  # FIFO: batches reach aiokafka in the order written
            producer = self._producer
            if producer is None:
                return
            batch.close()
            try:
                await producer.send_batch(batch, self.topic, partition=self._partition)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # delivery problems also show as a broken connection
                log.warning("%s: produce failed: %s", self.where, describe(exc))

    async def close(self) -> None:
        self._receiver = None
        self._batch = None
        shipping = list(self._shipping)
        if shipping:  # let queued batches reach aiokafka before its producer stops
            await asyncio.wait(shipping, timeout=CLOSE_TIMEOUT)
            for task in shipping:
                task.cancel()
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            fetcher.cancel()
            await asyncio.gather(fetcher, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        # A producer's stop() flushes queued batches and would wait out the request timeout
        # when the broker is gone: give it little time after a loss, then close its client
        # (metadata task, sockets) in any case.
        grace = LOST_CLOSE_TIMEOUT if self._broken else CLOSE_TIMEOUT
        self._broken = False
        for part, client in ((consumer, _client_of(consumer)), (producer, _client_of(producer))):
            if part is None:
                continue
            await _quietly(part.stop(), grace)
            sender = getattr(part, "_sender", None)
            sender_task = getattr(sender, "sender_task", None)
            if sender_task is not None and not sender_task.done():
                sender_task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await _quietly(client.close(), CLOSE_TIMEOUT)

    def describe(self) -> str:
        return f"topic={self.topic}" + (f" group={self.group}" if self.group else "")


async def _quietly(step: Any, seconds: float) -> None:
    """Run a library shutdown step, bounded in time; its errors do not matter. aiokafka's
    producer.stop() can raise CancelledError of its own (it awaits a task it cancelled):
    swallow that, but not a cancellation of the task running us."""
    try:
        await asyncio.wait_for(step, seconds)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and getattr(current, "cancelling", lambda: 0)():
            raise
    except Exception:
        pass


def _client_of(part: Any) -> Any:
    return getattr(part, "client", None) or getattr(part, "_client", None)


def _watch_connections(client: Any, callback: Any) -> None:
    """Hear about every broker connection aiokafka closes (it would silently retry)."""
    original = client._on_connection_closed

    def on_closed(conn: Any, reason: Any) -> None:
        original(conn, reason)
        callback(reason)

    client._on_connection_closed = on_closed


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiokafka.errors.KafkaConnectionError):
        return "cannot reach the broker (connection refused or unreachable)"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the broker"
    if isinstance(exc, aiokafka.errors.KafkaError):
        return str(exc) or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__
