"""`mysql://` through aiomysql, in the Go driver's DSN form FMZ uses or as a URL:

    mysql://user:pwd@tcp(host:3306)/db?charset=utf8mb4
    mysql://user:pwd@unix(/run/mysqld/mysqld.sock)/db
    mysql://user:pwd@host:3306/db?charset=utf8mb4

The connection runs in autocommit mode (each `exec` commits, as with the Go driver);
`BEGIN`/`COMMIT` in SQL still group statements. `?` placeholders become `%s`.
`exec_many` sends an INSERT's rows as multi-row INSERTs, like aiomysql's `executemany`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiomysql
import pymysql
from pymysql.charset import charset_by_name
from pymysql.constants import SERVER_STATUS
from pymysql.cursors import RE_INSERT_VALUES

from ...address import Address, redact
from ...errors import AddressError, ArgumentError, ConnectError, DatabaseError
from ..interfaces import DatabaseBackend, input_probe
from ..sql import (
    PARAMETER_TYPES,
    Result,
    bind,
    changed_rows,
    listify,
    rows_result,
    status_result,
    translate,
)

__all__ = ["MysqlBackend", "parse_mysql_target"]

DEFAULT_PORT = 3306
# user[:password]@net(address)/dbname?params - the Go driver's layout; `net` may be omitted.
_GO_DSN = re.compile(
    r"^(?:(?P<user>[^:@/]*)(?::(?P<password>.*?))?@)?"
    r"(?P<net>tcp6?|unix)?(?:\((?P<addr>[^)]*)\))?"
    r"/(?P<db>[^?/]*)(?:\?(?P<params>.*))?$",
    re.S,
)
#: Go DSN parameters with a meaning here / accepted because they only tune the Go driver.
SUPPORTED = frozenset({"charset", "timeout", "tls"})
IGNORED = frozenset(
    {
        "parseTime",
        "loc",
        "allowNativePasswords",
        "collation",
        "readTimeout",
        "writeTimeout",
        "interpolateParams",
        "multiStatements",
        "columnsWithAlias",
        "maxAllowedPacket",
        "allowOldPasswords",
        "checkConnLiveness",
    }
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_BYTES_LIKE = (bytes, bytearray, memoryview)
# Errors after which the link is gone: server gone away (2006), lost during query (2013),
# lost at a system error (2055), and a packet over max_allowed_packet (1153), after which the
# server closes the link (its reset may arrive after the answer, when alive() cannot tell yet).
_DISCONNECTS = frozenset({1153, 2006, 2013, 2055})
#: aiomysql's `Cursor.max_stmt_length`: a multi-row INSERT of a batch stays below this many
#: characters (at most 4 bytes each in utf8mb4: below even an old server's 4 MiB
#: max_allowed_packet).
MAX_STATEMENT_CHARS = 1024000
_BOUND_TYPES = (*PARAMETER_TYPES, dt.timedelta)


class _QuietCursor(aiomysql.Cursor):  # type: ignore[misc]  # untyped library
    """Skips the extra SHOW WARNINGS round trip aiomysql makes after a statement that warned
    (it only turns them into Python warnings)."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


def _seconds(value: str) -> float:
    match = _DURATION.match(value)
    if not match:
        raise AddressError(f"mysql://: timeout={value!r}; expected e.g. 5s or 500ms")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


def parse_mysql_target(target: str) -> dict[str, Any]:
    """aiomysql.connect() keyword arguments from a Go DSN or URL target."""
    text = target.strip()
    go = _GO_DSN.match(text)
    kwargs: dict[str, Any] = {"port": DEFAULT_PORT, "host": "localhost"}
    if go and (
        go.group("net") or go.group("addr") is not None or text.startswith("/") or "@/" in text
    ):
        user, password = go.group("user"), go.group("password")
        net, addr = go.group("net") or "tcp", go.group("addr") or ""
        database, query = go.group("db"), go.group("params") or ""
        if net == "unix":
            if not addr:
                raise AddressError("mysql://: unix() needs a socket path")
            kwargs["unix_socket"] = addr
        elif addr:
            host, _, port = addr.rpartition(":") if ":" in addr else (addr, "", "")
            kwargs["host"] = host.strip("[]") or "localhost"
            if port:
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise AddressError(f"mysql://: bad port {port!r} in tcp({addr})")
                kwargs["port"] = int(port)
    else:
        if "(" in text or ")" in text:
            raise AddressError(
                f"mysql://{redact(text)}: malformed DSN; expected "
                "user:password@tcp(host:port)/database or user:password@host:port/database"
            )
        try:
            parts = urlsplit(f"mysql://{text}")
            port = parts.port
        except ValueError as exc:
            raise AddressError(f"mysql://{redact(text)}: bad host or port ({exc})") from None
        if not parts.hostname:
            raise AddressError(f"mysql://{redact(text)}: missing host")
        kwargs["host"] = parts.hostname
        if port is not None:
            kwargs["port"] = port
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        database, query = unquote(parts.path.lstrip("/")), parts.query
    if user:
        kwargs["user"] = user
    if password:
        kwargs["password"] = password
    if database:
        kwargs["db"] = database
    kwargs["charset"] = "utf8mb4"
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in IGNORED:
            continue
        if name not in SUPPORTED:
            raise AddressError(
                f"mysql://: unsupported parameter {name!r}; supported: "
                f"{', '.join(sorted(SUPPORTED | IGNORED))}"
            )
        if name == "charset":
            charset = value.split(",")[0].strip()
            if charset_by_name(charset) is None:
                raise AddressError(f"mysql://: unknown charset {charset!r}")
            kwargs["charset"] = charset
        elif name == "timeout":
            kwargs["connect_timeout"] = _seconds(value)
        elif name == "tls" and value not in ("false", "", "preferred"):
            import ssl

            context = ssl.create_default_context()
            if value == "skip-verify":
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            kwargs["ssl"] = context
    return kwargs


