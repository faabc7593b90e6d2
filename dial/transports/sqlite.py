"""`sqlite3://test1.db`, `sqlite3://:memory:`, `sqlite3://file:test.db?cache=shared&mode=memory`.

aiosqlite runs the sqlite3 connection in its own thread; a whole statement (execute, fetch,
row conversion) is one trip to that thread. Columns declared DATE, DATETIME/TIMESTAMP and
DECIMAL/NUMERIC come back as `date`, `datetime` and `Decimal`, like on the server databases.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from typing import Any

import aiosqlite

from ..address import Address
from ..database import Result, bind, listify, rows_result, status_result
from ..errors import AddressError, ConnectError, DialError
from .base import DatabaseBackend

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


def _adapt(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


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


class SqliteBackend(DatabaseBackend):
    def __init__(self, address: Address) -> None:
        super().__init__(address)
        if address.options.given:
            raise AddressError(
                f"option {', '.join(sorted(address.options.given))} is not supported for sqlite3://"
            )
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
        )
        # A pinned connection may outlive the program's last close(): a non-daemon thread
        # would then block interpreter exit before the atexit cleanup could close it.
        thread = getattr(pending, "_thread", None)
        if thread is not None:
            thread.daemon = True
        try:
            self._connection = await pending
        except sqlite3.Error as exc:
            raise ConnectError(f"sqlite3://{self.database}: {exc}") from None

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        connection = self._connection
        if connection is None:
            raise DialError("connection is closed")
        if params:
            bind(sql, params, "qmark")
            if any(isinstance(p, _ADAPTED) for p in params):
                params = tuple(map(_adapt, params))
        try:
            return await connection._execute(_run, connection._conn, sql, params)
        except sqlite3.Error as exc:
            raise DialError(f"sqlite3: {exc}") from None
        except ValueError as exc:  # aiosqlite: "Connection closed"
            raise DialError(f"sqlite3: {exc}") from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
