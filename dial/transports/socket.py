"""Raw sockets: `tcp://h:p`, `tls://h:p`, `unix:///path`, `udp://h:p`.

`read()` returns the bytes one receive returned (a datagram for udp), always `bytes`;
`write()` sends bytes. With `meta=true` each arrives in an `Envelope` of kind "binary" (udp:
`topic` is the sender's "host:port").
This module also holds `open_stream`, the one place that turns (host, port, TLS, SOCKS proxy)
into a connected asyncio transport; the WebSocket transport reuses it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ..address import Address, redact, split_host_port
from ..buffer import Item, Message, raw_message
from ..envelope import Envelope, received_now
from ..errors import AddressError, ConnectError, MissingDependency
from .base import Receiver, StreamTransport

__all__ = [
    "TcpTransport",
    "TlsTransport",
    "UdpTransport",
    "UnixTransport",
    "open_stream",
    "tls_context",
]


def tls_context(verify: bool) -> ssl.SSLContext:
    """Verifying by default (system store, or `SSL_CERT_FILE`); `verify=false` turns it off."""
    context = ssl.create_default_context()
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile:
        context.load_verify_locations(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


READ_CHUNK = 64 * 1024  # bytes per socket read: bounds how long one read holds the GIL


class StreamProtocol(asyncio.Protocol):
    """asyncio protocol with write flow control; subclasses decide what a message is."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if hasattr(transport, "max_size"):  # selector transports read max_size bytes at a time
            transport.max_size = READ_CHUNK

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake_writer()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    async def drain(self) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection is closed")
        if self._paused:  # one shared waiter: a second sender must not orphan the first
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)  # a cancelled sender leaves it to the others


