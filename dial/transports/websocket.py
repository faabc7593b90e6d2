"""`ws://` and `wss://`: the websockets Sans-I/O protocol driven by a plain asyncio Protocol.

Driving `websockets.client.ClientProtocol` directly (rather than the asyncio client) keeps the
receive path to one parser pass and one buffer append per frame, with no future or task per
message. websockets still does all the protocol work: handshake, masking, fragmentation,
permessage-deflate, ping replies and the closing handshake.

With `meta=true` every message arrives in an `Envelope` whose kind is its frame's ("text" or
"binary", also for a binary frame the `compress` codec inflated to text). The two message
makers are chosen once per link (`message_makers`), so a plain link pays nothing for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from .. import __version__
from ..address import Address, redact, split_host_port
from ..buffer import Item, Message, binary_frame, text_message
from ..codecs import get_codec
from ..envelope import Envelope, received_now
from ..errors import AddressError, ConnectError
from .base import Receiver, StreamTransport
from .socket import StreamProtocol, open_stream, tls_context

__all__ = ["MAX_MESSAGE_BYTES", "WebSocketTransport"]

log = logging.getLogger("dial")

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # one message larger than this is a protocol error
CLOSE_WAIT_SECONDS = 1.0
USER_AGENT = f"dialkit/{__version__}"

_TEXT, _BINARY, _CONT, _CLOSE = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.CLOSE
_PONG = Opcode.PONG


Bytes = bytes | bytearray | memoryview
#: (text frame -> message, binary frame + codec -> message): what goes to the buffer
MessageMakers = tuple[
    Callable[[Bytes], Item], Callable[[Bytes, Callable[[bytes], bytes | None] | None], Item]
]
PLAIN_MAKERS: MessageMakers = (text_message, binary_frame)


def ws_endpoint(
    address: Address,
) -> tuple[WebSocketURI, Callable[[bytes], bytes | None] | None, Callable[[bytes], bytes] | None]:
    """What both engines read off a ws:// or wss:// address: the parsed URL (AddressError
    when it is not one) and the `compress=` codec's decode and encode halves, as `mode=`
    asks for them (None: that direction is not compressed)."""
    split_host_port(address.target, address.scheme, 443 if address.scheme == "wss" else 80)
    try:
        uri = parse_uri(address.url)
    except (InvalidURI, ValueError) as exc:
        raise AddressError(f"{redact(address.url)}: not a WebSocket URL ({exc})") from None
    options = address.options
    codec = get_codec(options.compress)
    decode = codec.decode if codec and options.mode in ("recv", "dual") else None
    encode = codec.encode if codec and options.mode in ("send", "dual") else None
    return uri, decode, encode


def message_makers(address: Address) -> MessageMakers:
    """How frames become buffered items on this address: bare messages, or with
    `meta=true` `Envelope`s of the frame's kind, stamped on arrival."""
    if not address.options.meta:
        return PLAIN_MAKERS
    source = redact(address.url)

    def text(data: Bytes) -> Item:
        return Envelope(text_message(data), source, received_now(), "text")

    def binary(data: Bytes, inflate: Callable[[bytes], bytes | None] | None) -> Item:
        return Envelope(binary_frame(data, inflate), source, received_now(), "binary")

    return text, binary


def settle_pings(pings: dict[bytes, asyncio.Future[None]], pong: bytes) -> None:
    """A pong answers its own ping and, as in RFC 6455 practice, every earlier one (both
    engines keep `pings` as ping payload -> waiter, in the order they were sent)."""
    if pong not in pings:
        return
    for payload in list(pings):
        waiter = pings.pop(payload)
        if not waiter.done():
            waiter.set_result(None)
        if payload == pong:
            break


