"""One background asyncio loop thread shared by every connection, and the sync<->async bridge.

Synchronous strategy code never sees asyncio: `call(coro, timeout)` runs a coroutine on the
loop thread and waits for its result. The thread is started on first use, is a daemon, and is
stopped at interpreter exit after every live connection has been closed.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["Reactor", "reactor"]

T = TypeVar("T")


class Reactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closers: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._start()
        return loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None and not self._loop.is_closed():
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run, name="dial-reactor", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            return loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop thread; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop thread and wait for it (TimeoutError after `timeout` s)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("dial: blocking call made from the dial reactor thread")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError from None

    def track(self, closable: Any) -> None:
        """Remember a connection so that interpreter exit closes it."""
        self._closers.add(closable)

    def shutdown(self) -> None:
        for closable in list(self._closers):
            try:
                closable.close()
            except Exception:  # exit path: nothing useful to do with it
                pass
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:  # let abandoned connections' close tasks finish before the loop stops
            asyncio.run_coroutine_threadsafe(_settle(), loop).result(5)
        except Exception:
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


async def _settle() -> None:
    """Wait briefly for every other task on the loop, then cancel what is left."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=3)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)


reactor = Reactor()
atexit.register(reactor.shutdown)
