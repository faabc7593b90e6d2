"""nats:// envelopes and headers, and JetStream reading (`stream=`, `durable=`, `deliver=`,
`ack=manual`) against the real local nats-server (JetStream on)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from dial import Dial, last_error
from dial.envelope import Envelope
from dial.errors import ArgumentError
from dial.transports import nats as nats_transport
from tests.conftest import wait_until
from tests.servers.base import free_port, kill, stop, temp_dir
from tests.servers.brokers import nats_server, start_nats

__all__ = ["nats_server"]  # fixture used by name

WAIT = 15.0  # seconds a test waits for something that should come quickly


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def _with_client(port: int, work: Any) -> Any:
    client = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        return await work(client)
    finally:
        await client.close()


def run(port: int, work: Any) -> Any:
    return asyncio.run(_with_client(port, work))


def publish(port: int, subject: str, payloads: list[str], headers: Any = None) -> None:
    async def work(client: Any) -> None:
        for payload in payloads:
            await client.publish(subject, payload.encode(), headers=headers)
        await client.flush()

    run(port, work)


def stream_publish(port: int, subject: str, payloads: list[str]) -> None:
    """Publish through JetStream, each acknowledged: stored before this returns."""

    async def work(client: Any) -> None:
        js = client.jetstream()
        for payload in payloads:
            await js.publish(subject, payload.encode())

    run(port, work)


@pytest.fixture
def stream(nats_server: int) -> Iterator[tuple[str, str]]:
    """A fresh memory stream storing one subject: (stream name, subject)."""
    name, subject = unique("S"), unique("js.")

    async def create(client: Any) -> None:
        await client.jsm().add_stream(name=name, subjects=[subject], storage="memory")

    async def drop(client: Any) -> None:
        await client.jsm().delete_stream(name)

    run(nats_server, create)
    yield name, subject
    run(nats_server, drop)


def address(port: int, subject: str, options: str) -> str:
    return f"nats://127.0.0.1:{port}?topic={subject}|{options}"


def read_all(conn: Any, count: int) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + WAIT
    while len(got) < count and time.monotonic() < deadline:
        message = conn.read(500)
        if message:
            got.append(message)
    return got


def read_envelopes(conn: Any, count: int) -> list[Envelope]:
    got: list[Envelope] = []
    deadline = time.monotonic() + WAIT
    while len(got) < count and time.monotonic() < deadline:
        envelope = conn.read_message(500)
        if envelope is not None:
            got.append(envelope)
    return got


def nothing_more(conn: Any, milliseconds: int = 700) -> bool:
    return conn.read(milliseconds) is None


# -- core NATS: envelopes and headers -------------------------------------------------------


def test_core_envelopes_carry_the_subject_and_headers(nats_server: int) -> None:
    base = unique("core.")
    with Dial(f"nats://127.0.0.1:{nats_server}?topic={base}.*|meta=true") as conn:
        publish(nats_server, f"{base}.btc", ["hello"], headers={"trace": "t-1", "kind": "quote"})
        (envelope,) = read_envelopes(conn, 1)
    assert envelope.value == "hello"
    assert envelope.topic == f"{base}.btc"
    assert dict(envelope.headers) == {"trace": b"t-1", "kind": b"quote"}
    assert envelope.kind == "text"
    assert envelope.source == f"nats://127.0.0.1:{nats_server}?topic={base}.*"


def test_write_with_headers_reaches_a_reader(nats_server: int) -> None:
    subject = unique("hdr.")
    url = f"nats://127.0.0.1:{nats_server}?topic={subject}|meta=true"
    with Dial(url) as conn:
        assert conn.write("body", headers={"a": "1", "b": b"two"}) > 0
        (envelope,) = read_envelopes(conn, 1)
        assert conn.read(-1) is None  # no second copy
    assert envelope.value == "body"
    assert envelope.headers == (("a", b"1"), ("b", b"two"))


def test_nats_refuses_keys_and_wildcard_writes(nats_server: int) -> None:
    from dial.errors import ArgumentError

    plain = Dial(f"nats://127.0.0.1:{nats_server}?topic={unique('k.')}")
    with plain, pytest.raises(ArgumentError, match="key"):
        plain.write("x", key="k")
    wild = Dial(f"nats://127.0.0.1:{nats_server}?topic=wild.*")
    with wild, pytest.raises(ArgumentError, match="wildcard"):
        wild.write("x")


def test_ack_manual_needs_a_stream(nats_server: int) -> None:
    assert Dial(f"nats://127.0.0.1:{nats_server}?topic=t|ack=manual") is None
    assert "stream=" in (last_error() or ""), last_error()
    assert Dial(f"nats://127.0.0.1:{nats_server}?topic=t|durable=d") is None
    assert "needs stream=" in (last_error() or ""), last_error()


# -- JetStream --------------------------------------------------------------------------------


def test_a_missing_stream_is_named(nats_server: int) -> None:
    missing = unique("NOPE")
    assert Dial(address(nats_server, "x.y", f"stream={missing}")) is None
    reason = last_error() or ""
    assert missing in reason and "does not exist" in reason, reason


def test_a_bad_stream_name_is_refused(nats_server: int) -> None:
    assert Dial(address(nats_server, "x.y", "stream=a.b")) is None
    assert "JetStream name" in (last_error() or ""), last_error()


def test_durable_continues_without_loss_or_gap(nats_server: int, stream: tuple[str, str]) -> None:
    name, subject = stream
    durable = unique("d")
    url = address(nats_server, subject, f"stream={name}&durable={durable}&confirm=true")
    with Dial(url, raise_errors=True) as conn:
        for i in range(20):
            assert conn.write(f"m{i}") > 0  # confirmed by the stream's PubAck
        assert read_all(conn, 20) == [f"m{i}" for i in range(20)]
    stream_publish(nats_server, subject, [f"m{i}" for i in range(20, 50)])  # while away
    with Dial(url, raise_errors=True) as conn:
        assert read_all(conn, 30) == [f"m{i}" for i in range(20, 50)]
        assert nothing_more(conn)


def test_deliver_all_replays_from_the_start(nats_server: int, stream: tuple[str, str]) -> None:
    name, subject = stream
    stream_publish(nats_server, subject, ["a", "b", "c"])
    with Dial(address(nats_server, subject, f"stream={name}&deliver=all&meta=true")) as conn:
        envelopes = read_envelopes(conn, 3)
    assert [e.value for e in envelopes] == ["a", "b", "c"]
    assert [e.offset for e in envelopes] == [1, 2, 3]  # stream sequences
    assert all(e.topic == subject and e.redelivered is False for e in envelopes)
    assert all(e.timestamp and abs(e.timestamp - time.time()) < 600 for e in envelopes)


def test_deliver_new_and_seq(nats_server: int, stream: tuple[str, str]) -> None:
    name, subject = stream
    stream_publish(nats_server, subject, ["old1", "old2", "old3"])
    with Dial(address(nats_server, subject, f"stream={name}")) as conn:  # deliver=new
        assert nothing_more(conn)
        stream_publish(nats_server, subject, ["new"])
        assert read_all(conn, 1) == ["new"]
    with Dial(address(nats_server, subject, f"stream={name}&deliver=seq:2")) as conn:
        assert read_all(conn, 3) == ["old2", "old3", "new"]


def test_headers_through_the_stream(nats_server: int, stream: tuple[str, str]) -> None:
    name, subject = stream
    url = address(nats_server, subject, f"stream={name}&meta=true&confirm=true")
    with Dial(url, raise_errors=True) as conn:
        assert conn.write("with", headers={"id": "7"}) > 0
        (envelope,) = read_envelopes(conn, 1)
    assert envelope.value == "with"
    assert ("id", b"7") in envelope.headers  # the stream also keeps Nats-Expected-Stream


def test_ack_manual_redelivers_what_was_not_acked(
    nats_server: int, stream: tuple[str, str]
) -> None:
    name, subject = stream
    durable = unique("m")
    url = address(nats_server, subject, f"stream={name}&durable={durable}&ack=manual")
    with Dial(url, raise_errors=True) as conn:
        stream_publish(nats_server, subject, [f"n{i}" for i in range(6)])
        envelopes = read_envelopes(conn, 6)
        assert [e.value for e in envelopes] == [f"n{i}" for i in range(6)]
        conn.ack([e for e in envelopes if e.value in ("n0", "n1", "n3")])
    with Dial(url, raise_errors=True) as conn:
        again = read_envelopes(conn, 3)
        assert sorted(e.value for e in again) == ["n2", "n4", "n5"]
        assert all(e.redelivered for e in again)
        conn.ack(again)
    with Dial(url, raise_errors=True) as conn:
        assert conn.read_message(700) is None  # all acknowledged: nothing comes back


def test_ack_manual_ephemeral_redelivers_after_a_stale_restart(
    nats_server: int, stream: tuple[str, str]
) -> None:
    """No durable: the idle= watchdog drops the link while the client is still connected,
    which gives the unacknowledged messages back and deletes the ephemeral consumer; the
    next consumer must start at them, not after them."""
    name, subject = stream
    options = f"stream={name}&ack=manual&idle=1&reconnect=true&interval=200"
    with Dial(address(nats_server, subject, options), raise_errors=True) as conn:
        stream_publish(nats_server, subject, ["m0", "m1", "m2"])
        first = read_envelopes(conn, 3)
        assert [e.value for e in first] == ["m0", "m1", "m2"]
        assert wait_until(lambda: conn.stats().stale_restarts >= 1, WAIT)
        again = read_envelopes(conn, 3)
        assert sorted(e.value for e in again) == ["m0", "m1", "m2"]
        assert sorted(e.offset for e in again) == [e.offset for e in first]
        conn.ack(again)


def test_ack_refuses_envelopes_of_another_connection_before_acking_any(
    nats_server: int, stream: tuple[str, str]
) -> None:
    name, subject = stream
    durable = unique("m")
    url = address(nats_server, subject, f"stream={name}&durable={durable}&ack=manual")
    other_url = address(nats_server, subject, f"stream={name}&durable={unique('o')}&ack=manual")
    with Dial(url, raise_errors=True) as conn, Dial(other_url, raise_errors=True) as other:
        stream_publish(nats_server, subject, ["n0", "n1"])
        mine, theirs = read_envelopes(conn, 2), read_envelopes(other, 2)
        assert [e.value for e in mine] == [e.value for e in theirs] == ["n0", "n1"]
        with pytest.raises(ArgumentError, match="not read from this nats:// connection"):
            conn.ack([mine[0], theirs[1]])  # the same stream, but another consumer
        forged = Envelope("n1", mine[1].source, time.time(), offset=2, token=b"nope")
        with pytest.raises(ArgumentError, match="not read from this nats:// connection"):
            conn.ack([mine[0], forged])
    with Dial(url, raise_errors=True) as conn:  # nothing was acknowledged: both come again
        again = read_envelopes(conn, 2)
        assert [e.value for e in again] == ["n0", "n1"]
        conn.ack(again)


def test_a_slow_reader_loses_nothing(nats_server: int, stream: tuple[str, str]) -> None:
    name, subject = stream
    total = 5000
    with Dial(address(nats_server, subject, f"stream={name}&deliver=all")) as conn:
        stream_publish(nats_server, subject, [f"p{i}" for i in range(total)])
        time.sleep(1.0)  # the reader is away; the stream holds what the buffer cannot
        assert conn.stats().buffered <= 2000
        got = read_all(conn, total)
        assert got == [f"p{i}" for i in range(total)]
        assert conn.stats().dropped == 0


def test_an_unanswered_confirmation_fails_the_write(
    nats_server: int, stream: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream is deleted after Dial found it: the subject still has a core subscriber
    (the connection itself), so no 'no responders' comes back, and no PubAck either."""
    monkeypatch.setattr(nats_transport, "PUBACK_TIMEOUT", 0.5)
    name, subject = stream
    with Dial(f"nats://127.0.0.1:{nats_server}?topic={subject}|confirm=true") as conn:

        async def drop(client: Any) -> None:
            await client.jsm().delete_stream(name)

        run(nats_server, drop)
        assert conn.write("lost", timeout=20) == 0
        assert "no acknowledgement" in (conn.stats().last_send_error or "")

        async def create(client: Any) -> None:  # for the fixture's teardown
            await client.jsm().add_stream(name=name, subjects=[subject], storage="memory")

        run(nats_server, create)


