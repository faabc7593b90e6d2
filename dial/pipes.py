"""`dial.pipe(src, dst)`: move every message from a readable address to a writable one.

    import dial

    result = dial.pipe(
        "wss://stream.binance.com/ws/btcusdt@trade",
        "kafka://127.0.0.1:9092/binance.trades",
        key=lambda envelope: json.loads(envelope.value)["s"],   # the symbol as Kafka key
        stop=stop_event,                                        # set it from any thread
    )
    print(result.read, result.written, result.replayed, result.dropped)

The source is dialled with `meta=true` (and `reconnect=true` unless the address says
otherwise); so is the sink (`reconnect=true`, and `confirm=true` where the transport confirms
writes). A database sink (sqlite3://, mysql://, postgres://, clickhouse://) receives batched
inserts through `exec_many` into `table` (default `dial_messages`), created if absent:

    received_at    timestamp (UTC, microseconds)  when dialkit received the message
    source         text                           the source address, credentials masked
    topic          text, null                     topic / subject / routing key
    src_partition  integer, null                  Kafka partition
    src_offset     bigint, null                   Kafka offset / JetStream sequence
    key            text, null                     the key (`key=`, else the source's)
    payload        text                           the message (non-UTF-8 bytes: base64)

ClickHouse gets a MergeTree ordered by `received_at`.

Delivery is at least once. When the source can acknowledge (`ack=manual`: kafka with
`group=`, nats with `stream=`, amqp) a batch is acknowledged only after the sink confirmed it:
a confirmed write for a confirming stream sink, `exec_many` returned for a database, every
message handed to the socket otherwise. A pipe killed and restarted therefore re-reads what it
had not acknowledged. `replayed` counts the messages this run recognised as seen before: those
the broker flags as redelivered (AMQP, JetStream), plus, for a database sink, those whose
(source, topic, partition, offset) is at or below the highest offset already in the table when
the run started. A replay it cannot recognise (a Kafka source into a stream sink) is not counted.

Throughput: up to `IN_FLIGHT` batches to a confirming stream sink are on their way at once;
the source is acknowledged in order as their confirmations come back. The sink is dialled
before the source, so a feed that floods from its first frame is not read before there is
somewhere to put it; `Pipe.ready` is set once both ends are up.

Backpressure: while the sink is behind, the pipe does not read; a broker or database source
then holds its backlog (nothing lost). A source that cannot wait (an exchange feed) drops the
oldest messages of its 2000-message buffer: `dropped` counts them. For such a source a batch
is capped at half the buffer, so waiting for one batch never forces a drop by itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .address import Address, parse, redact
from .buffer import CAPACITY
from .envelope import Envelope, Record, received_now
from .errors import ArgumentError, DialError

if TYPE_CHECKING:
    from .connection import Connection
    from .databases.connection import DatabaseConnection
    from .session import Session

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_TABLE",
    "Pipe",
    "PipeError",
    "PipeResult",
    "envelope_for",
    "json_field_key",
    "pipe",
    "with_options",
]

log = logging.getLogger("dial")

DEFAULT_TABLE = "dial_messages"
DEFAULT_BATCH = 500  # messages per sink write (one exec_many, one receipt to wait for)
DEFAULT_LINGER = 0.1  # seconds a partial batch waits for more before it is written
DEFAULT_RETRY = 30.0  # seconds a failing sink is retried before the pipe gives up
POLL_MS = 200  # read slice: how soon a stop request is noticed when the source is idle
CONFIRM_TIMEOUT = 30.0
IN_FLIGHT = 4  # confirmed batches on their way to a stream sink at once
IN_FLIGHT_POLL_MS = 5  # read slice while batches await confirmation: acks go out promptly
DATABASE_SCHEMES = frozenset({"sqlite3", "mysql", "postgres", "postgresql", "clickhouse"})
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")

#: what a transform may return: None (drop), a new value, or a value with a key
Transformed = None | str | bytes | Record | tuple[str | bytes, str | bytes | None]
Transform = Callable[[Envelope], Transformed]
KeyOf = Callable[[Envelope], str | bytes | None]


class PipeError(DialError):
    """The pipe stopped because an end failed (source lost for good, sink refusing);
    `result` holds the counts up to then."""

    result: PipeResult | None = None


@dataclass(frozen=True)
class PipeResult:
    """What a pipe did. `read` counts source messages, `written` messages the sink accepted
    (confirmed where it confirms), `filtered` those the transform dropped, `dropped` those
    the source lost because the pipe fell behind (feeds that cannot wait), `replayed` those
    recognised as delivered before (see the module doc)."""

    read: int = 0
    written: int = 0
    filtered: int = 0
    dropped: int = 0
    replayed: int = 0
    batches: int = 0
    seconds: float = 0.0
    source_reconnects: int = 0
    sink_reconnects: int = 0
    lag: int = 0  # messages read or buffered but not yet written
    reason: str = ""  # why it ended: "stopped", "count reached", "source closed: ..."

    def summary(self) -> str:
        return (
            f"read {self.read:,}, written {self.written:,}, filtered {self.filtered:,}, "
            f"dropped {self.dropped:,}, replayed {self.replayed:,}, batches {self.batches:,} "
            f"in {self.seconds:.1f} s"
        )


# -- addresses --------------------------------------------------------------------------------


def with_options(address: str, **wanted: str) -> str:
    """`address` with options added unless the user set them already (their word wins)."""
    parsed = parse(address)
    missing = {name: value for name, value in wanted.items() if name not in parsed.options.given}
    if not missing:
        return address
    extra = "&".join(f"{name}={value}" for name, value in missing.items())
    if "|" not in address:
        return f"{address}|{extra}"
    head, _, options = address.partition("|")
    if options in ("", "|"):
        return f"{head}|{options}{extra}"
    return f"{address}&{extra}"


def _transport_class(address: Address) -> Any:
    from .registry import transport_for

    return transport_for(address)


def _accepts(address_text: str, option: str) -> bool:
    """True when the address's transport takes `option` (its constructor does no I/O)."""
    try:
        address = parse(address_text)
        cls = _transport_class(address)
        if option not in cls.supported_options:
            return False
        cls(address)
    except DialError:
        return False
    return True


