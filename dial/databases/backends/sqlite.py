"""`sqlite3://test1.db`, `sqlite3://:memory:`, `sqlite3://file:test.db?cache=shared&mode=memory`.

aiosqlite opens and closes the sqlite3 connection in its own thread. A statement runs right in
the caller's thread (`execute_blocking`, serialised by `dial.databases.shared`), which saves
two thread hops per statement; with a timeout it takes one trip to aiosqlite's thread instead,
so that the wait can be abandoned. Columns declared DATE, DATETIME/TIMESTAMP and
DECIMAL/NUMERIC come back as `date`, `datetime` and `Decimal`, like on the server databases.
`exec_many` is sqlite3's `executemany` inside one transaction (its own unless one is open):
atomic, and one commit per batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import aiosqlite

from ...address import Address
from ...errors import AddressError, ConnectError, DatabaseError
from ..interfaces import DatabaseBackend
from ..sql import (
    Result,
    bind,
    check_parameters,
    listify,
    plain_parameters,
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

_ADAPTED = (dt.datetime, dt.date, dt.time, Decimal)

# The same conversions for `executemany`, where a per-value check in Python would cost more
# than sqlite3's own binding. Registered for these exact types, like the converters above:
# datetime and date as sqlite3's own (deprecated) adapters write them, time and Decimal,
# which sqlite3 refuses otherwise, as text.
for _type, _adapter in (
    (dt.datetime, lambda value: value.isoformat(" ")),
    (dt.date, lambda value: value.isoformat()),
    (dt.time, lambda value: value.isoformat()),
    (Decimal, str),
):
    sqlite3.register_adapter(_type, _adapter)


def _adapt(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _run_many(connection: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> int:
    """A batch as sqlite3's `executemany`, inside one transaction (its own, unless the user
    already opened one): all rows or none, and one commit instead of one per row."""
    own = not connection.in_transaction
    if own:
        connection.execute("BEGIN")
    try:
        cursor = connection.executemany(sql, rows)
        count = cursor.rowcount
        cursor.close()
    except BaseException:
        if own and connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    if own:
        connection.execute("COMMIT")
    return max(count, 0)


def _run(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Result:
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

    def _prepare(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
        if params:
            translate(sql, params, "qmark")
            if not plain_parameters(params):  # a subclass (of datetime, say): adapt it here
                check_parameters(params)
                params = tuple(map(_adapt, params))
        return params

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        params = self._prepare(sql, params)
        try:
            # aiosqlite's own queue, without the cursor objects its public API would create
            result: Result = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, sql, params
            )
            return result
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite3: {exc}") from None
        except ValueError as exc:  # aiosqlite: "Connection closed"
            raise DatabaseError(f"sqlite3: {exc}") from None

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        bind(sql, tuple(rows[0]), "qmark")
        try:
            count: int = await connection._execute(  # type: ignore[no-untyped-call]
                _run_many, connection._conn, sql, rows
            )
            return count
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite3: {exc}") from None
        except ValueError as exc:  # aiosqlite: "Connection closed"
            raise DatabaseError(f"sqlite3: {exc}") from None

    def execute_many_blocking(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """The batch in the calling thread (the caller holds the connection's lock)."""
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        bind(sql, tuple(rows[0]), "qmark")
        try:
            raw = connection._conn
        except ValueError as exc:  # aiosqlite: "no active connection"
            raise DatabaseError(f"sqlite3: {exc}") from None
        try:
            return _run_many(raw, sql, rows)
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite3: {exc}") from None

    def execute_blocking(self, sql: str, params: tuple[Any, ...]) -> Result:
        """The same statement in the calling thread (the caller holds the connection's lock)."""
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        params = self._prepare(sql, params)
        try:
            raw = connection._conn
        except ValueError as exc:  # aiosqlite: "no active connection"
            raise DatabaseError(f"sqlite3: {exc}") from None
        try:
            return _run(raw, sql, params)
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite3: {exc}") from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