class _WebSocketStream(StreamProtocol):
    """Feeds bytes to the Sans-I/O protocol and turns its events into delivered messages."""

    def __init__(
        self, ws: ClientProtocol, receiver: Receiver, decode: Any, makers: MessageMakers
    ) -> None:
        super().__init__()
        self.ws = ws
        self.text, self.binary = makers
        self.receiver = receiver
        self.deliver = receiver.deliver
        self.deliver_many = receiver.batch_delivery()
        self.decode = decode  # codec for binary frames, or None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.open = False
        self.closing = False
        self._fragments: list[bytes | bytearray | memoryview] = []
        self._fragment_opcode: Opcode | None = None
        self.pings: dict[bytes, asyncio.Future[None]] = {}  # ping payload -> its pong

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        request = self.ws.connect()
        request.headers["User-Agent"] = USER_AGENT
        self.ws.send_request(request)
        self.flush()

    def flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as exc:  # a bug or a hostile peer: drop the link, keep the reactor
            log.warning("WebSocket receive failed: %r", exc)
            self._lost(f"receive failed: {exc.__class__.__name__}: {exc}")
            if self.transport is not None:
                self.transport.abort()

    def _receive(self, data: bytes) -> None:
        self.receiver.bytes_in += len(data)
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        self.flush()  # pong replies and close frames go out right away
        decode, text, binary = self.decode, self.text, self.binary
        batch: list[Item] = []  # handed over once per read, in order
        append = batch.append
        try:
            for event in events:
                if event.__class__ is not Frame:
                    self._handshake_done(event)
                    continue
                opcode = event.opcode
                if event.fin and opcode is _TEXT:
                    append(text(event.data))  # invalid UTF-8: escaped, not a crash
                    continue
                if event.fin and opcode is _BINARY:
                    append(binary(event.data, decode))
                    continue
                if batch:  # what came before this frame goes first
                    self.deliver_many(batch)
                    batch.clear()
                if opcode is _CLOSE:
                    self._lost(self._close_reason())
                elif opcode is _PONG:
                    settle_pings(self.pings, bytes(event.data))
                elif opcode in (_TEXT, _BINARY, _CONT):
                    self._fragment(event)
        finally:  # also when a frame failed (a compression bomb): those before it count
            if batch:
                self.deliver_many(batch)
        if ws.state is not State.OPEN and self.open:
            self._lost(self._close_reason())
        elif not self.open and ws.handshake_exc is not None:  # not even an HTTP response
            self._handshake_done(None)

    def _fragment(self, frame: Frame) -> None:
        if frame.opcode is not _CONT:
            self._fragment_opcode, self._fragments = frame.opcode, []
        self._fragments.append(frame.data)
        if frame.fin:
            data = b"".join(self._fragments)
            self._fragments = []
            if self._fragment_opcode is _TEXT:
                self.deliver(self.text(data))
            else:
                self.deliver(self.binary(data, self.decode))

    def _handshake_done(self, event: Any) -> None:
        if self.handshake.done():
            return
        error = self.ws.handshake_exc
        if error is None and isinstance(event, Response):
            self.open = True
            self.handshake.set_result(None)
            return
        self.handshake.set_exception(ConnectError(_handshake_reason(event, error)))
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _close_reason(self) -> str:
        ws = self.ws
        if ws.close_rcvd is not None:
            rcvd = ws.close_rcvd
            detail = f", {rcvd.reason}" if rcvd.reason else ""
            return f"server closed the WebSocket (code {rcvd.code}{detail})"
        if ws.parser_exc is not None:
            return f"protocol error: {ws.parser_exc}"
        return "WebSocket closed"

    def _lost(self, reason: str) -> None:
        if self.open and not self.closing:
            self.open = False
            self.receiver.lost(reason)
        if self.ws.close_expected() and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for waiter in self.pings.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("connection lost before the pong"))
                waiter.exception()  # retrieved, even if its pinger was already cancelled
        self.pings.clear()
        if not self.handshake.done():
            self.handshake.set_exception(
                ConnectError("server closed the connection during the WebSocket handshake")
            )
        self._lost(f"connection lost: {exc}" if exc else "server closed the connection")


def _handshake_reason(event: Any, error: BaseException | None) -> str:
    if isinstance(event, Response) and event.status_code != 101:
        return f"WebSocket handshake rejected: HTTP {event.status_code} {event.reason_phrase}"
    return f"WebSocket handshake failed: {error or 'unexpected response'}"


class WebSocketTransport(StreamTransport):
    """The reference engine (`engine=websockets`): every option, permessage-deflate too."""

    engine: ClassVar[str] = "websockets"
    supported_options = frozenset(
        {"compress", "mode", "enableCompression", "proxy", "verify", "engine"}
    )
    flow_control = True
    supports_ping = True
    counts_bytes_in = True

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.uri, self._decode, self._encode = ws_endpoint(address)
        self._makers = message_makers(address)
        self._stream: _WebSocketStream | None = None
        self._pings_sent = 0

    async def connect(self, receiver: Receiver) -> None:
        options = self.address.options
        extensions = enable_client_permessage_deflate(None) if options.enable_compression else None
        ws = ClientProtocol(self.uri, extensions=extensions, max_size=MAX_MESSAGE_BYTES)
        _, stream = await open_stream(
            lambda: _WebSocketStream(ws, receiver, self._decode, self._makers),
            self.uri.host,
            self.uri.port,
            tls=tls_context(options.verify) if self.uri.secure else None,
            proxy=options.proxy,
        )
        self._stream = stream
        try:
            await stream.handshake
        except BaseException:
            await self.close()
            raise

    def pause_reading(self) -> None:
        if self._stream is not None:
            self._stream.pause_reading()

    def resume_reading(self) -> None:
        if self._stream is not None:
            self._stream.resume_reading()

    async def send(self, data: Message) -> None:
        stream = self._stream
        if stream is None or not stream.open:
            raise ConnectionResetError("WebSocket is not open")
        if self._encode is not None:
            stream.ws.send_binary(self._encode(data.encode() if isinstance(data, str) else data))
        elif isinstance(data, str):
            stream.ws.send_text(data.encode())
        else:
            stream.ws.send_binary(data)
        stream.flush()
        await stream.drain()

    def abort(self) -> None:
        stream = self._stream
        if stream is not None and stream.transport is not None:
            stream.closing = True
            stream.transport.abort()

    async def ping(self) -> None:
        """Send a ping frame and return when its pong arrives."""
        stream = self._stream
        if stream is None or not stream.open:
            raise ConnectionResetError("WebSocket is not open")
        self._pings_sent += 1
        payload = (self._pings_sent & 0xFFFFFFFF).to_bytes(4, "big")
        waiter = asyncio.get_running_loop().create_future()
        stream.pings[payload] = waiter
        try:
            stream.ws.send_ping(payload)
            stream.flush()
            await waiter
        finally:
            stream.pings.pop(payload, None)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None or stream.transport is None:
            return
        stream.closing = True
        if not stream.open:  # handshake never finished or link already dead: nothing to say
            stream.transport.abort()
            return
        if stream.ws.state is State.OPEN:
            stream.ws.send_close(1000)
            stream.flush()
        try:
            await asyncio.wait_for(asyncio.shield(stream.closed), CLOSE_WAIT_SECONDS)
        except asyncio.TimeoutError:
            stream.transport.abort()
        else:
            stream.transport.close()

    def describe(self) -> str:
        return self.uri.resource_name
