"""The objects a user holds for a database: `DatabaseConnection` (what `Dial` returns) and
`AsyncDatabaseConnection` (what `dial.aio.dial` returns). Both are thin facades over one
`SharedConnection` and share their checks and failure reporting, so `exec` accepts, refuses
and reports exactly the same things whether it blocks or is awaited."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConnectError, DatabaseError, DialError, as_dial_error, describe_error, remember
from ..reactor import reactor
from ..validation import statement, statement_timeout
from .interfaces import DatabaseBackend
from .shared import SharedConnection, lookup_handle, release
from .sql import Result, parameter_rows

__all__ = [
    "AsyncDatabaseConnection",
    "DatabaseConnection",
    "DatabaseStats",
    "open_database",
    "release",
    "reuse_handle",
]

log = logging.getLogger("dial")

_NOT_A_STREAM = (
    "a database connection has no {name}(): run SQL with exec(sql, *params), "
    'e.g. db.exec("SELECT * FROM t WHERE id = ?", 1)'
)


@dataclass(frozen=True)
class DatabaseStats:
    """A snapshot of one database connection's counters, since Dial: shared by every object
    on that connection (`fd()` handles included), like a stream's `Stats`."""

    statements: int  # exec calls run
    failures: int  # of which failed: SQL error, timeout or lost link
    reconnects: int  # links renewed after a loss (server restart, network fault)
    last_error: str | None  # why the link last went down, None if it never did


class _Facade:
    """What the sync and the async database objects share."""

    def __init__(self, shared: SharedConnection, raise_errors: bool) -> None:
        self._shared = shared
        self._closed = False
        self.raise_errors = raise_errors

    def _statement(self, sql: object, timeout: object) -> tuple[str, float | None]:
        """The checks every `exec` makes before anything is sent."""
        if self.closed:
            raise DatabaseError("connection is closed")
        return statement(sql), None if timeout is None else statement_timeout(timeout)

    def _prepare_many(
        self, sql: object, rows: object, timeout: object
    ) -> tuple[str, list[Sequence[Any]], float | None]:
        """The checks every `exec_many` makes before anything is sent: (sql, rows, timeout)."""
        text, seconds = self._statement(sql, timeout)
        return text, parameter_rows(rows), seconds

    def _fail(self, exc: Exception, timeout: object, call: str = "exec") -> None:
        """Log and remember why `exec` (or `exec_many`) failed; raise it under `raise_errors`."""
        timed_out = isinstance(exc, TimeoutError) and not isinstance(exc, DialError)
        if timed_out and isinstance(timeout, int | float):
            reason = f"statement did not finish within {timeout:g} s"
        else:
            reason = describe_error(exc)
        log.warning("%s: %s failed: %s", self._shared.name, call, reason)
        remember(reason)
        if self.raise_errors:
            raise as_dial_error(exc, DatabaseError, reason) from None

    @property
    def handle(self) -> int | None:
        """The `fd()` handle pinning this database connection, None before `fd()`."""
        return self._shared.handle

    @property
    def closed(self) -> bool:
        return self._closed or self._shared.closed

    def stats(self) -> DatabaseStats:
        """The connection's counters now (any thread; cheap)."""
        shared = self._shared
        return DatabaseStats(
            shared.statements, shared.failures, shared.reconnects, shared.last_error
        )

    def fd(self) -> int | None:
        """An integer handle for `Dial(handle)`, from any thread. It pins the database
        connection: closing objects no longer closes it, until `release()`."""
        if self._closed:
            self._fail(DatabaseError("connection is closed"), None)
            return None
        return self._shared.pin()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        handle = "" if self._shared.handle is None else f" handle={self._shared.handle}"
        return f"<{type(self).__name__} {self._shared.name} {state}{handle}>"

    def __bool__(self) -> bool:  # FMZ: `if db:` tests that Dial succeeded
        return True

    if not TYPE_CHECKING:  # at run time only: a type checker must still see no read/write

        def __getattr__(self, name: str) -> Any:
            if name in ("read", "write"):
                raise AttributeError(_NOT_A_STREAM.format(name=name), name=name, obj=self)
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self
            )


