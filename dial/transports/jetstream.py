"""The JetStream half of `nats://` (`stream=NAME`): consumer setup, the pull loop, and the
NATS header and acknowledgement-subject formats. `NatsTransport` drives it; nothing here
knows about buffers or sessions.

Reading pulls from a consumer of the stream filtered to the subject: durable (`durable=NAME`,
its position kept by the server across links, restarts and other processes sharing it) or
ephemeral (created per link and deleted on close; a new link starts after the last message
this connection received, so a reconnect loses nothing either). One pull request of `BATCH`
messages is outstanding at a time, and the next one is only sent while the reader keeps up:
a paused buffer stops the requests and the stream keeps the backlog.

`deliver=` is where a consumer starts when it is created (NATS's DeliverPolicy): `new` (the
default: from the moment of Dial, like every other transport), `all`, `last`,
`last_per_subject`, `seq:N` (stream sequence N on) or `time:RFC3339` (messages stored from
then on). An existing durable keeps its own position; `deliver` does not move it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ..address import deliver_start_time
from ..envelope import Headers
from ..errors import ConnectError

__all__ = [
    "BATCH",
    "HeaderPairs",
    "Puller",
    "ack_metadata",
    "open_consumer",
    "parse_headers",
    "pull_status",
]

BATCH = 250  # messages per pull request: a paused buffer takes at most this many more
EXPIRES = 5.0  # seconds the server holds a pull request open when it has nothing to send
REQUEST_GRACE = 2.0  # a pull request unanswered this long after EXPIRES was lost: ask again
EPHEMERAL_IDLE = 30.0  # seconds an ephemeral consumer outlives a link that vanished
_NS = 1_000_000_000
_HEADER_LINE = b"NATS/1.0"


def parse_headers(raw: bytes) -> Headers:
    """NATS headers (`NATS/1.0[ status]\\r\\nName: value\\r\\n...`) as (name, value) pairs in
    the order sent, repeats kept; the status line is not a header."""
    if not raw:
        return ()
    lines = raw.split(b"\r\n")
    pairs = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon and name:
            pairs.append((name.decode("utf-8", "surrogateescape"), value.strip()))
    return tuple(pairs)


def pull_status(raw: bytes) -> tuple[int, str] | None:
    """The inline status of a message on the pull inbox (`NATS/1.0 408 Request Timeout`),
    or None for a stream message."""
    if len(raw) < 12 or raw[8:9] != b" ":
        return None
    line = raw[9:].split(b"\r\n", 1)[0]
    code, _, text = line.partition(b" ")
    return (int(code), text.decode("utf-8", "replace")) if code.isdigit() else None


def ack_metadata(reply: bytes) -> tuple[int, int, int]:
    """(stream sequence, delivery count, timestamp in ns) from a JetStream message's reply
    subject, `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>` (the
    domain form adds two tokens in front and one at the end)."""
    tokens = reply.split(b".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[4]), int(tokens[7])
    return int(tokens[7]), int(tokens[6]), int(tokens[9])


class HeaderPairs:
    """Outgoing headers for nats-py, which iterates `headers.items()`: a dict would drop
    repeated names. Values must be text (NATS headers are); CR/LF become spaces."""

    def __init__(self, headers: Headers) -> None:
        pairs = []
        for name, value in headers:
            try:
                pairs.append((name, value.decode()))
            except UnicodeDecodeError:
                raise ValueError(f"nats:// header {name!r}: the value is not UTF-8 text") from None
        self._pairs = pairs

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __setitem__(self, name: str, value: str) -> None:  # nats-py adds Nats-Expected-Stream
        self._pairs.append((name, value))


def deliver_config(deliver: str | None) -> dict[str, Any]:
    """`deliver=` as ConsumerConfig fields."""
    kind, _, start = (deliver or "new").partition(":")
    if kind == "seq":
        return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": int(start)}
    if kind == "time":
        return {
            "deliver_policy": DeliverPolicy.BY_START_TIME,
            "opt_start_time": deliver_start_time(start),
        }
    return {"deliver_policy": DeliverPolicy(kind)}


async def open_consumer(
    client: Any,
    where: str,
    stream: str,
    subject: str,
    durable: str | None,
    deliver: str | None,
    resume_at: int,
) -> str:
    """The name of the pull consumer to read from: the durable (created on first use), or a
    new ephemeral one starting at stream sequence `resume_at` (0: at `deliver`). ConnectError
    when the stream does not exist or the durable cannot serve this subject."""
    jsm = client.jsm()
    try:
        await jsm.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise ConnectError(
            f"{where}: JetStream stream {stream!r} does not exist (Dial does not create "
            f"streams); create it, e.g. `nats stream add {stream} --subjects {subject!r}`"
        ) from None
    except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
        raise ConnectError(
            f"{where}: stream={stream} needs JetStream, which this server does not offer "
            "(start nats-server with -js)"
        ) from None
    if durable is not None:
        try:
            info = await jsm.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            _check_durable(where, stream, durable, subject, info.config)
            return durable
    start = deliver_config(deliver)
    if durable is None and resume_at:
        start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": resume_at}
    config = ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        inactive_threshold=None if durable else EPHEMERAL_IDLE,
        **start,
    )
    try:
        created = await jsm.add_consumer(stream, config)
    except nats.js.errors.APIError as exc:
        raise ConnectError(
            f"{where}: cannot read subject {subject!r} from stream {stream!r}: "
            f"{exc.description or exc}"
        ) from None
    name: str = created.name
    return name


def _check_durable(
    where: str, stream: str, durable: str, subject: str, config: ConsumerConfig
) -> None:
    """An existing durable is reused only for what it was made for."""
    if config.deliver_subject:
        raise ConnectError(
            f"{where}: durable {durable!r} on stream {stream!r} is a push consumer; "
            "Dial pulls: give another durable name"
        )
    if (config.filter_subject or ">") != subject:
        raise ConnectError(
            f"{where}: durable {durable!r} on stream {stream!r} reads subject "
            f"{config.filter_subject or '>'!r}, not {subject!r}: give another durable name"
        )
    if config.ack_policy != AckPolicy.EXPLICIT:
        raise ConnectError(
            f"{where}: durable {durable!r} on stream {stream!r} uses ack policy "
            f"{config.ack_policy}; Dial needs explicit acks: give another durable name"
        )


class Puller:
    """Keeps one pull request outstanding while the reader keeps up: the next is sent once
    the current one is filled or over (its inline status), never while paused."""

    def __init__(self, request: Callable[[], Awaitable[None]]) -> None:
        self._request = request  # publishes one pull request for BATCH messages
        self.remaining = 0  # messages the outstanding request may still bring
        self.paused = False
        self._due = asyncio.Event()
        self._due.set()

    async def run(self) -> None:
        due = self._due
        while True:
            try:
                await asyncio.wait_for(due.wait(), EXPIRES + REQUEST_GRACE)
            except asyncio.TimeoutError:  # no answer at all: the request was lost
                if self.paused:
                    continue
            due.clear()
            if self.paused:
                continue  # resume() asks again
            self.remaining = BATCH
            await self._request()

    def received(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self._due.set()

    def request_over(self) -> None:
        self.remaining = 0
        self._due.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self.remaining <= 0:
            self._due.set()


def pull_request() -> bytes:
    return json.dumps({"batch": BATCH, "expires": int(EXPIRES * _NS)}).encode()
