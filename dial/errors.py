"""The exception tree, the one exception -> reason mapping, and the per-thread "last error".

Every failure a user can see goes through `describe_error` (one line, credentials masked), so
a reason reads the same in `last_error()`, in the `dial` log, in a raised `DialError` and in
the `dial` command's output. Under `raise_errors=True` the raised class says what went wrong:

    DialError                  any failure to dial or use a connection
    ├── AddressError           the address string cannot be understood (no I/O was attempted)
    ├── ArgumentError          another argument is unusable (a timeout, an SQL text, a parameter)
    ├── ConnectError           the address is fine but the peer could not be reached or refused
    ├── DatabaseError          a statement failed: refused by the database, link lost, timed out
    └── MissingDependency      the scheme's optional library is not installed
"""

from __future__ import annotations

import asyncio
import threading

__all__ = [
    "AddressError",
    "ArgumentError",
    "ConnectError",
    "DatabaseError",
    "DialError",
    "MissingDependency",
    "as_dial_error",
    "describe_error",
    "last_error",
]


class DialError(Exception):
    """Any failure to dial or use a connection; the message is meant for the user."""


class AddressError(DialError, ValueError):
    """The address string cannot be understood (no I/O was attempted)."""


class ArgumentError(DialError, ValueError):
    """An argument other than the address is unusable: a timeout, an SQL text, a parameter."""


class ConnectError(DialError):
    """The address is fine but the peer could not be reached or refused us."""


class DatabaseError(DialError):
    """A statement failed: the database refused it, the link broke, or it ran out of time."""


class MissingDependency(DialError, ImportError):
    """A scheme's optional library is not installed; the message names the pip extra."""


def describe_error(exc: BaseException) -> str:
    """A one-line, credential-free reason for logs, `last_error()` and raised errors."""
    from .address import redact  # address.py imports this module

    if isinstance(exc, DialError):
        return redact(str(exc))
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return redact(f"{exc.__class__.__name__}: {text}" if text != exc.__class__.__name__ else text)


def as_dial_error(exc: BaseException, default: type[DialError], reason: str) -> DialError:
    """The exception `raise_errors=True` raises for `exc`: a `DialError` keeps its class (so
    `except AddressError` works), anything else becomes `default`; the message is `reason`."""
    kind = type(exc) if isinstance(exc, DialError) else default
    try:
        return kind(reason)
    except TypeError:  # a subclass with another constructor
        return default(reason)


_state = threading.local()


def remember(reason: str | None) -> None:
    _state.reason = reason


def last_error() -> str | None:
    """The reason of the last failed `Dial` or `exec` in this thread, or None."""
    reason: str | None = getattr(_state, "reason", None)
    return reason