def source_address(src: str) -> str:
    """The source as the pipe dials it: envelopes, reconnects, and manual acks where the
    transport can take them (kafka needs group=, nats stream=: without them, acks stay auto)."""
    address = with_options(src, meta="true", reconnect="true")
    if "ack" in parse(address).options.given:
        return address
    manual = with_options(address, ack="manual")
    return manual if _accepts(manual, "ack") else address


def sink_address(dst: str) -> str:
    """The sink as the pipe dials it: reconnects, and confirmed writes where offered."""
    address = with_options(dst, reconnect="true")
    confirmed = with_options(address, confirm="true")
    return confirmed if _accepts(confirmed, "confirm") else address


def is_database(address: str) -> bool:
    return parse(address).scheme in DATABASE_SCHEMES


def check_table(table: str) -> str:
    if not TABLE_NAME.match(table):
        raise ArgumentError(
            f"table {table!r}: expected a plain name (letters, digits, '_'), optionally schema.name"
        )
    return table


# -- what goes out ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for the sink, and the envelope it came from (to ack and to record)."""

    value: str | bytes
    key: bytes | None
    envelope: Envelope


def _as_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise ArgumentError(f"pipe key must be str, bytes or None, not {type(key).__name__}")


def _shaped(envelope: Envelope, result: Transformed) -> tuple[str | bytes, bytes | None] | None:
    """A transform's answer as (value, key); None drops the message."""
    if result is None:
        return None
    if isinstance(result, str | bytes):
        return result, None
    if isinstance(result, Record):
        return result.value, result.key
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str | bytes):
        return result[0], _as_bytes(result[1])
    value, key = getattr(result, "value", None), getattr(result, "key", None)
    if isinstance(value, str | bytes):
        return value, _as_bytes(key)
    raise ArgumentError(
        "transform must return None, str, bytes, a Record or (value, key), "
        f"not {type(result).__name__}"
    )


