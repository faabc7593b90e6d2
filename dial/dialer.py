"""`Dial(address)`: parse, pick the transport, connect, and hand back a connection or None."""

from __future__ import annotations

import logging
from typing import Any

from .address import parse, redact
from .buffer import MessageBuffer
from .connection import Connection
from .errors import DialError, remember
from .reactor import reactor
from .session import Session, describe_error
from .transports import load
from .transports.base import DatabaseBackend

__all__ = ["DEFAULT_TIMEOUT", "Dial"]

log = logging.getLogger("dial")

DEFAULT_TIMEOUT = 10.0  # seconds allowed for the first connect when Dial() is given none
MAX_TIMEOUT = 86_400.0


def Dial(  # FMZ spells it with a capital D
    address: str | int,
    timeout: float | None = None,
    *,
    raise_errors: bool = False,
) -> Any:
    """Connect to `address` and return a connection object, or None on failure.

    The reason for a None is logged on the `dial` logger and kept for `dial.last_error()`;
    with `raise_errors=True` a `DialError` carrying that reason is raised instead.
    An int is a database handle from `conn.fd()`, reusing that database connection.
    """
    try:
        connection = _dial(address, connect_timeout(timeout), raise_errors)
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


def _dial(address: str | int, timeout: float, raise_errors: bool = False) -> Any:
    if isinstance(address, int) and not isinstance(address, bool):
        from .database import reuse_handle

        return reuse_handle(address, raise_errors)
    parsed = parse(address)
    transport_class = load(parsed.scheme)
    if issubclass(transport_class, DatabaseBackend):
        from .database import open_database

        return open_database(transport_class(parsed), timeout, raise_errors)
    transport = transport_class(parsed)
    session = Session(parsed, transport, MessageBuffer())
    try:
        reactor.call(session.open(timeout), timeout + 5.0)
    except TimeoutError:
        reactor.submit(session.aclose())
        raise DialError(f"no connection within {timeout:g} s") from None
    connection = Connection(session)
    reactor.track(connection)
    return connection
