"""100 dial/close cycles leave thread and file-descriptor counts where they were."""

from __future__ import annotations

import gc
import time

from dial import Dial
from tests.conftest import EchoServers, WsServer, fd_count, thread_count


def settle() -> None:
    gc.collect()
    time.sleep(0.2)


def test_100_dial_close_cycles_leak_nothing(ws_server: WsServer, echo_servers: EchoServers):
    addresses = [
        f"{ws_server.url}|compress=gzip&reconnect=true&payload=hi",
        f"tcp://127.0.0.1:{echo_servers.tcp}",
        f"udp://127.0.0.1:{echo_servers.udp}",
        f"unix://{echo_servers.unix}",
    ]
    for address in addresses:  # warm-up: reactor thread, imports
        Dial(address).close()
    settle()
    threads, fds = thread_count(), fd_count()
    for i in range(100):
        conn = Dial(addresses[i % len(addresses)])
        assert conn, f"cycle {i}"
        conn.write("x")
        conn.close()
    settle()
    assert thread_count() == threads
    assert fd_count() == fds


def test_failed_dials_leak_nothing() -> None:
    Dial("tcp://127.0.0.1:1")
    settle()
    threads, fds = thread_count(), fd_count()
    for _ in range(100):
        assert Dial("ws://127.0.0.1:1/") is None
    settle()
    assert (thread_count(), fd_count()) == (threads, fds)


def test_connection_dropped_without_close_is_cleaned_up(ws_server: WsServer) -> None:
    Dial(ws_server.url).close()
    settle()
    fds = fd_count()
    for _ in range(20):
        Dial(ws_server.url).write("x")  # never closed, just forgotten
    settle()
    time.sleep(0.5)
    assert fd_count() == fds