def json_field_key(path: str) -> KeyOf:
    """`--key s`: the JSON payload's field at a dotted path (`data.s`, `0.s` for a list) as
    the key; None when the payload is not JSON or lacks the field."""
    if not path or any(not part for part in path.split(".")):
        raise ArgumentError(f"key field {path!r}: expected a dotted path such as data.s")
    parts = path.split(".")

    def key_of(envelope: Envelope) -> str | None:
        try:
            node: Any = json.loads(envelope.value)
        except (ValueError, TypeError):
            return None
        for part in parts:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.lstrip("-").isdigit():
                index = int(part)
                node = node[index] if -len(node) <= index < len(node) else None
            else:
                return None
            if node is None:
                return None
        if isinstance(node, dict | list):
            return json.dumps(node, separators=(",", ":"))
        return node if isinstance(node, str) else json.dumps(node)

    return key_of


def _converter(
    transform: Transform | None, key: KeyOf | None, keep_source_key: bool
) -> Callable[[Envelope], Outgoing | None]:
    """Envelope -> Outgoing, chosen once: the common no-transform, no-key case is one call."""
    if transform is None and key is None:
        if keep_source_key:
            return lambda e: Outgoing(e.value, _as_bytes(e.key), e)
        return lambda e: Outgoing(e.value, None, e)

    def convert(envelope: Envelope) -> Outgoing | None:
        value: str | bytes = envelope.value
        new_key = _as_bytes(envelope.key) if keep_source_key else None
        if transform is not None:
            shaped = _shaped(envelope, transform(envelope))
            if shaped is None:
                return None
            value, given = shaped
            if given is not None:
                new_key = given
        if key is not None:
            new_key = _as_bytes(key(envelope))
        return Outgoing(value, new_key, envelope)

    return convert


# -- sinks ------------------------------------------------------------------------------------


class Pending:
    """A batch on its way to the sink: `wait` until it is settled, then `failure()` is None
    (the batch is safe) or the reason it is not."""

    def done(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self, seconds: float) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def failure(self) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def give_up(self, reason: str) -> None:
        """Stop waiting: what is still unsettled fails with `reason`."""


class Settled(Pending):
    """A batch whose outcome was known when it was submitted (a synchronous sink)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str | None) -> None:
        self.reason = reason

    def done(self) -> bool:
        return True

    def wait(self, seconds: float) -> bool:
        return True

    def failure(self) -> str | None:
        return self.reason


class BatchReceipt(Pending):
    """The confirmations of one batch of confirmed writes, counted on the session's loop:
    one event per batch instead of a future, a shield and a timer per message."""

    __slots__ = ("failures", "finished", "left", "queued")

    def __init__(self, size: int) -> None:
        self.left = size
        self.failures: list[str] = []
        self.queued: Callable[[str], None] | None = None  # Session.confirm_many's give_up
        self.finished = threading.Event()
        if not size:
            self.finished.set()

    def settle(self, error: str | None) -> None:
        """One message answered (loop thread, once per message)."""
        if error is not None:
            self.failures.append(error)
        self.left -= 1
        if not self.left:
            self.finished.set()

    def done(self) -> bool:
        return self.finished.is_set()

    def wait(self, seconds: float) -> bool:
        return self.finished.wait(seconds)

    def failure(self) -> str | None:
        failures = self.failures
        return f"{len(failures)} not confirmed: {failures[0]}" if failures else None

    def give_up(self, reason: str) -> None:
        if self.queued is not None:
            self.queued(reason)


class InThread(Pending):
    """A batch written by the sink's own worker thread (a database insert)."""

    __slots__ = ("future",)

    def __init__(self, future: Future[str | None]) -> None:
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def wait(self, seconds: float) -> bool:
        futures_wait([self.future], seconds)
        return self.future.done()

    def failure(self) -> str | None:
        return self.future.result()


