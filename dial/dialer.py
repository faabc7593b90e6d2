"""`Dial(address)`: parse, pick the transport, connect, and hand back a connection or None."""

from __future__ import annotations

import logging
from typing import Any

from .address import Address, parse, redact
from .buffer import MessageBuffer
from .connection import Connection
from .errors import DialError, remember
from .link import OnConnect
from .reactor import reactor
from .session import DEFAULT_ON_CONNECT_TIMEOUT, Session, describe_error
from .transports import load
from .transports.base import DatabaseBackend, StreamTransport

__all__ = ["DEFAULT_TIMEOUT", "Dial"]

log = logging.getLogger("dial")

DEFAULT_TIMEOUT = 10.0  # seconds allowed for the first connect when Dial() is given none
MAX_TIMEOUT = 86_400.0


def Dial(  # FMZ spells it with a capital D
    address: str | int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
    on_connect: OnConnect | None = None,
    on_connect_timeout: float = DEFAULT_ON_CONNECT_TIMEOUT,
) -> Any:
    """Connect to `address` and return a connection object, or None on failure.

    The reason for a None is logged on the `dial` logger and kept for `dial.last_error()`;
    with `raise_errors=True` a `DialError` carrying that reason is raised instead.
    An int is a database handle from `conn.fd()`, reusing that database connection.

    `on_connect(link)` runs after every successful (re)connect of a stream, after `payload`
    and before the connection is usable: a plain function runs in a thread and may block on
    `link.send()` / `link.recv(timeout)` (e.g. a login with a fresh timestamp); an exception,
    or running past `on_connect_timeout` seconds, fails that connect attempt.
    """
    try:
        hook = Hook.checked(on_connect, on_connect_timeout)
        connection = _dial(address, connect_timeout(timeout), raise_errors, hook)
    except Exception as exc:
        return dial_failed("Dial", address, exc, raise_errors)
    remember(None)
    return connection


def connect_timeout(timeout: object) -> float:
    """The first-connect timeout in seconds: DEFAULT_TIMEOUT for None, else validated."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise DialError(f"timeout must be a number of seconds, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT:  # also rejects nan
        raise DialError(f"timeout must be > 0 and <= {MAX_TIMEOUT:g} seconds, got {timeout:g}")
    return float(timeout)


class Hook:
    """The validated `on_connect` / `on_connect_timeout` pair, shared with `dial.aio`."""

    __slots__ = ("function", "timeout")

    def __init__(self, function: OnConnect | None, timeout: float) -> None:
        self.function = function
        self.timeout = timeout

    @classmethod
    def checked(cls, function: object, timeout: object) -> Hook:
        if function is not None and not callable(function):
            raise DialError(
                f"on_connect must be a function taking the link, not {type(function).__name__}"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise DialError(f"on_connect_timeout must be a number of seconds, got {timeout!r}")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise DialError(
                f"on_connect_timeout must be > 0 and <= {MAX_TIMEOUT:g} seconds, got {timeout:g}"
            )
        return cls(function, float(timeout))  # type: ignore[arg-type]

    def for_database(self, what: str) -> None:
        """Databases have no link to log in on: refuse a hook instead of ignoring it."""
        if self.function is not None:
            raise DialError(f"on_connect is for streaming connections; {what} is a database")

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
    """Log and remember why a dial failed (raise `DialError` under `raise_errors`)."""
    reason = describe_error(exc)
    log.warning("%s(%r) failed: %s", caller, _shown(address), reason)
    remember(reason)
    if raise_errors:
        raise DialError(reason) from None


def _shown(address: object) -> str:
    """The address as logs show it: credentials masked, very long ones cut."""
    if not isinstance(address, str):
        return repr(address)
    shown = redact(address)
    return shown if len(shown) <= 300 else f"{shown[:300]}... ({len(shown)} characters)"


def _dial(address: str | int, timeout: float, raise_errors: bool, hook: Hook) -> Any:
    if isinstance(address, int) and not isinstance(address, bool):
        from .database import reuse_handle

        hook.for_database("a database handle")
        return reuse_handle(address, raise_errors)
    parsed = parse(address)
    transport_class = load(parsed.scheme)
    if issubclass(transport_class, DatabaseBackend):
        from .database import open_database

        hook.for_database(f"{parsed.scheme}://")
        return open_database(transport_class(parsed), timeout, raise_errors)
    session = hook.session(parsed, transport_class(parsed))
    try:
        reactor.call(session.open(timeout), timeout + hook.budget + 5.0)
    except TimeoutError:
        reactor.submit(session.aclose())
        raise DialError(f"no connection within {timeout:g} s") from None
    connection = Connection(session)
    reactor.track(connection)
    return connection
