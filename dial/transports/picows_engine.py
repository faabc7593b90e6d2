"""`ws://` and `wss://` on picows (`engine=picows`, the `fast` extra): the same behaviour as
the reference engine in `dial.transports.websocket`, with a C frame parser.

picows parses frames; everything around the socket stays dialkit's own, so both engines
connect, verify certificates, cross SOCKS proxies and report errors through the one
`open_stream`. What this module adds on top of picows' core API:

- messages: fragments are joined (up to `MAX_MESSAGE_BYTES`), text frames become `str` and
  binary frames `bytes` (inflated ones `str`) by the rule in `dial.buffer`;
- one hand-over per socket read: the frames of one read go to the buffer as one batch;
- reads are capped at `READ_CHUNK` bytes like the reference engine, so one read cannot hold
  the GIL for thousands of frames, and flow control (`pause_reading`) takes effect quickly;
- a peer's CLOSE is answered, a protocol error or a lost TCP link is reported once, with the
  same reasons as the reference engine; ping frames are answered by picows itself.

With `meta=true` the listener is `_EnvelopeListener`, chosen once per link: it wraps every
message in an `Envelope` of its frame's kind, so the plain listener's hot path is untouched.

Not here: permessage-deflate (`enableCompression=true`), which picows' core API lacks; such
addresses use the reference engine (see `dial.registry.websocket_transport`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import picows
from picows import WSAutoPingStrategy, WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport
from picows import picows as _core
from picows.version import __version__ as picows_version
from websockets.headers import build_authorization_basic, build_host

from ..address import Address, redact
from ..buffer import Item, Message, binary_frame, text_message
from ..envelope import Envelope, received_now
from ..errors import AddressError, ConnectError
from .base import Receiver, StreamTransport
from .socket import READ_CHUNK, open_stream, tls_context
from .websocket import (
    CLOSE_WAIT_SECONDS,
    MAX_MESSAGE_BYTES,
    PLAIN_MAKERS,
    USER_AGENT,
    MessageMakers,
    WebSocketTransport,
    message_makers,
    settle_pings,
    ws_endpoint,
)

__all__ = ["SUPPORTED_PICOWS", "PicowsTransport"]

#: picows releases this engine is written and tested against (it builds picows' protocol
#: object itself, which is picows' lower-level API); others fall back to websockets.
SUPPORTED_PICOWS = ((2, 3), (3, 0))


def _check_version(version: str) -> None:
    try:
        release = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        release = (0, 0)
    low, high = SUPPORTED_PICOWS
    if not low <= release < high:
        raise ImportError(
            f"picows {version} is not supported (dialkit's [fast] extra needs picows>=2.3,<3)",
            name="picows",
        )


_check_version(picows_version)

log = logging.getLogger("dial")
#: picows logs every connect at INFO and protocol errors at ERROR; under dial's logger, quiet
#: by default like the reference engine (lower its level to see them).
_picows_log = logging.getLogger("dial.picows")
if _picows_log.level == logging.NOTSET:
    _picows_log.setLevel(logging.WARNING)

_TEXT, _BINARY, _CONT = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION
_CLOSE, _PONG = WSMsgType.CLOSE, WSMsgType.PONG
WSProtocol: Any = _core.WSProtocol  # type: ignore[attr-defined]  # the protocol object ws_connect() builds (not in its stubs)
READ_BUFFER_BYTES = 4096  # picows' initial read buffer per connection; it grows on demand


class _Listener(WSListener):
    """Turns picows frames into delivered messages for one link."""

    def __init__(self, receiver: Receiver, decode: Any, makers: MessageMakers) -> None:
        super().__init__()
        self.receiver = receiver
        self.deliver_many = receiver.batch_delivery()
        self.decode = decode  # codec for binary frames, or None
        self.text, self.binary = makers  # a whole fragmented message -> buffered item
        self.batch: list[Item] = []  # this read's messages, handed over in buffer_updated
        self.ws: WSTransport | None = None
        self.handshaken = False
        self.open = False
        self.closing = False  # we are closing (or aborting): losing the link is expected
        self.failed = False
        self.fragment_kind: WSMsgType | None = None
        self.fragments: list[bytes] = []
        self.fragment_bytes = 0
        self.pings: dict[bytes, asyncio.Future[None]] = {}  # ping payload -> its pong
        self.drained: asyncio.Future[None] | None = None
        self.write_paused = False
        self.disconnected: asyncio.Future[None] | None = None  # see connect()

    # -- picows callbacks (event-loop thread) ------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ws = transport
        self.handshaken = self.open = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.failed:
            return
        try:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:  # no extension negotiated: RFC 6455 5.2
                self.flush()
                return self._protocol_error(transport, "reserved bits must be 0")
            kind = frame.msg_type
            if kind is _TEXT and frame.fin and self.fragment_kind is None:
                try:
                    self.batch.append(frame.get_payload_as_utf8_text())
                except UnicodeDecodeError:  # invalid UTF-8: escaped, not a crash
                    self.batch.append(text_message(frame.get_payload_as_memoryview()))
            elif kind is _BINARY and frame.fin and self.fragment_kind is None:
                self.batch.append(binary_frame(frame.get_payload_as_memoryview(), self.decode))
            else:
                self._other_frame(transport, frame, kind)
        except Exception as exc:  # a bug or a hostile peer: drop the link, keep the reactor
            self.flush()  # the messages before this frame still count
            log.warning("WebSocket receive failed: %r", exc)
            self.failed = True
            self.lost(f"receive failed: {exc.__class__.__name__}: {exc}")
            transport.disconnect(False)

    def _other_frame(self, transport: WSTransport, frame: WSFrame, kind: WSMsgType) -> None:
        self.flush()  # what came before this frame goes first
        if kind is _CLOSE:
            self.lost(_close_reason(frame.get_close_code(), frame.get_close_reason()))
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif kind is _PONG:
            settle_pings(self.pings, frame.get_payload_as_bytes())
        elif kind in (_TEXT, _BINARY, _CONT):
            self._fragment(transport, frame, kind)

    def _fragment(self, transport: WSTransport, frame: WSFrame, kind: WSMsgType) -> None:
        if kind is _CONT:
            if self.fragment_kind is None:
                return self._protocol_error(transport, "continuation frame without a start")
        elif self.fragment_kind is not None:
            return self._protocol_error(transport, "new message before the last one ended")
        else:
            self.fragment_kind, self.fragments, self.fragment_bytes = kind, [], 0
        self.fragment_bytes += frame.payload_size
        if self.fragment_bytes > MAX_MESSAGE_BYTES:
            return self._protocol_error(
                transport,
                f"message larger than {MAX_MESSAGE_BYTES} bytes",
                WSCloseCode.MESSAGE_TOO_BIG,
            )
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            data = b"".join(self.fragments)
            text = self.fragment_kind is _TEXT
            self.fragment_kind, self.fragments = None, []
            self.batch.append(self.text(data) if text else self.binary(data, self.decode))
            self.flush()

    def _protocol_error(
        self, transport: WSTransport, reason: str, code: WSCloseCode = WSCloseCode.PROTOCOL_ERROR
    ) -> None:
        self.failed = True
        self.lost(f"protocol error: {reason}")
        transport.send_close(code, reason.encode())
        transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.flush()
        self.check_protocol_error(transport)

    def check_protocol_error(self, transport: WSTransport) -> None:
        """picows answers a protocol violation with a CLOSE frame of its own (and hangs up
        a little later): report it as the reason the link was lost, at once."""
        handshake = transport.close_handshake
        if handshake is not None and handshake.sent is not None and handshake.recv is None:
            sent = handshake.sent
            self.lost(f"protocol error: {sent.reason or sent.code.value}")

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writer()

    # -- ours --------------------------------------------------------------------------------

    def flush(self) -> None:
        batch = self.batch
        if batch:
            self.batch = []
            self.deliver_many(batch)

    def lost(self, reason: str) -> None:
        if self.open and not self.closing:
            self.open = False
            self.receiver.lost(reason)
        self.open = False

    def wake_writer(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.drained = None

    def connection_lost(self, exc: Exception | None) -> None:
        """The TCP link is gone (after picows' own bookkeeping)."""
        for waiter in self.pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost before the pong"))
                waiter.exception()  # retrieved, even if its pinger was already cancelled
        self.pings.clear()
        self.wake_writer()
        self.lost(f"connection lost: {exc}" if exc else "server closed the connection")


class _EnvelopeListener(_Listener):
    """`meta=true`: the same frames as `_Listener`, each message in an `Envelope`."""

    def __init__(self, receiver: Receiver, decode: Any, makers: MessageMakers, source: str):
        super().__init__(receiver, decode, makers)
        self.source = source

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if (
            self.failed
            or not frame.fin
            or self.fragment_kind is not None
            or frame.rsv1
            or frame.rsv2
            or frame.rsv3
            or (kind is not _TEXT and kind is not _BINARY)
        ):
            return super().on_ws_frame(transport, frame)  # errors, fragments, control frames
        try:
            payload = frame.get_payload_as_memoryview()
            value: Message
            if kind is _TEXT:
                value, name = text_message(payload), "text"
            else:
                value, name = binary_frame(payload, self.decode), "binary"
        except Exception as exc:  # a compression bomb: drop the link as the plain path does
            self.flush()
            log.warning("WebSocket receive failed: %r", exc)
            self.failed = True
            self.lost(f"receive failed: {exc.__class__.__name__}: {exc}")
            transport.disconnect(False)
            return
        self.batch.append(Envelope(value, self.source, received_now(), name))


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


def _close_reason(code: WSCloseCode, reason: str | None) -> str:
    detail = f", {reason}" if reason else ""
    number = code.value if code.value else 1005  # no status in the frame
    return f"server closed the WebSocket (code {number}{detail})"


class _Protocol(WSProtocol):  # type: ignore[misc]  # Cython, no stubs: Any to mypy
    """picows' protocol with dialkit's socket-level duties: read size, wire bytes, one
    hand-over per read, the moment the TCP link goes."""

    listener_: _Listener
    closed: asyncio.Future[None]

    def get_buffer(self, size_hint: int) -> memoryview:
        buffer: memoryview = super().get_buffer(size_hint)
        return buffer[:READ_CHUNK] if len(buffer) > READ_CHUNK else buffer

    def buffer_updated(self, nbytes: int) -> None:
        listener = self.listener_
        listener.receiver.bytes_in += nbytes
        super().buffer_updated(nbytes)
        if listener.batch:
            listener.flush()
        ws = listener.ws
        if ws is not None and ws.is_close_frame_sent and listener.open:
            listener.check_protocol_error(ws)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.listener_.connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)


