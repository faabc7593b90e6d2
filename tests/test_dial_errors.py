"""Malformed and dead addresses: each gives None within 4 s with a specific reason, and the
process stays healthy (no leaked threads or sockets)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dial import Dial, DialError, last_error
from tests.conftest import EchoServers, fd_count, thread_count


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """Accepts TCP connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture(scope="module")
def http_404_port() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            client.recv(4096)
            client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


MALFORMED = [
    ("", "empty"),
    ("wss//missing-colon.example", "no scheme"),
    ("ftp://127.0.0.1:21", "unsupported scheme 'ftp'"),
    ("ws://", "no target"),
    ("tcp://127.0.0.1", "missing port"),
    ("tcp://:8080", "missing host"),
    ("udp://127.0.0.1:99999", "bad host or port"),
    ("tcp://127.0.0.1:0", "port 0"),
    ("ws://127.0.0.1:0/", "port 0"),
    ("ws://[::1/x", "bad host or port"),
    ("unix://", "no target"),
    ("unix://?x", "socket path"),
    ("ws://127.0.0.1:1/|compress=lz4", "expected one of gzip"),
    ("ws://127.0.0.1:1/|reconnect=yes please", "expected true or false"),
    ("ws://127.0.0.1:1/|interval=0", "milliseconds"),
    ("ws://127.0.0.1:1/|unknown=1", "unknown option 'unknown'"),
    ("ws://127.0.0.1:1/|proxy=socks5:/broken", "proxy"),
    ("udp://127.0.0.1:9|proxy=socks5://127.0.0.1:1080", "not supported for udp://"),
    ("tcp://127.0.0.1:9|compress=gzip", "not supported for tcp://"),
    ("unix:///tmp/x.sock|verify=false", "not supported for unix://"),
]


@pytest.mark.parametrize(("address", "reason"), MALFORMED)
def test_malformed_address_gives_none_and_reason(address: str, reason: str) -> None:
    start = time.monotonic()
    assert Dial(address) is None
    assert time.monotonic() - start < 1
    assert reason in last_error()


def dead_addresses(silent: int, http_404: int, echo: EchoServers) -> list[tuple[str, str]]:
    return [
        ("tcp://127.0.0.1:1", "connection refused by 127.0.0.1:1"),
        ("tls://127.0.0.1:1", "connection refused"),
        ("ws://127.0.0.1:1/ws", "connection refused"),
        ("wss://127.0.0.1:1/ws", "connection refused"),
        ("unix:///nonexistent/dial.sock", "no unix socket at /nonexistent/dial.sock"),
        (f"ws://127.0.0.1:{silent}/ws", "no connection within 3 s"),
        (f"wss://127.0.0.1:{silent}/ws", "no connection within 3 s"),
        (f"tls://127.0.0.1:{silent}", "no connection within 3 s"),
        (f"ws://127.0.0.1:{http_404}/ws", "WebSocket handshake rejected: HTTP 404"),
        (f"ws://127.0.0.1:{echo.tcp}/ws", "WebSocket handshake failed"),
        (f"wss://127.0.0.1:{echo.tcp}/ws", "TLS handshake"),
        (f"tls://127.0.0.1:{http_404}", "TLS handshake"),
        ("ws://127.0.0.1:9/ws|proxy=socks5://127.0.0.1:1", "cannot reach proxy"),
        ("tcp://127.0.0.1:9|proxy=socks5://u:pw@127.0.0.1:1", "cannot reach proxy"),
    ]


def test_dead_addresses_give_none_within_4_seconds(
    silent_port: int, http_404_port: int, echo_servers: EchoServers, monkeypatch, ws_engine: str
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    cases = dead_addresses(silent_port, http_404_port, echo_servers)
    assert len(cases) + len(MALFORMED) >= 25
    threads, fds = thread_count(), fd_count()
    for address, reason in cases:
        start = time.monotonic()
        assert Dial(address, timeout=3) is None, address
        elapsed = time.monotonic() - start
        assert elapsed < 4, f"{address} took {elapsed:.1f} s"
        assert reason in last_error(), f"{address}: {last_error()}"
    assert "pw" not in last_error()
    time.sleep(0.2)
    assert thread_count() <= threads + 1  # the reactor may have started on the first dial
    assert fd_count() <= fds + 3


def test_raise_errors_raises_dial_error_with_reason() -> None:
    with pytest.raises(DialError, match="connection refused"):
        Dial("tcp://127.0.0.1:1", raise_errors=True)
    with pytest.raises(DialError, match="unknown option"):
        Dial("ws://h/|nope=1", raise_errors=True)


def test_last_error_is_cleared_by_a_success(echo_servers: EchoServers) -> None:
    assert Dial("tcp://127.0.0.1:1") is None
    assert last_error()
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}"):
        assert last_error() is None


def test_failure_is_logged_on_dial_logger_without_password(caplog) -> None:
    with caplog.at_level("WARNING", logger="dial"):
        Dial("ws://127.0.0.1:9/|proxy=socks5://alice:topsecret@127.0.0.1:1")
    assert "cannot reach proxy" in caplog.text
    assert "topsecret" not in caplog.text and "alice:***@" in caplog.text


def test_bad_timeout_is_a_clean_error() -> None:
    assert Dial("tcp://127.0.0.1:1", timeout=0) is None
    assert "timeout must be > 0" in last_error()
    assert Dial("tcp://127.0.0.1:1", timeout=float("inf")) is None
    assert "timeout must be > 0 and <=" in last_error()
    assert Dial("tcp://127.0.0.1:1", timeout="3") is None
    assert "number of seconds" in last_error()


def test_peer_closing_during_tls_handshake_has_a_reason(ws_engine: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            client, _ = listener.accept()
            client.close()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    for address in (f"tls://127.0.0.1:{port}", f"wss://127.0.0.1:{port}/"):
        assert Dial(address, timeout=3) is None
        assert "during the TLS handshake" in last_error()  # EOF or reset, as timing has it
    listener.close()