class DatabaseConnection(_Facade):
    """`exec(sql, *params)`, `exec_many(sql, rows)`, `fd()`, `close()`; a context manager.
    Thread-safe."""

    def __init__(self, shared: SharedConnection, raise_errors: bool = False) -> None:
        shared.attach()
        super().__init__(shared, raise_errors)
        # An object dropped without close() still gives its share back.
        self._finalizer = weakref.finalize(self, shared.detach)

    def exec(self, sql: str, *params: Any, timeout: float | None = None) -> Result | None:
        """Run one statement with `?` placeholders bound to `params`.

        Rows: `{"columns": [...], "values": [[...], ...]}`; anything else:
        `{"columns": [], "values": [], "rowcount": n}`. On failure None (reason in
        `dial.last_error()`), or the `DialError` when dialled with `raise_errors=True`.
        `timeout` (seconds) bounds the wait; the statement is then abandoned.
        """
        try:
            text, seconds = self._statement(sql, timeout)
            result = self._shared.execute(text, params, seconds)
        except Exception as exc:
            self._fail(exc, timeout)
            return None
        remember(None)
        return result

    def exec_many(
        self, sql: str, rows: Iterable[Sequence[Any]], timeout: float | None = None
    ) -> int | None:
        """Run one statement once per row of `rows` (each a sequence of `?` parameters, all
        of one length) through the driver's batch path; returns the rows affected in all.

        No rows is no work: 0, nothing sent (as DB-API `executemany` does). Refused before
        anything is sent: rows that are not sequences, rows of different lengths, a wrong
        count or type in the first row (later rows' values are refused by the driver, naming
        the row where it can be told). The statement must change rows (INSERT, UPDATE,
        DELETE, REPLACE): one that returns rows is refused on every database. Atomic where
        the database is: sqlite3, postgres and mysql (InnoDB) write all rows or none, inside
        the caller's open transaction if there is one; clickhouse has no transactions. On
        failure None (reason in `dial.last_error()`), or the `DialError` under
        `raise_errors=True`.
        """
        try:
            text, batch, seconds = self._prepare_many(sql, rows, timeout)
            count = self._shared.execute_many(text, batch, seconds)
        except Exception as exc:
            self._fail(exc, timeout, "exec_many")
            return None
        remember(None)
        return count

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

    def __enter__(self) -> DatabaseConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDatabaseConnection(_Facade):
    """`await exec(sql, *params)`, `fd()`, `await close()`: the sync object's semantics,
    awaited instead of blocking (the statement runs in a worker thread)."""

    def __init__(self, sync: DatabaseConnection) -> None:
        super().__init__(sync._shared, sync.raise_errors)
        self._sync = sync

    async def exec(self, sql: str, *params: Any, timeout: float | None = None) -> Result | None:
        """As `DatabaseConnection.exec`, without blocking the event loop."""
        try:
            text, seconds = self._statement(sql, timeout)
            result = await asyncio.to_thread(self._shared.execute, text, params, seconds)
        except Exception as exc:
            self._fail(exc, timeout)
            return None
        remember(None)
        return result

    async def exec_many(
        self, sql: str, rows: Iterable[Sequence[Any]], timeout: float | None = None
    ) -> int | None:
        """As `DatabaseConnection.exec_many`, without blocking the event loop."""
        try:
            text, batch, seconds = self._prepare_many(sql, rows, timeout)
            count = await asyncio.to_thread(self._shared.execute_many, text, batch, seconds)
        except Exception as exc:
            self._fail(exc, timeout, "exec_many")
            return None
        remember(None)
        return count

    @property
    def closed(self) -> bool:
        return self._sync.closed

    def fd(self) -> int | None:
        return self._sync.fd()

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)

    aclose = close

    async def release(self) -> None:
        await asyncio.to_thread(self._sync.release)

    async def __aenter__(self) -> AsyncDatabaseConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- entry points used by dial.dialer -------------------------------------------------------


def open_database(
    backend: DatabaseBackend, timeout: float, raise_errors: bool = False
) -> DatabaseConnection:
    """Connect `backend` (within `timeout` s) and wrap it; raises DialError on failure."""
    shared = SharedConnection(backend, timeout)
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
    return DatabaseConnection(lookup_handle(handle), raise_errors)