def _row_literals(connection: aiomysql.Connection, row: Sequence[Any]) -> tuple[str, ...]:
    """A row's parameters as SQL literals, exactly as pymysql escapes them (bytes-likes as
    binary, see `MysqlBackend._literal`), with the common types written here directly: this
    runs once per value of every row, where pymysql's generic dispatch costs twice as much."""
    escape_string = connection.escape_string
    literals: list[str] = []
    append = literals.append
    for index, value in enumerate(row, 1):
        kind = type(value)
        if kind is int:
            append(str(value))
        elif kind is str:
            append("'" + escape_string(value) + "'")
        elif kind is float and math.isfinite(value):
            text = repr(value)
            append(text if "e" in text else text + "e0")
        elif value is None:
            append("NULL")
        else:
            if not isinstance(value, _BOUND_TYPES):
                raise ArgumentError(f"parameter {index}: unsupported type {kind.__name__}")
            append(MysqlBackend._literal(connection, index, value))
    return tuple(literals)


def _batch_row_literals(
    connection: aiomysql.Connection, rows: list[Sequence[Any]], number: int
) -> tuple[str, ...]:
    """`_row_literals` of `rows[number]`, a refusal naming the row."""
    try:
        return _row_literals(connection, rows[number])
    except (ArgumentError, DatabaseError) as exc:
        raise type(exc)(f"row {number + 1}: {exc}") from None


def _batch_statements(
    connection: aiomysql.Connection, template: str, rows: list[Sequence[Any]]
) -> list[str]:
    """The statements a batch sends: multi-row INSERTs (what aiomysql's `executemany` does,
    at its size limit) or, for any other statement, one per row."""
    insert = RE_INSERT_VALUES.match(template)
    if insert is None or insert.group(2).count("%s") != len(rows[0]):  # placeholders elsewhere
        return [template % _batch_row_literals(connection, rows, n) for n in range(len(rows))]
    prefix, values = insert.group(1) % (), insert.group(2).rstrip()
    postfix = (insert.group(3) or "") % ()
    statements: list[str] = []
    parts: list[str] = []
    size = limit = MAX_STATEMENT_CHARS - len(prefix) - len(postfix)
    for number in range(len(rows)):
        part = values % _batch_row_literals(connection, rows, number)
        if parts and len(part) + 1 > size:
            statements.append(f"{prefix}{','.join(parts)}{postfix}")
            parts, size = [], limit
        parts.append(part)
        size -= len(part) + 1
    statements.append(f"{prefix}{','.join(parts)}{postfix}")
    return statements


