"""`kafka://host[:9092][,host2:9092...]/TOPIC[?group=G&offset=WHERE]`

aiokafka. Without `group` the consumer is assigned every partition of the topic and starts at
the end of each one at the first connect; after a reconnect it continues from the next unread
offset of each partition, so nothing produced while the link was down is skipped (if the
broker still has it). With `group` it joins that consumer group and commits offsets
automatically; `offset` then only applies to a partition the group has no committed offset
for yet.

`offset=` takes kcat's words: `latest` or `end` (the default), `earliest` or `beginning`, an
absolute offset `N` (every partition starts at N, clamped to the offsets the broker still
has), or `-N` (N records before the end of every partition).

Each connection writes unkeyed messages to one partition, chosen at its first connect, so its
own messages are read back in the order they were written. `write(data, key=...)` places a
keyed message with Kafka's default partitioner (murmur2 of the key modulo the partition count,
as the Java client and kcat do), so every producer sends a key to the same partition and each
key keeps its order; `headers={...}` go with the record.

`meta=true` delivers an `Envelope` per record: topic, partition, offset, key (text, like the
value), headers and the record timestamp. Tombstones (records without a value) are skipped,
with or without meta.

`ack=manual` (needs `group`): nothing is committed automatically; `conn.ack(envelopes)`
commits, per partition, the highest acknowledged offset + 1 (a committed offset never moves
back; envelopes of another connection are refused). A partition the group has no committed
offset for gets its starting position committed when it is assigned (at the join, or later
when another member leaves), so every later connect of the group resumes there or later:
after a reconnect, and in a new process of the same group, whatever was read but not
acknowledged is delivered again (at least once; messages still buffered from before a
reconnect may come twice).

Reading is pull-based, so backpressure costs nothing: the fetch loop takes at most
`FETCH_RECORDS` records at a time (well under the ring buffer's free room) and does not fetch
again while the buffer is paused (`pause_reading`); the broker keeps the rest and the read
positions only move past what was handed over. With `confirm=true` the producer is idempotent
with `acks=all`, and a write is confirmed when the batch it went out in is acknowledged.
`at_end()` tells when every partition has been read up to its high watermark (kcat's `-e`).

Kafka has no single "connection": aiokafka would retry a broken broker link forever, so this
module reports the first broken broker connection to the session (which reconnects when
`reconnect=true`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeAlias

import aiokafka.errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.conn import CloseReason
from aiokafka.partitioner import DefaultPartitioner

from ..address import Address, redact, split_host_port
from ..buffer import CAPACITY, Message, text_message
from ..envelope import Envelope, Headers, Record, received_now
from ..errors import AddressError, ConnectError
from ._query import parse_target
from ._teardown import run_to_end
from .base import Receiver, StreamTransport, refuse_foreign

__all__ = ["KafkaTransport", "partition_for_key"]

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them).
logging.getLogger("aiokafka").addHandler(logging.NullHandler())


class _WithoutInitProducerIdError(logging.Filter):
    """aiokafka logs a refused InitProducerId as an error, then raises it from start():
    `_start_producer` reports it once (the acks=all fallback notice, or the connect
    error), so the library's copy would only add a confusing line to a program's stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unexpected error during InitProducerIdRequest")


logging.getLogger("aiokafka.producer.sender").addFilter(_WithoutInitProducerIdError())

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
FETCH_RECORDS = CAPACITY // 4  # records per getmany(): what may still come once paused
BROKEN = (CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT)

#: Where a partition without a known or committed position starts: the named ends, an
#: absolute offset (>= 0) or, negative, that many records before the end.
StartAt: TypeAlias = Literal["earliest", "latest"] | int
START_NAMES: dict[str, StartAt] = {
    "latest": "latest",
    "end": "latest",
    "earliest": "earliest",
    "beginning": "earliest",
}
START_NUMBER = re.compile(r"^-?[0-9]{1,18}$")

#: What a fetched batch of one partition is handed over with: (partition, records).
HandOver: TypeAlias = Callable[[TopicPartition, Sequence[Any]], None]
#: A batch's place in the shipping order: (the previous batch's turn, its own).
Turn: TypeAlias = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]

