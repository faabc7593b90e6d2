"""Pieces of broker targets (`user:pwd@host:port/path?name=value`) shared by the broker
transports. Pure string work, no I/O, every problem an `AddressError`."""

from __future__ import annotations

import os
from urllib.parse import unquote

from ..address import redact
from ..errors import AddressError

__all__ = ["BrokerTarget", "os_reason", "parse_bool", "parse_target"]


class BrokerTarget:
    """A broker target split into credentials, authority, path and query options."""

    __slots__ = ("authority", "password", "path", "query", "user")

    def __init__(
        self,
        authority: str,
        path: str,
        query: dict[str, str],
        user: str | None,
        password: str | None,
    ) -> None:
        self.authority = authority  # host:port, or a comma separated list of them
        self.path = path  # after the first "/" of the authority, percent-decoded
        self.query = query
        self.user = user
        self.password = password


def parse_target(scheme: str, target: str, known: frozenset[str]) -> BrokerTarget:
    """Split `target`; query names must be in `known`.

    Query values are percent-decoded but `+` stays a plus, and `#` is an ordinary character,
    so MQTT wildcards (`topic=a/+/b`, `topic=a/#`) need no escaping.
    """
    shown = f"{scheme}://{redact(target)}"
    base, _, query_text = target.partition("?")
    query: dict[str, str] = {}
    for item in query_text.split("&") if query_text else ():
        if not item:
            continue
        name, equals, value = item.partition("=")
        if not equals:
            raise AddressError(f"{shown}: query item {name!r} is not name=value")
        if name not in known:
            choices = ", ".join(sorted(known))
            raise AddressError(f"{shown}: unknown parameter {name!r}; known: {choices}")
        if name in query:
            raise AddressError(f"{shown}: parameter {name!r} given twice")
        value = unquote(value)
        if not value:
            raise AddressError(f"{shown}: parameter {name!r} is empty")
        query[name] = value
    authority, _, path = base.partition("/")
    user = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    if not authority:
        raise AddressError(f"{shown}: missing host")
    return BrokerTarget(authority, unquote(path), query, user, password)


def parse_bool(scheme: str, name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise AddressError(f"{scheme}:// parameter {name}={value!r}: expected true or false")


def os_reason(exc: BaseException) -> str:
    """ "Connection refused" rather than asyncio's "Connect call failed ('127.0.0.1', 1)"."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or exc.__class__.__name__
