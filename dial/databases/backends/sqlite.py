"""`sqlite3://test1.db`, `sqlite3://:memory:`, `sqlite3://file:test.db?cache=shared&mode=memory`.

aiosqlite opens and closes the sqlite3 connection in its own thread. A statement runs right in
the caller's thread (`execute_blocking`, serialised by `dial.databases.shared`), which saves
two thread hops per statement; with a timeout it takes one trip to aiosqlite's thread instead,
so that the wait can be abandoned. Columns declared DATE, DATETIME/TIMESTAMP and
DECIMAL/NUMERIC come back as `date`, `datetime` and `Decimal`, like on the server databases;
datetime, date, time and Decimal parameters are written as ISO text / decimal text, converted
here rather than by process-wide `sqlite3.register_adapter` calls.
`exec_many` is sqlite3's `executemany` under a savepoint (in the user's transaction, or one of
its own): atomic, and one commit per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import aiosqlite

from ...address import Address
from ...errors import AddressError, ArgumentError, ConnectError, DatabaseError, DialError
from ..interfaces import DatabaseBackend
from ..sql import (
    BATCH_RETURNS_ROWS,
    Result,
    bind,
    check_parameters,
    listify,
    rows_result,
    status_result,
    translate,
)

__all__ = ["SqliteBackend"]


def _to_datetime(raw: bytes) -> Any:
    text = raw.decode()
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return int(text) if text.lstrip("-").isdigit() else text


def _to_date(raw: bytes) -> Any:
    text = raw.decode()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return _to_datetime(raw)


def _to_decimal(raw: bytes) -> Any:
    try:
        return Decimal(raw.decode())
    except ArithmeticError:
        return raw.decode()


# Declared-type converters (sqlite3 keys them by the first word of the column type).
for _name, _convert in (
    ("timestamp", _to_datetime),
    ("datetime", _to_datetime),
    ("date", _to_date),
    ("decimal", _to_decimal),
    ("numeric", _to_decimal),
):
    sqlite3.register_converter(_name, _convert)

#: What sqlite3 binds as it is (bool as an integer, bytes-likes as blobs).
_NATIVE_TYPES = frozenset({type(None), bool, int, float, str, bytes, bytearray, memoryview})
_native = _NATIVE_TYPES.issuperset
_SAVEPOINT = "SAVEPOINT dial_exec_many"
_ROLLBACK_TO = "ROLLBACK TO dial_exec_many"
_RELEASE = "RELEASE dial_exec_many"
_BINDING_FAILED = "Error binding parameter"  # sqlite3's words, 3.10 to 3.13


def _datetime_text(value: dt.datetime) -> str:
    return value.isoformat(" ")


#: Values sqlite3 does not bind, as text (what its deprecated default adapters wrote for
#: datetime and date). Converted here, per connection: `sqlite3.register_adapter` would
#: change every other sqlite3 user in the process.
_TEXT_OF: dict[type, Callable[[Any], str]] = {
    dt.datetime: _datetime_text,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    Decimal: str,
}


def _adapt(value: Any) -> Any:
    """`_TEXT_OF` for subclasses too (a pandas Timestamp is a datetime)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _adapted(params: Sequence[Any]) -> Sequence[Any]:
    """`params` checked (`check_parameters`) and adapted, any subclass included."""
    check_parameters(tuple(params))
    return tuple(map(_adapt, params))


def _adapted_rows(rows: list[Sequence[Any]]) -> Iterator[Sequence[Any]]:
    """Every row as sqlite3 binds it: the usual types by one lookup per value, anything
    else through `_adapted`, a refusal naming its row (1-based)."""
    native, text_of = _NATIVE_TYPES, _TEXT_OF
    for number, row in enumerate(rows, 1):
        try:
            yield [value if type(value) in native else text_of[type(value)](value) for value in row]
        except KeyError:  # a subclass, or a type no database binds
            try:
                yield _adapted(row)
            except ArgumentError as exc:
                raise ArgumentError(f"row {number}: {exc}") from None


def _failure(exc: Exception) -> DialError:
    """A sqlite3 (or aiosqlite: "Connection closed") exception -> the reason for the user."""
    if isinstance(exc, sqlite3.ProgrammingError) and "can only execute DML" in str(exc):
        return ArgumentError(BATCH_RETURNS_ROWS)
    return DatabaseError(f"sqlite3: {exc}")


_FAILURES = (sqlite3.Error, ValueError)


class _DriverErrors:
    """`with _driver_errors:` turns what sqlite3 and aiosqlite raise into `_failure`'s
    reason. (The one-row blocking path uses try/except with `_failure` itself: a `with`
    costs about 90 ns there, a twentieth of a one-row INSERT.)"""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, _FAILURES):
            raise _failure(exc) from None


_driver_errors = _DriverErrors()


