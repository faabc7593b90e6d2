"""The fresh link an `on_connect` hook talks to, before the connection counts as usable.

A login whose signature carries a timestamp cannot ride in the static `payload` option: after a
reconnect the exchange rejects the stale timestamp. So the session calls a user hook after every
successful connect (and after `payload`), handing it this link: `send()` goes straight out on
the new link, `recv()` takes the next message it received. Everything received while the hook
runs is held here; what the hook did not take goes to the ring buffer afterwards, in order.

`AsyncLink` lives on the session's event loop (async hooks use it directly); `Link` is the
blocking face given to a plain function, which the session runs in its own thread.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .buffer import CAPACITY, Item, Message
from .envelope import payload_of

__all__ = ["AsyncLink", "Link", "OnConnect", "is_async_hook", "run_in_thread"]

#: an `on_connect` hook: `def hook(link: Link) -> None` or `async def hook(link: AsyncLink)`
OnConnect = Callable[..., Any]


class AsyncLink:
    """`await send(data)` and `await recv(timeout)` on the link being set up."""

    def __init__(self, send: Callable[[Message], Awaitable[None]], name: str = "") -> None:
        self._send = send
        self._name = name
        self._inbox: deque[Item] = deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._gone: str | None = None  # why send/recv now fail
        self.dropped = 0  # held messages discarded because the hook held more than CAPACITY

    async def send(self, data: str | bytes) -> None:
        """Send one message now on this link, through the `compress` codec as `write()` does.
        Raises ConnectionError when the link dropped (or the hook is over)."""
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, (str, bytes)):
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")
        if self._gone is not None:
            raise ConnectionResetError(self._gone)
        await self._send(data)

    async def recv(self, timeout: float | None = 5.0) -> Message:
        """The next message received on this link (after the recv codec). Raises TimeoutError
        after `timeout` seconds (None: no limit but the hook's own), ConnectionError when the
        link dropped and nothing received is left."""
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise TypeError(f"recv() timeout must be seconds >= 0 or None, got {timeout!r}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._inbox:
            if self._gone is not None:
                raise ConnectionResetError(self._gone)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"no message within {timeout:g} s")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = None if remaining is None else loop.call_later(remaining, _settle, waiter)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._waiters.remove(waiter)
        return payload_of(self._inbox.popleft())  # type: ignore[return-value]

    # -- the session's side (loop thread) --------------------------------------------------

    def hold(self, message: Item) -> bool:
        """Buffer interceptor while the hook runs: keep every message for `recv()`."""
        inbox = self._inbox
        if len(inbox) >= CAPACITY:  # a feed flooding during a slow login: drop-oldest
            inbox.popleft()
            self.dropped += 1
        inbox.append(message)
        self._wake()
        return True

    def lost(self, reason: str) -> None:
        """The link dropped: pending and later `recv()`/`send()` raise ConnectionError."""
        if self._gone is None:
            self._gone = f"link lost: {reason}"
        self._wake()

    def finish(self) -> list[Item]:
        """The hook is over: close this face of the link, hand back what it did not take."""
        if self._gone is None:
            self._gone = "on_connect is over: the link now belongs to the connection"
        self._wake()
        left = list(self._inbox)
        self._inbox.clear()
        return left

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __repr__(self) -> str:
        return f"<AsyncLink {self._name}>"


class Link:
    """The blocking face of `AsyncLink`, for a plain `def hook(link)` run in a worker thread."""

    def __init__(self, link: AsyncLink, loop: asyncio.AbstractEventLoop) -> None:
        self._link = link
        self._loop = loop

    def send(self, data: str | bytes) -> None:
        """Send one message now on this link (through the send codec, like `write()`)."""
        self._call(self._link.send(data))

    def recv(self, timeout: float | None = 5.0) -> Message:
        """The next message received on this link; TimeoutError after `timeout` seconds,
        ConnectionError if the link dropped."""
        return self._call(self._link.recv(timeout))  # type: ignore[no-any-return]

    def _call(self, coro: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("a sync Link was used on its own event loop; use AsyncLink")
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the connection is gone
            coro.close()
            raise ConnectionResetError("the connection is closed") from None
        return future.result()

    def __repr__(self) -> str:
        return repr(self._link).replace("<AsyncLink", "<Link", 1)


def is_async_hook(hook: OnConnect) -> bool:
    """True for `async def` hooks (also behind functools.partial or an async `__call__`)."""
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


async def run_in_thread(function: Callable[[Any], object], argument: Any) -> None:
    """Run a blocking hook in its own short-lived thread and await it. Not the loop's
    executor: the thread ends with the hook, so nothing lingers once connections close.
    A hook that outlives its timeout keeps its thread until it returns (its link fails)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            function(argument)
        except Exception as exc:
            error = exc
        except BaseException as exc:  # SystemExit in a hook must not reach the loop
            error = RuntimeError(f"{exc.__class__.__name__} raised")
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=run, name="dial-on-connect", daemon=True).start()
    await done


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
