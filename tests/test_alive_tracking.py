"""Request tracking (`dial.tracking.Tracker`) against a local server that answers Kraken-style
`add_order` / `cancel_order` requests out of order, and sometimes not at all."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dial import Dial
from dial.tracking import Tracker
from tests.servers.alive import AliveServer


@pytest.fixture
def server() -> Iterator[AliveServer]:
    instance = AliveServer()
    yield instance
    instance.close()


@pytest.fixture
def conn(server: AliveServer) -> Iterator[Any]:
    connection = Dial(server.url, raise_errors=True)
    yield connection
    connection.close()


class Recorder:
    """Collects callbacks; `wait(n)` blocks until n arrived."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, Any, Any, int]] = []
        self.threads: set[str] = set()
        self._lock = threading.Condition()

    def __call__(self, req_id: Any, method: str, params: Any, response: Any, us: int) -> None:
        with self._lock:
            self.calls.append((req_id, method, params, response, us))
            self.threads.add(threading.current_thread().name)
            self._lock.notify_all()

    def wait(self, count: int, seconds: float = 10) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.calls) >= count, seconds), (
                f"{len(self.calls)} of {count} callbacks"
            )


def test_out_of_order_responses_each_reach_their_own_callback(
    server: AliveServer, conn: Any
) -> None:
    server.kraken_hold = 10  # answer in reversed batches of 10
    tracker = Tracker(conn)
    record = Recorder()
    sent = {}
    for i in range(50):
        method = "add_order" if i % 2 == 0 else "cancel_order"
        params = {"cl_ord_id": f"c{i}"} if method == "add_order" else {"order_id": f"O-{i}"}
        req_id = tracker.request(method, params, record)
        sent[req_id] = (method, params)
    record.wait(50)
    assert tracker.pending() == 0
    ids = [call[0] for call in record.calls]
    assert sorted(ids) == sorted(sent) and ids != sorted(ids)  # all of them, out of order
    for req_id, method, params, response, latency_us in record.calls:
        assert (method, params) == sent[req_id]
        assert response["req_id"] == req_id and response["method"] == method
        expected = params["cl_ord_id"] if method == "add_order" else params["order_id"]
        key = "cl_ord_id" if method == "add_order" else "order_id"
        assert response["result"][key] == expected
        assert isinstance(latency_us, int) and 0 < latency_us < 10_000_000
    assert record.threads == {"dial-reactor"}  # callbacks run on the receiving thread
    assert conn.read(100) is None  # matched responses are not also readable
    assert conn.stats().messages_in == 50


def test_ten_thousand_requests_with_a_tenth_unanswered_leave_no_pending_entry(
    server: AliveServer, conn: Any
) -> None:
    server.kraken_hold = 7
    tracker = Tracker(conn, timeout=1.0)
    record = Recorder()
    ignored = set()
    for i in range(10_000):
        params = {"cl_ord_id": i}
        if i % 10 == 3:
            params["ignore"] = True  # the server never answers these
        req_id = tracker.request("add_order", params, record)
        if i % 10 == 3:
            ignored.add(req_id)
    record.wait(9_000, 20)
    record.wait(10_000, 5)  # the 1,000 unanswered ones, after their timeout
    assert tracker.pending() == 0
    assert tracker._deadlines == [] and tracker._sweep_at is None
    assert (tracker.matched, tracker.expired) == (9_000, 1_000)
    timed_out = {call[0] for call in record.calls if call[3] is None}
    assert timed_out == ignored
    for _req_id, _, params, response, _ in record.calls:
        if response is not None:
            assert response["result"]["cl_ord_id"] == params["cl_ord_id"]
    for _req_id, _, _, response, latency_us in record.calls:
        if response is None:
            assert latency_us >= 990_000  # waited the whole timeout (timer granularity aside)
    assert conn.read(100) is None


def test_unmatched_messages_stay_readable(server: AliveServer, conn: Any) -> None:
    tracker = Tracker(conn)
    record = Recorder()
    req_id = tracker.request("add_order", {"cl_ord_id": "mine"}, record)
    record.wait(1)
    # a response for an id nobody waits for, one whose method differs, and market data
    stray = json.dumps({"method": "add_order", "req_id": 999_999, "success": True})
    other_method = json.dumps({"method": "edit_order", "req_id": req_id + 1})
    tracker.request("add_order", {"cl_ord_id": "x", "ignore": True}, record, timeout=5)
    for message in (stray, other_method, '{"channel":"book","data":[]}', "plain text"):
        conn.write(f"echo:{message}")  # sent back as it is
    assert [conn.read(2000) for _ in range(4)] == [
        stray,
        other_method,
        '{"channel":"book","data":[]}',
        "plain text",
    ]
    assert tracker.pending() == 1  # the ignored request still waits
    tracker.close()
    assert tracker.pending() == 0


def test_blocking_call_returns_the_response(conn: Any) -> None:
    tracker = Tracker(conn)
    response = tracker.call("add_order", {"cl_ord_id": "b1"}, timeout=5)
    assert response["success"] is True and response["result"]["order_id"] == "O-b1"
    assert tracker.call("add_order", {"ignore": True}, timeout=0.2) is None
    assert tracker.pending() == 0
    failure = tracker.call("bogus_method", {}, timeout=5)
    assert failure["success"] is False and "Unknown method" in failure["error"]


def test_field_names_and_ids_are_configurable(server: AliveServer, conn: Any) -> None:
    # Binance-style `id`, string ids as OKX sends them; the server echoes unknown shapes
    tracker = Tracker(conn, id_field="id", method_field="op", params_field="args", id_type=str)
    record = Recorder()
    req_id = tracker.request("order", [{"instId": "BTC-USDT"}], record, fields={"x": 1})
    assert req_id == "1"
    record.wait(1)  # the echo carries the same id and op: it is the response
    _, method, params, response, _ = record.calls[0]
    assert (method, params) == ("order", [{"instId": "BTC-USDT"}])
    assert response == {"op": "order", "args": [{"instId": "BTC-USDT"}], "id": "1", "x": 1}


def test_requests_on_a_closed_connection_are_not_tracked(conn: Any) -> None:
    tracker = Tracker(conn)
    conn.close()
    assert tracker.request("add_order", {"cl_ord_id": 1}) is None
    assert tracker.call("add_order", {"cl_ord_id": 1}, timeout=1) is None
    assert tracker.pending() == 0


def test_a_failing_callback_does_not_break_the_stream(conn: Any, caplog: Any) -> None:
    tracker = Tracker(conn)

    def broken(*_: Any) -> None:
        raise RuntimeError("user bug")

    tracker.request("add_order", {"cl_ord_id": 1}, broken)
    assert tracker.call("add_order", {"cl_ord_id": 2}, timeout=5)["result"]["order_id"] == "O-2"
    assert "callback raised" in caplog.text
    conn.write("still alive")
    assert conn.read(2000) == "still alive"


def test_tracker_rejects_bad_arguments(conn: Any) -> None:
    with pytest.raises(TypeError):
        Tracker("not a connection")
    with pytest.raises(ValueError):
        Tracker(conn, timeout=0)
    tracker = Tracker(conn)
    tracker.request("add_order", {"ignore": True}, req_id=7)
    with pytest.raises(ValueError, match="already pending"):
        tracker.request("add_order", {"ignore": True}, req_id=7)