def _changed(connection: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> int:
    """`sql` once per row: the first alone, so that a statement returning rows is refused
    the same on every Python (sqlite3's `executemany` refuses a SELECT, but runs an
    `INSERT ... RETURNING` on 3.11 and fails with "API misuse" on 3.12), the rest by
    `executemany`."""
    remaining = iter(rows)
    cursor = connection.execute(sql, next(remaining))
    try:
        if cursor.description is not None:
            raise ArgumentError(BATCH_RETURNS_ROWS)
        count = max(cursor.rowcount, 0)
    finally:
        cursor.close()
    cursor = connection.executemany(sql, remaining)
    count += max(cursor.rowcount, 0)
    cursor.close()
    return count


def _run_many(connection: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> int:
    """A batch as sqlite3's `executemany`, under a savepoint: all rows or none, inside the
    user's transaction or in one of its own (one commit instead of one per row).

    Rows are passed as they are when the first one needs no adapting (the batch then costs
    what sqlite3's own `executemany` does); should a later row hold a value sqlite3 does not
    bind (a Decimal where row 1 had None), the batch is rolled back and runs again with
    every row adapted. (A later datetime or date is bound there by sqlite3's own default
    adapter, deprecated since 3.12, which writes the same text; once Python drops it, such
    a row takes the adapted second run too.)"""
    connection.execute(_SAVEPOINT)
    try:
        if _native(map(type, rows[0])):
            try:
                count = _changed(connection, sql, rows)
            except (sqlite3.InterfaceError, sqlite3.ProgrammingError) as exc:
                if _BINDING_FAILED not in str(exc):
                    raise
                connection.execute(_ROLLBACK_TO)
                count = _changed(connection, sql, _adapted_rows(rows))
        else:
            count = _changed(connection, sql, _adapted_rows(rows))
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error that got us here counts
                connection.execute(_ROLLBACK_TO)
                connection.execute(_RELEASE)
        raise
    connection.execute(_RELEASE)
    return count


def _run(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Result:
    """One statement, start to finish, on the aiosqlite thread."""
    cursor = connection.execute(sql, params)
    try:
        description = cursor.description
        if description is None:
            return status_result(cursor.rowcount)
        return rows_result([d[0] for d in description], listify(cursor.fetchall()))
    finally:
        cursor.close()


async def _stopped(thread: Any, limit: float = 2.0) -> None:
    """Wait (bounded) for aiosqlite's worker after a failed open: it still reports its stop to
    this loop, which `dial.databases.shared` closes soon after."""
    if thread is None:
        return
    deadline = asyncio.get_running_loop().time() + limit
    while thread.is_alive() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.002)
    await asyncio.sleep(0)  # run the stop report it queued


class SqliteBackend(DatabaseBackend):
    runs_blocking = True  # sqlite3 itself is blocking: statements run in the caller's thread

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.database = address.target.strip()
        if not self.database:
            raise AddressError("sqlite3:// needs a file name, :memory: or a file: URI")
        self.uri = self.database.startswith("file:")
        self._connection: aiosqlite.Connection | None = None

    async def connect(self) -> None:
        pending = aiosqlite.connect(
            self.database,
            uri=self.uri,
            isolation_level=None,  # autocommit; BEGIN/COMMIT in SQL still work
            detect_types=sqlite3.PARSE_DECLTYPES,
            check_same_thread=False,  # statements run in the caller's thread, one at a time
        )
        # A pinned connection may outlive the program's last close(): a non-daemon thread
        # would then block interpreter exit before the atexit cleanup could close it.
        thread = getattr(pending, "_thread", None)
        if thread is not None:
            thread.daemon = True
        try:
            self._connection = await pending
        except sqlite3.Error as exc:
            await _stopped(thread)
            raise ConnectError(f"sqlite3://{self.database}: {exc}") from None

    def _prepare(self, sql: str, params: tuple[Any, ...]) -> Sequence[Any]:
        if params:
            translate(sql, params, "qmark")
            if not _native(map(type, params)):  # one check at C speed for the usual case
                return _adapted(params)
        return params

    def _raw(self) -> sqlite3.Connection:
        """The sqlite3 connection, for a call in the caller's thread (which holds the
        connection's lock)."""
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        try:
            raw: sqlite3.Connection = connection._conn
        except ValueError as exc:  # aiosqlite: "no active connection"
            raise _failure(exc) from None
        return raw

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        bound = self._prepare(sql, params)
        with _driver_errors:
            # aiosqlite's own queue, without the cursor objects its public API would create
            result: Result = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, sql, bound
            )
            return result

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        bind(sql, tuple(rows[0]), "qmark")
        with _driver_errors:
            count: int = await connection._execute(  # type: ignore[no-untyped-call]
                _run_many, connection._conn, sql, rows
            )
            return count

    def execute_many_blocking(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """The batch in the calling thread (the caller holds the connection's lock)."""
        raw = self._raw()
        bind(sql, tuple(rows[0]), "qmark")
        with _driver_errors:
            return _run_many(raw, sql, rows)

    def execute_blocking(self, sql: str, params: tuple[Any, ...]) -> Result:
        """The same statement in the calling thread (the caller holds the connection's lock)."""
        raw = self._raw()
        bound = self._prepare(sql, params)
        try:
            return _run(raw, sql, bound)
        except _FAILURES as exc:
            raise _failure(exc) from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
