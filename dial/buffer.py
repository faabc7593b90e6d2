"""The 2000-message drop-oldest ring buffer and the FMZ `read(timeout)` semantics.

One producer (the event-loop thread) appends; any thread reads. The hand-off is built for
throughput: `put` is a deque append plus a flag test, and a reader is woken only when it is
actually parked, through a bare lock used as a binary semaphore. A reader that finds data never
touches a lock, so a busy feed costs one wake-up per burst, not one per message.

Flow control keeps a reader that *is* keeping up from losing messages to GIL scheduling: when
the buffer reaches half capacity and the reader has read since the last time that happened,
the transport stops reading the socket until the reader has drained it to a low-water mark
(or for at most `PAUSE_LIMIT` seconds). A reader that is not reading gets FMZ's drop-oldest.

A source that can wait (a broker: it keeps what it has not delivered) is flow-controlled with
`hold=True` instead: it is paused at the high-water mark whether or not anyone reads, for as
long as it takes, and resumed at the low-water mark, so the backlog stays at the source and
nothing is dropped here.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias

from .validation import batch_timeout, read_timeout

if TYPE_CHECKING:
    from .envelope import Envelope

__all__ = [
    "CAPACITY",
    "FlowControl",
    "Item",
    "Message",
    "MessageBuffer",
    "binary_frame",
    "raw_message",
    "text_message",
]

CAPACITY = 2000
PAUSE_LIMIT = 0.05  # seconds a paused socket waits for an active reader before reading again
Message = str | bytes
Item: TypeAlias = "Message | Envelope"  # what the buffer holds: an Envelope with meta=true

_monotonic = time.monotonic
DISCONNECTED = ""  # what read() returns once the buffer is drained and the link is down


# What read() returns depends on the transport and the frame kind, never on the content
# (DESIGN.md §2), so a binary reply that happens to be ASCII cannot change type under a
# struct.unpack. Every transport hands its data to exactly one of these:
#   raw sockets (tcp, tls, unix, udp), WebSocket binary frames      -> bytes  (raw_message)
#   WebSocket text frames, frames inflated by `compress`, broker payloads -> str (text_message)
# Text is decoded with errors="surrogateescape": nothing is lost (encode it the same way to get
# the exact bytes back) and the type stays str even for a payload that is not UTF-8.


def raw_message(data: bytes | bytearray | memoryview) -> bytes:
    """A payload that is bytes by contract (no copy when it already is `bytes`)."""
    return bytes(data)


def text_message(data: bytes | bytearray | memoryview) -> str:
    """A payload that is text by contract; invalid UTF-8 survives as surrogate escapes."""
    return str(data, "utf-8", "surrogateescape")


def binary_frame(
    data: bytes | bytearray | memoryview, inflate: Callable[[bytes], bytes | None] | None
) -> Message:
    """A WebSocket binary frame: str when the `compress` codec inflated it (exchanges
    compress JSON text), else the frame's own bytes (a frame the codec passed through)."""
    if inflate is not None:
        inflated = inflate(data)  # type: ignore[arg-type]
        if inflated is not None:
            return text_message(inflated)
    return raw_message(data)


