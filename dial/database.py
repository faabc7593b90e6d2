"""The synchronous database connection behind `Dial("sqlite3://...")` and friends.

A `DatabaseConnection` is a thin facade over one `_SharedConnection`: the real driver
connection (a `DatabaseBackend`). Several facades may share it: `fd()` registers it under an
integer handle and `Dial(handle)` returns a new facade on it.

Where statements run: each database connection owns a private asyncio loop that is not
running between statements; `exec` drives it in the *calling* thread, under a per-connection
lock, just for the duration of one statement. A hop to the shared reactor thread costs two
thread wake-ups (~30-50 us, more than a whole INSERT on a local server), so the database
drivers do not live on the reactor. A backend with a synchronous `execute_blocking` (sqlite3,
clickhouse) is called directly, without even starting the loop, when no timeout is given.

Optional backend hooks, besides `DatabaseBackend`'s connect/execute/close:
`execute_blocking(sql, params)` (the statement, synchronously, in the caller's thread),
`alive()` (False once the link is known to be gone: reconnect first), `pending_input()`
(bytes arrived while idle: let the driver read them before judging `alive()`, since the
loop does not run between statements) and `in_transaction()` (a BEGIN is open on the link).

Lifetime rule: without `fd()`, closing the last facade closes the database connection. Once
`fd()` has been called the connection is *pinned*: closing facades no longer closes it, so
`Dial(handle)` keeps working (an in-memory sqlite database survives) until `release()` is
called (on any facade, or `dial.database.release(handle)`) or the process exits.

Statements on one database connection are serialised; a connection found dead before a
statement (server restarted) is reconnected first, so `exec` recovers without a new `Dial`.
Reconnecting is only silent *between* transactions: when the link was lost while a
transaction was open, the server rolled it back, so the first `exec` after the loss fails
with `TRANSACTION_LOST` (nothing is sent); the link is renewed for the one after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import itertools
import logging
import math
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar

from .address import redact
from .errors import ConnectError, DialError, remember
from .reactor import reactor
from .session import describe_error
from .transports.base import DatabaseBackend

__all__ = [
    "PARAMETER_TYPES",
    "DatabaseConnection",
    "Result",
    "check_parameters",
    "listify",
    "open_database",
    "release",
    "reuse_handle",
    "rows_result",
    "status_result",
    "translate_placeholders",
]

log = logging.getLogger("dial")

Result = dict[str, Any]
T = TypeVar("T")
CLOSE_TIMEOUT = 10.0
TRANSACTION_LOST = (
    "connection lost inside a transaction: the server rolled it back; start the transaction again"
)
_PENDING_INPUT_ROUNDS = 3


def listify(rows: Any) -> list[list[Any]]:
    """Driver rows (tuples, records) -> lists (runs inside a statement, GC paused)."""
    return list(map(list, rows))


class _GcPause:
    """Pauses the cyclic garbage collector while any statement runs, in any thread.

    Decoding 100k result rows allocates a few hundred thousand objects, which otherwise
    triggers repeated full collections costing more than the decoding itself. Reference
    counting still frees memory meanwhile; the collector resumes when the last statement
    ends (and stays off if the program had turned it off)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


_gc_paused = _GcPause()


def rows_result(columns: list[str], values: list[list[Any]]) -> Result:
    """The shape of a row-returning statement (FMZ DBExec)."""
    return {"columns": columns, "values": values}


def status_result(rowcount: int | None) -> Result:
    """The shape of every other statement: no columns, no values, rows affected (>= 0)."""
    return {"columns": [], "values": [], "rowcount": rowcount if rowcount and rowcount > 0 else 0}


# -- placeholders ---------------------------------------------------------------------------