class MysqlBackend(DatabaseBackend):
    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.settings = parse_mysql_target(address.target)
        self._connection: aiomysql.Connection | None = None
        self._has_input = input_probe(None)
        self._cursor: _QuietCursor | None = None  # one per connection, reused

    @property
    def where(self) -> str:
        unix_socket = self.settings.get("unix_socket")
        return (
            f"mysql {unix_socket}"
            if unix_socket
            else (f"mysql {self.settings['host']}:{self.settings['port']}")
        )

    async def connect(self) -> None:
        try:
            self._connection = await aiomysql.connect(autocommit=True, **self.settings)
        except pymysql.err.MySQLError as exc:
            code, message = (*exc.args, "", "")[:2] if exc.args else (0, str(exc))
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, socket.gaierror):
                host = self.settings.get("host")
                message = f"cannot resolve host {host!r} ({cause.strerror})"
            elif isinstance(cause, OSError):  # e.g. 2003 "Can't connect": say why
                message = f"{message}: {os.strerror(cause.errno) if cause.errno else cause}"
            raise ConnectError(f"{self.where}: {message or exc} (error {code})") from None
        except OSError as exc:
            raise ConnectError(f"{self.where}: {exc.strerror or exc}") from None
        writer = getattr(self._connection, "_writer", None)
        self._has_input = input_probe(
            writer.get_extra_info("socket") if writer is not None else None
        )

    def pending_input(self) -> bool:
        """Bytes (a server's goodbye, an EOF) arrived while no statement ran."""
        return self._connection is not None and self._has_input()

    def in_transaction(self) -> bool:
        connection = self._connection
        return connection is not None and bool(
            connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS
        )

    def alive(self) -> bool:
        connection = self._connection
        if connection is None or connection.closed:
            return False
        reader = getattr(connection, "_reader", None)
        if reader is not None and (reader.at_eof() or reader.exception() is not None):
            return False  # EOF, or a reset (e.g. after "packet bigger than max_allowed_packet")
        writer = getattr(connection, "_writer", None)
        return writer is None or not writer.transport.is_closing()

    @staticmethod
    def _literal(connection: aiomysql.Connection, index: int, value: Any) -> str:
        """One parameter as an SQL literal (what aiomysql would do, with bytes as binary)."""
        if isinstance(value, _BYTES_LIKE):
            return f"X'{bytes(value).hex()}'"  # binary, never re-encoded as text
        try:
            return str(connection.escape(value))
        except (pymysql.err.MySQLError, TypeError, ValueError) as exc:
            message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
            raise DatabaseError(f"mysql: parameter {index}: {message}") from None

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        query = sql
        if params:
            # Bound here, before anything is sent: a bad parameter leaves the link alone.
            query = translate(sql, params, "format") % _row_literals(connection, params)
        return await self._run(connection, query)

    async def _run(self, connection: aiomysql.Connection, query: str) -> Result:
        """One statement, parameters already in it, on this link."""
        try:
            cursor = self._cursor
            if cursor is None or cursor._connection is not connection:
                connection._ensure_alive()
                cursor = self._cursor = _QuietCursor(connection, False)
            try:
                await cursor.execute(query)
                description = cursor.description
                if description is None:
                    return status_result(cursor.rowcount)
                rows = await cursor.fetchall()
                return rows_result([d[0] for d in description], listify(rows))
            finally:
                # Read any further result sets now, as closing a cursor would: the link must
                # be idle between statements.
                while cursor._result is not None and cursor._result.has_next:
                    await cursor.nextset()
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            if code in _DISCONNECTS or not self.alive():  # only a link that is really gone
                connection.close()
                reason = message or "the server closed it"
                raise DatabaseError(f"mysql: connection lost: {reason}") from None
            raise DatabaseError(f"mysql: {message} (error {code})") from None
        except (OSError, RuntimeError) as exc:
            connection.close()
            raise DatabaseError(f"mysql: connection lost: {exc}") from None

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """aiomysql's batch path, done here so that parameters bind exactly as in `exec`: an
        `INSERT/REPLACE ... VALUES (...)` becomes multi-row INSERTs of up to
        `MAX_STATEMENT_CHARS`; any other statement runs once per row. More than one statement
        runs in a transaction (unless one is open): all rows or none (InnoDB)."""
        connection = self._connection
        if connection is None:
            raise DatabaseError("connection is closed")
        template = bind(sql, tuple(rows[0]), "format", (dt.timedelta,))
        statements = _batch_statements(connection, template, rows)
        if len(statements) == 1:
            return await self._run_status(connection, statements[0])
        own = not self.in_transaction()
        total = 0
        if own:
            await self._run_status(connection, "BEGIN")
        try:
            for statement in statements:
                total += await self._run_status(connection, statement)
        except BaseException:
            if own and self.alive():
                with contextlib.suppress(DatabaseError):
                    await self._run_status(connection, "ROLLBACK")
            raise
        if own:
            await self._run_status(connection, "COMMIT")
        return total

    async def _run_status(self, connection: aiomysql.Connection, query: str) -> int:
        """One statement that returns no rows: its affected-row count (one that returns
        rows is refused, `sql.changed_rows`)."""
        return changed_rows(await self._run(connection, query))

    def abort(self) -> None:
        connection, self._connection = self._connection, None
        self._cursor = None
        if connection is None:
            return
        writer = getattr(connection, "_writer", None)
        if writer is not None:  # now, unsent bytes and all, and without COM_QUIT
            writer.transport.abort()
        connection.close()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._cursor = None
        if connection is None:
            return
        try:
            await connection.ensure_closed()
        except Exception:
            connection.close()