class FlowControl(Protocol):
    """Pause/resume reading at the source; both are called on `loop`'s thread."""

    loop: asyncio.AbstractEventLoop

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class MessageBuffer:
    """Bounded FIFO of received messages with FMZ read semantics."""

    __slots__ = (
        "_capacity",
        "_flow",
        "_guard",
        "_high_water",
        "_hold",
        "_intercept",
        "_items",
        "_listeners",
        "_low_water",
        "_parked",
        "_paused",
        "_reads",
        "_reads_at_pause",
        "_resume_asked",
        "_resume_timer",
        "_wake",
        "connected",
        "dropped",
        "last_at",
        "received",
    )

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._items: deque[Item] = deque()
        self._wake = threading.Lock()
        self._wake.acquire()  # locked == "no signal pending"
        self._parked = 0  # readers blocked (or about to block) on _wake
        self._guard = threading.Lock()  # protects _parked; taken only on the slow path
        self._listeners: list[Callable[[], None]] = []
        self._high_water = max(1, capacity // 2)
        self._low_water = capacity // 8
        self._flow: FlowControl | None = None
        self._hold = False
        self._paused = False
        self._reads = 0
        self._reads_at_pause = -1
        self._resume_timer: asyncio.TimerHandle | None = None
        self._resume_asked = False  # a resume is scheduled on the loop: do not ask again
        self.connected = True
        self.dropped = 0
        self.received = 0
        self.last_at = 0.0  # time.monotonic() of the last message put, 0.0 before the first
        self._intercept: Callable[[Item], bool] | None = None

    def __len__(self) -> int:
        return len(self._items)

    # -- producer side (event-loop thread) ---------------------------------------------------

    def put(self, message: Item) -> None:
        intercept = self._intercept
        if intercept is not None and intercept(message):
            return  # consumed (a heartbeat answer, a tracked response)
        items = self._items
        if len(items) >= self._capacity:
            try:
                items.popleft()
                self.dropped += 1
            except IndexError:  # a reader emptied it meanwhile
                pass
        items.append(message)
        self.received += 1
        self.last_at = _monotonic()
        if self._flow is not None and len(items) >= self._high_water and not self._paused:
            self._pause_if_reader_active()
        if self._parked:
            self._signal()
        if self._listeners:
            self._notify_listeners()

    def put_many(self, messages: Sequence[Item]) -> None:
        """`put` for several messages received together (one socket read), in order: the
        same outcome as one `put` each (drop-oldest, counts, flow control, wake-ups), with
        the hand-over paid once for the batch."""
        intercept = self._intercept
        if intercept is not None:
            messages = [message for message in messages if not intercept(message)]
        count = len(messages)
        if not count:
            return
        items, capacity = self._items, self._capacity
        if count > capacity:  # only the newest `capacity` of this batch can stay
            self.dropped += count - capacity
            messages = messages[-capacity:]
        overflow = len(items) + len(messages) - capacity
        if overflow > 0:
            popleft = items.popleft
            for _ in range(overflow):
                try:
                    popleft()
                except IndexError:  # a reader emptied it meanwhile
                    break
                self.dropped += 1
        items.extend(messages)
        self.received += count
        self.last_at = _monotonic()
        if self._flow is not None and len(items) >= self._high_water and not self._paused:
            self._pause_if_reader_active()
        if self._parked:
            self._signal()
        if self._listeners:
            self._notify_listeners()

    def set_flow_control(self, flow: FlowControl | None, *, hold: bool = False) -> None:
        """Let the buffer pause the producer's socket for an active reader (see module doc);
        `hold=True`: the source can wait, so pause it whenever the buffer is past the
        high-water mark, without a time limit."""
        self._flow = flow
        self._hold = hold
        self._paused = False

    def _pause_if_reader_active(self) -> None:
        hold = self._hold
        if not hold:
            if self._reads == self._reads_at_pause:
                return  # nobody read since the last pause: drop-oldest, as FMZ does
            self._reads_at_pause = self._reads
        self._paused = True
        flow = self._flow
        assert flow is not None
        flow.pause()
        if not hold:
            self._resume_timer = flow.loop.call_later(PAUSE_LIMIT, self._resume)

    def _resume(self) -> None:
        self._resume_asked = False
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        if self._paused:
            self._paused = False
            if self._flow is not None:
                self._flow.resume()

    def _resume_soon(self) -> None:
        flow = self._flow
        if flow is not None and self._paused and not self._resume_asked:
            self._resume_asked = True  # one wake-up of the loop, not one per message taken
            flow.loop.call_soon_threadsafe(self._resume)

    def set_intercept(self, intercept: Callable[[Item], bool] | None) -> None:
        """Route every message through `intercept` first; True means it was consumed and
        never enters the buffer. Runs on the producer thread, so keep it cheap."""
        self._intercept = intercept

    def set_connected(self, connected: bool) -> None:
        """Mark the link up or down; a parked reader wakes to see `""` once drained."""
        self.connected = connected
        if not connected:
            self._signal()
            self._notify_listeners()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (from the producer thread) on every put and every disconnect."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    def _notify_listeners(self) -> None:
        for callback in tuple(self._listeners):
            callback()

    def _signal(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:  # already signalled
            pass

    # -- consumer side (any thread) ---------------------------------------------------------

    def read(self, timeout: float | int | None = None) -> Item | None:
        """FMZ read(): None blocks; -1 oldest or None; -2 newest (rest discarded) or None;
        N > 0 waits up to N milliseconds. Once drained and disconnected: `""` at once."""
        self._reads += 1
        try:
            return self._newest() if timeout == -2 else self._take()
        except IndexError:
            pass
        if not self.connected:
            return DISCONNECTED
        if timeout is None:
            return self._wait(None)
        milliseconds = read_timeout(timeout)
        if milliseconds < 0:  # -1 and any other negative: poll
            return None
        seconds = milliseconds / 1000.0
        return self._wait(None if seconds > threading.TIMEOUT_MAX else seconds)

    def read_many(self, limit: int, timeout: float | int | None = None) -> list[Item]:
        """Up to `limit` buffered messages, oldest first, in one hand-over. `timeout` as for
        `read()` (ms; None blocks, < 0 does not wait, N > 0 waits up to N ms for the first
        message): `[]` when nothing came in time; `[""]` once drained and disconnected (what
        `read()` would return, as the one element). `limit` is checked by the caller."""
        self._reads += 1
        if self._items:
            batch = self._take_many(limit)
            if batch:
                return batch
        if not self.connected:
            return [DISCONNECTED]
        if timeout is None:
            deadline = None
        else:
            milliseconds = batch_timeout(timeout)
            if milliseconds < 0:
                return []
            seconds = milliseconds / 1000.0
            deadline = None if seconds > threading.TIMEOUT_MAX else _monotonic() + seconds
        while True:
            if not self.wait_for_items(deadline):
                return []
            batch = self._take_many(limit)  # another reader may have been faster: then wait on
            if batch:
                return batch
            if not self.connected:
                return [DISCONNECTED]

    def take(self) -> Item:
        """The oldest message at once, or IndexError: the iterators' fast path."""
        self._reads += 1
        return self._take()

    def _take_many(self, limit: int) -> list[Item]:
        items = self._items
        popleft = items.popleft
        count = min(limit, len(items))
        try:
            batch = [popleft() for _ in range(count)]
        except IndexError:  # a reader in another thread took some meanwhile
            batch = []
            while len(batch) < count:
                try:
                    batch.append(popleft())
                except IndexError:
                    break
        if self._paused and len(items) <= self._low_water:
            self._resume_soon()
        return batch

    def wait_for_items(self, deadline: float | None) -> bool:
        """Block until a message is buffered or the link is down (True), or until
        `deadline` (time.monotonic()) passes with neither (False). Takes nothing."""
        return self._park(deadline, lambda: bool(self._items) or not self.connected)

    def wait_for_message(self, stop: Callable[[], bool], deadline: float | None = None) -> bool:
        """Block until a message is buffered or `stop()` is true, through disconnects (for
        readers waiting out a reconnect), or until `deadline` (False). A disconnect or close
        wakes it to look again."""
        return self._park(deadline, lambda: bool(self._items) or stop())

    def _park(self, deadline: float | None, ready: Callable[[], bool]) -> bool:
        items = self._items
        while True:
            with self._guard:
                self._parked += 1
            try:
                if ready():  # checked after announcing ourselves, so no put is missed
                    return True
                if deadline is None:
                    self._wake.acquire()
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0 or not self._wake.acquire(timeout=remaining):
                        return ready()
            finally:
                with self._guard:
                    self._parked -= 1
                    others = self._parked
                if others and (items or not self.connected):
                    self._signal()  # hand the wake-up on to the next parked reader

    def _take(self) -> Item:
        """The oldest message (IndexError when empty); a paused producer resumes once the
        reader has drained the buffer to the low-water mark."""
        items = self._items
        message = items.popleft()
        if self._paused and len(items) <= self._low_water:
            self._resume_soon()
        return message

    def _newest(self) -> Item:
        items = self._items
        newest = items.pop()  # IndexError when empty, handled by the caller
        items.clear()  # asked for by the reader, so not counted as dropped
        if self._paused:
            self._resume_soon()
        return newest

    def _wait(self, seconds: float | None) -> Item | None:
        deadline = None if seconds is None else time.monotonic() + seconds
        items = self._items
        while True:
            with self._guard:
                self._parked += 1
            try:
                try:  # re-check after announcing ourselves, so no put is missed
                    return self._take()
                except IndexError:
                    pass
                if not self.connected:
                    return DISCONNECTED
                if deadline is None:
                    self._wake.acquire()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._wake.acquire(timeout=remaining):
                        try:
                            return self._take()
                        except IndexError:
                            return None
            finally:
                with self._guard:
                    self._parked -= 1
                    others = self._parked
                if others and (items or not self.connected):
                    self._signal()  # hand the wake-up on to the next parked reader

    def clear(self) -> int:
        """Discard everything buffered; returns how many were discarded."""
        count = len(self._items)
        self._items.clear()
        if self._paused:
            self._resume_soon()
        return count