async def open_stream(
    protocol_factory: Any,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    proxy: str | None = None,
) -> tuple[asyncio.Transport, Any]:
    """Connect (through the SOCKS proxy if given), wrap in TLS if given, with clear errors."""
    loop = asyncio.get_running_loop()
    where = f"{host}:{port}"
    try:
        if proxy is None:
            return await loop.create_connection(
                protocol_factory, host, port, ssl=tls, server_hostname=host if tls else None
            )
        sock = await _through_proxy(proxy, host, port)
        try:
            return await loop.create_connection(
                protocol_factory, sock=sock, ssl=tls, server_hostname=host if tls else None
            )
        except BaseException:
            sock.close()
            raise
    except ssl.SSLCertVerificationError as exc:
        raise ConnectError(
            f"TLS certificate of {where} not trusted: {exc.verify_message} "
            "(set SSL_CERT_FILE, or verify=false to skip verification)"
        ) from None
    except ssl.SSLError as exc:
        raise ConnectError(f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except ConnectionRefusedError:
        raise ConnectError(f"connection refused by {where}") from None
    except socket.gaierror as exc:
        raise ConnectError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    except OSError as exc:
        detail = exc.strerror or str(exc) or "the peer closed the connection"
        during = " during the TLS handshake" if tls is not None else ""
        raise ConnectError(f"cannot connect to {where}: {detail}{during}") from None


async def _through_proxy(proxy: str, host: str, port: int) -> socket.socket:
    try:
        from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
        from python_socks.async_.asyncio import Proxy
    except ImportError:
        raise MissingDependency(
            "proxy= needs the 'python-socks' package: pip install 'dialkit[proxy]'"
        ) from None
    shown = redact(proxy)
    try:
        if proxy.lower().startswith("socks5h://"):  # resolve the target's name at the proxy
            proxy_client = Proxy.from_url("socks5://" + proxy[len("socks5h://") :], rdns=True)
        else:
            proxy_client = Proxy.from_url(proxy)
        return await proxy_client.connect(dest_host=host, dest_port=port)
    except ProxyConnectionError as exc:
        raise ConnectError(f"cannot reach proxy {shown}: {exc}") from None
    except ProxyTimeoutError:
        raise ConnectError(f"proxy {shown} timed out") from None
    except ProxyError as exc:
        raise ConnectError(f"proxy {shown} refused {host}:{port}: {exc}") from None


def _enveloped(deliver: Callable[[Item], None], source: str) -> Callable[[Message], None]:
    """`deliver` for `meta=true`: each received chunk wrapped in a "binary" `Envelope`
    (chosen once per connect, so a plain connection pays nothing for it)."""

    def deliver_enveloped(value: Message) -> None:
        deliver(Envelope(value, source, received_now(), "binary"))

    return deliver_enveloped


def _delivery(receiver: Receiver, address: Address) -> Callable[[Message], None]:
    if address.options.meta:
        return _enveloped(receiver.deliver, redact(address.url))
    return receiver.deliver


class _ByteStream(StreamProtocol):
    def __init__(self, receiver: Receiver, deliver: Callable[[Message], None]) -> None:
        super().__init__()
        self._deliver = deliver
        self._receiver = receiver
        self.closing = False

    def data_received(self, data: bytes) -> None:
        self._receiver.bytes_in += len(data)
        self._deliver(raw_message(data))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closing:
            self._receiver.lost(f"connection lost: {exc}" if exc else "peer closed the connection")


class _SocketTransport(StreamTransport):
    """tcp / tls / unix: a byte stream, one read() per chunk received."""

    supported_options = frozenset({"proxy", "verify"})
    flow_control = True
    counts_bytes_in = True
    tls = False

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.host, self.port = split_host_port(address.target, address.scheme)
        self._protocol: _ByteStream | None = None

    async def connect(self, receiver: Receiver) -> None:
        options = self.address.options
        _, self._protocol = await open_stream(
            lambda: _ByteStream(receiver, _delivery(receiver, self.address)),
            self.host,
            self.port,
            tls=tls_context(options.verify) if self.tls else None,
            proxy=options.proxy,
        )

    def pause_reading(self) -> None:
        if self._protocol is not None:
            self._protocol.pause_reading()

    def resume_reading(self) -> None:
        if self._protocol is not None:
            self._protocol.resume_reading()

    async def send(self, data: Message) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise ConnectionResetError("not connected")
        protocol.transport.write(data.encode() if isinstance(data, str) else data)
        await protocol.drain()

    def abort(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.closing = True
            protocol.transport.abort()

    async def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is None or protocol.transport is None:
            return
        protocol.closing = True
        protocol.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(protocol.closed), 2.0)
        except asyncio.TimeoutError:
            protocol.transport.abort()


class TcpTransport(_SocketTransport):
    pass


class TlsTransport(_SocketTransport):
    tls = True


class UnixTransport(_SocketTransport):
    supported_options = frozenset()

    def __init__(self, address: Address) -> None:
        StreamTransport.__init__(self, address)
        path = address.target
        if not path or path.startswith("?"):
            raise AddressError("unix:// needs a socket path, e.g. unix:///run/app.sock")
        self.path = path
        self._protocol = None

    async def connect(self, receiver: Receiver) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, self._protocol = await loop.create_unix_connection(
                lambda: _ByteStream(receiver, _delivery(receiver, self.address)), self.path
            )
        except FileNotFoundError:
            raise ConnectError(f"no unix socket at {self.path}") from None
        except ConnectionRefusedError:
            raise ConnectError(f"connection refused by unix socket {self.path}") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.path}: {exc.strerror or exc}") from None


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver) -> None:
        self._deliver = receiver.deliver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._deliver(raw_message(data))

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable: UDP has no link to lose; the next write retries


class _EnvelopedDatagrams(_Datagrams):
    """`meta=true`: each datagram in an `Envelope` whose topic is its sender's host:port."""

    def __init__(self, receiver: Receiver, source: str) -> None:
        super().__init__(receiver)
        self._source = source

    def datagram_received(self, data: bytes, addr: Any) -> None:
        sender = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
        self._deliver(Envelope(raw_message(data), self._source, received_now(), "binary", sender))


class UdpTransport(StreamTransport):
    """udp: one datagram per read(), one datagram per write()."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.host, self.port = split_host_port(address.target, address.scheme)
        self._transport: asyncio.DatagramTransport | None = None

    async def connect(self, receiver: Receiver) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._transport, _ = await loop.create_datagram_endpoint(
                self._protocol_factory(receiver), remote_addr=(self.host, self.port)
            )
        except socket.gaierror as exc:
            raise ConnectError(f"cannot resolve host {self.host!r}: {exc.strerror}") from None
        except OSError as exc:
            raise ConnectError(f"udp {self.host}:{self.port}: {exc.strerror or exc}") from None

    def _protocol_factory(self, receiver: Receiver) -> Callable[[], _Datagrams]:
        if self.meta:
            source = redact(self.address.url)
            return lambda: _EnvelopedDatagrams(receiver, source)
        return lambda: _Datagrams(receiver)

    async def send(self, data: Message) -> None:
        if self._transport is None:
            raise ConnectionResetError("not connected")
        self._transport.sendto(data.encode() if isinstance(data, str) else data)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
