"""`clickhouse://` in three forms:

    clickhouse://tcp://host:9000?username=u&password=p&database=d    native protocol (FMZ's form)
    clickhouse://http://host:8123?username=u&password=p&database=d   HTTP (https:// for TLS)
    clickhouse://chdb://[/data/dir]?database=d                       in-process chDB engine

The native form uses clickhouse-driver, the others clickhouse-connect. Both clients are
blocking: a statement runs in the caller's thread; connecting, closing and statements with a
timeout run on the connection's own worker thread, which the loop awaits.
`?` placeholders are bound client-side. `INSERT ... VALUES (?, ?), ...` whose values are all
placeholders is sent as a native data block (fast, and typed by the column). Servers older than
19.x hang on an inline `INSERT ... VALUES (literal, ...)` over the native protocol, so there it
is rewritten to the equivalent `INSERT ... SELECT ... UNION ALL SELECT ...`. `exec_many` with
`INSERT ... VALUES (?, ...)` sends the rows as one block (clickhouse-driver's `execute` with a
row list, clickhouse-connect's `insert`): no transactions, so not atomic beyond what one block
is for the table engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import math
import re
import socket
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from struct import error as struct_error
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import clickhouse_connect
import clickhouse_driver
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.summary import QuerySummary
from clickhouse_driver import errors as driver_errors
from urllib3 import Timeout as HttpTimeout

from ...address import Address, redact
from ...errors import AddressError, ArgumentError, ConnectError, DatabaseError, DialError
from ..interfaces import DatabaseBackend
from ..sql import (
    BATCH_RETURNS_ROWS,
    Result,
    bind,
    changed_rows,
    listify,
    rows_result,
    status_result,
)

__all__ = ["ClickhouseBackend", "parse_clickhouse_target"]

DEFAULT_PORTS = {"tcp": 9000, "http": 8123, "https": 8443}
PARAMETERS = frozenset(
    {
        "username",
        "user",
        "password",
        "database",
        "dial_timeout",
        "read_timeout",
        "secure",
        "skip_verify",
    }
)
ROW_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN"})

_FORM = re.compile(r"^(tcp|https?|chdb)://(.*)$", re.I | re.S)
_INSERT_VALUES = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<head>.+?)\s*\bVALUES\b\s*(?P<rows>\(.*\))\s*;?\s*$", re.I | re.S
)
_PLACEHOLDER_ROWS = re.compile(r"\(\?(?:,\?)*\)(?:,\(\?(?:,\?)*\))*")
_TABLE_AND_COLUMNS = re.compile(r"^(?P<table>[^\s(]+)\s*(?:\((?P<columns>[^()]*)\))?$", re.S)
_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/|\()*", re.S)
_TRUE = ("1", "true", "yes", "on")
_DRIVER_SLACK = 0.5  # seconds the drivers' connect timeouts exceed the Dial timeout
#: Parameter types the ClickHouse clients bind besides the common ones.
EXTRA_PARAMETER_TYPES: tuple[type, ...] = (
    list,
    tuple,
    dict,
    uuid.UUID,
    dt.timedelta,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
)

# clickhouse-driver logs a traceback for every failed connect attempt; Dial reports the
# reason itself, so keep that out of a program that configured no logging.
logging.getLogger("clickhouse_driver").addHandler(logging.NullHandler())


def parse_clickhouse_target(target: str) -> dict[str, Any]:
    """{"kind": tcp|http|https|chdb, host, port, user, password, database, ...}."""
    match = _FORM.match(target.strip())
    if not match:
        raise AddressError(
            f"clickhouse://{redact(target)}: expected tcp://host:9000 (native protocol), "
            "http(s)://host:8123 or chdb:// after clickhouse://"
        )
    kind, rest = match.group(1).lower(), match.group(2)
    try:
        parts = urlsplit(f"{kind}://{rest}")
        port = parts.port
    except ValueError as exc:
        raise AddressError(f"clickhouse://{redact(target)}: bad host or port ({exc})") from None
    settings: dict[str, Any] = {"kind": kind}
    if kind == "chdb":
        settings["path"] = unquote(parts.netloc + parts.path) or None
    else:
        if not parts.hostname:
            raise AddressError(f"clickhouse://{redact(target)}: missing host")
        settings["host"] = parts.hostname
        settings["port"] = port or DEFAULT_PORTS[kind]
    if parts.username:
        settings["user"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = unquote(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in PARAMETERS:
            raise AddressError(
                f"clickhouse://: unsupported parameter {name!r}; supported: "
                f"{', '.join(sorted(PARAMETERS))}"
            )
        if name in ("username", "user"):
            settings["user"] = value
        elif name in ("dial_timeout", "read_timeout"):
            try:
                settings[name] = float(value.rstrip("s"))
            except ValueError:
                raise AddressError(f"clickhouse://: {name}={value!r}; expected seconds") from None
        elif name in ("secure", "skip_verify"):
            settings[name] = value.lower() in _TRUE
        elif value:
            settings[name] = value
    return settings


def _short(exc: BaseException) -> str:
    """The first meaningful line of a ClickHouse error, without stack trace or version."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = re.split(r"\.?\s*Stack trace|\s*\(version \d", text, maxsplit=1)[0]
    text = re.sub(r"^(Code: \d+\.\s*)?(DB::Exception:\s*)?", "", text.strip())
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


def _statement_error(exc: Exception) -> Exception:
    """A driver exception -> DialError with a one-line reason (others pass through)."""
    if isinstance(exc, DialError | TimeoutError):
        return exc
    if isinstance(exc, driver_errors.NetworkError | driver_errors.SocketTimeoutError | EOFError):
        return DatabaseError(f"clickhouse: connection lost: {_short(exc)}")
    if isinstance(exc, driver_errors.ServerException):
        return DatabaseError(f"clickhouse: {_short(exc)} (code {exc.code})")
    if isinstance(exc, driver_errors.Error | ClickHouseError | OSError):
        return DatabaseError(f"clickhouse: {_short(exc)}")
    if isinstance(exc, TypeError | ValueError | AttributeError | KeyError | struct_error):
        # clickhouse-driver packs parameters by column type and complains this way.
        return DatabaseError(f"clickhouse: bad parameter for this statement: {exc}")
    return exc


@lru_cache(maxsize=256)
def _placeholder_insert(sql: str) -> tuple[str, str, int] | None:
    """For `INSERT INTO head VALUES (?, ?), ...` whose values are all placeholders: (head,
    the statement clickhouse-driver takes with a row list, placeholders per row); else None.
    Cached: a program writes the same few statements over and over."""
    insert = _INSERT_VALUES.match(sql)
    if insert is None or not _PLACEHOLDER_ROWS.fullmatch("".join(insert.group("rows").split())):
        return None
    head = insert.group("head")
    width = insert.group("rows").split(")", 1)[0].count("?")
    return head, f"INSERT INTO {head} VALUES", width


def _unquote(name: str) -> str:
    name = name.strip()
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] and name[0] in '`"' else name


