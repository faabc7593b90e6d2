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
from collections.abc import Iterable, Sequence
from typing import TypeVar

from .connection import session_of
from .session import Session

__all__ = ["readable", "ready", "sessions_of", "wait"]

C = TypeVar("C")


def readable(connection: object) -> bool:
    """True when `connection.read(-1)` would return at once with something other than None:
    a buffered message, or `""` because the link is closed or down for good."""
    return session_of(connection).readable()


def sessions_of(connections: Sequence[object]) -> list[Session]:
    """The sessions behind streaming connections; TypeError names anything else."""
    try:
        return [session_of(c) for c in connections]
    except TypeError:
        kinds = ", ".join(sorted({type(c).__name__ for c in connections}))
        raise TypeError(
            f"dial.wait() takes streaming connections from Dial(), not {kinds}"
        ) from None


def ready(connections: Sequence[C], sessions: Sequence[Session]) -> list[C]:
    """The readable ones among `connections` (whose sessions are `sessions`), in order."""
    return [c for c, session in zip(connections, sessions, strict=True) if session.readable()]


def wait(connections: Iterable[C], timeout: float | None = None) -> list[C]:
    """Return the connections that are `readable`, in the order given.

    `timeout` is in milliseconds, as for `read()`: None waits until one is readable, a
    value <= 0 only checks, N > 0 waits at most N ms and then returns `[]`. A connection
    that is reconnecting is not readable (it becomes readable when messages flow again); one
    that is closed, or down without `reconnect=true`, stays readable (`read()` gives `""`), so
    drop it from the list.
    """
    candidates = list(connections)
    sessions = sessions_of(candidates)
    found = ready(candidates, sessions)
    if found or not candidates or (timeout is not None and timeout <= 0):
        return found
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

    buffers = [session.buffer for session in sessions]
    for buffer in buffers:
        buffer.add_listener(notify)
    try:
        while True:
            found = ready(candidates, sessions)
            if found:
                return found
            if deadline is None:
                signal.acquire()
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not signal.acquire(timeout=remaining):
                    return ready(candidates, sessions)
            armed[0] = True  # re-arm, then re-check above: a put in between is not lost
    finally:
        for buffer in buffers:
            buffer.remove_listener(notify)
