"""A message with where it came from (`Envelope`), and a message with where it should go
(`Record`).

Plain `read()` returns the payload only, as FMZ does. With `meta=true` in the address every
transport wraps what it receives in an `Envelope` instead: `read()` still returns the payload,
and `read_message()` the whole envelope (topic, partition and offset, key, headers, broker
timestamp, redelivery, frame kind, receive time). The wrapping costs one small object per
message, so it is opt-in.

`write(data, key=..., headers=...)` hands the transport a `Record`: the payload with the
Kafka message key (also its partitioning rule), or an AMQP routing key, and headers.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .address import Address
from .buffer import Item, Message
from .errors import ArgumentError

__all__ = [
    "Envelope",
    "Headers",
    "HeadersArg",
    "Record",
    "envelope_of",
    "envelopes_of",
    "headers_of",
    "needs_meta",
    "payload_of",
    "payloads_of",
    "received_now",
]

#: header name -> value, in the order the broker gave them (Kafka allows repeats: a tuple)
Headers = tuple[tuple[str, bytes], ...]

received_now = time.time  # the receive-time clock: wall time, comparable with broker stamps


@dataclass(frozen=True, slots=True)
class Envelope:
    """One received message and its metadata. Fields a transport does not have are None."""

    value: Message
    source: str  # the address it was read from (credentials masked)
    received_at: float  # time.time() when the message reached dialkit
    kind: str = "text"  # "text" or "binary": the frame kind / payload type
    topic: str | None = None  # topic, subject or routing key
    partition: int | None = None  # Kafka partition
    offset: int | None = None  # Kafka offset, JetStream stream sequence
    key: str | bytes | None = None  # Kafka message key
    headers: Headers = ()
    timestamp: float | None = None  # the broker's time for the message, seconds since epoch
    redelivered: bool | None = None  # AMQP/JetStream/MQTT: seen before by some consumer
    #: what the transport needs to acknowledge this message (`ack=manual`); not for users
    token: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view in the spirit of kcat's `-J`: a binary payload, and a key or
        header that is not UTF-8, is given in base64 under the name with a `_b64` suffix."""
        out: dict[str, Any] = {"source": self.source, "kind": self.kind}
        for name in ("topic", "partition", "offset"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        _put_text(out, "key", self.key)
        if self.headers:
            headers: dict[str, Any] = {}
            for name, value in self.headers:
                _put_text(headers, name, value)
            out["headers"] = headers
        if self.timestamp is not None:
            out["ts"] = round(self.timestamp, 6)
        out["received_at"] = round(self.received_at, 6)
        if self.redelivered is not None:
            out["redelivered"] = self.redelivered
        if isinstance(self.value, bytes):  # a binary payload stays binary, whatever it holds
            out["payload_b64"] = base64.b64encode(self.value).decode()
        else:
            _put_text(out, "payload", self.value)
        return out


@dataclass(frozen=True, slots=True)
class Record:
    """One message to send with a key and headers (`write(data, key=..., headers=...)`)."""

    value: Message
    key: bytes | None = None
    headers: Headers = ()

    @property
    def size(self) -> int:
        return len(self.value.encode() if isinstance(self.value, str) else self.value)


#: what `write(headers=...)` takes: a dict, or (name, value) pairs such as an envelope's
#: `headers` (the only way to give a Kafka header twice)
HeadersArg = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]


def headers_of(headers: HeadersArg | None) -> Headers:
    """`write()`'s headers argument as a `Headers` tuple; TypeError for anything else."""
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        pairs: Iterable[Any] = headers.items()
    elif isinstance(headers, Sequence) and not isinstance(headers, str | bytes):
        pairs = headers
    else:
        raise TypeError(
            f"write() headers must be a dict of str to str/bytes (or (name, value) pairs), "
            f"not {headers!r}"
        )
    out = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"write() headers: expected (name, value) pairs, got {pair!r}")
        name, value = pair
        if not isinstance(name, str) or not name:
            raise TypeError(f"write() header names must be non-empty str, not {name!r}")
        if isinstance(value, str):
            out.append((name, value.encode()))
        elif isinstance(value, bytes | bytearray):
            out.append((name, bytes(value)))
        else:
            raise TypeError(f"write() header {name!r} must be str or bytes, not {value!r}")
    return tuple(out)


def _put_text(out: dict[str, Any], name: str, value: str | bytes | None) -> None:
    """`out[name]` as text, or `out[name + "_b64"]` when the bytes are not UTF-8."""
    if value is None:
        return
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    try:
        out[name] = raw.decode()
    except UnicodeDecodeError:
        out[f"{name}_b64"] = base64.b64encode(raw).decode()


def payload_of(item: Item | None) -> Message | None:
    """What `read()` returns for a buffered item: the payload of an `Envelope`."""
    return item.value if type(item) is Envelope else item  # type: ignore[return-value]


def payloads_of(items: list[Item]) -> list[Message]:
    return [item.value if type(item) is Envelope else item for item in items]  # type: ignore[misc]


def envelope_of(item: Item | None) -> Envelope | None:
    """What `read_message()` returns for a buffered item: None for a timeout or the
    disconnect marker."""
    return item if type(item) is Envelope else None


def needs_meta(address: Address, call: str) -> None:
    """`read_message()` and `ack()` only make sense when messages carry envelopes."""
    if not address.options.meta:
        raise ArgumentError(
            f"{call} needs meta=true in the address (messages are read without their "
            f"envelope otherwise), e.g. {address.scheme}://...|meta=true"
        )


def record_of(
    message: Message,
    key: str | bytes | None,
    headers: HeadersArg | None,
    *,
    scheme: str,
    accepted: frozenset[str],
) -> Message | Record:
    """What `write(data, key=..., headers=...)` hands the session: the bare message when
    neither is given (the fast path), else a `Record`; ArgumentError when the transport
    cannot carry what was given."""
    if key is None and headers is None:
        return message
    for name, given in (("key", key), ("headers", headers)):
        if given is not None and name not in accepted:
            carried = " and ".join(sorted(accepted)) or "neither"
            raise ArgumentError(
                f"write() {name}=: {scheme}:// messages carry {carried} (keys: kafka://, "
                "amqp:// routing keys; headers: kafka://, nats://, amqp://)"
            )
    if isinstance(key, str):
        key = key.encode("utf-8", "surrogateescape")  # a key read from an envelope goes back
    elif isinstance(key, bytearray | memoryview):
        key = bytes(key)
    elif key is not None and not isinstance(key, bytes):
        raise TypeError(f"write() key must be str or bytes, not {type(key).__name__}")
    return Record(message, key, headers_of(headers))


def envelopes_of(messages: object) -> tuple[Envelope, ...]:
    """`ack()`'s argument as a tuple of envelopes, taken in the caller's thread (a generator
    that reads the connection must not run on the reactor); TypeError for anything else."""
    if type(messages) is Envelope:
        return (messages,)
    if isinstance(messages, str | bytes) or not isinstance(messages, Iterable):
        raise TypeError(f"ack() takes envelopes from read_message(), not {messages!r}")
    envelopes = tuple(messages)
    for envelope in envelopes:
        if type(envelope) is not Envelope:
            raise TypeError(f"ack() takes envelopes from read_message(), not {envelope!r}")
    return envelopes