def _nothing() -> None:
    return None


def _returns_rows(sql: str) -> bool:
    head = _LEADING_NOISE.sub("", sql, count=1)
    return head[:9].split(None, 1)[0].upper() in ROW_KEYWORDS if head.strip() else False


def _split_tuples(rows: str) -> list[str] | None:
    """`(1, 'a'), (2, 'b')` -> ["1, 'a'", "2, 'b'"]; None when it is not such a list."""
    tuples: list[str] = []
    depth, start, quote, escaped = 0, 0, "", False
    expect_open = True
    for index, char in enumerate(rows):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
            continue
        if depth == 0:
            if char.isspace():
                continue
            if char == "(" and expect_open:
                depth, start, expect_open = 1, index + 1, False
            elif char == "," and not expect_open:
                expect_open = True
            elif char == ";" and not expect_open and not rows[index + 1 :].strip():
                break
            else:
                return None
            continue
        if char in "'\"`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                tuples.append(rows[start:index])
    return tuples if tuples and depth == 0 and not expect_open and not quote else None


class ClickhouseBackend(DatabaseBackend):
    runs_blocking = True  # both clients are blocking: statements run in the caller's thread

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        self.settings = parse_clickhouse_target(address.target)
        self.kind = self.settings["kind"]
        self._client: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._connecting: Any = None  # the native client while its handshake runs

    @property
    def where(self) -> str:
        if self.kind == "chdb":
            return f"clickhouse chdb {self.settings.get('path') or ':memory:'}"
        return f"clickhouse {self.settings['host']}:{self.settings['port']}"

    # -- lifecycle (reactor thread; the work happens on this connection's worker) -----------

    async def _in_worker(self, function: Any, *args: Any) -> Any:
        if self._executor is None:
            raise DatabaseError("connection is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def connect(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dial-clickhouse")
        try:
            self._client = await self._in_worker(self._connect_blocking)
        except (driver_errors.SocketTimeoutError, TimeoutError):
            raise ConnectError(f"{self.where}: the server did not answer in time") from None
        except (driver_errors.Error, ClickHouseError, OSError, EOFError) as exc:
            raise ConnectError(f"{self.where}: {_short(exc)}") from None

    def _connect_blocking(self) -> Any:
        s = self.settings
        connect_timeout = s.get("dial_timeout", 10.0)
        read_timeout = s.get("read_timeout", 300.0)
        handshake_timeout = read_timeout
        if self.dial_timeout is not None:
            # Bounded by the Dial timeout, with a little slack so that Dial's own timeout
            # (the clearer reason) fires first; close() then wakes or awaits the worker.
            limit = self.dial_timeout + _DRIVER_SLACK
            connect_timeout = min(connect_timeout, limit)
            handshake_timeout = min(read_timeout, limit)
        if self.kind == "tcp":
            client = clickhouse_driver.Client(
                s["host"],
                s["port"],
                database=s.get("database", "default"),
                user=s.get("user", "default"),
                password=s.get("password", ""),
                connect_timeout=connect_timeout,
                send_receive_timeout=handshake_timeout,
                secure=s.get("secure", False),
                verify=not s.get("skip_verify", False),
            )
            self._connecting = client
            try:
                client.connection.connect()  # fail in Dial, not at the first exec
            except BaseException:
                client.disconnect()
                raise
            finally:
                self._connecting = None
            connection = client.connection
            connection.send_receive_timeout = read_timeout  # statements: the address's
            if connection.socket is not None:
                connection.socket.settimeout(read_timeout)
            return client
        if self.kind == "chdb":
            return clickhouse_connect.get_client(
                interface="chdb", path=s.get("path"), database=s.get("database")
            )
        client = clickhouse_connect.get_client(
            host=s["host"],
            port=s["port"],
            username=s.get("user", "default"),
            password=s.get("password", ""),
            database=s.get("database"),
            interface=self.kind,
            secure=self.kind == "https",
            verify=not s.get("skip_verify", False),
            # clickhouse-connect truncates both to whole seconds (0 would mean "invalid")
            connect_timeout=max(math.ceil(connect_timeout), 1),
            send_receive_timeout=max(math.ceil(handshake_timeout), 1),
        )
        backend = getattr(client, "_backend", None)
        if backend is not None and hasattr(backend, "timeout"):
            backend.timeout = HttpTimeout(connect=connect_timeout, read=read_timeout)
        return client

    def _abort_connect(self) -> None:
        """Wake a native handshake blocked on a silent peer (its worker then ends at once)."""
        client = self._connecting
        sock = getattr(getattr(client, "connection", None), "socket", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        blocking = self._native if self.kind == "tcp" else self._connect_client
        try:
            result: Result = await self._in_worker(blocking, sql, params)
        except Exception as exc:
            raise _statement_error(exc) from None
        return result

    def execute_blocking(self, sql: str, params: tuple[Any, ...]) -> Result:
        """The same, right in the caller's thread: both clients are blocking and may be used
        from any thread, one at a time (`dial.databases.shared` holds the connection's lock), so a
        trip to the worker would only add two thread wake-ups."""
        blocking = self._native if self.kind == "tcp" else self._connect_client
        try:
            return blocking(sql, params)
        except Exception as exc:
            raise _statement_error(exc) from None

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        try:
            count: int = await self._in_worker(self._many, sql, rows)
        except Exception as exc:
            raise _statement_error(exc) from None
        return count

    def execute_many_blocking(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """The batch in the caller's thread (see `execute_blocking`)."""
        try:
            return self._many(sql, rows)
        except Exception as exc:
            raise _statement_error(exc) from None

    def _many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """`INSERT ... VALUES (?, ...)` as one block, the clients' own batch insert (typed by
        the table's columns); any other statement once per row."""
        client = self._client
        if client is None:
            raise DatabaseError("connection is closed")
        bind(sql, tuple(rows[0]), "pyformat", EXTRA_PARAMETER_TYPES)
        if _returns_rows(sql):
            raise ArgumentError(BATCH_RETURNS_ROWS)
        plan = _placeholder_insert(sql)
        if plan is not None and plan[2] == len(rows[0]):
            head = plan[0]
            if self.kind == "tcp":
                written: int = client.execute(plan[1], rows)
                return written
            target = _TABLE_AND_COLUMNS.match(head)
            if target:
                columns = target.group("columns")
                names = [_unquote(name) for name in columns.split(",")] if columns else "*"
                summary = client.insert(target.group("table"), rows, column_names=names)
                return int(summary.written_rows)
        run = self._native if self.kind == "tcp" else self._connect_client
        return sum(changed_rows(run(sql, tuple(row))) for row in rows)

    async def close(self) -> None:
        client, self._client = self._client, None
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._abort_connect()
        closer = (
            (client.disconnect if self.kind == "tcp" else client.close)
            if client is not None
            else _nothing
        )
        # The worker runs one call at a time: once `closer` ran, a connect still in flight
        # (bounded by the Dial timeout) has ended too, so no thread or socket outlives close.
        limit = 5.0 if self.dial_timeout is None else self.dial_timeout + 2.0
        idle = False
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(executor, closer), limit
            )
            idle = True
        except Exception:
            pass
        executor.shutdown(wait=idle)  # an idle worker exits at once: wait for it to be gone

    # -- worker thread ----------------------------------------------------------------------

    def _native(self, sql: str, params: tuple[Any, ...]) -> Result:
        client = self._client
        if client is None:
            raise DatabaseError("connection is closed")
        query = sql
        if params:
            query = bind(sql, params, "pyformat", EXTRA_PARAMETER_TYPES)
            plan = _placeholder_insert(sql)
            if plan is not None:
                _, statement, width = plan
                data = [params[i : i + width] for i in range(0, len(params), width)]
                return status_result(client.execute(statement, data))
            values = {f"p{i}": value for i, value in enumerate(params)}
            query = client.substitute_params(query, values, client.connection.context)
        known_rows = None
        server = client.connection.server_info
        if server is not None and server.version_major < 19:
            insert = _INSERT_VALUES.match(query)
            tuples = _split_tuples(insert.group("rows")) if insert else None
            if insert and tuples:
                selects = " UNION ALL ".join(f"SELECT {row}" for row in tuples)
                query = f"INSERT INTO {insert.group('head')} {selects}"
                known_rows = len(tuples)
        # Columnar: the driver then builds no tuple per row, and zip() reuses its one tuple.
        data, columns = client.execute(query, with_column_types=True, columnar=True)
        if columns:
            return rows_result([c[0] for c in columns], listify(zip(*data, strict=True)))
        if known_rows is None:
            last = client.last_query
            known_rows = last.progress.written_rows if last is not None else 0
        return status_result(known_rows)

    def _connect_client(self, sql: str, params: tuple[Any, ...]) -> Result:
        client = self._client
        if client is None:
            raise DatabaseError("connection is closed")
        query, values = sql, None
        if params:
            query = bind(sql, params, "pyformat", EXTRA_PARAMETER_TYPES)
            values = {f"p{i}": value for i, value in enumerate(params)}
        if _returns_rows(sql):
            result = client.query(query, parameters=values)
            columns = list(result.column_names)
            if not columns:  # an empty result carries no header; ask for it
                described = client.query(f"DESCRIBE TABLE ({query})", parameters=values)
                columns = [row[0] for row in described.result_rows]
            return rows_result(columns, listify(result.result_rows))
        summary = client.command(query, parameters=values)
        written = summary.written_rows if isinstance(summary, QuerySummary) else 0
        if not written:
            insert = _INSERT_VALUES.match(sql)
            tuples = _split_tuples(insert.group("rows")) if insert else None
            written = len(tuples) if tuples else 0
        return status_result(written)