class Sink:
    """Where batches go. `write` returns None once the batch is safe, else the reason;
    `submit` may return before that (a sink that keeps several batches in flight)."""

    reconnects = 0

    def write(self, batch: Sequence[Outgoing]) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def submit(self, batch: Sequence[Outgoing]) -> Pending:
        return Settled(self.write(batch))

    def seen_before(self, envelope: Envelope) -> bool:
        return False

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class StreamSink(Sink):
    """A stream address: confirmed writes in one round per batch where the transport
    confirms, else plain writes, safe once the session has handed them to the socket."""

    def __init__(self, connection: Connection) -> None:
        from .connection import session_of

        self.connection = connection
        self.session: Session = session_of(connection)
        fields = self.session.transport.record_fields
        self.carries_key = "key" in fields
        if self.session.confirm:
            self.submit = self._submit_confirmed  # type: ignore[method-assign]
        else:
            self.write = self._write_plain  # type: ignore[method-assign]

    @property
    def reconnects(self) -> int:  # type: ignore[override]
        return self.session.reconnects

    def _message(self, item: Outgoing) -> str | bytes | Record:
        if item.key is not None and self.carries_key:
            return Record(item.value, item.key)
        return item.value

    def write(self, batch: Sequence[Outgoing]) -> str | None:
        pending = self.submit(batch)
        return settled_outcome(pending)

    def _submit_confirmed(self, batch: Sequence[Outgoing]) -> Pending:
        """Queue every message as a confirmed write, in order, without waiting: the session
        sends them through its one outbox and settles each with the broker's answer (Kafka
        answers a whole producer batch with one receipt)."""
        session = self.session
        if session.state != "open":
            return Settled(f"not connected ({session.last_reason or session.state})")
        receipt = BatchReceipt(len(batch))
        message = self._message
        receipt.queued = session.confirm_many([message(item) for item in batch], receipt.settle)
        return receipt

    def _write_plain(self, batch: Sequence[Outgoing]) -> str | None:
        session, write = self.session, self.connection.write
        errors_before = session.send_errors
        for item in batch:
            sent = (
                write(item.value, key=item.key)
                if item.key is not None and self.carries_key
                else write(item.value)
            )
            if not sent:
                return session.last_reason or "the sink link is down"
        while session.pending() and session.state == "open":  # handed to the socket
            time.sleep(0.001)
        if session.pending() or session.send_errors != errors_before:
            return session.last_send_error or session.last_reason or "the sink link broke"
        return None

    def close(self) -> None:
        self.connection.close()


#: per dialect: the DDL (format with the table name)
_DDL = {
    "sqlite3": (
        "CREATE TABLE IF NOT EXISTS {t} (received_at TIMESTAMP NOT NULL, source TEXT NOT NULL, "
        "topic TEXT NULL, src_partition INTEGER NULL, src_offset INTEGER NULL, key TEXT NULL, "
        "payload TEXT NOT NULL)"
    ),
    "mysql": (
        "CREATE TABLE IF NOT EXISTS {t} (received_at DATETIME(6) NOT NULL, source TEXT NOT NULL, "
        "topic TEXT NULL, src_partition INT NULL, src_offset BIGINT NULL, `key` TEXT NULL, "
        "payload LONGTEXT NOT NULL)"
    ),
    "postgres": (
        "CREATE TABLE IF NOT EXISTS {t} (received_at TIMESTAMPTZ NOT NULL, source TEXT NOT NULL, "
        "topic TEXT NULL, src_partition INTEGER NULL, src_offset BIGINT NULL, key TEXT NULL, "
        "payload TEXT NOT NULL)"
    ),
    "clickhouse": (
        "CREATE TABLE IF NOT EXISTS {t} (received_at DateTime64(6, 'UTC'), source String, "
        "topic Nullable(String), src_partition Nullable(Int32), src_offset Nullable(Int64), "
        "key Nullable(String), payload String) ENGINE = MergeTree ORDER BY received_at"
    ),
}
COLUMNS = "received_at, source, topic, src_partition, src_offset, {key}, payload"


