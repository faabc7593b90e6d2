"""kafka:// envelopes (meta=true), keyed writes with headers, ack=manual, kcat-like start
positions (`offset=N`, `offset=-N`) and `at_end()`, against the real Kafka-API broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiokafka.errors
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from dial import Dial
from dial.envelope import Envelope
from dial.errors import AddressError, ArgumentError
from dial.transports.kafka import _refused_idempotence, partition_for_key
from tests.conftest import wait_until
from tests.servers.brokers import kafka
from tests.servers.simulator import script_env

__all__ = ["kafka"]  # fixture used by name

WAIT = 10.0  # seconds any single expected event may take
WAIT_MS = int(WAIT * 1000)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def url(port: int, topic: str, query: str = "", options: str = "") -> str:
    return (
        f"kafka://127.0.0.1:{port}/{topic}"
        + (f"?{query}" if query else "")
        + (f"|{options}" if options else "")
    )


def create_topic(port: int, partitions: int) -> str:
    """A new topic with exactly `partitions` partitions (the broker's default may differ)."""
    topic = unique("dial_meta_")

    async def run() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(run())
    return topic


def produce(port: int, topic: str, records: list[dict[str, Any]]) -> list[Any]:
    """Send records (keyword arguments of `send_and_wait`) one by one; their metadata."""

    async def run() -> list[Any]:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
        await producer.start()
        try:
            return [await producer.send_and_wait(topic, **record) for record in records]
        finally:
            await producer.stop()

    return asyncio.run(run())


def produce_many(port: int, topic: str, values: list[str], partition: int = 0) -> None:
    """Send many values to one partition in batches (send, then flush). (tansu's end
    offsets count a batch as one record: where they matter, use `produce_each`.)"""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}")
        await producer.start()
        try:
            for value in values:
                await producer.send(topic, value.encode(), partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def produce_each(port: int, topic: str, values: list[str], partition: int = 0) -> None:
    """Send values to one partition, one acknowledged record at a time."""
    produce(port, topic, [{"value": value.encode(), "partition": partition} for value in values])


def stored(port: int, topic: str) -> dict[int, list[tuple[str | None, str]]]:
    """Every record of `topic` as partition -> [(key, value)] in offset order, read by an
    independent consumer."""

    async def run() -> dict[int, list[tuple[str | None, str]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        await consumer.start()
        try:
            await consumer.topics()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            got: dict[int, list[tuple[str | None, str]]] = {tp.partition: [] for tp in tps}
            deadline = time.monotonic() + WAIT
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                assert time.monotonic() < deadline, f"{topic}: read only {got} in {WAIT} s"
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    got[tp.partition] += [
                        (None if r.key is None else r.key.decode(), r.value.decode())
                        for r in records
                    ]
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


def committed_offsets(port: int, topic: str, group: str) -> dict[int, int]:
    """What `group` has committed on `topic`, partition -> offset, asked by a client that
    does not join the group."""

    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=f"127.0.0.1:{port}", group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()
            got = {}
            for partition in sorted(consumer.partitions_for_topic(topic)):
                offset = await consumer.committed(TopicPartition(topic, partition))
                if offset is not None:
                    got[partition] = offset
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


@contextmanager
def foreign_member(port: int, topic: str, group: str) -> Iterator[AIOKafkaConsumer]:
    """A plain aiokafka member of `group` that never commits (as a kcat or a Java consumer
    with auto-commit off), polling in a thread of its own; it leaves the group on exit."""
    started: list[AIOKafkaConsumer] = []
    ready = threading.Event()
    leave = threading.Event()

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=f"127.0.0.1:{port}", group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        started.append(consumer)
        ready.set()
        try:
            while not leave.is_set():
                await consumer.getmany(timeout_ms=100)
        finally:
            await consumer.stop()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(WAIT), "the foreign member did not start"
        yield started[0]
    finally:
        leave.set()
        thread.join(WAIT)
        assert not thread.is_alive(), "the foreign member did not leave"


def read_envelopes(conn: Any, count: int) -> list[Envelope]:
    envelopes = []
    for _ in range(count):
        envelope = conn.read_message(WAIT_MS)
        assert envelope is not None, f"only {len(envelopes)} of {count} messages came"
        envelopes.append(envelope)
    return envelopes


def values_until_quiet(conn: Any, quiet_ms: int = 1500) -> list[str]:
    """Everything read until nothing more comes for `quiet_ms`."""
    got = []
    while (message := conn.read(quiet_ms)) is not None:
        got.append(message)
    return got


@pytest.fixture
def single(kafka: int) -> Iterator[str]:
    """A one-partition topic: offsets there are the order of the writes."""
    yield create_topic(kafka, 1)


# -- meta=true ----------------------------------------------------------------------------------


def test_envelopes_carry_topic_partition_offset_key_headers_and_timestamp(kafka: int) -> None:
    topic = create_topic(kafka, 3)
    with Dial(url(kafka, topic, options="meta=true"), timeout=30, raise_errors=True) as conn:
        sent = produce(
            kafka,
            topic,
            [
                {
                    "value": b"first",
                    "key": b"k-1",
                    "partition": 2,
                    "headers": [("h", b"1"), ("h", b"2"), ("bin", b"\xff\x00")],
                    "timestamp_ms": 1_700_000_000_123,
                },
                {"value": b"second", "partition": 2},
            ],
        )
        first, second = read_envelopes(conn, 2)
    assert first.value == "first"
    assert first.kind == "text"
    assert first.topic == topic
    assert first.partition == 2
    assert first.offset == sent[0].offset
    assert first.key == "k-1"
    assert first.headers == (("h", b"1"), ("h", b"2"), ("bin", b"\xff\x00"))
    assert first.timestamp == pytest.approx(1_700_000_000.123)
    assert first.source == f"kafka://127.0.0.1:{kafka}/{topic}"
    assert second.offset == sent[1].offset == first.offset + 1
    assert second.key is None
    assert second.headers == ()


def test_read_returns_the_bare_value_with_meta(kafka: int, single: str) -> None:
    with Dial(url(kafka, single, options="meta=true"), timeout=30, raise_errors=True) as conn:
        conn.write("plain", key="k")
        assert conn.read(WAIT_MS) == "plain"


# -- keys and headers ---------------------------------------------------------------------------


def test_partitioner_matches_the_java_clients_murmur2() -> None:
    """Kafka's own test vectors for Utils.murmur2: the same key, the same partition, in every
    client that uses the default partitioner."""
    java = {
        "21": -973932308,
        "foobar": -790332482,
        "a-little-bit-long-string": -985981536,
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        "abc": 479470107,
    }
    for key, hashed in java.items():
        for count in (1, 3, 4, 7):
            expected = (hashed & 0x7FFFFFFF) % count
            assert partition_for_key(key.encode(), list(range(count))) == expected


@pytest.mark.parametrize("confirm", [False, True], ids=["plain", "confirm"])
def test_keyed_writes_land_on_the_key_partition_in_order(kafka: int, confirm: bool) -> None:
    topic = create_topic(kafka, 4)
    keys = [f"key-{i}" for i in range(8)]
    placed = {key: partition_for_key(key.encode(), [0, 1, 2, 3]) for key in keys}
    assert len(set(placed.values())) > 1  # the keys really spread over partitions
    options = "confirm=true" if confirm else ""
    with Dial(url(kafka, topic, options=options), timeout=30, raise_errors=True) as conn:
        for round_ in range(5):
            for key in keys:
                message = f"{key}:{round_}"
                assert conn.write(message, key=key, headers={"round": str(round_)}) == len(message)
        conn.write("unkeyed")
        assert wait_until(lambda: conn.stats().messages_out == 41, WAIT)
        assert conn.stats().send_errors == 0
    records = stored(kafka, topic)
    for partition, written in records.items():
        for key, value in written:
            if key is not None:
                assert placed[key] == partition, f"{value} landed on {partition}"
    for key in keys:  # each key in the order written
        on_its_partition = [v for k, v in records[placed[key]] if k == key]
        assert on_its_partition == [f"{key}:{r}" for r in range(5)]
    assert sum(v == "unkeyed" for written in records.values() for _, v in written) == 1


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_writes_past_a_full_batch_keep_their_order(kafka: int, single: str, keyed: bool) -> None:
    """A burst larger than one produce batch (256 KiB) is shipped batch after batch: every
    message confirmed, none lost or reordered where one batch ends and the next begins."""
    values = [f"{i:06d}:" + "x" * 200 for i in range(3000)]  # about 620 KB: three batches
    with Dial(url(kafka, single, options="confirm=true"), 30, raise_errors=True) as conn:
        for value in values:
            written = conn.write(value, key="k") if keyed else conn.write(value)
            assert written == len(value)
        assert conn.stats().send_errors == 0
    assert [value for _, value in stored(kafka, single)[0]] == values


def test_headers_and_keys_written_come_back_in_envelopes(kafka: int) -> None:
    topic = create_topic(kafka, 2)
    address = url(kafka, topic, options="meta=true")
    with Dial(address, timeout=30, raise_errors=True) as conn:
        conn.write("with-headers", key=b"K", headers={"a": "1", "b": b"\x00\x01"})
        (envelope,) = read_envelopes(conn, 1)
    assert envelope.key == "K"
    assert envelope.partition == partition_for_key(b"K", [0, 1])
    assert envelope.headers == (("a", b"1"), ("b", b"\x00\x01"))


# -- ack=manual ---------------------------------------------------------------------------------


@pytest.mark.slow  # a second member of the same group joins in about 20 s on tansu
def test_manual_ack_redelivers_what_was_not_acked(kafka: int, single: str) -> None:
    group = unique("g")
    address = url(kafka, single, f"group={group}", "ack=manual")
    with Dial(address, timeout=30, raise_errors=True) as conn:
        for i in range(10):
            conn.write(f"m{i}")
        envelopes = read_envelopes(conn, 10)
        assert [e.value for e in envelopes] == [f"m{i}" for i in range(10)]
        conn.ack(envelopes[:5])
        conn.ack(envelopes[2])  # older than what was acked: the commit does not move back
    with Dial(address, timeout=60, raise_errors=True) as again:
        assert values_until_quiet(again) == [f"m{i}" for i in range(5, 10)]


@pytest.mark.slow
def test_manual_ack_from_the_first_connect_keeps_unread_messages(kafka: int, single: str) -> None:
    """A group that never acked still resumes where it first started (offset=latest),
    not at a later end that would skip what was read but never acknowledged."""
    group = unique("g")
    address = url(kafka, single, f"group={group}", "ack=manual")
    with Dial(address, timeout=30, raise_errors=True) as conn:
        conn.write("unacked")
        assert conn.read(WAIT_MS) == "unacked"
    with Dial(address, timeout=60, raise_errors=True) as again:
        assert again.read(WAIT_MS) == "unacked"


@pytest.mark.slow  # four joins and rebalances of one group: about 30 s on tansu
def test_manual_ack_commits_the_start_of_a_partition_handed_over_later(kafka: int) -> None:
    """A partition this connection gets when another member leaves (not at its own join)
    still has its starting position committed: what was read there but never acked comes
    again at the next connect of the group, instead of being skipped by `latest`."""
    topic = create_topic(kafka, 2)
    group = unique("g")
    address = url(kafka, topic, f"group={group}", "ack=manual")
    with foreign_member(kafka, topic, group) as other:
        assert wait_until(lambda: len(other.assignment()) == 2, 60)
        conn = Dial(address, timeout=90, raise_errors=True)
        assert wait_until(lambda: len(other.assignment()) == 1, 60)  # one partition each
        held_by_other = next(iter(other.assignment())).partition
    with conn:  # the other member left: this connection now reads both partitions
        transport = conn._session.transport
        assert wait_until(lambda: len(transport._consumer.assignment()) == 2, 60)
        assert wait_until(transport.at_end, WAIT)
        produce(kafka, topic, [{"value": f"p{p}".encode(), "partition": p} for p in (0, 1)])
        read = read_envelopes(conn, 2)  # and never acked
        assert sorted(e.value for e in read) == ["p0", "p1"]
    assert held_by_other in committed_offsets(kafka, topic, group)
    with Dial(address, timeout=90, raise_errors=True) as again:
        assert sorted(values_until_quiet(again)) == ["p0", "p1"]


def test_ack_refuses_envelopes_read_by_another_connection(kafka: int, single: str) -> None:
    """Same topic, another group: acking its envelope here would move this group's commit
    past messages this connection never saw. Nothing of the call is committed."""
    group = unique("g")
    with (
        Dial(url(kafka, single, f"group={group}", "ack=manual"), 30, raise_errors=True) as conn,
        Dial(
            url(kafka, single, f"group={unique('g')}", "ack=manual"), 30, raise_errors=True
        ) as other,
    ):
        conn.write("shared")
        (own,) = read_envelopes(conn, 1)
        (foreign,) = read_envelopes(other, 1)
        assert (foreign.topic, foreign.partition, foreign.offset) == (
            own.topic,
            own.partition,
            own.offset,
        )
        with pytest.raises(ArgumentError, match="was not read from this kafka:// connection"):
            conn.ack([own, foreign])
        assert committed_offsets(kafka, single, group) == {0: own.offset}  # the join's start only
        conn.ack(own)
        assert committed_offsets(kafka, single, group) == {0: own.offset + 1}


def test_manual_ack_without_a_group_is_refused(kafka: int) -> None:
    with pytest.raises(AddressError, match="ack=manual needs a consumer group"):
        Dial(url(kafka, "t", options="ack=manual"), raise_errors=True)


# -- start positions and at_end -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("3", [f"m{i}" for i in range(3, 10)]),
        ("-4", [f"m{i}" for i in range(6, 10)]),
        ("beginning", [f"m{i}" for i in range(10)]),
        ("0", [f"m{i}" for i in range(10)]),
        ("-100", [f"m{i}" for i in range(10)]),  # clamped to the first offset
        ("100", []),  # clamped to the end
        ("end", []),
    ],
)
def test_offset_positions(kafka: int, single: str, offset: str, expected: list[str]) -> None:
    produce_each(kafka, single, [f"m{i}" for i in range(10)])
    with Dial(url(kafka, single, f"offset={offset}"), timeout=30, raise_errors=True) as conn:
        conn.write("after")
        assert values_until_quiet(conn) == [*expected, "after"]


def test_negative_offset_counts_back_on_every_partition(kafka: int) -> None:
    topic = create_topic(kafka, 2)
    for partition in (0, 1):
        produce_each(kafka, topic, [f"p{partition}-{i}" for i in range(5)], partition)
    with Dial(url(kafka, topic, "offset=-2"), timeout=30, raise_errors=True) as conn:
        got = values_until_quiet(conn)
    assert sorted(got) == ["p0-3", "p0-4", "p1-3", "p1-4"]


def test_offset_applies_to_a_group_without_committed_offsets(kafka: int, single: str) -> None:
    produce_each(kafka, single, [f"m{i}" for i in range(10)])
    address = url(kafka, single, f"group={unique('g')}&offset=-3")
    with Dial(address, timeout=30, raise_errors=True) as conn:
        assert values_until_quiet(conn) == ["m7", "m8", "m9"]


def test_bad_offset_is_refused() -> None:
    with pytest.raises(AddressError, match="expected latest or earliest"):
        Dial("kafka://127.0.0.1:9092/t?offset=+5", raise_errors=True)


def test_at_end_once_everything_was_handed_over(kafka: int, single: str) -> None:
    backlog = 3000  # more than the 2000-message buffer: the fetch pauses before the end
    produce_many(kafka, single, [f"m{i}" for i in range(backlog)])
    with Dial(url(kafka, single, "offset=earliest"), timeout=30, raise_errors=True) as conn:
        transport = conn._session.transport
        assert wait_until(lambda: conn.stats().buffered >= 1000, WAIT)
        assert not transport.at_end()  # the broker still holds the rest
        got = [conn.read(WAIT_MS) for _ in range(backlog)]
        assert got == [f"m{i}" for i in range(backlog)]
        assert wait_until(transport.at_end, WAIT)
        conn.write("more")
        assert conn.read(WAIT_MS) == "more"
        assert wait_until(transport.at_end, WAIT)
    assert not transport.at_end()  # closed


# -- the idempotent producer fallback -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (aiokafka.errors.UnknownError(), True),  # tansu's answer to InitProducerId
        (aiokafka.errors.UnsupportedVersionError(), True),
        (aiokafka.errors.IncompatibleBrokerVersion(), True),
        (aiokafka.errors.KafkaConnectionError(), False),
        (aiokafka.errors.KafkaTimeoutError(), False),
        (aiokafka.errors.ClusterAuthorizationFailedError(), False),
        (aiokafka.errors.TopicAuthorizationFailedError(), False),
        (aiokafka.errors.NodeNotReadyError(), False),
    ],
)
def test_only_an_unsupported_idempotent_producer_falls_back(
    error: BaseException, refused: bool
) -> None:
    assert _refused_idempotence(error) is refused


def test_fallback_to_acks_all_leaves_no_library_error_on_stderr(kafka: int, single: str) -> None:
    """tansu lists InitProducerId without implementing it: confirm=true falls back to
    acks=all with one notice of ours (with -v), not aiokafka's error line too."""
    address = url(kafka, single, options="confirm=true")
    dial_cli = [sys.executable, "-m", "dial.cli"]
    for verbose in ([], ["-v"]):
        result = subprocess.run(
            [*dial_cli, *verbose, "write", address, "hello"],
            capture_output=True,
            text=True,
            timeout=60,
            env=script_env(),
        )
        assert result.returncode == 0, result.stderr
        assert "InitProducerId" not in result.stderr
        notices = result.stderr.count("does not support the idempotent producer")
        assert notices == (1 if verbose else 0), result.stderr
    assert [value for _, value in stored(kafka, single)[0]] == ["hello", "hello"]
