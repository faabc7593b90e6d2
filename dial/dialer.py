"""`Dial(address)`: parse, ask the registry what the address is, connect, and hand back a
connection or None. `dial.aio.dial` takes the same steps through `resolve` and `dial_failed`,
so both accept, refuse and report the same things."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, cast, overload

from .address import Address, parse, redact
from .buffer import MessageBuffer
from .errors import ArgumentError, ConnectError, as_dial_error, describe_error, remember
from .link import OnConnect
from .reactor import reactor
from .registry import Kind, lookup, transport_for
from .session import DEFAULT_ON_CONNECT_TIMEOUT, Session
from .validation import DEFAULT_DIAL_TIMEOUT, MAX_DIAL_TIMEOUT, connect_seconds, dial_timeout

if TYPE_CHECKING:
    from .connection import Connection
    from .databases.connection import DatabaseConnection
    from .transports.base import StreamTransport

__all__ = ["DEFAULT_TIMEOUT", "MAX_TIMEOUT", "Dial", "database", "stream"]

log = logging.getLogger("dial")

DEFAULT_TIMEOUT = DEFAULT_DIAL_TIMEOUT
MAX_TIMEOUT = MAX_DIAL_TIMEOUT

#: Opens a database connection given the Dial timeout (blocking): what `resolve` returns
#: for a database address or handle.
DatabaseOpener = Callable[[float], "DatabaseConnection"]


@overload
def Dial(
    address: int,
    timeout: float | None = None,
    *,
    raise_errors: Literal[True],
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> DatabaseConnection: ...
@overload
def Dial(
    address: int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> DatabaseConnection | None: ...
@overload
def Dial(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: Literal[True],
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection | DatabaseConnection: ...
@overload
def Dial(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection | DatabaseConnection | None: ...


def Dial(  # FMZ spells it with a capital D
    address: str | int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection | DatabaseConnection | None:
    """Connect to `address`; return a connection object, or None on failure.

    Address::

        scheme://target[|option=value&option=value...]    ('||' when a value holds '|')

        wss://host/path|compress=gzip&reconnect=true&payload={"sub":"..."}
        tcp://host:port   tls://host:port   udp://host:port   unix:///path.sock
        mqtt://host:1883?topic=T   nats://host:4222?topic=S   kafka://host:9092/TOPIC
        amqp://user:pwd@host:5672/?queue=Q
        sqlite3://file.db   mysql://user:pwd@tcp(host:3306)/db
        postgres://user=u dbname=d host=h port=5432   clickhouse://tcp://host:9000?...

    Stream options after '|': compress=gzip|gzip_raw|deflate|zlib, mode=recv|send|dual,
    reconnect=true, interval=MS (milliseconds between reconnect attempts, default 1000),
    payload=TEXT (sent after every connect), proxy=socks5://user:pwd@host:port,
    verify=false, enableCompression=true, ping=S, pong=S, idle=S (seconds),
    engine=websockets|picows (ws/wss; default: picows when the [fast] extra is installed).

    `timeout`: seconds for the first connect (default 10, at most 600; note `read()` counts
    in milliseconds, `Dial` in seconds). An int `address` is a database handle from
    `conn.fd()`, reusing that database connection.

    Returns a `Connection` (streams: `read(ms)`, `read_many(max, ms)`, `for message in
    conn`, `write(data)`, `close()`) or a `DatabaseConnection` (databases: `exec(sql,
    *params)`, `fd()`, `close()`). `dial.stream()` and `dial.database()` return just the one
    type, for type checkers.

    On failure the reason is logged on the `dial` logger and kept for `dial.last_error()`;
    with `raise_errors=True` the matching `DialError` subclass (`AddressError`,
    `ConnectError`, `ArgumentError`, `MissingDependency`) is raised instead.

    `on_connect(link)` runs after every successful (re)connect of a stream, after `payload`
    and before the connection is usable: a plain function runs in a thread and may block on
    `link.send()` / `link.recv(timeout)` (e.g. a login with a fresh timestamp); an exception,
    or running past `on_connect_timeout` seconds, fails that connect attempt.

    Example::

        ws = Dial("wss://stream.binance.com:9443/ws/btcusdt@ticker|reconnect=true", 10)
        if not ws:
            raise SystemExit(dial.last_error())
        print(ws.read(5000))   # one message, waiting up to 5000 ms
    """
    return _dial_blocking("Dial", address, timeout, raise_errors, on_connect, on_connect_timeout)


@overload
def stream(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: Literal[True],
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection: ...
@overload
def stream(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection | None: ...


def stream(
    address: str,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Connection | None:
    """`Dial` for a streaming address (ws, tcp, mqtt, kafka, ...), typed as `Connection`;
    a database address fails with a reason saying so."""
    connection = _dial_blocking(
        "stream", address, timeout, raise_errors, on_connect, on_connect_timeout, "stream"
    )
    return cast("Connection | None", connection)  # resolve() refused a database


@overload
def database(
    address: str | int, timeout: float | None = None, *, raise_errors: Literal[True]
) -> DatabaseConnection: ...
@overload
def database(
    address: str | int, timeout: float | None = None, *, raise_errors: bool = False
) -> DatabaseConnection | None: ...


def database(
    address: str | int, timeout: float | None = None, *, raise_errors: bool = False
) -> DatabaseConnection | None:
    """`Dial` for a database address or `fd()` handle, typed as `DatabaseConnection`; a
    streaming address fails with a reason saying so."""
    connection = _dial_blocking(
        "database", address, timeout, raise_errors, None, DEFAULT_ON_CONNECT_TIMEOUT, "database"
    )
    return cast("DatabaseConnection | None", connection)  # resolve() refused a stream


def _dial_blocking(
    caller: str,
    address: str | int,
    timeout: object,
    raise_errors: bool,
    on_connect: object,
    on_connect_timeout: object,
    want: Kind | None = None,
) -> Connection | DatabaseConnection | None:
    try:
        hook = Hook.checked(on_connect, on_connect_timeout)
        seconds = dial_timeout(timeout)
        target = resolve(address, raise_errors, hook, want)
        if isinstance(target, Session):
            connection: Connection | DatabaseConnection = _open_stream(target, seconds, hook)
        else:
            connection = target(seconds)
    except Exception as exc:
        dial_failed(caller, address, exc, raise_errors)
        return None
    remember(None)
    return connection


def _open_stream(session: Session, timeout: float, hook: Hook) -> Connection:
    from .connection import Connection

    try:
        reactor.call(session.open(timeout), timeout + hook.budget + 5.0)
    except TimeoutError:
        reactor.submit(session.aclose())
        raise ConnectError(f"no connection within {timeout:g} s") from None
    connection = Connection(session)
    reactor.track(connection)
    return connection


def resolve(
    address: str | int, raise_errors: bool, hook: Hook, want: Kind | None = None
) -> Session | DatabaseOpener:
    """Everything decided before any I/O, for `Dial` and `dial.aio.dial` alike: a `Session`
    (not yet opened) for a stream, or a function that opens the database."""
    if isinstance(address, int) and not isinstance(address, bool):
        _expect(want, "database", "a database handle")
        hook.for_database("a database handle")
        from .databases.connection import reuse_handle

        return lambda _timeout: reuse_handle(address, raise_errors)
    parsed = parse(address)
    scheme = lookup(parsed.scheme)
    _expect(want, scheme.kind, f"{parsed.scheme}://")
    if scheme.kind == "database":
        hook.for_database(f"{parsed.scheme}://")
        from .databases.connection import open_database

        backend = scheme.backend()(parsed)
        return functools.partial(open_database, backend, raise_errors=raise_errors)
    return hook.session(parsed, transport_for(parsed)(parsed))


def _expect(want: Kind | None, kind: Kind, what: str) -> None:
    if want is None or want == kind:
        return
    if kind == "database":
        raise ArgumentError(f"{what} is a database: use dial.database() (or Dial) and exec()")
    raise ArgumentError(f"{what} is a stream: use dial.stream() (or Dial), read() and write()")


class Hook:
    """The validated `on_connect` / `on_connect_timeout` pair, shared with `dial.aio`."""

    __slots__ = ("function", "timeout")

    def __init__(self, function: OnConnect | None, timeout: float) -> None:
        self.function = function
        self.timeout = timeout

    @classmethod
    def checked(cls, function: object, timeout: object) -> Hook:
        if function is not None and not callable(function):
            raise ArgumentError(
                f"on_connect must be a function taking the link, not {type(function).__name__}"
            )
        seconds = connect_seconds(timeout, "on_connect_timeout")
        return cls(cast("OnConnect | None", function), seconds)

    def for_database(self, what: str) -> None:
        """Databases have no link to log in on: refuse a hook instead of ignoring it."""
        if self.function is not None:
            raise ArgumentError(f"on_connect is for streaming connections; {what} is a database")

    def session(self, parsed: Address, transport: StreamTransport) -> Session:
        return Session(
            parsed,
            transport,
            MessageBuffer(),
            on_connect=self.function,
            on_connect_timeout=self.timeout,
        )

    @property
    def budget(self) -> float:
        """Seconds the hook may add to the first connect."""
        return self.timeout if self.function is not None else 0.0


def dial_failed(caller: str, address: object, exc: Exception, raise_errors: bool) -> None:
    """Log and remember why a dial failed; under `raise_errors` raise the matching
    `DialError` subclass (anything that is not a `DialError` counts as a `ConnectError`)."""
    reason = describe_error(exc)
    log.warning("%s(%r) failed: %s", caller, _shown(address), reason)
    remember(reason)
    if raise_errors:
        raise as_dial_error(exc, ConnectError, reason) from None


def _shown(address: object) -> str:
    """The address as logs show it: credentials masked, very long ones cut."""
    if not isinstance(address, str):
        return repr(address)
    shown = redact(address)
    return shown if len(shown) <= 300 else f"{shown[:300]}... ({len(shown)} characters)"
