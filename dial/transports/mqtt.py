"""`mqtt://[user:pwd@]host[:1883]?topic=T[&qos=0|1|2&retain=true&client_id=ID&keepalive=S&version=5]`

paho-mqtt is used as a protocol engine only: this module owns the socket and drives paho from
the reactor loop (the asyncio integration paho documents: `loop_read` / `loop_misc` from loop
callbacks), so every message is delivered on the reactor thread and no thread is started per
connection. Reads are buffered (one `recv` per burst instead of paho's several per packet) and
writes are coalesced into one `send` per loop iteration. paho never reconnects on its own here;
the session calls `connect()` again, which builds a fresh client and subscribes again.

Backpressure: while the ring buffer is past its high-water mark (`pause_reading`) the socket
is not read, so the backlog waits in the kernel and at the broker. With `qos=1`/`2` that also
holds back our PUBACKs, and the broker stops after its in-flight window (Mosquitto's
`max_inflight_messages`, 20) and queues the rest for us, up to its `max_queued_messages`
(1000 by default; beyond that even QoS 1 messages are dropped by the broker). QoS 0 has no
window: Mosquitto drops QoS 0 messages for us once more than `max_queued_messages` are waiting
to be written to our socket. Neither loss is visible to the client; raise the limit in
mosquitto.conf for the backlog you want kept. While paused, paho's keepalive is not allowed
to time the link out (nothing is read, so silence proves nothing; PINGREQs still go out), and
while a confirmed write waits for its PUBACK (it comes on the same socket) reading goes on:
what arrives meanwhile is held aside (up to `HELD_LIMIT` messages, beyond that the oldest
are dropped and counted) and reaches the buffer first once it has room again.

`confirm=true` publishes at QoS 1 at least (the subscription keeps `qos`): a write is
confirmed by the broker's PUBACK (QoS 2: PUBCOMP).

A topic with a wildcard (`+`, `#`) is a subscription only: `write()` refuses at once
(`write_refusal`), as no broker accepts a PUBLISH to a filter.

`version=5` speaks MQTT 5 instead of 3.1.1. With `meta=true` every message arrives in an
`Envelope`: `topic` is the message's own topic (a wildcard subscription tells them apart),
`redelivered` the DUP flag, `headers` the MQTT 5 user properties (values UTF-8 encoded; none
on 3.1.1). The retain flag is not reported: it is not a header the publisher attached. Such
messages go through paho's parser (the QoS 0 fast path below carries payloads only).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import time_func
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..address import Address, redact, split_host_port
from ..buffer import Item, Message, text_message
from ..envelope import Envelope, Record, received_now
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_bool, parse_target
from .base import Receiver, StreamTransport

__all__ = ["MqttTransport"]

QUERY = frozenset({"topic", "qos", "retain", "client_id", "keepalive", "version"})
VERSIONS = {"3.1.1": paho.MQTTv311, "5": paho.MQTTv5}
DEFAULT_PORT = 1883
DEFAULT_KEEPALIVE = 60
READ_CHUNK = 256 * 1024
HIGH_WATER = 1 << 20  # bytes queued in our send buffer before send() waits for the socket
MISC_PERIOD = 1.0  # seconds between paho loop_misc() calls (keepalive pings and timeouts)
QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # Linux
HELD_LIMIT = 65_536  # messages read while paused (for a PUBACK) and held for the buffer


class MqttTransport(StreamTransport):
    """Subscribes to `topic` and publishes to it."""

    supported_options = frozenset({"confirm"})
    flow_control = True
    holds_backlog = True
    counts_bytes_in = True  # payload sizes, counted before decoding

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        target = parse_target("mqtt", address.target, QUERY)
        shown = f"mqtt://{target.authority}"
        if target.path:
            raise AddressError(
                f"{shown}: unexpected path {target.path!r}; give the topic as ?topic=NAME"
            )
        self.host, self.port = split_host_port(target.authority, "mqtt", DEFAULT_PORT)
        query = target.query
        topic = query.get("topic")
        if not topic:
            raise AddressError(f"{shown}: missing topic, e.g. mqtt://{target.authority}?topic=T")
        if (
            "\x00" in topic
            or any(
                ("#" in level and level != "#") or ("+" in level and level != "+")
                for level in topic.split("/")
            )
            or ("#" in topic and not topic.endswith("#"))
        ):
            raise AddressError(f"{shown}: topic {topic!r} is not a valid MQTT topic filter")
        self.topic = topic
        qos = query.get("qos", "0")
        if qos not in ("0", "1", "2"):
            raise AddressError(f"{shown}: qos={qos!r}: expected 0, 1 or 2")
        self.qos = int(qos)
        self.retain = parse_bool("mqtt", "retain", query.get("retain", "false"))
        self.client_id = query.get("client_id") or f"dial-{secrets.token_hex(6)}"
        keepalive = query.get("keepalive", str(DEFAULT_KEEPALIVE))
        if not keepalive.isdigit() or not 5 <= int(keepalive) <= 65535:
            raise AddressError(f"{shown}: keepalive={keepalive!r}: expected seconds, 5..65535")
        self.keepalive = int(keepalive)
        version = query.get("version", "3.1.1")
        if version not in VERSIONS:
            raise AddressError(f"{shown}: version={version!r}: expected 3.1.1 or 5")
        self.protocol = VERSIONS[version]
        self.user, self.password = target.user, target.password
        self.source = redact(address.url)
        self._link: _Link | None = None
        self._paused = False  # the ring buffer is full: leave the socket unread
        self.held: deque[Item] = deque()  # read while paused; kept across links

    def write_refusal(self) -> str | None:
        if "+" in self.topic or "#" in self.topic:
            return (
                f"topic {self.topic!r} has a wildcard (+ or #): it can be subscribed to but "
                "not published to; dial a topic without wildcards to write"
            )
        return None

    async def connect(self, receiver: Receiver) -> None:
        await self.close()
        sock = await _open_socket(self.host, self.port)
        link = _Link(self, sock, receiver)
        self._link = link
        try:
            await link.handshake()
        except BaseException:
            await self.close()
            raise
        link.set_paused(self._paused)

    async def send(self, data: Message) -> None:
        link = self._link
        if link is None or not link.usable:
            raise ConnectionError("mqtt link is down")
        info = link.client.publish(self.topic, data, self.qos, self.retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
        if link.io.backlog > HIGH_WATER:
            await link.io.drained()
            if not link.usable:  # woken by the socket's end: this one went nowhere
                raise ConnectionError("mqtt link lost before the message was written")

    async def send_confirmed(self, data: Message | Record) -> asyncio.Future[None]:
        """Publish at QoS 1 (or the address's 2); the future is done with the PUBACK."""
        if isinstance(data, Record):  # record_fields is empty: write() refused it
            raise TypeError("mqtt:// messages carry no key or headers")
        link = self._link
        if link is None or not link.usable:
            raise ConnectionError("mqtt link is down")
        info = link.client.publish(self.topic, data, max(self.qos, 1), self.retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
        answer = link.expect_ack(info.mid)
        if link.io.backlog > HIGH_WATER:
            await link.io.drained()
        return answer

    def pause_reading(self) -> None:
        self._paused = True
        if self._link is not None:
            self._link.set_paused(True)

    def resume_reading(self) -> None:
        self._paused = False
        if self._link is not None:
            self._link.set_paused(False)

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.shutdown()

    def describe(self) -> str:
        return f"topic={self.topic}"


NUMERIC_HOST = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


async def _open_socket(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    where = f"mqtt://{host}:{port}"
    try:  # an IP literal needs no resolver thread (asyncio's executor keeps its threads)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=NUMERIC_HOST)
    except socket.gaierror:
        infos = []
    try:
        infos = infos or await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"{where}: cannot resolve host ({exc.strerror})") from None
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ConnectError(f"{where}: {os_reason(last) if last else 'no address'}")


class _BufferedSocket:
    """The socket paho sees: reads come from a buffer we fill with big `recv`s, writes go to
    a buffer we flush once per loop iteration (and on writability)."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, on_error: Any):
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = loop
        self.on_error = on_error
        self.inbox = bytearray()
        self.in_pos = 0
        self.eof = False
        self.error: OSError | None = None
        self.outbox = bytearray()
        self.flush_scheduled = False
        self.writer_added = False
        self.closed = False
        self.quickack = False  # confirm=true: ack every read at once (see `fill`)
        self._waiters: list[asyncio.Future[None]] = []

    # -- what paho calls -------------------------------------------------------------------

    def recv(self, size: int) -> bytes:
        start = self.in_pos
        available = len(self.inbox) - start
        if available <= 0:
            if self.error is not None:
                raise self.error
            if self.eof:
                return b""
            raise BlockingIOError
        end = start + min(size, available)
        chunk = bytes(self.inbox[start:end])
        self.in_pos = end
        return chunk

    def send(self, data: bytes | bytearray) -> int:
        if self.closed:
            raise ConnectionError("socket closed")
        self.outbox += data
        if not self.flush_scheduled and not self.writer_added:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return len(data)

    def fileno(self) -> int:
        return self.fd

    def setblocking(self, flag: bool) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        if self.outbox:  # e.g. a DISCONNECT packet: best effort, never block
            try:
                self.sock.send(self.outbox)
            except OSError:
                pass
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self.writer_added:
            self.loop.remove_writer(self.fd)
        self.sock.close()
        self.outbox.clear()
        self._wake_waiters()

    # -- our side --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self.inbox) - self.in_pos

    @property
    def backlog(self) -> int:
        return len(self.outbox)

    def fill(self) -> None:
        """Pull what the kernel has; sets eof/error instead of raising."""
        if self.in_pos:
            del self.inbox[: self.in_pos]
            self.in_pos = 0
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.error = exc
            return
        if data:
            self.inbox += data
            if self.quickack:
                # A broker that does not set TCP_NODELAY (Mosquitto's default) holds a PUBACK
                # back until what it sent before is acknowledged, and Linux delays that ACK
                # by up to 40 ms: without this every confirmed write would wait that long.
                try:
                    self.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                except OSError:
                    self.quickack = False
        else:
            self.eof = True

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.closed or not self.outbox:
            return
        try:
            sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.error = exc
            self.outbox.clear()
            self._wake_waiters()
            self.on_error()
            return
        del self.outbox[:sent]
        if self.outbox:
            if not self.writer_added:
                self.writer_added = True
                self.loop.add_writer(self.fd, self.flush)
        else:
            if self.writer_added:
                self.writer_added = False
                self.loop.remove_writer(self.fd)
        if len(self.outbox) <= HIGH_WATER // 2:
            self._wake_waiters()

    async def drained(self) -> None:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _Client(paho.Client):
    """A paho client that uses the socket we connected (asynchronously) ourselves."""

    def __init__(self, sock: _BufferedSocket, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._dial_socket = sock

    def _create_socket(self) -> Any:
        return self._dial_socket

    def between_packets(self) -> bool:
        """True when paho is not half-way through reading a packet (so the next bytes of
        the read buffer start one)."""
        packet = getattr(self, "_in_packet", None)
        return packet is not None and packet.get("command") == 0

    def note_received(self) -> None:
        """Packets were taken past paho: they count for its keepalive as if it read them."""
        with self._msgtime_mutex:
            self._last_bytes_received = time_func()

    def hold_keepalive(self) -> None:
        """Reading is paused for the reader: the broker's answers wait unread, so its silence
        proves nothing. Keep paho's keepalive check from timing the link out; it still
        sends a PINGREQ every keepalive period, so the broker knows we are alive."""
        with self._msgtime_mutex:
            self._last_bytes_received = time_func()


class _Link:
    """One MQTT connection: a paho client over one socket, driven by the reactor loop."""

    def __init__(self, owner: MqttTransport, sock: socket.socket, receiver: Receiver) -> None:
        self.loop = asyncio.get_running_loop()
        self.owner = owner
        self.receiver = receiver
        self.deliver = receiver.deliver
        self.io = _BufferedSocket(sock, self.loop, self._on_io_error)
        self.io.quickack = owner.confirms and hasattr(socket, "TCP_QUICKACK")
        self.live = False
        self.closing = False
        self.paused = False  # the ring buffer is full
        self.reading = False  # the socket's reader is registered with the loop
        self.acks: dict[int, asyncio.Future[None]] = {}  # confirmed publishes by mid
        self.held = owner.held  # read while paused, not yet in the buffer
        # QoS 0 PUBLISH packets skip paho (`_take_publishes`): 3.1.1 payloads only
        self.fast = owner.protocol == paho.MQTTv311 and not owner.meta
        self._step: asyncio.Future[Any] | None = None
        self._misc: asyncio.TimerHandle | None = None
        client = _Client(
            self.io,
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=owner.client_id,
            protocol=owner.protocol,
            clean_session=True if owner.protocol == paho.MQTTv311 else None,
        )
        client.suppress_exceptions = True
        if owner.user is not None:
            client.username_pw_set(owner.user, owner.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_enveloped if owner.meta else self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client

    async def handshake(self) -> None:
        owner = self.owner
        where = f"mqtt://{owner.host}:{owner.port}"
        self._step = self.loop.create_future()
        self._start_reading()
        # queues CONNECT (MQTT 5: a fresh client's first connect is a clean start, and no
        # session is kept after it, as with 3.1.1's clean session)
        self.client.connect(owner.host, owner.port, owner.keepalive)
        reason = await self._step
        if reason.is_failure:
            raise ConnectError(f"{where}: broker refused the connection: {reason}")
        self._step = self.loop.create_future()
        result, _ = self.client.subscribe(owner.topic, owner.qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectError(f"{where}: subscribe failed: {paho.error_string(result)}")
        granted = await self._step
        if any(code.is_failure for code in granted):
            raise ConnectError(f"{where}: broker refused the subscription to {owner.topic!r}")
        self._step = None
        self.live = True
        self._misc = self.loop.call_later(MISC_PERIOD, self._on_misc)

    @property
    def usable(self) -> bool:
        """Up, and its socket neither closed nor failed (paho may not have said so yet)."""
        io = self.io
        return self.live and not io.closed and io.error is None

    def shutdown(self) -> None:
        """Disconnect politely (best effort) and release the socket and timers."""
        self.closing = True
        self.live = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        self._fail_step(ConnectError("connection closed"))
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.io.close()
        self.reading = False
        self._fail_acks("mqtt connection closed before the PUBACK")

    # -- flow control and confirmations --------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused and self.held:
            self._release_held()
        self._update_reading()

    def _release_held(self) -> None:
        """Hand what was held aside to the buffer, oldest first, until it is paused again."""
        held, deliver = self.held, self.deliver
        while held and not self.paused:
            deliver(held.popleft())

    def expect_ack(self, mid: int) -> asyncio.Future[None]:
        """The future of a QoS >= 1 publish just queued; reading goes on until it is done."""
        answer: asyncio.Future[None] = self.loop.create_future()
        self.acks[mid] = answer
        self._update_reading()
        return answer

    def _flowing(self) -> bool:
        return not self.paused or bool(self.acks)

    def _update_reading(self) -> None:
        """Read the socket unless paused (and no PUBACK is due); resuming first works off
        what was already received."""
        if self.closing or self.io.closed:
            return
        if self._flowing():
            if not self.reading:
                self._start_reading()
                if self.io.pending:
                    self.loop.call_soon(self._work_off)
        elif self.reading:
            self.reading = False
            self.loop.remove_reader(self.io.fd)

    def _start_reading(self) -> None:
        self.reading = True
        self.loop.add_reader(self.io.fd, self._on_readable)

    def _fail_acks(self, reason: str) -> None:
        acks, self.acks = self.acks, {}
        for answer in acks.values():
            if not answer.done():
                answer.set_exception(ConnectionError(reason))
                answer.exception()  # retrieved: the session may have stopped waiting

    # -- loop callbacks ----------------------------------------------------------------------

    def _on_readable(self) -> None:
        io, client = self.io, self.client
        io.fill()
        if io.error is not None or io.eof:
            client.loop_read()  # paho sees the error / EOF and reports the disconnect
            return
        self._work_off()

    def _work_off(self) -> None:
        """Hand what is buffered over, while not paused: QoS 0 PUBLISH packets straight
        from the buffer (`_take_publishes`), anything else to paho, a packet at a time."""
        io, client = self.io, self.client
        while io.pending and self._flowing() and not io.closed:
            if self.fast and client.between_packets() and self._take_publishes():
                continue
            before = io.pending
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or io.pending == before:
                break
        self._update_reading()

    def _take_publishes(self) -> bool:
        """Deliver the complete QoS 0 PUBLISH packets at the head of the read buffer (MQTT
        3.1.1: fixed header, remaining length, topic, payload); True when it took any. They
        need no answer and paho keeps no state for them, so its packet-by-packet reading
        (several calls per packet) is skipped; everything else still goes through paho."""
        io = self.io
        data, pos, end = io.inbox, io.in_pos, len(io.inbox)
        start = pos
        received = self._received
        with memoryview(data) as view:  # released before the buffer is resized again
            while pos < end and self._flowing():
                if data[pos] & 0xF6 != 0x30:  # not a PUBLISH, or QoS 1/2
                    break
                length, shift, at = 0, 0, pos + 1
                while at < end and at - pos <= 4:
                    byte = data[at]
                    length |= (byte & 0x7F) << shift
                    at += 1
                    if byte < 0x80:
                        break
                    shift += 7
                else:
                    break  # header not complete yet (or malformed: paho will say so)
                stop = at + length
                if stop > end or length < 2:
                    break  # the rest of the packet is not here yet
                topic_end = at + 2 + (data[at] << 8 | data[at + 1])
                if topic_end > stop:
                    break  # malformed: let paho report it
                pos = stop
                received(view[topic_end:stop])
        if pos == start:
            return False
        io.in_pos = pos
        self.client.note_received()
        return True

    def _on_misc(self) -> None:
        self._misc = None
        if self.closing:
            return
        if not self._flowing():
            self.client.hold_keepalive()
        self.client.loop_misc()
        if not self.closing and self.io.error is None:
            self._misc = self.loop.call_later(MISC_PERIOD, self._on_misc)

    def _on_io_error(self) -> None:
        self.client.loop_read()  # surfaces the stored socket error through paho

    # -- paho callbacks (all on the loop thread) ---------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._step is not None and not self._step.done():
            self._step.set_result(reason)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        if self._step is not None and not self._step.done():
            self._step.set_result(codes)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._received(message.payload)

    def _received(self, payload: bytes | memoryview) -> None:
        self.receiver.bytes_in += len(payload)
        if self.paused or self.held:  # read only for a PUBACK: keep it for later
            self._hold(text_message(payload))
            return
        self.deliver(text_message(payload))

    def _on_enveloped(self, client: Any, userdata: Any, message: Any) -> None:
        """`meta=true`: the message in an `Envelope` with its topic, DUP flag and user
        properties."""
        payload = message.payload
        self.receiver.bytes_in += len(payload)
        envelope = Envelope(
            text_message(payload),
            self.owner.source,
            received_now(),
            topic=message.topic,
            headers=_user_properties(message),
            redelivered=bool(message.dup),
        )
        if self.paused or self.held:
            self._hold(envelope)
            return
        self.deliver(envelope)

    def _hold(self, item: Item) -> None:
        held = self.held
        held.append(item)
        if len(held) > HELD_LIMIT:
            held.popleft()
            self.receiver.discarded(1)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        answer = self.acks.pop(mid, None)  # None: a QoS 0 publish went out
        if answer is None:
            return
        if not answer.done():
            if getattr(reason, "is_failure", False):
                answer.set_exception(ConnectionError(f"broker refused the message: {reason}"))
            else:
                answer.set_result(None)
        if not self.acks and self.paused:
            self.loop.call_soon(self._update_reading)  # not from inside paho's read

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.io.close()
        self.reading = False
        self._fail_acks(f"mqtt connection lost before the PUBACK ({reason})")
        if self.closing:
            return
        error = self.io.error
        text = os_reason(error) if error is not None else str(reason)
        if self._step is not None:
            self._fail_step(ConnectError(f"connection closed during handshake ({text})"))
            return
        if self.live:
            self.live = False
            if self._misc is not None:
                self._misc.cancel()
                self._misc = None
            self.receiver.lost(f"mqtt connection lost: {text}")

    def _fail_step(self, exc: BaseException) -> None:
        step = self._step
        if step is not None and not step.done():
            step.set_exception(exc)
            step.exception()  # mark retrieved: nobody may be awaiting it any more


def _user_properties(message: Any) -> tuple[tuple[str, bytes], ...]:
    """MQTT 5 user properties as envelope headers, in the order sent (repeats kept)."""
    properties = getattr(message, "properties", None)
    pairs = getattr(properties, "UserProperty", None) if properties is not None else None
    if not pairs:
        return ()
    return tuple((str(name), str(value).encode()) for name, value in pairs)