# Things a `?` or `%` inside must not be touched in: quoted strings and identifiers, comments,
# PostgreSQL dollar quoting. Whatever remains is SQL text.
_SQL_TOKENS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'
    |"(?:[^"\\]|\\.|"")*"
    |`[^`]*`
    |--[^\n]*
    |/\*.*?\*/
    |\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$
    |(?P<mark>\?)
    |(?P<percent>%)""",
    re.S | re.X,
)


@lru_cache(maxsize=1024)
def translate_placeholders(sql: str, style: str) -> tuple[str, int]:
    """Rewrite the user's `?` placeholders for a driver; returns (sql, placeholder count).

    style: "qmark" (`?`, unchanged), "format" (`%s`, with `%` doubled), "numeric" (`$1`),
    "pyformat" (`%(p0)s`, with `%` doubled). `?` inside quotes or comments is left alone.
    """
    count = 0
    doubles_percent = style in ("format", "pyformat")

    def substitute(match: re.Match[str]) -> str:
        nonlocal count
        if match.group("mark"):
            count += 1
            if style == "format":
                return "%s"
            if style == "numeric":
                return f"${count}"
            if style == "pyformat":
                return f"%(p{count - 1})s"
            return "?"
        text = match.group(0)
        return text.replace("%", "%%") if doubles_percent else text

    return _SQL_TOKENS.sub(substitute, sql), count


#: Parameter types every database binds (bytes-likes as binary values).
PARAMETER_TYPES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    bytearray,
    memoryview,
    Decimal,
    dt.datetime,
    dt.date,
    dt.time,
)
_EXACT_PARAMETER_TYPES = frozenset(PARAMETER_TYPES)


def check_parameters(params: tuple[Any, ...], extra: tuple[type, ...] = ()) -> None:
    """A clear error for a parameter no driver would bind (instead of its repr stored as
    text, or a driver's internal TypeError)."""
    for index, value in enumerate(params, 1):
        if type(value) in _EXACT_PARAMETER_TYPES:
            continue
        if not isinstance(value, PARAMETER_TYPES + extra):
            raise DialError(f"parameter {index}: unsupported type {type(value).__name__}")


def bind(sql: str, params: tuple[Any, ...], style: str, extra: tuple[type, ...] = ()) -> str:
    """Translate `sql` for a driver, check the parameter count and the parameter types
    (`PARAMETER_TYPES`, plus `extra` ones this driver binds too)."""
    translated, count = translate_placeholders(sql, style)
    if count != len(params):
        raise DialError(
            f"statement has {count} placeholder{'s' if count != 1 else ''} (?) but "
            f"{len(params)} parameter{'s' if len(params) != 1 else ''} given"
        )
    check_parameters(params, extra)
    return translated


# -- the shared connection ------------------------------------------------------------------


def socket_has_input(sock: socket.socket | None) -> bool:
    """True when `sock` has unread bytes or an EOF waiting (one poll, no blocking)."""
    if sock is None or sock.fileno() < 0:
        return False
    try:
        return bool(select.select((sock,), (), (), 0)[0])
    except (OSError, ValueError):
        return False


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
        return value
    raise value


class _SharedConnection:
    """One live database connection, its private loop, and the facades (and handle) using it."""

    def __init__(self, backend: DatabaseBackend, timeout: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self.name = redact(backend.address.url)
        self.handle: int | None = None
        self.users = 0
        self.closed = False
        self.stale = False  # the link broke: reconnect before the next statement
        if hasattr(backend, "dial_timeout"):  # bounds a blocking driver's own connect
            backend.dial_timeout = timeout
        self._loop = asyncio.new_event_loop()  # runs only while a statement runs
        self._loop_closed = False
        self._driving = threading.Lock()  # one thread drives the loop / the driver at a time
        self._leftover: asyncio.Task[Any] | None = None  # cancelled, not yet finished
        self._guard = threading.Lock()
        self._alive_check: Callable[[], bool] | None = getattr(backend, "alive", None)
        self._pending_input: Callable[[], bool] | None = getattr(backend, "pending_input", None)
        self._transaction_check: Callable[[], bool] | None = getattr(
            backend, "in_transaction", None
        )
        self.transaction_open = False  # as of the last statement on the current link
        self._direct: Callable[[str, tuple[Any, ...]], Result] | None = getattr(
            backend, "execute_blocking", None
        )

    # -- driving the private loop (any thread, one at a time) -------------------------------

    def drive(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run `coro` on this connection's loop in the calling thread (TimeoutError after
        `timeout` s, the wait for another thread's statement included)."""
        if asyncio._get_running_loop() is not None:
            if reactor.in_loop_thread():
                coro.close()
                raise RuntimeError("dial: blocking call made from the dial reactor thread")
            return _in_helper_thread(self.drive, coro, timeout)
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
            raise DialError("connection is closed")
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
            self.stale = True

    def execute(self, sql: str, params: tuple[Any, ...], timeout: float | None) -> Result:
        """One statement from any thread (see the module docstring)."""
        if asyncio._get_running_loop() is not None:
            if reactor.in_loop_thread():
                raise RuntimeError("dial: blocking call made from the dial reactor thread")
            return _in_helper_thread(self.execute, sql, params, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._driving.acquire(True, -1 if timeout is None else timeout):
            raise TimeoutError
        try:
            if self.closed:
                raise DialError("connection is closed")
            with _gc_paused:
                return self._statement(sql, params, deadline)
        finally:
            self._driving.release()

    def _statement(self, sql: str, params: tuple[Any, ...], deadline: float | None) -> Result:
        """With `_driving` held, one statement by the shortest safe route:

        * nothing amiss and no timeout: the backend's blocking call (sqlite3, clickhouse);
        * otherwise: `run` as a task on the private loop, driven right here.
        """
        if deadline is None and not self.stale and self._leftover is None:
            direct = self._direct
            if direct is not None:
                try:
                    return direct(sql, params)
                except BaseException:
                    if not self._is_alive():
                        self.stale = True
                    raise
        return self._run_loop(self.run(sql, params), deadline)

    def _is_alive(self) -> bool:
        check = self._alive_check
        return True if check is None else bool(check())

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

    async def run(self, sql: str, params: tuple[Any, ...]) -> Result:
        if self.closed:
            raise DialError("connection is closed")
        backend = self.backend
        pending = self._pending_input
        if pending is not None:
            # The loop did not run while idle: let the driver read what arrived meanwhile
            # (a server's goodbye, an EOF) before deciding whether the link is alive.
            for _ in range(_PENDING_INPUT_ROUNDS):
                if not pending():
                    break
                await asyncio.sleep(0)
        if self.stale or not self._is_alive():
            if self.transaction_open:
                # The server rolled the transaction back with the old link; running this
                # statement on a fresh autocommit link would split it silently.
                self.transaction_open = False
                self.stale = True
                raise DialError(TRANSACTION_LOST)
            await self._reconnect()
        try:
            result = await backend.execute(sql, params)
        except asyncio.CancelledError:
            self.stale = True  # the driver may be mid-protocol: start afresh next time
            raise
        except BaseException as exc:
            if self._is_alive():
                self._note_transaction()
            else:
                self.stale = True
                if self.transaction_open:
                    self.transaction_open = False
                    raise DialError(f"{TRANSACTION_LOST} ({describe_error(exc)})") from None
            raise
        self._note_transaction()
        return result

    def _note_transaction(self) -> None:
        check = self._transaction_check
        if check is not None:
            self.transaction_open = bool(check())

    async def _reconnect(self) -> None:
        self.transaction_open = False
        await self._close_backend()
        try:
            await asyncio.wait_for(self.backend.connect(), self.timeout)
        except asyncio.TimeoutError:
            self.stale = True
            raise ConnectError(f"reconnect: no connection within {self.timeout:g} s") from None
        except BaseException as exc:
            self.stale = True
            await self._close_backend()
            reason = describe_error(exc)
            raise ConnectError(f"connection lost and reconnect failed: {reason}") from None
        self.stale = False
        log.info("%s: reconnected", self.name)

    async def _close_backend(self) -> None:
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
                raise DialError(f"database handle {self.handle} was released")
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
            except (TimeoutError, RuntimeError, DialError):
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


_registry: dict[int, _SharedConnection] = {}
_registry_lock = threading.Lock()
_handle_numbers = itertools.count(1)


# -- the facade -----------------------------------------------------------------------------


def _checked_timeout(timeout: Any) -> float:
    """A usable statement timeout, refused before anything is sent: a zero or negative one
    would report a failure for a statement that still runs."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise DialError(f"exec() timeout must be seconds (a number), not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise DialError(f"exec() timeout must be a finite number of seconds > 0, not {timeout!r}")
    return float(timeout)


class DatabaseConnection:
    """`exec(sql, *params)`, `fd()`, `close()`; a context manager. Thread-safe."""

    def __init__(self, shared: _SharedConnection, raise_errors: bool = False) -> None:
        shared.attach()
        self._shared = shared
        self._closed = False
        self.raise_errors = raise_errors
        # A facade dropped without close() still gives its share back.
        self._finalizer = weakref.finalize(self, shared.detach)

    def exec(self, sql: str, *params: Any, timeout: float | None = None) -> Result | None:
        """Run one statement with `?` placeholders bound to `params`.

        Rows: `{"columns": [...], "values": [[...], ...]}`; anything else:
        `{"columns": [], "values": [], "rowcount": n}`. On failure None (reason in
        `dial.last_error()`), or DialError when dialled with `raise_errors=True`.
        `timeout` (seconds) bounds the wait; the statement is then abandoned.
        """
        try:
            if self._closed:
                raise DialError("connection is closed")
            if not isinstance(sql, str):
                raise DialError(f"exec() takes the SQL as a str, not {type(sql).__name__}")
            if not sql.strip():
                raise DialError("exec() got an empty statement")
            if timeout is not None:
                timeout = _checked_timeout(timeout)
            result = self._shared.execute(sql, params, timeout)
        except Exception as exc:
            self._fail(exc, timeout)
            return None
        remember(None)
        return result

    def _fail(self, exc: Exception, timeout: float | None) -> None:
        if isinstance(exc, TimeoutError) and timeout is not None and not isinstance(exc, DialError):
            reason = f"statement did not finish within {timeout:g} s"
        else:
            reason = describe_error(exc)
        log.warning("%s: exec failed: %s", self._shared.name, reason)
        remember(reason)
        if self.raise_errors:
            raise DialError(reason) from None

    def fd(self) -> int | None:
        """An integer handle for `Dial(handle)`; pins the database connection (see module)."""
        if self._closed:
            self._fail(DialError("connection is closed"), None)
            return None
        return self._shared.pin()

    def close(self) -> None:
        """Detach this object; the database connection closes with its last user unless
        `fd()` pinned it. Idempotent, any thread."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def release(self) -> None:
        """Close the database connection now, for every object sharing it; frees the handle."""
        self._shared.close()
        self.close()

    @property
    def handle(self) -> int | None:
        return self._shared.handle

    @property
    def closed(self) -> bool:
        return self._closed or self._shared.closed

    def __enter__(self) -> DatabaseConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        handle = "" if self._shared.handle is None else f" handle={self._shared.handle}"
        return f"<DatabaseConnection {self._shared.name} {state}{handle}>"

    def __bool__(self) -> bool:
        return True


# -- entry points used by dial.dialer -------------------------------------------------------


def open_database(
    backend: DatabaseBackend, timeout: float, raise_errors: bool = False
) -> DatabaseConnection:
    """Connect `backend` (within `timeout` s) and wrap it; raises DialError on failure."""
    shared = _SharedConnection(backend, timeout)
    try:
        shared.drive(shared.open(), timeout + 5.0)
    except TimeoutError:
        shared.close()
        raise ConnectError(f"{shared.name}: no connection within {timeout:g} s") from None
    except BaseException:
        shared.close()
        raise
    reactor.track(shared)
    return DatabaseConnection(shared, raise_errors)


def reuse_handle(handle: int, raise_errors: bool = False) -> DatabaseConnection:
    """A new connection object on the database connection registered by `fd()`."""
    with _registry_lock:
        shared = _registry.get(handle)
    if shared is None:
        raise DialError(f"unknown database handle {handle} (never issued by fd(), or released)")
    return DatabaseConnection(shared, raise_errors)


def release(handle: int) -> bool:
    """Close the database connection behind `handle`; False if no such handle is open."""
    with _registry_lock:
        shared = _registry.get(handle)
    if shared is None:
        return False
    shared.close()
    return True
