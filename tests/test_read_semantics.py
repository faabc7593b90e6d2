"""Every row of FMZ's read() table, the 2000-message ring buffer, and disconnect semantics,
against a real WebSocket server."""

from __future__ import annotations

import threading
import time

import pytest

from dial import Dial
from dial.buffer import MessageBuffer
from tests.conftest import WsServer, wait_until

pytestmark = pytest.mark.usefixtures("ws_engine")  # every WebSocket engine, the same table


def filled(ws_server: WsServer, count: int):
    conn = Dial(ws_server.url)
    assert conn, "dial failed"
    conn.write(f"many:{count}")
    assert wait_until(lambda: conn.stats().messages_in >= count)
    return conn


def test_data_buffered_no_argument_returns_oldest(ws_server: WsServer) -> None:
    with filled(ws_server, 3) as conn:
        assert [conn.read(), conn.read(), conn.read()] == ["m0", "m1", "m2"]


def test_data_buffered_minus_one_returns_oldest(ws_server: WsServer) -> None:
    with filled(ws_server, 3) as conn:
        assert conn.read(-1) == "m0"


def test_data_buffered_minus_two_returns_newest_and_discards_rest(ws_server: WsServer) -> None:
    with filled(ws_server, 5) as conn:
        assert conn.read(-2) == "m4"
        assert conn.read(-1) is None
        assert conn.dropped == 0  # an asked-for discard is not a drop


def test_data_buffered_timeout_returns_oldest_at_once(ws_server: WsServer) -> None:
    with filled(ws_server, 2) as conn:
        start = time.monotonic()
        assert conn.read(2000) == "m0"
        assert time.monotonic() - start < 0.5


def test_empty_no_argument_blocks_until_a_message(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        threading.Timer(0.3, lambda: ws_server.send_all("late")).start()
        start = time.monotonic()
        assert conn.read() == "late"
        assert time.monotonic() - start >= 0.25


def test_empty_minus_one_and_minus_two_return_none_at_once(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        start = time.monotonic()
        assert conn.read(-1) is None
        assert conn.read(-2) is None
        assert time.monotonic() - start < 0.1


def test_empty_timeout_waits_n_milliseconds_then_none(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        start = time.monotonic()
        assert conn.read(300) is None
        assert 0.28 <= time.monotonic() - start < 1.5


def test_timeout_returns_a_message_arriving_during_the_wait(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        threading.Timer(0.2, lambda: ws_server.send_all("during")).start()
        assert conn.read(3000) == "during"


def test_5000_unread_messages_leave_exactly_the_newest_2000(ws_server: WsServer) -> None:
    with filled(ws_server, 5000) as conn:
        messages = []
        while (message := conn.read(-1)) is not None:
            messages.append(message)
        assert messages == [f"m{i}" for i in range(3000, 5000)]
        assert conn.dropped == 3000
        assert conn.stats().messages_in == 5000


def test_server_closing_mid_stream_buffered_first_then_empty_string(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    conn.write("many:10")
    assert wait_until(lambda: conn.stats().messages_in == 10)
    conn.write("close")
    assert wait_until(lambda: not conn.connected)
    assert [conn.read() for _ in range(10)] == [f"m{i}" for i in range(10)]
    for timeout in (None, -1, -2, 1000):
        start = time.monotonic()
        assert conn.read(timeout) == ""
        assert time.monotonic() - start < 0.2
    assert conn.write("anything") == 0
    assert "going away" in (conn.stats().last_error or "")
    conn.close()


def test_close_releases_a_reader_blocked_in_another_thread(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    result: list[object] = []
    reader = threading.Thread(target=lambda: result.append(conn.read()))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()
    conn.close()
    reader.join(2)
    assert not reader.is_alive()
    assert result == [""]
    conn.close()  # idempotent


def test_one_thread_reads_while_another_writes(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.extend(conn.read(3000) for _ in range(200)))
        reader.start()
        for i in range(200):
            assert conn.write(f"echo:{i}") == len(f"echo:{i}")
        reader.join(10)
        assert got == [str(i) for i in range(200)]


def test_buffer_many_readers_all_released_on_disconnect() -> None:
    buffer = MessageBuffer()
    results: list[object] = []
    readers = [threading.Thread(target=lambda: results.append(buffer.read())) for _ in range(4)]
    for reader in readers:
        reader.start()
    time.sleep(0.1)
    buffer.put("one")
    time.sleep(0.1)
    buffer.set_connected(False)
    for reader in readers:
        reader.join(2)
    assert sorted(results, key=str) == ["", "", "", "one"]


def test_bad_read_timeouts_are_clear_errors() -> None:
    buffer = MessageBuffer()
    for bad in ("100", float("nan"), True, [1]):
        with pytest.raises(TypeError, match="milliseconds"):
            buffer.read(bad)
    threading.Timer(0.1, lambda: buffer.put("later")).start()
    assert buffer.read(float("inf")) == "later"  # infinity waits like no argument
    buffer.put("now")
    assert buffer.read(1e16) == "now"  # huge but finite: no OverflowError


def test_buffer_capacity_and_drop_count() -> None:
    buffer = MessageBuffer(capacity=3)
    for i in range(10):
        buffer.put(str(i))
    assert len(buffer) == 3 and buffer.dropped == 7
    assert [buffer.read(-1) for _ in range(4)] == ["7", "8", "9", None]
