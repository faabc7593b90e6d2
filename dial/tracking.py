"""Request tracking over a streaming connection: which response belongs to which request.

Exchange WebSocket APIs (Kraken `add_order`, Binance `order.place`, OKX `order`) answer
requests on the same stream as market data, tagged with the id the client chose. A `Tracker`
assigns that id, remembers `id -> (method, callback, send time, params)` before sending, and
watches every incoming message: a JSON object carrying a pending id (and, when present, the
same method) is handed to the callback as `callback(id, method, params, response, latency_us)`
and forgotten. Everything else - market data, responses nobody is waiting for - stays
readable through `read()` as usual.

    orders = Tracker(ws)                                   # Kraken style: method/params/req_id
    orders.request("add_order", {"symbol": "BTC/USD", ...}, on_response)
    response = orders.call("cancel_order", {"order_id": [...]}, timeout=5)   # blocking

A request not answered within its timeout is removed and its callback gets `None` as the
response, so the table never grows without bound. Callbacks run on the connection's event
loop thread (the dial reactor, or your loop with `dial.aio`): keep them short.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .connection import session_of

__all__ = ["Callback", "Tracker"]

log = logging.getLogger("dial")

#: callback(request_id, method, params, response or None on timeout, latency in microseconds)
Callback = Callable[[Any, str, Any, Any, int], None]

DEFAULT_TIMEOUT = 10.0


@dataclass
class _Pending:
    __slots__ = ("callback", "deadline", "method", "params", "request_id", "sent_ns")
    request_id: Any
    method: str
    params: Any
    callback: Callback | None
    sent_ns: int
    deadline: float


def _ignore(*_: Any) -> None:
    pass


class Tracker:
    """Tracks requests sent over one connection from `Dial` or `dial.aio.dial`.

    `id_field`, `method_field` and `params_field` name the JSON fields of a request
    (Kraken: `req_id`/`method`/`params`; Binance: `id`/`method`/`params`; OKX: `id`/`op`/
    `args` with `id_type=str`). Ids count up from `first_id`; `timeout` (seconds) is the
    default time a request may wait for its response.
    """

    def __init__(
        self,
        connection: Any,
        *,
        id_field: str = "req_id",
        method_field: str = "method",
        params_field: str = "params",
        timeout: float = DEFAULT_TIMEOUT,
        first_id: int = 1,
        id_type: type = int,
    ) -> None:
        try:
            session = session_of(connection)
        except TypeError:
            raise TypeError(
                f"Tracker needs a streaming connection from Dial(), not {type(connection).__name__}"
            ) from None
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if id_type not in (int, str):
            raise ValueError("id_type must be int or str")
        self.connection = connection
        self.id_field, self.method_field, self.params_field = id_field, method_field, params_field
        self.timeout = float(timeout)
        self.id_type = id_type
        self.expired = 0  # requests dropped unanswered after their timeout
        self.matched = 0  # responses handed to their callback
        self._session = session
        self._ids = itertools.count(first_id)
        self._marker = json.dumps(id_field)  # '"req_id"': a cheap test before parsing
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap; stale entries skipped lazily
        self._sweep_at: float | None = None  # when the sweep timer fires, None: no timer
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        session.add_interceptor(self._take)

    # -- sending (any thread) ----------------------------------------------------------------

    def next_id(self) -> Any:
        """Reserve the next request id (to put it in your own message, or pass as `req_id`)."""
        value = next(self._ids)
        return value if self.id_type is int else str(value)

    def request(
        self,
        method: str,
        params: Any = None,
        callback: Callback | None = None,
        *,
        req_id: Any = None,
        timeout: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> Any:
        """Send `{method_field: method, params_field: params, id_field: id, **fields}` and
        track it. Returns the request id, or None when the connection is not open (nothing
        was sent and the callback will not be called)."""
        session = self._session
        if self._closed or session.state != "open":
            return None
        request_id = self.next_id() if req_id is None else req_id
        message: dict[str, Any] = {self.method_field: method}
        if params is not None:
            message[self.params_field] = params
        message[self.id_field] = request_id
        if fields:
            message.update(fields)
        text = json.dumps(message, separators=(",", ":"))
        key = str(request_id)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        entry = _Pending(request_id, method, params, callback, 0, deadline)
        with self._lock:
            if key in self._pending:
                raise ValueError(f"request id {request_id!r} is already pending")
            self._pending[key] = entry
            heapq.heappush(self._deadlines, (deadline, key))
            reschedule = self._sweep_at is None or deadline < self._sweep_at
            if reschedule:
                self._sweep_at = deadline
        if reschedule:
            self._schedule_sweep()
        entry.sent_ns = time.perf_counter_ns()  # registered first, then sent (as the seed)
        session.enqueue(text)
        return request_id

    def call(
        self, method: str, params: Any = None, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Send a request and block until its response (a dict); None on timeout or when the
        connection is not open. Not for use inside a callback (it would wait forever)."""
        if self._on_loop_thread():
            raise RuntimeError("Tracker.call() blocks: use request() with a callback here")
        answered = threading.Lock()
        answered.acquire()
        box: list[Any] = []

        def on_response(_id: Any, _method: str, _params: Any, response: Any, _us: int) -> None:
            box.append(response)
            answered.release()

        if self.request(method, params, on_response, timeout=timeout, **kwargs) is None:
            return None
        limit = (self.timeout if timeout is None else timeout) + 1.0  # the sweep answers None
        answered.acquire(timeout=limit)
        return box[0] if box else None

    async def acall(
        self, method: str, params: Any = None, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """`call()` for asyncio code: await the response (None on timeout)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        owner = threading.get_ident()

        def settle(response: Any) -> None:
            if not future.done():
                future.set_result(response)

        def on_response(_id: Any, _method: str, _params: Any, response: Any, _us: int) -> None:
            if threading.get_ident() == owner:
                settle(response)
            else:
                loop.call_soon_threadsafe(settle, response)

        if self.request(method, params, on_response, timeout=timeout, **kwargs) is None:
            return None
        return await future

    def pending(self) -> int:
        """Requests sent and not yet answered or expired."""
        return len(self._pending)

    def close(self) -> None:
        """Stop tracking: forget pending requests (their callbacks are not called)."""
        self._closed = True
        self._session.remove_interceptor(self._take)
        with self._lock:
            self._pending.clear()
            self._deadlines.clear()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- matching (loop thread, for every received message) --------------------------------

    def _take(self, message: Any) -> bool:
        if not self._pending or message.__class__ is not str or self._marker not in message:
            return False
        try:
            response = json.loads(message)
        except ValueError:
            return False
        if response.__class__ is not dict:
            return False
        request_id = response.get(self.id_field)
        if request_id is None:
            return False
        key = str(request_id)
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                return False
            method = response.get(self.method_field)
            if method is not None and method != entry.method:
                return False  # same id, another method: not ours
            del self._pending[key]
            if not self._pending:
                self._deadlines.clear()
        latency_us = (time.perf_counter_ns() - entry.sent_ns) // 1000
        self.matched += 1
        self._session.consumed()
        self._run(entry, response, latency_us)
        return True

    def _run(self, entry: _Pending, response: Any, latency_us: int) -> None:
        callback = entry.callback
        if callback is None:
            return
        try:
            callback(entry.request_id, entry.method, entry.params, response, latency_us)
        except Exception:
            log.exception("request %r (%s): callback raised", entry.request_id, entry.method)

    # -- timeouts (loop thread) ---------------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return threading.get_ident() == self._session.loop_thread

    def _schedule_sweep(self) -> None:
        loop = self._session.loop
        if self._on_loop_thread():
            self._arm()
        else:
            loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        with self._lock:
            when = self._sweep_at
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None and not self._closed:
            self._timer = self._session.loop.call_later(
                max(0.0, when - time.monotonic()), self._sweep
            )

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        expired: list[_Pending] = []
        with self._lock:
            deadlines, pending = self._deadlines, self._pending
            while deadlines and deadlines[0][0] <= now:
                deadline, key = heapq.heappop(deadlines)
                entry = pending.get(key)
                if entry is not None and entry.deadline == deadline:
                    del pending[key]
                    expired.append(entry)
            if not pending:  # what is left are answered requests' stale deadlines
                deadlines.clear()
            self._sweep_at = deadlines[0][0] if deadlines else None
        self.expired += len(expired)
        for entry in expired:
            self._run(entry, None, (time.perf_counter_ns() - entry.sent_ns) // 1000)
        if self._sweep_at is not None:
            self._arm()
