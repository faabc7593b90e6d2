"""The tiny interfaces every transport implements. Transports know their protocol only:
buffers, threads and reconnects belong to `dial.session` and `dial.connection`."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..address import Address
from ..buffer import Item, Message, MessageBuffer
from ..envelope import Envelope, Record
from ..errors import AddressError, ArgumentError

__all__ = ["UNIVERSAL_OPTIONS", "Receiver", "StreamTransport", "refuse_foreign"]


class Receiver:
    """What a transport reports to. Both callbacks run on the reactor thread.

    `deliver(message)` hands over one received message, typed by the rule in `dial.buffer`
    (`raw_message`, `text_message`, `binary_frame`): by transport and frame kind, not content.
    `lost(reason)` says the live link is gone (peer closed, error); call it at most once per
    successful `connect()` and never after `close()` started.
    """

    deliver: Callable[[Item], None]
    bytes_in: int = 0  # transports with `counts_bytes_in` add received wire bytes here

    def deliver_many(self, messages: Sequence[Item]) -> None:
        """Hand over several messages received together (one socket read), in order: the
        same as `deliver` for each, with the buffer hand-over paid once for the batch."""
        self.batch_delivery()(messages)

    def batch_delivery(self) -> Callable[[Sequence[Item]], None]:
        """`deliver_many` as one callable, for a transport to look up once per connect: the
        buffer's own `put_many` when `deliver` is the buffer's `put` (the common case), else
        a loop over `deliver`."""
        deliver = self.deliver
        buffer = getattr(deliver, "__self__", None)
        if type(buffer) is MessageBuffer and getattr(deliver, "__func__", None) is _PUT:
            return buffer.put_many

        def each(messages: Sequence[Item]) -> None:
            for message in messages:
                deliver(message)

        return each

    def lost(self, reason: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def discarded(self, count: int) -> None:
        """`count` received messages were dropped before reaching the buffer (a client
        library's own queue overflowed): counted with the buffer's drops."""

    def send_failed(self, count: int, reason: str) -> None:
        """`count` messages already handed over by `send()` never reached the peer (a
        fire-and-forget batch the broker refused, or lost with its link): counted as send
        errors. Confirmed writes report through their own futures instead."""


class StreamTransport(ABC):
    """One streaming protocol (socket, WebSocket, broker).

    The same instance is connected again after each loss, so `connect()` must (re)establish
    everything a fresh link needs (handshake, subscriptions) and `close()` must release
    everything of the current link and be safe to call twice.
    """

    #: option names (as written in the address) this transport accepts besides the
    #: universal reconnect/interval/payload.
    supported_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, address: Address) -> None:
        self.address = address
        unsupported = address.options.given - self.supported_options - UNIVERSAL_OPTIONS
        if unsupported:
            raise AddressError(
                f"option {', '.join(sorted(unsupported))} is not supported for {address.scheme}://"
            )
        self._check_heartbeat()

    @abstractmethod
    async def connect(self, receiver: Receiver) -> None:
        """Open the link and start delivering; raise `ConnectError` (or OSError) on failure."""

    @abstractmethod
    async def send(self, data: Message) -> None:
        """Send one message; raise on failure."""

    async def send_record(self, record: Record) -> None:
        """Send one message with a key and/or headers (`write(data, key=..., headers=...)`);
        only called with the fields listed in `record_fields`."""
        raise NotImplementedError(f"{self.address.scheme}:// messages have no key or headers")

    @abstractmethod
    async def close(self) -> None:
        """Tear down the current link, idempotently."""

    #: True when pause_reading()/resume_reading() really stop and restart the source.
    flow_control: ClassVar[bool] = False
    #: True when the source keeps what it has not delivered (a broker): the buffer then
    #: pauses it whenever it is past its high-water mark, for as long as the reader needs,
    #: instead of dropping the oldest (`MessageBuffer.set_flow_control(hold=True)`).
    holds_backlog: ClassVar[bool] = False

    @property
    def confirms(self) -> bool:
        """True when writes are confirmed (`confirm=true`): the session then hands them to
        `send_confirmed()` and `write()` reports the broker's answer."""
        return self.address.options.confirm

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[Any]:
        """Hand one message over, in order with every other send, and return a future that
        completes once the broker has accepted it (an exception: it did not, or never will).
        Only called when `confirms` is true, i.e. for transports that list `confirm`; a
        `Record` only with the fields in `record_fields`."""
        raise NotImplementedError(f"{self.address.scheme}:// cannot confirm writes")

    def write_refusal(self) -> str | None:
        """Why no `write()` can ever succeed on this address (e.g. an MQTT wildcard topic,
        which can be subscribed to but not published to), or None. Checked by `write()`,
        which raises ArgumentError with this reason instead of queueing the message."""
        return None

    #: What `send_record()` carries ("key", "headers"): `write()` refuses the rest.
    record_fields: ClassVar[frozenset[str]] = frozenset()

    @property
    def meta(self) -> bool:
        """True when received messages go to the receiver as `Envelope`s (`meta=true`)."""
        return self.address.options.meta

    async def ack(self, envelopes: Sequence[Envelope]) -> None:
        """Acknowledge these received messages to the broker (`ack=manual`), so they are
        not delivered again; only called for transports that list the `ack` option."""
        raise NotImplementedError(f"{self.address.scheme}:// has no acknowledgements")

    def pause_reading(self) -> None:  # noqa: B027 - optional capability, no-op by default
        """Stop reading from the peer for a while (the reader is catching up)."""

    def resume_reading(self) -> None:  # noqa: B027
        """Undo `pause_reading()`."""

    def describe(self) -> str:
        """Extra state for repr(), e.g. the subscribed topic."""
        return ""

    def abort(self) -> None:  # noqa: B027 - optional capability
        """Drop the current link at once, skipping any closing handshake: a watchdog found
        it dead, so waiting for the peer would only delay the reconnect. `close()` follows."""

    #: Seconds a reconnect attempt is always given, however short the heartbeat: the
    #: protocol's own handshake (TCP, then its login and subscriptions), with room to spare.
    attempt_floor: ClassVar[float] = 1.0

    def attempt_limit(self, longest: float) -> float:
        """Seconds one reconnect attempt may take: `longest`, or with a heartbeat (`ping`) no
        more than its deadline `ping + pong`, and never less than `attempt_floor`. An attempt
        that went into a blackhole (SYNs swallowed, a handshake never answered) is given up
        about when a live link would have been found dead, so the next attempt starts soon
        after the path is back instead of up to `longest` seconds later."""
        options = self.address.options
        if options.ping is None:
            return longest
        deadline = options.ping + (options.pong or options.ping)
        return min(longest, max(deadline, self.attempt_floor))

    #: True when `ping()` is implemented (a protocol-level heartbeat, e.g. WebSocket ping).
    supports_ping: ClassVar[bool] = False

    async def ping(self) -> None:
        """Send a protocol heartbeat and return when its answer arrives (raise if the link is
        down). The session bounds the wait with the `pong` deadline."""
        raise NotImplementedError(f"{self.address.scheme}:// has no ping frame")

    #: True when the transport adds the wire size of what it receives to `receiver.bytes_in`;
    #: otherwise the session counts message sizes itself.
    counts_bytes_in: ClassVar[bool] = False

    def _check_heartbeat(self) -> None:
        options = self.address.options
        if options.ping is not None and options.ping_text is None and not self.supports_ping:
            raise AddressError(
                f"option ping: {self.address.scheme}:// has no ping frame; add pingText=TEXT "
                "to send a text heartbeat (and pongText=TEXT for its answer)"
            )


def refuse_foreign(
    envelopes: Sequence[Envelope], *, source: str, mark: object, size: int, reader: str
) -> None:
    """ArgumentError unless every envelope was read by the connection whose tokens are
    `(mark, ...)` tuples of `size` items: another connection with the same address has
    another mark. Checked for all of them before any acknowledgement goes out."""
    for envelope in envelopes:
        token = envelope.token
        if (
            envelope.source != source
            or type(token) is not tuple
            or len(token) != size
            or token[0] is not mark
        ):
            offset = "" if envelope.offset is None else f" offset {envelope.offset}"
            raise ArgumentError(
                f"ack(): {envelope.source}{offset} was not read from this {reader} with "
                "ack=manual; nothing was acknowledged"
            )


_PUT = MessageBuffer.put

UNIVERSAL_OPTIONS = frozenset(
    {
        "reconnect",
        "interval",
        "payload",
        "ping",
        "pong",
        "pingText",
        "pongText",
        "idle",
        "backoff",
        "backoffMax",
        "meta",
    }
)
