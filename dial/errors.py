"""Exceptions and the per-thread "last error" that `Dial` keeps when it returns `None`."""

from __future__ import annotations

import threading

__all__ = ["AddressError", "ConnectError", "DialError", "last_error"]


class DialError(Exception):
    """Any failure to dial or use a connection; the message is meant for the user."""


class AddressError(DialError, ValueError):
    """The address string cannot be understood (no I/O was attempted)."""


class ConnectError(DialError):
    """The address is fine but the peer could not be reached or refused us."""


class MissingDependency(DialError, ImportError):
    """A scheme's optional library is not installed."""


_state = threading.local()


def remember(reason: str | None) -> None:
    _state.reason = reason


def last_error() -> str | None:
    """The reason of the last failed `Dial` or `exec` in this thread, or None."""
    return getattr(_state, "reason", None)
