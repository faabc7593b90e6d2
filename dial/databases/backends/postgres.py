"""`postgres://` through asyncpg, in the libpq key=value form FMZ uses or as a URL:

    postgres://user=postgres dbname=db sslmode=disable password=pw host=localhost port=5432
    postgres://user:pw@localhost:5432/db?sslmode=disable

`?` placeholders become `$1..$n`. Statements go through asyncpg's statement cache (prepared
once per distinct SQL text); a parameterless multi-statement script falls back to the simple
query protocol and returns the status of its last statement.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg

from ...address import Address, redact
from ...errors import AddressError, ArgumentError, ConnectError, DatabaseError
from ..interfaces import DatabaseBackend, input_probe
from ..sql import BATCH_RETURNS_ROWS, Result, bind, rows_result, status_result

__all__ = ["PostgresBackend", "parse_postgres_target"]

DEFAULT_PORT = 5432
KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "user",
        "password",
        "dbname",
        "sslmode",
        "connect_timeout",
        "application_name",
    }
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_KEY_VALUE = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_MULTIPLE_COMMANDS = "cannot insert multiple commands"
_NO_COLUMNS_KEPT = 1024
_PLAIN_INSERT = re.compile(r"\s*INSERT\s+INTO\s+[^;]+?\bVALUES\s*\([^;]*\)\s*;?\s*\Z", re.I | re.S)
_NOT_PLAIN = re.compile(r"\b(?:CONFLICT|RETURNING|SELECT)\b|\)\s*,\s*\(", re.I)
#: Parameter types asyncpg binds besides the common ones (arrays, records, ranges...).
EXTRA_PARAMETER_TYPES: tuple[type, ...] = (
    list,
    tuple,
    dict,
    uuid.UUID,
    dt.timedelta,
    asyncpg.Range,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


def _parse_key_value(text: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _KEY_VALUE.match(text, pos)
        if not match:
            raise AddressError(
                f"postgres://{redact(text)}: expected key=value pairs at {text[pos : pos + 20]!r}"
            )
        value = match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        settings[match.group(1)] = value
        pos = match.end()
    return settings


def _parse_url(text: str) -> dict[str, str]:
    try:
        parts = urlsplit(f"postgres://{text}")
        port = parts.port
    except ValueError as exc:
        raise AddressError(f"postgres://{redact(text)}: bad host or port ({exc})") from None
    settings: dict[str, str] = {}
    if parts.hostname:
        settings["host"] = unquote(parts.hostname)
    if port is not None:
        settings["port"] = str(port)
    if parts.username:
        settings["user"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = unquote(parts.password)
    database = unquote(parts.path.lstrip("/"))
    if database:
        settings["dbname"] = database
    settings.update(parse_qsl(parts.query, keep_blank_values=True))
    return settings


def parse_postgres_target(target: str) -> dict[str, Any]:
    """asyncpg.connect() keyword arguments from a key=value or URL target."""
    text = target.strip()
    key_value = re.match(r"[A-Za-z_]+\s*=", text) is not None
    settings = _parse_key_value(text) if key_value else _parse_url(text)
    unknown = set(settings) - KEYS
    if unknown:
        raise AddressError(
            f"postgres://: unsupported setting {', '.join(sorted(unknown))}; "
            f"supported: {', '.join(sorted(KEYS))}"
        )
    kwargs: dict[str, Any] = {}
    host = settings.get("hostaddr") or settings.get("host")
    if host:
        kwargs["host"] = host
    port = settings.get("port", str(DEFAULT_PORT))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"postgres://: port {port!r} is not a number from 1 to 65535")
    kwargs["port"] = int(port)
    for key, name in (("user", "user"), ("password", "password"), ("dbname", "database")):
        if key in settings:
            kwargs[name] = settings[key]
    sslmode = settings.get("sslmode")
    if sslmode is not None:
        if sslmode not in SSLMODES:
            raise AddressError(f"postgres://: sslmode={sslmode!r}; expected {', '.join(SSLMODES)}")
        kwargs["ssl"] = False if sslmode == "disable" else sslmode
    if "connect_timeout" in settings:
        try:
            kwargs["timeout"] = float(settings["connect_timeout"])
        except ValueError:
            raise AddressError("postgres://: connect_timeout must be seconds") from None
    if "application_name" in settings:
        kwargs["server_settings"] = {"application_name": settings["application_name"]}
    return kwargs


def _rowcount(status: bytes | str | None) -> int:
    """`INSERT 0 5` -> 5, `UPDATE 3` -> 3, `CREATE TABLE` -> 0."""
    if not status:
        return 0
    last = (status.decode() if isinstance(status, bytes) else status).rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _lists_in_place(records: list[Any]) -> list[list[Any]]:
    """Records -> lists in the driver's own (fresh) list: each record is freed right after
    its copy, while still in cache, instead of in a second pass over 100k cold records."""
    for index, record in enumerate(records):
        records[index] = list(record)
    return records


def _one_row_per_execution(query: str) -> bool:
    """`INSERT INTO t [(cols)] VALUES (...)` with nothing that could insert another number of
    rows (ON CONFLICT, a SELECT) or return some (RETURNING). A quoted word that merely looks
    like one of those only costs the slower, counted path."""
    return _PLAIN_INSERT.match(query) is not None and _NOT_PLAIN.search(query) is None


_DRIVER_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: asyncpg names a bad value in an `executemany` batch by its 0-based element number.
_BATCH_ELEMENT = re.compile(r" in element #(\d+) of executemany\(\) sequence")


def _failure(exc: BaseException, row: int | None = None) -> DatabaseError:
    """An asyncpg (or socket) exception -> the reason for the user; `row` (1-based), or the
    row asyncpg's batch names, leads the reason."""
    if isinstance(exc, OSError):
        reason = f"connection lost: {exc.strerror or exc}"
    elif isinstance(exc, asyncpg.PostgresError):
        reason = f"{exc} (SQLSTATE {exc.sqlstate})"
    else:
        reason = str(exc)
    element = _BATCH_ELEMENT.search(reason)
    if element is not None:
        row = int(element.group(1)) + 1
        reason = reason[: element.start()] + reason[element.end() :]
    return DatabaseError(f"postgres: row {row}: {reason}" if row else f"postgres: {reason}")