_default_partitioner = DefaultPartitioner()


def partition_for_key(key: bytes, partitions: Sequence[int]) -> int:
    """The partition Kafka's default partitioner gives `key` (murmur2, as the Java client and
    kcat): every producer of a key agrees on it. `partitions` sorted, as metadata lists them."""
    partition: int = _default_partitioner(key, partitions, partitions)
    return partition


def parse_start(text: str, shown: str) -> StartAt:
    """`offset=` as a `StartAt`; AddressError for anything else."""
    named = START_NAMES.get(text)
    if named is not None:
        return named
    if START_NUMBER.match(text):
        number = int(text)
        return "latest" if number == 0 and text.startswith("-") else number
    raise AddressError(
        f"{shown}: offset={text!r}: expected latest or earliest (or end, beginning, an "
        "offset N, or -N for N records before the end of each partition)"
    )


def start_offset(start: int, first: int, end: int) -> int:
    """Where `offset=N` (or `-N`) starts a partition holding offsets first..end-1."""
    wanted = start if start >= 0 else end + start
    return min(max(wanted, first), end)


class KafkaTransport(StreamTransport):
    """Consumes TOPIC (from the moment of Dial by default) and produces to it."""

    # A connect is a dozen requests (bootstrap and metadata twice, offsets): more than the
    # one round trip or two of the other protocols.
    attempt_floor = 2.0
    supported_options = frozenset({"confirm", "ack"})
    record_fields = frozenset({"key", "headers"})
    flow_control = True
    holds_backlog = True
    counts_bytes_in = True  # record value sizes, counted before decoding

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
        self._source = redact(address.url)  # the envelopes' source: what ack() accepts
        self._mark = object()  # in every envelope's token: (mark, partition), checked by ack()
        self.group = target.query.get("group")
        self.start: StartAt = parse_start(target.query.get("offset", "latest"), shown)
        self.manual_ack = address.options.ack == "manual"
        if self.manual_ack and self.group is None:
            raise AddressError(
                f"{shown}/{topic}: ack=manual needs a consumer group to commit offsets to, "
                f"e.g. kafka://{target.authority}/{topic}?group=NAME|ack=manual"
            )
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, no-group mode
        self._partitions: list[int] = []  # the topic's partitions, sorted (keyed writes)
        self._partition: int | None = None  # where this connection writes unkeyed messages
        self._producer: Any = None
        self._consumer: Any = None
        self._fetcher: asyncio.Task[None] | None = None
        self._receiver: Receiver | None = None
        self._counter: Receiver | None = None  # the current link's, even after its loss
        self._idempotent: bool | None = None  # confirm=true: does the broker give producer ids
        self._broken = False
        self._batch: Any = None  # the open batch for `_partition`
        self._receipt: asyncio.Future[None] | None = None  # the open batch's (confirm=true)
        self._side: dict[int, tuple[Any, asyncio.Future[None] | None]] = {}  # other partitions
        self._shipping: set[asyncio.Task[None]] = set()
        self._last_turn: asyncio.Future[None] | None = None  # of the batch shipped last
        self._paused = False  # the buffer is full: do not fetch
        self._resumed: asyncio.Event | None = None
        self._committed: dict[TopicPartition, int] = {}  # ack=manual: the group's, this link
        self._ack_lock = asyncio.Lock()

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
        try:
            partitions = await self._start_producer()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ConnectError(f"{where}: {describe(exc)}") from None
        ordered = sorted(partitions)
        self._partitions = ordered
        if self._partition is None or self._partition not in partitions:
            self._partition = random.choice(ordered)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            client_id="dialkit",
            group_id=self.group,
            enable_auto_commit=self.group is not None and not self.manual_ack,
            auto_offset_reset="latest" if self.group and self.start == "latest" else "earliest",
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
        self._receiver = self._counter = receiver
        hand_over = self._envelope_hand_over(receiver) if self.meta else _value_hand_over(receiver)
        self._fetcher = asyncio.ensure_future(self._fetch_forever(consumer, receiver, hand_over))

    async def _start_producer(self) -> Any:
        """Start the producer and return the topic's partitions. confirm=true: idempotent
        with acks=all, or acks=all alone on a broker that does not hand out producer ids."""
        try:
            await self._launch_producer()
        except Exception as exc:
            if not (self.confirms and self._idempotent is None and _refused_idempotence(exc)):
                raise
            # acks=all alone still confirms that the broker has each batch; a retried batch
            # may be doubled.
            self._idempotent = False
            log.warning(
                "%s: the broker does not support the idempotent producer (%s); "
                "confirm=true uses acks=all without it",
                self.where,
                describe(exc),
            )
            await _close_part(self._producer, True)
            await self._launch_producer()
        if self.confirms and self._idempotent is None:
            self._idempotent = True
        return await asyncio.wait_for(self._producer.partitions_for(self.topic), METADATA_TIMEOUT)

    async def _launch_producer(self) -> None:
        options: dict[str, Any] = {}
        if self.confirms:
            if self._idempotent is False:
                options["acks"] = "all"
            else:
                options["enable_idempotence"] = True  # and so acks=all
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            client_id="dialkit",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_batch_size=MAX_BATCH_BYTES,
            **options,
        )
        self._producer = producer
        _watch_connections(producer.client, self._on_broker_link_closed)
        await producer.start()

    async def _assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        consumer.assign(partitions)
        first = not self._positions
        starts: dict[TopicPartition, int] = {}
        ends: dict[TopicPartition, int] = {}
        if not first or isinstance(self.start, int):  # clamp a cursor to the log's offsets
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            known = self._positions.get(tp)
            if known is not None:  # outside the log: retention, or a broker that lost data
                inside = starts[tp] <= known <= ends[tp]
                consumer.seek(tp, known if inside else starts[tp])
            elif not first or self.start == "earliest":  # or a partition added since
                await consumer.seek_to_beginning(tp)
            elif self.start == "latest":
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, start_offset(self.start, starts[tp], ends[tp]))
        for tp in partitions:  # resolve now: a message produced after Dial returns is read
            self._positions[tp] = await consumer.position(tp)

    async def _join(self, consumer: Any) -> None:
        first: asyncio.Future[list[TopicPartition]] = asyncio.get_running_loop().create_future()
        committed = self._committed
        committed.clear()
        on_assigned = self._on_assigned

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped library
            async def on_partitions_revoked(self, revoked: Any) -> None:
                for tp in revoked:  # its next owner may commit: ask again when acking
                    committed.pop(tp, None)

            async def on_partitions_assigned(self, partitions: Any) -> None:
                await on_assigned(consumer, sorted(partitions), first)

        consumer.subscribe([self.topic], listener=Listener())
        # The group join happens in aiokafka's coordinator task; getmany drives nothing, so
        # just wait for the first assignment (its starting positions resolved).
        for tp in await first:
            await consumer.position(tp)

    async def _on_assigned(
        self,
        consumer: Any,
        partitions: list[TopicPartition],
        first: asyncio.Future[list[TopicPartition]],
    ) -> None:
        """Every assignment, not only the first: a partition handed over later (another
        member left) needs its `offset=N` and, with ack=manual, its starting commit too.
        Its records wait (paused) until then: none is handed over from a position that was
        never committed. The first assignment's error fails the connect."""
        needed = isinstance(self.start, int) or self.manual_ack
        try:
            if needed:
                consumer.pause(*partitions)  # before any await: nothing fetched yet
                try:
                    await self._start_uncommitted(consumer, partitions)
                finally:
                    held = consumer.assignment()
                    consumer.resume(*[tp for tp in partitions if tp in held])
        except Exception as exc:
            if not first.done():
                first.set_exception(exc)
            else:
                self._on_start_failed(consumer, exc)
            return
        if not first.done():
            first.set_result(partitions)

    def _on_start_failed(self, consumer: Any, exc: Exception) -> None:
        """A later assignment's starting positions could not be set: reconnect (a new join
        sets them) unless the group moved on already (its next assignment sets them)."""
        if isinstance(exc, (aiokafka.errors.CommitFailedError, aiokafka.errors.IllegalStateError)):
            return
        receiver = self._receiver
        if receiver is not None and self._consumer is consumer:
            self._lose(receiver, f"kafka: starting offsets not set: {describe(exc)}")

    async def _start_uncommitted(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Place the partitions the group has no committed offset for at `offset=N`/`-N`,
        and with ack=manual commit those starting positions: a later connect of the group
        then resumes there, not at a `latest` that skipped what was read but never acked."""
        for tp in partitions:
            offset = await consumer.committed(tp)
            if offset is not None:
                self._committed[tp] = offset
        fresh = [tp for tp in partitions if tp not in self._committed]
        if not fresh:
            return
        if isinstance(self.start, int):
            starts = await consumer.beginning_offsets(fresh)
            ends = await consumer.end_offsets(fresh)
            for tp in fresh:
                consumer.seek(tp, start_offset(self.start, starts[tp], ends[tp]))
        if self.manual_ack:
            floors = {tp: await consumer.position(tp) for tp in fresh}
            await consumer.commit(floors)
            self._committed.update(floors)

    async def _fetch_forever(self, consumer: Any, receiver: Receiver, hand_over: HandOver) -> None:
        positions = self._positions
        track = self.group is None
        while True:
            if self._paused:  # the reader is behind: the broker keeps the rest meanwhile
                await self._wait_resumed()
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lose(receiver, f"kafka fetch failed: {describe(exc)}")
                return
            for tp, records in batches.items():
                hand_over(tp, records)
                if track and records:
                    positions[tp] = records[-1].offset + 1

    def _envelope_hand_over(self, receiver: Receiver) -> HandOver:
        """meta=true: each record as an `Envelope` (its token, this connection's mark and
        the partition, is what `ack()` checks and commits to)."""
        deliver_many = receiver.batch_delivery()
        source, topic, mark = self._source, self.topic, self._mark

        def hand_over(tp: TopicPartition, records: Sequence[Any]) -> None:
            received_at = received_now()
            token = (mark, tp)
            partition = tp.partition
            size = 0
            envelopes = []
            for record in records:
                value = record.value
                if value is None:  # a tombstone
                    continue
                size += len(value)
                key = record.key
                stamp = record.timestamp
                envelopes.append(
                    Envelope(
                        text_message(value),
                        source,
                        received_at,
                        "text",
                        topic,
                        partition,
                        record.offset,
                        None if key is None else text_message(key),
                        _headers_of(record.headers) if record.headers else (),
                        stamp / 1000 if stamp is not None and stamp >= 0 else None,
                        None,
                        token,
                    )
                )
            if envelopes:
                receiver.bytes_in += size
                deliver_many(envelopes)

        return hand_over

    def at_end(self) -> bool:
        """True once every assigned partition has been read up to its high watermark as the
        last fetch reported it (kcat's -e: "exit at end of partition"). False while not
        connected or before the first fetch answered. Safe from any thread."""
        consumer = self._consumer
        if consumer is None or self._receiver is None:
            return False
        subscription = consumer._subscription.subscription
        assignment = None if subscription is None else subscription.assignment
        if assignment is None or not assignment.tps:
            return False
        # The loop thread replaces the assignment on a rebalance and resets positions (set
        # to None): read each field once, without the library's asserting accessors.
        for tp in tuple(assignment.tps):
            state = assignment.state_value(tp)
            highwater = None if state is None else state.highwater
            position = None if state is None else getattr(state, "_position", None)
            if highwater is None or position is None or position < highwater:
                return False
        return True

    async def ack(self, envelopes: Sequence[Envelope]) -> None:
        """Commit, per partition, the highest acknowledged offset + 1; never below what the
        group has committed. A partition that went to another member since is left alone:
        its new owner reads those messages again."""
        wanted = self._next_offsets(envelopes)  # refuses a foreign envelope, link up or not
        consumer = self._consumer
        if consumer is None or self._receiver is None:
            raise ConnectionError("kafka link is down")
        async with self._ack_lock:  # a concurrent ack must not commit a lower offset last
            assigned = consumer.assignment()
            offsets: dict[TopicPartition, int] = {}
            for tp, offset in wanted.items():
                if tp not in assigned:
                    continue
                floor = self._committed.get(tp)
                if floor is None:
                    floor = await consumer.committed(tp)
                if floor is None or offset > floor:
                    offsets[tp] = offset
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except aiokafka.errors.KafkaError as exc:
                raise ConnectionError(f"kafka commit failed: {describe(exc)}") from None
            self._committed.update(offsets)

    def _next_offsets(self, envelopes: Sequence[Envelope]) -> dict[TopicPartition, int]:
        """Per partition, the offset after the highest acknowledged one."""
        refuse_foreign(
            envelopes,
            source=self._source,
            mark=self._mark,
            size=2,
            reader=f"kafka:// connection ({self._source})",
        )
        wanted: dict[TopicPartition, int] = {}
        for envelope in envelopes:
            tp = envelope.token[1]
            following = envelope.offset + 1  # type: ignore[operator]  # set with the token
            if following > wanted.get(tp, -1):
                wanted[tp] = following
        return wanted

    def pause_reading(self) -> None:
        self._paused = True
        if self._resumed is not None:
            self._resumed.clear()

    def resume_reading(self) -> None:
        self._paused = False
        if self._resumed is not None:
            self._resumed.set()

    async def _wait_resumed(self) -> None:
        if self._resumed is None:
            self._resumed = asyncio.Event()
        while self._paused:
            self._resumed.clear()
            await self._resumed.wait()

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
        receiver = self._receiver
        if producer is None or receiver is None:
            raise ConnectionError("kafka link is down")
        body = data.encode() if isinstance(data, str) else data
        batch = self._batch
        if batch is None:
            batch = self._open_batch(producer)
        if batch.append(key=None, value=body, timestamp=None) is None:  # full
            own = self._partition
            assert own is not None  # chosen by the connect that set `_producer`
            await self._append_after_full(producer, receiver, batch, self._receipt, own, None, body)

    async def send_record(self, record: Record) -> None:
        """`send` with a key and headers: a keyed record goes to the partition its key
        hashes to, in order with every other write to that partition."""
        await self._append_record(record)

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[None]:
        """Append to the open batch like `send`; the future is the batch's: done once the
        broker acknowledged it (acks=all, idempotent producer)."""
        if isinstance(data, Record):
            receipt = await self._append_record(data)
        else:
            await self.send(data)
            receipt = self._receipt
        assert receipt is not None  # an open batch holds this message
        return receipt

    async def _append_record(self, record: Record) -> asyncio.Future[None] | None:
        """Append `record` to the open batch of its partition; returns that batch's
        receipt (confirm=true)."""
        producer = self._producer
        receiver = self._receiver
        if producer is None or receiver is None:
            raise ConnectionError("kafka link is down")
        value = record.value
        body = value.encode() if isinstance(value, str) else value
        own = self._partition
        assert own is not None  # chosen by the connect that set `_producer`
        partition = own if record.key is None else partition_for_key(record.key, self._partitions)
        if partition == own:
            batch, receipt = self._batch, self._receipt
            if batch is None:
                batch, receipt = self._open_batch(producer), self._receipt
        else:
            batch, receipt = self._side.get(partition) or self._open_side(producer, partition)
        headers = list(record.headers)  # aiokafka's record builder takes a list only
        if batch.append(key=record.key, value=body, timestamp=None, headers=headers) is not None:
            return receipt
        return await self._append_after_full(
            producer, receiver, batch, receipt, partition, record.key, body, headers
        )

    async def _append_after_full(
        self,
        producer: Any,
        receiver: Receiver,
        full: Any,
        receipt: asyncio.Future[None] | None,
        partition: int,
        key: bytes | None,
        body: bytes,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None] | None:
        """The open batch of `partition` refused a record (full): ship it, then append the
        record to a new batch and return that batch's receipt. The rare path of `send` and
        `_append_record` (their common case, an append to the open batch, stays inline)."""
        self._take_open(partition)
        await self._ship(full, producer, receiver, receipt, partition, self._take_turn())
        if partition == self._partition:
            batch, receipt = self._open_batch(producer), self._receipt
        else:
            batch, receipt = self._open_side(producer, partition)
        if batch.append(key=key, value=body, timestamp=None, headers=headers or []) is None:
            self._take_open(partition)
            raise ValueError(f"message of {len(body)} bytes exceeds the batch size limit")
        return receipt

    def _take_open(self, partition: int) -> None:
        """Forget the open batch of `partition` (it is being shipped, or refused)."""
        if partition == self._partition:
            self._batch = self._receipt = None
        else:
            self._side.pop(partition, None)

    def _open_batch(self, producer: Any) -> Any:
        self._batch = producer.create_batch()
        if self.confirms:
            self._receipt = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(self._ship_open_batch)
        return self._batch

    def _open_side(self, producer: Any, partition: int) -> tuple[Any, asyncio.Future[None] | None]:
        """A new open batch for a partition other than this connection's own."""
        loop = asyncio.get_running_loop()
        receipt: asyncio.Future[None] | None = loop.create_future() if self.confirms else None
        if not self._side:
            loop.call_soon(self._ship_side_batches)
        opened = self._side[partition] = (producer.create_batch(), receipt)
        return opened

    def _ship_open_batch(self) -> None:
        batch, self._batch = self._batch, None
        receipt, self._receipt = self._receipt, None
        self._ship_later(batch, receipt, self._partition)

    def _ship_side_batches(self) -> None:
        side, self._side = self._side, {}
        for partition, (batch, receipt) in side.items():
            self._ship_later(batch, receipt, partition)

    def _ship_later(
        self, batch: Any, receipt: asyncio.Future[None] | None, partition: int | None
    ) -> None:
        """Queue a shipping task for the open batch of a burst of writes."""
        if batch is not None and batch.record_count():
            receiver = self._counter
            if self._receiver is None or receiver is None:  # the link went down meanwhile
                if receiver is not None:
                    _fail(receiver, receipt, batch.record_count(), "the link was lost")
                else:
                    _settle(receipt, batch.record_count(), "the link was lost")
                return
            turn = self._take_turn()  # now, not when the task first runs
            task = asyncio.ensure_future(
                self._ship(batch, self._producer, receiver, receipt, partition, turn)
            )
            self._shipping.add(task)
            task.add_done_callback(self._shipping.discard)
        else:
            _settle(receipt, 0, None)

    async def _ship(
        self,
        batch: Any,
        producer: Any,
        receiver: Receiver,
        receipt: asyncio.Future[None] | None,
        partition: int | None,
        turn: Turn,
    ) -> None:
        """Hand a closed batch to aiokafka once every batch closed before it was handed
        over (aiokafka keeps that order per partition); its receipt settles on the ack."""
        count = batch.record_count()
        previous, mine = turn
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if producer is None:
                _fail(receiver, receipt, count, "the link was lost")
                return
            batch.close()
            delivered = await producer.send_batch(batch, self.topic, partition=partition)
        except asyncio.CancelledError:
            _fail(receiver, receipt, count, "the connection was closed")
            raise
        except Exception as exc:  # delivery problems also show as a broken connection
            log.warning("%s: produce failed: %s", self.where, describe(exc))
            _fail(receiver, receipt, count, f"produce failed: {describe(exc)}")
            return
        finally:
            if not mine.done():
                mine.set_result(None)  # the next batch's turn

        def done(future: asyncio.Future[Any]) -> None:
            error = None if future.cancelled() else future.exception()
            if future.cancelled() or error is not None:
                why = "the link was lost" if error is None else describe(error)
                _fail(receiver, receipt, count, f"batch not delivered: {why}")
            elif receipt is not None and not receipt.done():
                receipt.set_result(None)

        delivered.add_done_callback(done)

    def _take_turn(self) -> Turn:
        """A place in the shipping order, taken when a batch is closed: (the previous
        batch's turn, this one's)."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous, self._last_turn = self._last_turn, mine
        return previous, mine

    def abort(self) -> None:
        """A heartbeat found the link dead: `close()` then fails what is in flight at once
        instead of waiting for the dead broker (see `_close_part`)."""
        self._broken = True
        self._receiver = None

    async def close(self) -> None:
        # Detach the link first, in one step: a new connect() never sees it, and the teardown
        # (a task of its own) runs to its end even if this close() is cancelled half-way.
        self._receiver = None
        receiver, self._counter = self._counter, None
        unshipped = [(self._batch, self._receipt), *self._side.values()]
        self._batch = self._receipt = None
        self._side = {}
        for batch, receipt in unshipped:
            _drop_unshipped(batch, receipt, receiver)
        self._committed.clear()
        self._last_turn = None  # the new link's batches do not wait for the old one's
        shipping = list(self._shipping)
        fetcher, self._fetcher = self._fetcher, None
        consumer, self._consumer = self._consumer, None
        producer, self._producer = self._producer, None
        broken, self._broken = self._broken, False
        if shipping or fetcher is not None or consumer is not None or producer is not None:
            clients = [_client_of(part) for part in (consumer, producer) if part is not None]

            def hurry() -> None:  # close() was cancelled: nothing may wait for the broker
                for client in clients:
                    _abort_sockets(client)

            await run_to_end(_teardown(shipping, fetcher, consumer, producer, broken), hurry)

    def describe(self) -> str:
        return f"topic={self.topic}" + (f" group={self.group}" if self.group else "")


def _value_hand_over(receiver: Receiver) -> HandOver:
    """meta off: each record's value as text, batched into the buffer."""
    deliver_many = receiver.batch_delivery()

    def hand_over(tp: TopicPartition, records: Sequence[Any]) -> None:
        values = [r.value for r in records if r.value is not None]  # not tombstones
        if values:
            receiver.bytes_in += sum(map(len, values))
            deliver_many([text_message(value) for value in values])

    return hand_over


def _headers_of(raw: Sequence[tuple[str, bytes | None]]) -> Headers:
    """A record's headers as `Headers`; a null header value (Kafka allows one) as b""."""
    return tuple((name, b"" if value is None else value) for name, value in raw)


def _drop_unshipped(
    batch: Any, receipt: asyncio.Future[None] | None, receiver: Receiver | None
) -> None:
    """An open batch the link went down under: its messages were written, never shipped."""
    if batch is not None and batch.record_count():
        if receiver is not None:
            _fail(receiver, receipt, batch.record_count(), "the link went down first")
        else:
            _settle(receipt, batch.record_count(), "the link was lost")
    else:
        _settle(receipt, 0, None)


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


async def _teardown(
    shipping: list[asyncio.Task[None]],
    fetcher: asyncio.Task[None] | None,
    consumer: Any,
    producer: Any,
    broken: bool,
) -> None:
    if shipping:  # let queued batches reach aiokafka before its producer stops
        await asyncio.wait(shipping, timeout=LOST_CLOSE_TIMEOUT if broken else CLOSE_TIMEOUT)
        for task in shipping:
            task.cancel()
    if fetcher is not None:
        fetcher.cancel()
        await asyncio.gather(fetcher, return_exceptions=True)
    for part in (consumer, producer):
        if part is not None:
            await _close_part(part, broken)


async def _close_part(part: Any, broken: bool) -> None:
    """Stop a consumer or producer and close its client (metadata task, sockets), bounded.

    A healthy link is stopped gracefully (a producer flushes its queued batches). After a
    loss the broker will not answer: the client's sockets are dropped and the client closed
    first, which fails the in-flight requests at once; the producer's sender task is ended
    (`_end_sender`), what it still queued is failed, and stop() only finishes the rest."""
    client = _client_of(part)
    if broken:
        _abort_sockets(client)
        await _quietly(client.close(), CLOSE_TIMEOUT)
        await _end_sender(part, LOST_CLOSE_TIMEOUT)
        _settle_metadata(client)
        _fail_queued(part)
        await _quietly(part.stop(), LOST_CLOSE_TIMEOUT)
    else:
        await _quietly(part.stop(), CLOSE_TIMEOUT)
        await _end_sender(part, LOST_CLOSE_TIMEOUT)  # stop() ran out of time: it still runs
    await _quietly(client.close(), CLOSE_TIMEOUT)  # again: what stop() may have reopened
    _settle_metadata(client)


def _sender_task(part: Any) -> asyncio.Task[None] | None:
    """The producer's sender task while it still runs (a consumer has none)."""
    task: asyncio.Task[None] | None = getattr(getattr(part, "_sender", None), "sender_task", None)
    return task if task is not None and not task.done() else None


async def _end_sender(part: Any, seconds: float) -> None:
    """Cancel the producer's sender task and see it end, within `seconds`. Cancelled, it
    waits for its in-flight produce requests, and a request that lost its connection waits
    for a metadata update that a closed client never makes: cancelled again, it cancels the
    request it waits for."""
    task = _sender_task(part)
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not task.done():
        task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.wait([task], timeout=min(0.05, remaining))
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as forgotten


def _settle_metadata(client: Any) -> None:
    """A closed client never resolves a metadata update still pending (its synchronizer task
    is gone): whatever waits for one (a produce request retrying) would wait forever."""
    future = getattr(client, "_md_update_fut", None)
    if future is not None and not future.done():
        future.set_result(False)  # "not updated", as after a failed update


def _fail_queued(part: Any) -> None:
    """Fail the batches a producer still holds: they go nowhere now, and stop() waits for
    every one of them to be done."""
    accumulator = getattr(part, "_message_accumulator", None)
    if accumulator is not None:
        accumulator.fail_all(aiokafka.errors.KafkaConnectionError("the broker link was lost"))


def _abort_sockets(client: Any) -> None:
    """Drop every broker socket of `client` now: its graceful close would first wait to
    flush what a dead broker never reads."""
    for conn in list(getattr(client, "_conns", {}).values()):
        writer = getattr(conn, "_writer", None)
        if writer is not None:
            writer.transport.abort()


def _settle(receipt: asyncio.Future[None] | None, count: int, reason: str | None) -> None:
    """Finish a batch's receipt: done (nothing in it) or failed with `reason`."""
    if receipt is None or receipt.done():
        return
    if reason is None or not count:
        receipt.set_result(None)
    else:
        receipt.set_exception(ConnectionError(reason))


def _fail(
    receiver: Receiver, receipt: asyncio.Future[None] | None, count: int, reason: str
) -> None:
    """`count` written messages did not reach the broker: a confirmed batch fails its
    receipt (its writers are told), a fire-and-forget one is counted as send errors."""
    if receipt is not None:
        _settle(receipt, count, reason)
    elif count:
        receiver.send_failed(count, reason)


def _client_of(part: Any) -> Any:
    return getattr(part, "client", None) or getattr(part, "_client", None)


def _watch_connections(client: Any, callback: Any) -> None:
    """Hear about every broker connection aiokafka closes (it would silently retry)."""
    original = client._on_connection_closed

    def on_closed(conn: Any, reason: Any) -> None:
        original(conn, reason)
        callback(reason)

    client._on_connection_closed = on_closed


#: What a broker answers to InitProducerId when it has no idempotent producer: the request or
#: its version unknown (IncompatibleBrokerVersion is aiokafka's own verdict from ApiVersions),
#: or, from brokers that list the API without implementing it (tansu), UNKNOWN_SERVER_ERROR.
IDEMPOTENCE_UNSUPPORTED = (
    aiokafka.errors.IncompatibleBrokerVersion,
    aiokafka.errors.UnsupportedVersionError,
    aiokafka.errors.InvalidRequestError,
    aiokafka.errors.UnknownError,
)


def _refused_idempotence(exc: BaseException) -> bool:
    """A producer start failure that means "no idempotent producer here". Only start() is
    judged (bootstrap, then InitProducerId), never metadata; an unreachable broker, a
    timeout or a refused authorization (ClusterAuthorizationFailed) is not such a failure."""
    return isinstance(exc, IDEMPOTENCE_UNSUPPORTED)


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiokafka.errors.KafkaConnectionError):
        return "cannot reach the broker (connection refused or unreachable)"
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out waiting for the broker"
    if isinstance(exc, aiokafka.errors.KafkaError):
        return str(exc) or exc.__class__.__name__
    return str(exc) or exc.__class__.__name__
