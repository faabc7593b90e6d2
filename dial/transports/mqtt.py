"""`mqtt://[user:pwd@]host[:1883]?topic=T[&qos=0|1|2&retain=true&client_id=ID&keepalive=S]`

paho-mqtt is used as a protocol engine only: this module owns the socket and drives paho from
the reactor loop (the asyncio integration paho documents: `loop_read` / `loop_misc` from loop
callbacks), so every message is delivered on the reactor thread and no thread is started per
connection. Reads are buffered (one `recv` per burst instead of paho's several per packet) and
writes are coalesced into one `send` per loop iteration. paho never reconnects on its own here;
the session calls `connect()` again, which builds a fresh client and subscribes again.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from ..address import Address, split_host_port
from ..buffer import Message, text_message
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_bool, parse_target
from .base import Receiver, StreamTransport

__all__ = ["MqttTransport"]

QUERY = frozenset({"topic", "qos", "retain", "client_id", "keepalive"})
DEFAULT_PORT = 1883
DEFAULT_KEEPALIVE = 60
READ_CHUNK = 256 * 1024
HIGH_WATER = 1 << 20  # bytes queued in our send buffer before send() waits for the socket
MISC_PERIOD = 1.0  # seconds between paho loop_misc() calls (keepalive pings and timeouts)


class MqttTransport(StreamTransport):
    """Subscribes to `topic` and publishes to it."""

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
        self.user, self.password = target.user, target.password
        self._link: _Link | None = None

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

    async def send(self, data: Message) -> None:
        link = self._link
        if link is None or not link.live:
            raise ConnectionError("mqtt link is down")
        info = link.client.publish(self.topic, data, self.qos, self.retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {paho.error_string(info.rc)}")
        if link.io.backlog > HIGH_WATER:
            await link.io.drained()

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.shutdown()

    def describe(self) -> str:
        return f"topic={self.topic}"


async def _open_socket(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    where = f"mqtt://{host}:{port}"
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
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


class _Link:
    """One MQTT connection: a paho client over one socket, driven by the reactor loop."""

    def __init__(self, owner: MqttTransport, sock: socket.socket, receiver: Receiver) -> None:
        self.loop = asyncio.get_running_loop()
        self.owner = owner
        self.receiver = receiver
        self.deliver = receiver.deliver
        self.io = _BufferedSocket(sock, self.loop, self._on_io_error)
        self.live = False
        self.closing = False
        self._step: asyncio.Future[Any] | None = None
        self._misc: asyncio.TimerHandle | None = None
        client = _Client(
            self.io,
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=owner.client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        client.suppress_exceptions = True
        if owner.user is not None:
            client.username_pw_set(owner.user, owner.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self.client = client

    async def handshake(self) -> None:
        owner = self.owner
        where = f"mqtt://{owner.host}:{owner.port}"
        self._step = self.loop.create_future()
        self.loop.add_reader(self.io.fd, self._on_readable)
        self.client.connect(owner.host, owner.port, owner.keepalive)  # queues CONNECT
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

    # -- loop callbacks ----------------------------------------------------------------------

    def _on_readable(self) -> None:
        io, client = self.io, self.client
        io.fill()
        if io.error is not None or io.eof:
            client.loop_read()  # paho sees the error / EOF and reports the disconnect
            return
        while io.pending:
            before = io.pending
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or io.pending == before:
                break

    def _on_misc(self) -> None:
        self._misc = None
        if self.closing:
            return
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
        self.deliver(text_message(message.payload))

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.io.close()
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