def test_a_durable_reader_survives_a_broker_restart() -> None:
    """A private JetStream server (file storage) killed and started again on the same store:
    the reconnected durable continues where it was and loses nothing. Acknowledgements the
    killed server had not written yet bring some earlier messages again (at-least-once)."""
    port, store = free_port(), temp_dir("nats-js-")
    name, subject = unique("R"), unique("js.")
    server = start_nats(port, jetstream=store)
    try:

        async def create(client: Any) -> None:
            await client.jsm().add_stream(name=name, subjects=[subject], storage="file")

        run(port, create)
        options = f"stream={name}&durable=keep&reconnect=true&interval=200"
        with Dial(address(port, subject, options), timeout=10, raise_errors=True) as conn:
            stream_publish(port, subject, [f"r{i}" for i in range(10)])
            assert read_all(conn, 10) == [f"r{i}" for i in range(10)]
            kill(server)
            assert conn.read(WAIT * 1000) == ""  # the link is down: read() says so
            server = start_nats(port, jetstream=store)
            stream_publish(port, subject, [f"r{i}" for i in range(10, 20)])
            got: list[str] = []
            deadline = time.monotonic() + WAIT
            while "r19" not in got and time.monotonic() < deadline:
                message = conn.read(500)
                if message:  # "" while it reconnects, None when nothing came yet
                    got.append(message)
        earlier = {f"r{i}" for i in range(10)}
        assert [m for m in got if m not in earlier] == [f"r{i}" for i in range(10, 20)]
    finally:
        stop(server)
