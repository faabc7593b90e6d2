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
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .connection import session_of
from .session import Session

__all__ = ["Watch", "readable", "ready", "sessions_of", "wait"]

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

    Calling it again with the same connections (the usual loop) costs in proportion to the
    connections that became readable, not to how many are watched: the calling thread keeps a
    watch on its last few lists (see `Watch`).
    """
    candidates = tuple(connections)
    if not candidates:
        return []
    watch = _watch_for(candidates)
    found = watch.ready()
    if found or (timeout is not None and timeout <= 0):
        return [candidates[i] for i in found]
    deadline = None if timeout is None else time.monotonic() + timeout / 1000.0
    signal = watch.signal
    while True:
        watch.armed = True  # then look again: a message in between is not missed
        found = watch.ready()
        if found:
            watch.armed = False
            return [candidates[i] for i in found]
        if deadline is None:
            signal.acquire()
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not signal.acquire(timeout=remaining):
                watch.armed = False
                return [candidates[i] for i in watch.ready()]


class Watch:
    """Readiness of one list of connections, kept up to date by the reactor: every buffer
    reports its puts and disconnects (the only ways a connection becomes readable) by
    queueing its index, so `ready()` looks only at those and at the ones it found readable
    last time (a reader may not have drained them) - what epoll is to select(). One thread's
    `dial.wait` keeps its `WATCHED` most recent lists watched; the others are let go."""

    def __init__(self, connections: tuple[object, ...]) -> None:
        self.connections = connections
        self.sessions = sessions_of(connections)
        count = len(self.sessions)
        self.flagged = [False] * count
        self.arrived: deque[int] = deque()
        self.maybe: set[int] = set(range(count))  # the first look checks them all
        self.signal = threading.Lock()
        self.signal.acquire()  # locked == nothing happened yet
        self.armed = False
        self.listeners = [self._listener(i) for i in range(count)]
        for session, listener in zip(self.sessions, self.listeners, strict=True):
            session.buffer.add_listener(listener)

    def _listener(self, index: int) -> Callable[[], None]:
        flagged, arrived = self.flagged, self.arrived

        def mark() -> None:  # reactor thread, on every put and disconnect: keep it tiny
            if not flagged[index]:
                flagged[index] = True
                arrived.append(index)
            if self.armed:
                self.armed = False
                try:
                    self.signal.release()
                except RuntimeError:  # already released
                    pass

        return mark

    def ready(self) -> list[int]:
        """Indexes of the readable connections, in order."""
        arrived, flagged, maybe = self.arrived, self.flagged, self.maybe
        while arrived:
            index = arrived.popleft()
            flagged[index] = False  # from here on a new put queues it again
            maybe.add(index)
        sessions = self.sessions
        found = sorted(index for index in maybe if sessions[index].readable())
        self.maybe = set(found)
        return found

    def close(self) -> None:
        for session, listener in zip(self.sessions, self.listeners, strict=True):
            session.buffer.remove_listener(listener)


WATCHED = 4  # lists of connections one thread keeps watched between dial.wait calls
_watches = threading.local()


def _watch_for(connections: tuple[object, ...]) -> Watch:
    cache: OrderedDict[tuple[object, ...], Watch] | None = getattr(_watches, "cache", None)
    if cache is None:
        cache = _watches.cache = OrderedDict()
    watch = cache.get(connections)
    if watch is not None:
        cache.move_to_end(connections)
        return watch
    watch = Watch(connections)  # TypeError for anything that is not a stream connection
    cache[connections] = watch
    while len(cache) > WATCHED:
        _, oldest = cache.popitem(last=False)
        oldest.close()
    return watch
