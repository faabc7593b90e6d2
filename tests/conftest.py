"""Fixtures for the core tests: real local servers (WebSocket, tcp/udp/unix/tls echo, TLS with a
trustme CA, a microsocks SOCKS5 proxy), each run for real on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import base


class ServerThread:
    """One asyncio loop in a background thread hosting the test servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="test-servers", daemon=True
        )
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def server_thread() -> Iterator[ServerThread]:
    servers = ServerThread()
    yield servers
    servers.stop()


@dataclass
class WsServer:
    """A scriptable WebSocket server. Text commands from a client:

    `echo:X` replies X; `many:N` sends N numbered messages; `gzip:X`/`raw:X`/`zlib:X` send X
    compressed as binary; `bin:HEX` sends raw bytes; `close` closes the connection; anything
    else is echoed. Every received message is recorded in `received`.
    """

    port: int
    url: str
    received: list[Any] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)
    handshakes: int = 0
    extensions: list[str] = field(default_factory=list)
    server: Any = None
    owner: ServerThread | None = None

    def drop_all(self) -> None:
        """Abort every client's TCP connection, as a crashed server would."""

        async def drop() -> None:
            for ws in list(self.connections):
                ws.transport.abort()

        assert self.owner is not None
        self.owner.run(drop())

    def send_all(self, message: str | bytes) -> None:
        async def send() -> None:
            for ws in list(self.connections):
                await ws.send(message)

        assert self.owner is not None
        self.owner.run(send())


async def _ws_handler(state: WsServer, ws: Any) -> None:
    state.handshakes += 1
    state.extensions.append(ws.request.headers.get("Sec-WebSocket-Extensions", ""))
    state.connections.append(ws)
    try:
        async for message in ws:
            state.received.append(message)
            if isinstance(message, bytes):
                await ws.send(message)
                continue
            command, _, argument = message.partition(":")
            if command == "many":
                for i in range(int(argument)):
                    await ws.send(f"m{i}")
            elif command == "bomb":  # a tiny gzip frame that inflates to N bytes
                await ws.send(gzip.compress(b"0" * int(argument)))
            elif command == "gzip":
                await ws.send(gzip.compress(argument.encode()))
            elif command == "raw":
                compressor = zlib.compressobj(wbits=-15)
                await ws.send(compressor.compress(argument.encode()) + compressor.flush())
            elif command == "zlib":
                await ws.send(zlib.compress(argument.encode()))
            elif command == "bin":
                await ws.send(bytes.fromhex(argument))
            elif command == "close":
                await ws.close(1001, "going away")
            elif command == "echo":
                await ws.send(argument)
            else:
                await ws.send(message)
    except Exception:
        pass
    finally:
        state.connections.remove(ws)


def start_ws_server(owner: ServerThread, ssl_context: ssl.SSLContext | None = None) -> WsServer:
    from websockets.asyncio.server import serve

    async def start() -> WsServer:
        state = WsServer(port=0, url="")
        server = await serve(
            lambda ws: _ws_handler(state, ws), "127.0.0.1", 0, ssl=ssl_context, max_size=None
        )
        state.port = server.sockets[0].getsockname()[1]
        state.url = f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{state.port}/feed"
        state.server, state.owner = server, owner
        return state

    return owner.run(start())


def stop_server(owner: ServerThread, server: Any) -> None:
    async def stop() -> None:
        server.close()
        await server.wait_closed()

    owner.run(stop())


@pytest.fixture
def ws_server(server_thread: ServerThread) -> Iterator[WsServer]:
    state = start_ws_server(server_thread)
    yield state
    stop_server(server_thread, state.server)


@dataclass
class Tls:
    ca_file: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(str(ca_file), context)


@pytest.fixture
def trust_test_ca(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the test CA the one `SSL_CERT_FILE` points at, as a user would."""
    monkeypatch.setenv("SSL_CERT_FILE", tls.ca_file)
    return tls.ca_file


@pytest.fixture
def wss_server(server_thread: ServerThread, tls: Tls) -> Iterator[WsServer]:
    state = start_ws_server(server_thread, tls.server_context)
    yield state
    stop_server(server_thread, state.server)


@dataclass
class EchoServers:
    tcp: int
    tls: int
    udp: int
    unix: str


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data == b"bye\n":
            self.transport.close()
        else:
            self.transport.write(data)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


@pytest.fixture(scope="session")
def echo_servers(
    server_thread: ServerThread, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EchoServers]:
    unix_path = str(tmp_path_factory.mktemp("unix") / "echo.sock")

    async def start() -> tuple[EchoServers, list[Any]]:
        loop = asyncio.get_running_loop()
        tcp = await loop.create_server(_Echo, "127.0.0.1", 0)
        tls_server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=tls.server_context)
        unix = await loop.create_unix_server(_Echo, unix_path)
        udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        ports = EchoServers(
            tcp=tcp.sockets[0].getsockname()[1],
            tls=tls_server.sockets[0].getsockname()[1],
            udp=udp.get_extra_info("sockname")[1],
            unix=unix_path,
        )
        return ports, [tcp, tls_server, unix, udp]

    ports, servers = server_thread.run(start())
    yield ports

    async def stop() -> None:
        for server in servers:
            server.close()

    server_thread.run(stop())


@dataclass
class Socks:
    port: int
    user: str | None = None
    password: str | None = None

    def url(self, password: str | None = None) -> str:
        if self.user is None:
            return f"socks5://127.0.0.1:{self.port}"
        return f"socks5://{self.user}:{password or self.password}@127.0.0.1:{self.port}"


def _start_microsocks(user: str | None = None, password: str | None = None) -> Iterator[Socks]:
    binary = base.ensure_binary("microsocks", "microsocks")
    port = base.free_port()
    argv = [binary, "-i", "127.0.0.1", "-p", str(port)]
    if user:
        argv += ["-u", user, "-P", password or ""]
    process = base.start(f"microsocks-{port}", argv, port)
    yield Socks(port, user, password)
    base.stop(process)


@pytest.fixture(scope="session")
def socks_proxy() -> Iterator[Socks]:
    yield from _start_microsocks()


@pytest.fixture(scope="session")
def socks_proxy_auth() -> Iterator[Socks]:
    yield from _start_microsocks("trader", "s3cret-pw")


def wait_until(predicate: Any, seconds: float = 5.0) -> bool:
    """Poll `predicate` until it is true or `seconds` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return threading.active_count()


ROOT = Path(__file__).resolve().parents[1]
