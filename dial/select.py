"""`dial.wait(connections, timeout)`: which connections have something to read - FMZ's
`EventLoop` for many connections, so one thread can serve dozens of feeds.

Nothing polls. The waiting thread registers one cheap listener on each connection's buffer
(called on the reactor thread for every received message and every disconnect) and sleeps on
a lock until the first one fires; an idle wait costs no CPU at all.

    feeds = [Dial(url) for url in urls]
    while True:
        for feed in dial.wait(feeds, 1000):
            while (message := feed.read(-1)) is not None and message != "":
                handle(feed, message)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["readable", "wait"]


def readable(connection: Any) -> bool:
    """True when `connection.read(-1)` would return at once with something other than None:
    a buffered message, or `""` because the link is closed or down for good."""
    if connection._buffer._items:
        return True
    session = connection._session
    state = session.state
    return state == "closed" or (state == "down" and not session.address.options.reconnect)


def wait(connections: Iterable[Any], timeout: float | None = None) -> list[Any]:
    """Return the connections that are `readable`, in the order given.

    `timeout` is in milliseconds, as for `read()`: None waits until one is readable, a
    value <= 0 only checks, N > 0 waits at most N ms and then returns `[]`. A connection
    that is reconnecting is not readable (it becomes readable when messages flow again); one
    that is closed, or down without `reconnect=true`, stays readable (`read()` gives `""`), so
    drop it from the list.
    """
    candidates = list(connections)
    for connection in candidates:
        if not hasattr(connection, "_buffer") or not hasattr(connection, "_session"):
            raise TypeError(
                f"dial.wait() takes streaming connections from Dial(), not "
                f"{type(connection).__name__}"
            )
    ready = [c for c in candidates if readable(c)]
    if ready or not candidates or (timeout is not None and timeout <= 0):
        return ready
    deadline = None if timeout is None else time.monotonic() + timeout / 1000.0

    signal = threading.Lock()
    signal.acquire()  # locked == nothing happened yet
    armed = [True]

    def notify() -> None:  # reactor thread, once per put while we wait: keep it tiny
        if armed[0]:
            armed[0] = False
            try:
                signal.release()
            except RuntimeError:  # already released
                pass

    buffers = [c._buffer for c in candidates]
    for buffer in buffers:
        buffer.add_listener(notify)
    try:
        while True:
            ready = [c for c in candidates if readable(c)]
            if ready:
                return ready
            if deadline is None:
                signal.acquire()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not signal.acquire(timeout=remaining):
                    return [c for c in candidates if readable(c)]
            armed[0] = True  # re-arm, then re-check above: a put in between is not lost
    finally:
        for buffer in buffers:
            buffer.remove_listener(notify)