def _text(value: str | bytes | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


class DatabaseSink(Sink):
    """Batched inserts into a table created if absent; a batch is safe once exec_many
    returned."""

    def __init__(self, connection: DatabaseConnection, scheme: str, table: str) -> None:
        self.db = connection
        self.dialect = "postgres" if scheme == "postgresql" else scheme
        self.table = table
        self.aware = self.dialect in ("postgres", "clickhouse")  # columns that keep a zone
        key_column = "`key`" if self.dialect == "mysql" else "key"
        columns = COLUMNS.format(key=key_column)
        self.insert = f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        self._create()
        self.stored: dict[tuple[str, str | None, int | None], int] = {}
        self._writer: ThreadPoolExecutor | None = None

    def submit(self, batch: Sequence[Outgoing]) -> Pending:
        """Insert in one worker thread, in order, while the pipe reads the next batch (the
        raw loop's executor does the same)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="dial-pipe-insert")
        return InThread(self._writer.submit(self.write, batch))

    def _create(self) -> None:
        """CREATE TABLE IF NOT EXISTS; a ClickHouse older than 20.1 (no DateTime64) gets
        whole-second `DateTime` receive times instead."""
        ddl = _DDL[self.dialect].format(t=self.table)
        try:
            self._run(ddl)
        except PipeError as exc:
            if "DateTime64" not in str(exc):
                raise
            self._run(ddl.replace("DateTime64(6, 'UTC')", "DateTime('UTC')"))

    def _run(self, sql: str, *params: Any) -> Any:
        try:
            return self.db.exec(sql, *params)  # raise_errors: a failure raises
        except DialError as exc:
            raise PipeError(f"{self.table}: {exc}") from None

    def remember_offsets(self, source: str) -> None:
        """The highest offset per (topic, partition) this source already wrote here: what
        a replay after a restart is recognised by."""
        result = self._run(
            f"SELECT topic, src_partition, MAX(src_offset) FROM {self.table} "
            "WHERE source = ? AND src_offset IS NOT NULL GROUP BY topic, src_partition",
            source,
        )
        for topic, partition, offset in result.get("values") or []:
            if offset is not None:
                self.stored[(source, topic, partition)] = int(offset)

    def seen_before(self, envelope: Envelope) -> bool:
        if envelope.offset is None or not self.stored:
            return False
        highest = self.stored.get((envelope.source, envelope.topic, envelope.partition))
        return highest is not None and envelope.offset <= highest

    def _row(self, item: Outgoing) -> tuple[Any, ...]:
        envelope = item.envelope
        when = dt.datetime.fromtimestamp(envelope.received_at, dt.timezone.utc)
        return (
            when if self.aware else when.replace(tzinfo=None),
            envelope.source,
            envelope.topic,
            envelope.partition,
            envelope.offset,
            _text(item.key),
            _text(item.value),
        )

    def write(self, batch: Sequence[Outgoing]) -> str | None:
        rows = [self._row(item) for item in batch]
        exec_many = getattr(self.db, "exec_many", None)
        try:
            if exec_many is not None:
                exec_many(self.insert, rows)
            else:  # a dialkit without exec_many: one statement per row
                for row in rows:
                    self.db.exec(self.insert, *row)
        except DialError as exc:  # raise_errors: every failure raises
            return str(exc)
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)  # an insert under way finishes first
        self.db.close()


def settled_outcome(pending: Pending) -> str | None:
    """Wait for a submitted batch (at most CONFIRM_TIMEOUT, then its writes are given up and
    their final word taken): None when it is safe, else why not."""
    if pending.wait(CONFIRM_TIMEOUT):
        return pending.failure()
    reason = f"not confirmed within {CONFIRM_TIMEOUT:g} s"
    pending.give_up(reason)
    if pending.wait(5.0):
        return pending.failure()
    return reason


def open_sink(dst: str, table: str, timeout: float) -> Sink:
    from .dialer import database, stream

    if is_database(dst):
        return DatabaseSink(
            database(dst, timeout, raise_errors=True), parse(dst).scheme, check_table(table)
        )
    return StreamSink(stream(sink_address(dst), timeout, raise_errors=True))


# -- the pipe ---------------------------------------------------------------------------------


@dataclass
class InFlight:
    """A batch submitted to the sink, with what to count and acknowledge once it is safe."""

    pending: Pending
    batch: list[Outgoing]
    envelopes: list[Envelope]
    replayed: int


class Pipe:
    """One running pipe: `run()` moves messages until `stop()` (any thread), `count`
    messages, or an end fails; `progress()` is a live snapshot for status lines, and
    `ready` is set once both ends are dialled (the sink first)."""

    def __init__(
        self,
        src: str,
        dst: str,
        transform: Transform | None = None,
        *,
        key: KeyOf | None = None,
        table: str = DEFAULT_TABLE,
        batch: int = DEFAULT_BATCH,
        linger: float = DEFAULT_LINGER,
        count: int | None = None,
        timeout: float = 10.0,
        retry: float = DEFAULT_RETRY,
        stop: threading.Event | None = None,
    ) -> None:
        if not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise ArgumentError(f"batch must be 1-10000 messages, got {batch!r}")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ArgumentError(f"count must be a whole number >= 1, got {count!r}")
        if linger < 0:
            raise ArgumentError(f"linger must be >= 0 seconds, got {linger!r}")
        if transform is not None and not callable(transform):
            raise ArgumentError("transform must be a callable taking an Envelope")
        if key is not None and not callable(key):
            raise ArgumentError("key must be a callable taking an Envelope (CLI: --key FIELD)")
        self.src_address = source_address(src)
        parse(dst)  # AddressError before anything is dialled
        if not is_database(dst):
            sink_address(dst)
        check_table(table)
        self.dst, self.transform, self.key, self.table = dst, transform, key, table
        self.batch, self.linger, self.count, self.timeout = batch, linger, count, timeout
        self.retry = retry
        self.stopping = stop or threading.Event()
        self.ready = threading.Event()
        self._in_flight: deque[InFlight] = deque()
        self._acks = False
        self._convert = _converter(None, None, False)
        self.started = time.monotonic()
        self._counts = PipeResult()
        self._source: Connection | None = None
        self._sink: Sink | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ask `run()` to write and acknowledge what it has read, then return."""
        self.stopping.set()

    def progress(self) -> PipeResult:
        """The counters so far (thread-safe snapshot)."""
        with self._lock:
            counts = self._counts
        source, sink = self._source, self._sink
        if source is not None:
            stats = source.stats()
            counts = replace(
                counts,
                dropped=stats.dropped,
                source_reconnects=stats.reconnects,
                lag=counts.lag + stats.buffered,
            )
        if sink is not None:
            counts = replace(counts, sink_reconnects=sink.reconnects)
        return replace(counts, seconds=time.monotonic() - self.started)

    def _add(self, **deltas: int) -> None:
        with self._lock:
            counts = self._counts
            self._counts = replace(
                counts, **{name: getattr(counts, name) + n for name, n in deltas.items()}
            )

    def _set_lag(self, lag: int) -> None:
        with self._lock:
            self._counts = replace(self._counts, lag=lag)

    def run(self) -> PipeResult:
        from .dialer import stream

        self.started = time.monotonic()
        sink = open_sink(self.dst, self.table, self.timeout)  # first: a feed floods at once
        self._sink = sink
        try:
            source = stream(self.src_address, self.timeout, raise_errors=True)
        except BaseException:
            sink.close()
            raise
        self._source = source
        self.ready.set()
        try:
            reason = self._move(source, sink)
        except PipeError as error:
            error.result = self.progress()
            raise
        finally:
            source.close()
            sink.close()
        result = replace(self.progress(), reason=reason, lag=0)
        if reason.startswith("source"):
            lost = PipeError(reason)
            lost.result = result
            raise lost
        return result

    def _batch_limit(self, session: Session) -> int:
        """`batch`, but for a source that cannot wait at most half its buffer: reading one
        batch must never need more than the buffer holds."""
        if session.transport.holds_backlog:
            return self.batch
        return max(1, min(self.batch, CAPACITY // 2))

    def _move(self, source: Connection, sink: Sink) -> str:
        from .connection import session_of

        session = session_of(source)
        shown = redact(session.address.url)
        if isinstance(sink, DatabaseSink):
            sink.remember_offsets(shown)
        keep_key = isinstance(sink, StreamSink) and sink.carries_key
        keep_key = keep_key and parse(self.dst).scheme == "kafka"
        self._convert = _converter(self.transform, self.key, keep_key)
        self._acks = session.address.options.ack == "manual"
        self._in_flight.clear()
        reason = self._pump(source, sink, session, shown)
        self._settle(sink, source, block=True, everything=True)  # only a clean end waits
        self._set_lag(0)
        return reason

    def _pump(self, source: Connection, sink: Sink, session: Session, shown: str) -> str:
        """Read, batch and submit until the pipe should end; returns why."""
        buffer, limit, wanted = session.buffer, self._batch_limit(session), self.count
        pending: list[Envelope] = []
        first_at = 0.0
        read = 0
        while True:
            if self.stopping.is_set():
                self._submit(pending, sink, source)
                return "stopped"
            room = limit - len(pending)
            if wanted is not None:
                room = min(room, wanted - read)
            if pending:
                left = max(0.0, self.linger - (time.monotonic() - first_at)) * 1000
                wait = min(left, POLL_MS)  # a stop request is still noticed soon
            else:
                wait = POLL_MS
            if self._in_flight:
                wait = min(wait, IN_FLIGHT_POLL_MS)
            items = buffer.read_many(room, wait if wait >= 1 else -1)
            if items and items[0] == "" and not source.connected:
                self._submit(pending, sink, source)
                return f"source closed: {session.last_reason or 'connection lost'}"
            if items:
                if not pending:
                    first_at = time.monotonic()
                pending.extend(_enveloped(items, shown))
                read += len(items)
                self._add(read=len(items))
            full = len(pending) >= limit or (wanted is not None and read >= wanted)
            if pending and (full or time.monotonic() - first_at >= self.linger):
                self._submit(pending, sink, source)
                pending = []
            self._settle(sink, source, block=False)
            self._set_lag(len(pending) + sum(len(f.envelopes) for f in self._in_flight))
            if wanted is not None and read >= wanted:
                return "count reached"

    def _submit(self, envelopes: list[Envelope], sink: Sink, source: Connection) -> None:
        """Hand one batch to the sink; with IN_FLIGHT batches already on their way, first
        wait for the oldest."""
        if not envelopes:
            return
        batch = [out for out in map(self._convert, envelopes) if out is not None]
        replayed = sum(1 for e in envelopes if e.redelivered or sink.seen_before(e))
        pending = sink.submit(batch) if batch else Settled(None)
        self._in_flight.append(InFlight(pending, batch, envelopes, replayed))
        if len(self._in_flight) >= IN_FLIGHT:
            self._settle(sink, source, block=True)

    def _settle(
        self, sink: Sink, source: Connection, *, block: bool, everything: bool = False
    ) -> None:
        """Acknowledge finished batches in order, oldest first. `block`: wait for the oldest
        (for all of them with `everything`); a failed batch is written again until it is
        safe, before anything after it is acknowledged."""
        in_flight = self._in_flight
        while in_flight:
            head = in_flight[0]
            if not head.pending.done():
                if not block:
                    return
                failure = settled_outcome(head.pending)
            else:
                failure = head.pending.failure()
            if failure is not None:
                self._write_until_safe(sink, head.batch, failure)
            in_flight.popleft()
            self._acknowledge(head, source)
            if block and not everything:
                block = False  # room for one more batch: pick up what is done, no more

    def _acknowledge(self, done: InFlight, source: Connection) -> None:
        envelopes = done.envelopes
        if self._acks:
            try:
                source.ack(envelopes)
            except Exception as exc:  # the link dropped: they come again after the reconnect
                log.info("pipe: ack of %d message(s) failed: %s", len(envelopes), exc)
        written = len(done.batch)
        self._add(
            written=written,
            filtered=len(envelopes) - written,
            replayed=done.replayed,
            batches=1 if written else 0,
        )

    def _write_until_safe(self, sink: Sink, batch: list[Outgoing], failed: str) -> None:
        """A batch failed: write it again (in order, nothing else in between) until the sink
        has it, for at most `retry` seconds."""
        deadline = time.monotonic() + self.retry
        delay = 0.1
        failure: str | None = failed
        while failure is not None:
            if time.monotonic() >= deadline:
                raise PipeError(f"sink failed for {self.retry:g} s: {failure}")
            log.info("pipe: sink write failed (%s); retrying the batch", failure)
            time.sleep(delay)  # a stop request still waits for the batch: nothing is lost
            delay = min(delay * 2, 2.0)
            failure = settled_outcome(sink.submit(batch))


def envelope_for(item: Any, source: str, received_at: float | None = None) -> Envelope:
    """A buffered item as an envelope: a transport that hands over bare messages (no
    metadata of its own) gets a minimal one: value, source, receive time, kind."""
    if type(item) is Envelope:
        return item
    kind = "binary" if isinstance(item, bytes) else "text"
    return Envelope(item, source, received_now() if received_at is None else received_at, kind)


def _enveloped(items: list[Any], source: str) -> list[Envelope]:
    if all(type(item) is Envelope for item in items):
        return items
    now = received_now()
    return [envelope_for(item, source, now) for item in items if item != ""]


def pipe(
    src: str,
    dst: str,
    transform: Transform | None = None,
    *,
    key: KeyOf | None = None,
    table: str = DEFAULT_TABLE,
    batch: int = DEFAULT_BATCH,
    linger: float = DEFAULT_LINGER,
    count: int | None = None,
    timeout: float = 10.0,
    retry: float = DEFAULT_RETRY,
    stop: threading.Event | None = None,
) -> PipeResult:
    """Move messages from `src` to `dst` until `stop` is set (from any thread), `count`
    messages were read, or an end fails (`PipeError`; a bad address: `AddressError`).

    `transform(envelope)` returns None (drop it), str/bytes (the new value), or a `Record`
    / `(value, key)`; `key(envelope)` gives the Kafka key / AMQP routing key. A Kafka sink
    keeps a Kafka source's key unless one of them sets another. `batch` messages (or what
    came within `linger` seconds) go to the sink at a time; `table` is the database sink's
    table. A failing sink is retried for `retry` seconds. See the module doc for delivery
    guarantees, the table schema and what `replayed` counts."""
    return Pipe(
        src,
        dst,
        transform,
        key=key,
        table=table,
        batch=batch,
        linger=linger,
        count=count,
        timeout=timeout,
        retry=retry,
        stop=stop,
    ).run()
