"""The database connection behind every facade: one driver connection, its private event
loop, the facades using it and the `fd()` handle that may pin it.

Where statements run: each database connection owns a private asyncio loop that is not
running between statements; `exec` drives it in the *calling* thread, under a per-connection
lock, just for the duration of one statement. A hop to the shared reactor thread costs two
thread wake-ups (~30-50 us, more than a whole INSERT on a local server), so the database
drivers do not live on the reactor. A backend that `runs_blocking` (sqlite3, clickhouse) is
called directly, without even starting the loop, when no timeout is given.

Lifetime rule: without `fd()`, closing the last facade closes the database connection. Once
`fd()` has been called the connection is *pinned*: closing facades no longer closes it, so
`Dial(handle)` keeps working (an in-memory sqlite database survives) until `release()` is
called (on any facade, or `dial.databases.release(handle)`) or the process exits.

Statements on one database connection are serialised; a connection found dead before a
statement (server restarted) is reconnected first, so `exec` recovers without a new `Dial`.
Reconnecting is only silent *between* transactions: when the link was lost while a
transaction was open, the server rolled it back, so the first `exec` after the loss fails
with `TRANSACTION_LOST` (nothing is sent); the link is renewed for the one after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ..address import redact
from ..errors import ArgumentError, ConnectError, DatabaseError, describe_error
from ..reactor import reactor
from .interfaces import DatabaseBackend
from .sql import Result

__all__ = ["TRANSACTION_LOST", "SharedConnection", "lookup_handle", "release"]

log = logging.getLogger("dial")

T = TypeVar("T")
CLOSE_TIMEOUT = 10.0
TRANSACTION_LOST = (
    "connection lost inside a transaction: the server rolled it back; start the transaction again"
)
_PENDING_INPUT_ROUNDS = 3


class _GcPause:
    """Pauses the cyclic garbage collector while any statement runs, in any thread.

    Decoding 100k result rows allocates a few hundred thousand objects, which otherwise
    triggers repeated full collections costing more than the decoding itself. Reference
    counting still frees memory meanwhile; the collector resumes when the last statement
    ends (and stays off if the program had turned it off).

    No lock (one would cost more than a one-row INSERT's own Python work): `running` holds
    one entry per statement under way, and list append/pop are atomic. The races left can
    only leave the collector on during a statement, never off after the last one."""

    def __init__(self) -> None:
        self.running: list[None] = []
        self.paused = False  # we turned the collector off

    def enter(self) -> None:
        self.running.append(None)
        if gc.isenabled():
            gc.disable()
            self.paused = True

    def exit(self) -> None:
        running = self.running
        running.pop()
        if not running and self.paused:
            self.paused = False
            gc.enable()


_gc_pause = _GcPause()


# -- the shared connection ------------------------------------------------------------------


async def _stopping(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """`coro`, then stop `loop` in the same step (run_until_complete would spend one more
    loop iteration on a done-callback)."""
    try:
        return await coro
    finally:
        loop.stop()


async def _after(leftover: asyncio.Task[Any], coro: Coroutine[Any, Any, T]) -> T:
    """`coro` once `leftover` (a cancelled statement) has wound down: one at a time."""
    try:
        await asyncio.wait((leftover,))
    except BaseException:
        coro.close()
        raise
    return await coro


class _TaskNeeded(RuntimeError):
    """A coroutine `SharedConnection._inline` steps reached something that needs a current
    task (`asyncio.timeout`, and `wait_for` on Python 3.12+, which is built on it): nothing
    was sent yet, and the statement runs again as a task (`_run_loop`)."""


def _require_task(what: str) -> None:
    """Refuse to go on outside a task (stepped by `_inline`): `what` needs one."""
    if asyncio.current_task() is None:
        raise _TaskNeeded(f"{what} needs a current task")


def _step(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any] | None:
    """One step of `coro`, as a task takes it: the future it now waits for (None after a
    bare yield, asyncio.sleep(0)); StopIteration carries its result once it finished."""
    waited: asyncio.Future[Any] | None = coro.send(None)
    if waited is not None:
        waited._asyncio_future_blocking = False  # what a task does with it
    return waited


async def _resumed(coro: Coroutine[Any, Any, T], waited: asyncio.Future[Any] | None) -> T:
    """Finish, as an ordinary task, a coroutine `SharedConnection._inline` was driving when
    an exception (KeyboardInterrupt) stopped it mid-wait: it gets the outcome of what it
    awaited (cancelled, like a cancelled task's) and runs to its end."""
    while True:
        if waited is None:
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(BaseException):  # the coroutine sees it through send()
                await waited
        try:
            waited = _step(coro)
        except StopIteration as finished:
            result: T = finished.value
            return result


def _nothing() -> None:
    return None


def _in_helper_thread(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a short-lived thread (the caller's thread runs an event loop,
    which cannot drive another one)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, function(*args)))
        except BaseException as exc:  # handed back to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="dial-database-call", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        result: T = value
        return result
    raise value


class SharedConnection:
    """One live database connection, its private loop, and the facades (and handle) using it."""

    def __init__(self, backend: DatabaseBackend, timeout: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self.name = redact(backend.address.url)
        self.handle: int | None = None
        self.users = 0
        self.closed = False
        self.stale = False  # the link broke: reconnect before the next statement
        self.statements = 0  # statements run (through this connection, by every facade)
        self.failures = 0  # of which failed (any reason: SQL error, timeout, lost link)
        self.reconnects = 0  # links renewed after a loss
        self.last_error: str | None = None  # why the link last went down
        backend.dial_timeout = timeout
        # Runs only while a statement runs. A selector loop of our own (whatever the policy
        # says) because `_inline` turns its crank one iteration at a time.
        self._loop = asyncio.SelectorEventLoop()
        self._run_once: Callable[[], None] = self._loop._run_once  # type: ignore[attr-defined]
        self._loop_closed = False
        self._driving = threading.Lock()  # one thread drives the loop / the driver at a time
        self._leftover: asyncio.Task[Any] | None = None  # cancelled, not yet finished
        self._guard = threading.Lock()
        self.transaction_open = False  # as of the last statement on the current link
        self._direct: Callable[[str, tuple[Any, ...]], Result] | None = (
            backend.execute_blocking if backend.runs_blocking else None
        )
        self._direct_many: Callable[[str, list[Sequence[Any]]], int] | None = (
            backend.execute_many_blocking if backend.runs_blocking else None
        )

    # -- driving the private loop (any thread, one at a time) -------------------------------

    def drive(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run `coro` on this connection's loop in the calling thread (TimeoutError after
        `timeout` s, the wait for another thread's statement included)."""
        if asyncio._get_running_loop() is not None:
            if reactor.in_loop_thread():
                coro.close()
                raise RuntimeError("dial: blocking call made from the dial reactor thread")
            result: T = _in_helper_thread(self.drive, coro, timeout)
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._driving.acquire(True, -1 if timeout is None else timeout):
            coro.close()
            raise TimeoutError
        try:
            return self._run_loop(coro, deadline)
        finally:
            self._driving.release()

    def _run_loop(self, coro: Coroutine[Any, Any, T], deadline: float | None) -> T:
        """With `_driving` held: run `coro` to completion on the private loop."""
        if self._loop_closed:
            coro.close()
            raise DatabaseError("connection is closed")
        loop = self._loop
        leftover = self._leftover
        if leftover is not None:
            if leftover.done():
                self._leftover = None
            else:
                coro = _after(leftover, coro)
        if deadline is not None:
            coro = asyncio.wait_for(coro, max(deadline - time.monotonic(), 0.0))
        task = loop.create_task(_stopping(loop, coro))
        try:
            loop.run_forever()
            return task.result()
        except asyncio.TimeoutError:
            if deadline is None:
                raise
            raise TimeoutError from None
        finally:
            self._abandon(task)

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        """The loop stopped before `task` finished (KeyboardInterrupt): cancel it; the
        cancellation completes the next time the loop runs, and the link is renewed then."""
        if not task.done():
            task.cancel()
            self._leftover = task
            self._down("a statement was interrupted")

    def execute(self, sql: str, params: tuple[Any, ...], timeout: float | None) -> Result:
        """One statement from any thread (see the module docstring)."""
        return self._perform(self._statement, sql, params, timeout)

    def execute_many(self, sql: str, rows: list[Sequence[Any]], timeout: float | None) -> int:
        """One statement over a batch of parameter rows, from any thread: rows affected.
        No rows is no work (DB-API `executemany` too): 0, nothing sent, nothing counted."""
        if not rows:
            return 0
        return self._perform(self._batch, sql, rows, timeout)

    def _perform(
        self,
        route: Callable[[str, Any, float | None], T],
        sql: str,
        arguments: Any,
        timeout: float | None,
    ) -> T:
        """`route(sql, arguments, deadline)` with the connection's lock held, counted."""
        if asyncio._get_running_loop() is not None:
            if reactor.in_loop_thread():
                raise RuntimeError("dial: blocking call made from the dial reactor thread")
            outcome: T = _in_helper_thread(self._perform, route, sql, arguments, timeout)
            return outcome
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._driving.acquire(True, -1 if timeout is None else timeout):
            raise TimeoutError
        try:
            self.statements += 1
            if self.closed:
                raise DatabaseError("connection is closed")
            _gc_pause.enter()
            try:
                return route(sql, arguments, deadline)
            finally:
                _gc_pause.exit()
        except BaseException:
            self.failures += 1
            raise
        finally:
            self._driving.release()

    def _statement(self, sql: str, params: tuple[Any, ...], deadline: float | None) -> Result:
        """With `_driving` held, one statement by the shortest safe route:

        * nothing amiss and no timeout: the backend's blocking call (sqlite3, clickhouse),
          or `run` stepped right here on the private loop (`_inline`);
        * otherwise: `run` as a task on the private loop, driven right here.
        """
        if deadline is None and not self.stale and self._leftover is None:
            direct = self._direct
            if direct is not None:
                return self._direct_call(direct, sql, params)
            try:
                return self._inline(self.run(self.backend.execute, sql, params))
            except _TaskNeeded:  # the link must be renewed first, which needs a task
                pass
        return self._run_loop(self.run(self.backend.execute, sql, params), deadline)

    def _batch(self, sql: str, rows: list[Sequence[Any]], deadline: float | None) -> int:
        """With `_driving` held, one batch: blocking backends call their driver here; the
        others run it as a task (asyncpg's batch wants a current task; one task per batch
        costs nothing next to the rows)."""
        if deadline is None and not self.stale and self._leftover is None:
            direct = self._direct_many
            if direct is not None:
                return self._direct_call(direct, sql, rows)
        return self._run_loop(self.run(self.backend.execute_many, sql, rows), deadline)

    def _direct_call(self, function: Callable[[str, Any], T], sql: str, arguments: Any) -> T:
        try:
            return function(sql, arguments)
        except BaseException as exc:
            if not self._is_alive():
                self._down(describe_error(exc))
            raise

    def _inline(self, coro: Coroutine[Any, Any, T]) -> T:
        """With `_driving` held, no timeout and nothing left over: run `coro` on the private
        loop without a task, stepping it here and turning the loop only while it waits.

        What a task and `run_forever` would add per statement (a task object, a first step
        and a stop request each taking a loop iteration with its own poll, the loop's set-up
        and tear-down) cost about as much as the driver's own work for a one-row INSERT; here
        one statement is one blocking poll per server answer, like awaiting the driver inside
        a running loop. Only for coroutines that need no current task (asyncio.timeout, and
        wait_for on 3.12+): `run` with a single-statement `execute` qualifies as long as the
        link is up; renewing it (`_reconnect`) raises `_TaskNeeded` before anything is sent,
        and the caller runs the statement as a task instead.
        """
        loop, run_once = self._loop, self._run_once
        if self._loop_closed:
            coro.close()
            raise DatabaseError("connection is closed")
        waited: asyncio.Future[Any] | None = None
        asyncio.events._set_running_loop(loop)  # drivers ask get_running_loop()
        try:
            while True:
                try:
                    waited = _step(coro)
                except StopIteration as finished:
                    result: T = finished.value
                    return result
                try:
                    if waited is None:  # a bare yield (asyncio.sleep(0)): one pass, no wait
                        loop.call_soon(_nothing)
                        run_once()
                        continue
                    while not waited.done():
                        run_once()
                except BaseException:  # interrupted while the driver waits: finish it later
                    if waited is not None:
                        waited.cancel()
                    self._leftover = loop.create_task(_resumed(coro, waited))
                    self._down("a statement was interrupted")
                    raise
        finally:
            asyncio.events._set_running_loop(None)

    def _is_alive(self) -> bool:
        return self.backend.alive()

    # -- on the private loop ----------------------------------------------------------------

    async def open(self) -> None:
        try:
            await asyncio.wait_for(self.backend.connect(), self.timeout)
        except asyncio.TimeoutError:
            await self._close_backend()
            raise ConnectError(f"{self.name}: no connection within {self.timeout:g} s") from None
        except BaseException:
            await self._close_backend()
            raise

    async def run(self, call: Callable[[str, Any], Awaitable[T]], sql: str, arguments: Any) -> T:
        """`call(sql, arguments)` (a backend's `execute` or `execute_many`) on a live link."""
        if self.closed:
            raise DatabaseError("connection is closed")
        backend = self.backend
        if backend.pending_input():
            await self._read_pending_input()
        if self.stale or not backend.alive():
            if not self.stale:
                self._down("the connection was closed while idle (server or network)")
            if self.transaction_open:
                # The server rolled the transaction back with the old link; running this
                # statement on a fresh autocommit link would split it silently.
                self.transaction_open = False
                self.stale = True
                raise DatabaseError(TRANSACTION_LOST)
            await self._reconnect()
        try:
            result = await call(sql, arguments)
        except asyncio.CancelledError:  # the driver may be mid-protocol: start afresh next time
            self._down("a statement was abandoned mid-way (its timeout ran out)")
            raise
        except BaseException as exc:
            if self._is_alive():
                self._note_transaction()
            else:
                self._down(describe_error(exc))
                if self.transaction_open:
                    self.transaction_open = False
                    raise DatabaseError(f"{TRANSACTION_LOST} ({describe_error(exc)})") from None
            raise
        self.transaction_open = backend.in_transaction()
        return result

    async def _read_pending_input(self) -> None:
        """The loop did not run while the link was idle: let the driver read what arrived
        meanwhile (a server's goodbye, an EOF) before `alive()` is asked."""
        for _ in range(_PENDING_INPUT_ROUNDS):
            await asyncio.sleep(0)
            if not self.backend.pending_input():
                return

    def _note_transaction(self) -> None:
        self.transaction_open = self.backend.in_transaction()

    async def _reconnect(self) -> None:
        _require_task("a reconnect (its connect and close have timeouts)")
        self.transaction_open = False
        if self.stale:  # known dead (a statement was abandoned on it): no goodbye to wait for
            self._abort_backend()
        await self._close_backend()
        try:
            await asyncio.wait_for(self.backend.connect(), self.timeout)
        except asyncio.TimeoutError:
            reason = f"reconnect: no connection within {self.timeout:g} s"
            self._down(reason)
            raise ConnectError(reason) from None
        except asyncio.CancelledError:  # the statement's own timeout ran out: say so, not this
            self._down("reconnect abandoned: the statement's timeout ran out")
            raise
        except BaseException as exc:
            reason = f"connection lost and reconnect failed: {describe_error(exc)}"
            self._down(reason)
            await self._close_backend()
            raise ConnectError(reason) from None
        self.stale = False
        self.reconnects += 1
        log.info("%s: reconnected", self.name)

    def _down(self, reason: str) -> None:
        """The link is no good any more: it is renewed before the next statement."""
        self.stale = True
        self.last_error = reason

    def _abort_backend(self) -> None:
        try:
            self.backend.abort()
        except Exception as exc:  # close() follows in any case
            log.debug("%s: abort failed: %s", self.name, exc)

    async def _close_backend(self) -> None:
        _require_task("closing the driver connection (asyncpg's close has a timeout)")
        try:
            await self.backend.close()
        except Exception as exc:  # closing a broken link may fail; nothing else to do
            log.debug("%s: close failed: %s", self.name, exc)

    async def aclose(self) -> None:
        await self._close_backend()

    # -- any thread -------------------------------------------------------------------------

    def attach(self) -> None:
        with self._guard:
            if self.closed:
                raise ArgumentError(f"database handle {self.handle} was released")
            self.users += 1

    def detach(self) -> None:
        with self._guard:
            self.users -= 1
            if self.users > 0 or self.handle is not None or self.closed:
                return
            self.closed = True
        self._shutdown()

    def pin(self) -> int:
        with self._guard:
            if self.handle is None:
                self.handle = next(_handle_numbers)
                with _registry_lock:
                    _registry[self.handle] = self
            return self.handle

    def close(self) -> None:
        """Close the database connection now, whoever uses it (release / exit)."""
        with self._guard:
            if self.closed:
                return
            self.closed = True
            handle, self.handle = self.handle, None
        if handle is not None:
            with _registry_lock:
                _registry.pop(handle, None)
        self._shutdown()

    def _shutdown(self) -> None:
        if asyncio._get_running_loop() is not None:
            # The reactor (a finalizer ran there) or a user's loop: never block it.
            threading.Thread(
                target=self._close_now, name="dial-database-close", daemon=True
            ).start()
            return
        self._close_now()

    def _close_now(self) -> None:
        """Close the driver connection, then the private loop (with anything left on it)."""
        if not self._driving.acquire(True, CLOSE_TIMEOUT):
            return  # a statement is stuck; its thread still owns the loop
        try:
            if self._loop_closed:
                return
            try:
                self._run_loop(self.aclose(), time.monotonic() + CLOSE_TIMEOUT)
            except (TimeoutError, RuntimeError, DatabaseError):
                pass
            loop = self._loop
            try:
                leftovers = asyncio.all_tasks(loop)
                for task in leftovers:
                    task.cancel()
                if leftovers:
                    loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except Exception as exc:  # closing anyway
                log.debug("%s: loop shutdown: %s", self.name, exc)
            finally:
                self._loop_closed = True
                loop.close()
        finally:
            self._driving.release()


_registry: dict[int, SharedConnection] = {}
_registry_lock = threading.Lock()
_handle_numbers = itertools.count(1)


def lookup_handle(handle: int) -> SharedConnection:
    """The database connection `fd()` registered under `handle`."""
    with _registry_lock:
        shared = _registry.get(handle)
    if shared is None:
        raise ArgumentError(f"unknown database handle {handle} (never issued by fd(), or released)")
    return shared


def release(handle: int) -> bool:
    """Close the database connection behind `handle`; False if no such handle is open."""
    with _registry_lock:
        shared = _registry.get(handle)
    if shared is None:
        return False
    shared.close()
    return True