class _DriverErrors:
    """`with _driver_errors:` turns what asyncpg raises into `_failure`'s reason."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, _DRIVER_FAILURES):
            raise _failure(exc) from None


_driver_errors = _DriverErrors()


class PostgresBackend(DatabaseBackend):
    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.settings = parse_postgres_target(address.target)
        self._connection: asyncpg.Connection | None = None
        self._has_input = input_probe(None)
        #: Statements that returned no rows and have no result columns (INSERT, UPDATE...):
        #: their status is the answer, without asking the statement cache (a microsecond,
        #: a third of an INSERT's own client-side cost).
        self._no_columns: set[str] = set()

    @property
    def where(self) -> str:
        return f"postgres {self.settings.get('host', 'localhost')}:{self.settings['port']}"

    async def connect(self) -> None:
        try:
            self._connection = await asyncpg.connect(**self.settings)
        except asyncpg.PostgresError as exc:
            raise ConnectError(f"{self.where}: {exc}") from None
        except socket.gaierror as exc:
            host = self.settings.get("host", "localhost")
            reason = f"cannot resolve host {host!r} ({exc.strerror})"
            raise ConnectError(f"{self.where}: {reason}") from None
        except (OSError, asyncpg.InterfaceError) as exc:
            reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
            raise ConnectError(f"{self.where}: {reason or type(exc).__name__}") from None
        transport = getattr(self._connection, "_transport", None)
        self._has_input = input_probe(
            transport.get_extra_info("socket") if transport is not None else None
        )

    def alive(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    def in_transaction(self) -> bool:
        connection = self._connection
        return connection is not None and connection.is_in_transaction()

    def pending_input(self) -> bool:
        """Bytes (a server's goodbye, an EOF) arrived while no statement ran."""
        return self._connection is not None and self._has_input()

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        query = bind(sql, params, "numeric", EXTRA_PARAMETER_TYPES) if params else sql
        with _driver_errors:
            try:
                records, status, _ = await connection._execute(
                    query, params, 0, None, return_status=True
                )
            except asyncpg.PostgresSyntaxError as exc:
                if params or _MULTIPLE_COMMANDS not in str(exc):
                    raise
                return status_result(_rowcount(await connection.execute(sql)))
            if records:
                return rows_result(list(records[0].keys()), _lists_in_place(records))
            if query in self._no_columns:  # an INSERT, say: known to return no columns
                return status_result(_rowcount(status))
            # The statement cache already holds it (prepared by _execute): no round trip.
            statement = await connection._get_statement(query, None)
            attributes = statement._get_attributes()
            if attributes:
                return rows_result([a.name for a in attributes], [])
            if len(self._no_columns) >= _NO_COLUMNS_KEPT:
                self._no_columns.clear()
            self._no_columns.add(query)
            return status_result(_rowcount(status))

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """asyncpg's `executemany` (atomic: one implicit transaction, or the user's) for a
        plain `INSERT ... VALUES`, where every row inserts exactly one (asyncpg reports no
        counts from a batch; a BEFORE trigger that skips rows is not seen). Any other
        statement runs row by row in one transaction, counting what each reports; one that
        returns rows (a SELECT, `RETURNING`) is refused before any row runs."""
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        query = bind(sql, tuple(rows[0]), "numeric", EXTRA_PARAMETER_TYPES)
        with _driver_errors:
            if _one_row_per_execution(query):
                await connection.executemany(query, rows)
                return len(rows)
            # Prepared once here (and cached for the rows): its columns tell what it returns.
            statement = await connection._get_statement(query, None)
            if statement._get_attributes():
                raise ArgumentError(BATCH_RETURNS_ROWS)
            total = 0
            async with connection.transaction():
                for number, row in enumerate(rows, 1):
                    try:
                        _, status, _ = await connection._execute(
                            query, row, 0, None, return_status=True
                        )
                    except _DRIVER_FAILURES as exc:
                        raise _failure(exc, number) from None
                    total += _rowcount(status)
            return total

    def abort(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()  # closes the socket now; no Terminate message, no wait

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.close(timeout=2)
        except Exception:
            connection.terminate()