def _handshake_reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status", None)
    if status is not None and int(status) != 101:
        phrase = getattr(status, "phrase", "")
        return f"WebSocket handshake rejected: HTTP {int(status)} {phrase}".rstrip()
    return f"WebSocket handshake failed: {exc}"


class PicowsTransport(StreamTransport):
    """`engine=picows`: the reference engine's behaviour on picows' C parser."""

    engine: ClassVar[str] = "picows"
    supported_options = WebSocketTransport.supported_options  # enableCompression: false only
    flow_control = True
    supports_ping = True
    counts_bytes_in = True

    def __init__(self, address: Address) -> None:
        if address.options.enable_compression:
            raise AddressError(
                "option enableCompression: engine=picows has no permessage-deflate; "
                "use engine=websockets (or leave engine unset to choose it automatically)"
            )
        super().__init__(address)
        self.uri, self._decode, self._encode = ws_endpoint(address)
        self._headers = {"User-Agent": USER_AGENT}
        if self.uri.user_info:
            self._headers["Authorization"] = build_authorization_basic(*self.uri.user_info)
        self._host_header = build_host(self.uri.host, self.uri.port, self.uri.secure)
        self._listener: _Listener | None = None
        self._transport: asyncio.Transport | None = None
        self._closed: asyncio.Future[None] | None = None
        self._pings_sent = 0

    def _new_listener(self, receiver: Receiver) -> _Listener:
        if not self.meta:
            return _Listener(receiver, self._decode, PLAIN_MAKERS)
        makers = message_makers(self.address)
        return _EnvelopeListener(receiver, self._decode, makers, redact(self.address.url))

    def _protocol_factory(self, listener: _Listener) -> _Protocol:
        protocol = _Protocol(
            self._host_header,
            self.uri.resource_name,
            True,  # client side
            lambda *_: listener,  # picows calls it with (request, response) after the handshake
            _picows_log,
            True,  # disconnect_on_exception (ours catches everything itself)
            None,  # handshake timeout: the session bounds the whole connect
            False,  # auto ping: the session runs heartbeats for every transport
            10.0,
            10.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # answer the peer's pings
            MAX_MESSAGE_BYTES,
            self._headers,
            READ_BUFFER_BYTES,
        )
        protocol.listener_ = listener
        protocol.closed = asyncio.get_running_loop().create_future()
        self._closed = protocol.closed
        return protocol

    async def connect(self, receiver: Receiver) -> None:
        options = self.address.options
        listener = self._new_listener(receiver)
        self._listener = listener
        transport, protocol = await open_stream(
            lambda: self._protocol_factory(listener),
            self.uri.host,
            self.uri.port,
            tls=tls_context(options.verify) if self.uri.secure else None,
            proxy=options.proxy,
        )
        self._transport = transport
        try:
            try:
                await protocol.wait_until_handshake_complete()
            except (picows.WSError, asyncio.TimeoutError) as exc:
                raise ConnectError(_handshake_reason(exc)) from None
            if not listener.handshaken:
                raise ConnectError("server closed the connection during the WebSocket handshake")
            # picows keeps a protocol error in the future wait_disconnected() awaits: await it
            # in the background, or asyncio logs "Future exception was never retrieved".
            assert listener.ws is not None
            listener.disconnected = asyncio.ensure_future(listener.ws.wait_disconnected())
            listener.disconnected.add_done_callback(_retrieve)
        except BaseException:
            await self.close()
            raise

    def pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    async def send(self, data: Message) -> None:
        listener = self._listener
        if listener is None or not listener.open or listener.ws is None:
            raise ConnectionResetError("WebSocket is not open")
        ws = listener.ws
        if self._encode is not None:
            ws.send(_BINARY, self._encode(data.encode() if isinstance(data, str) else data))
        elif isinstance(data, str):
            ws.send(_TEXT, data)
        else:
            ws.send(_BINARY, data)
        if listener.write_paused:  # the send buffer is full: wait for room, one shared waiter
            if listener.drained is None or listener.drained.done():
                listener.drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(listener.drained)
            if not listener.open:
                raise ConnectionResetError("connection is closed")

    def abort(self) -> None:
        listener, transport = self._listener, self._transport
        if listener is not None:
            listener.closing = True
        if transport is not None:
            transport.abort()

    async def ping(self) -> None:
        """Send a ping frame and return when its pong arrives."""
        listener = self._listener
        if listener is None or not listener.open or listener.ws is None:
            raise ConnectionResetError("WebSocket is not open")
        self._pings_sent += 1
        payload = (self._pings_sent & 0xFFFFFFFF).to_bytes(4, "big")
        waiter = asyncio.get_running_loop().create_future()
        listener.pings[payload] = waiter
        try:
            listener.ws.send_ping(payload)
            await waiter
        finally:
            listener.pings.pop(payload, None)

    async def close(self) -> None:
        listener, transport, closed = self._listener, self._transport, self._closed
        self._listener = self._transport = self._closed = None
        if listener is None or transport is None:
            return
        listener.closing = True
        ws = listener.ws
        if ws is None or not listener.open or closed is None:  # nothing left to say
            transport.abort()
            return
        listener.open = False
        if not ws.is_close_frame_sent:
            ws.send_close(WSCloseCode.OK)
        try:
            await asyncio.wait_for(asyncio.shield(closed), CLOSE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            transport.abort()
        else:
            transport.close()

    def describe(self) -> str:
        return self.uri.resource_name
