"""dialkit: `Dial(address)` turns an FMZ-style address string into a live connection.

    from dial import Dial, last_error

    ws = Dial("wss://host/ws|compress=gzip&reconnect=true&payload=...")
    if not ws:
        raise SystemExit(last_error())
    while True:
        message = ws.read()          # blocks; read(ms) waits at most ms milliseconds

`help(dial.Dial)` describes addresses, options and units. `dial.stream()` and
`dial.database()` are `Dial` typed for one kind of connection; `dial.aio` is the asyncio API.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AddressError",
    "ArgumentError",
    "ConnectError",
    "Connection",
    "DatabaseConnection",
    "DatabaseError",
    "Dial",
    "DialError",
    "Link",
    "MissingDependency",
    "Stats",
    "__version__",
    "database",
    "last_error",
    "pipe",
    "stream",
    "wait",
]

# A library does not print: a program that configured no logging sees failures only where it
# asks for them (None and last_error(), or raise_errors=True), not a second time on stderr.
logging.getLogger("dial").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .connection import Connection, Stats
    from .databases.connection import DatabaseConnection
    from .dialer import Dial, database, stream
    from .errors import (
        AddressError,
        ArgumentError,
        ConnectError,
        DatabaseError,
        DialError,
        MissingDependency,
        last_error,
    )
    from .link import Link
    from .pipes import pipe
    from .select import wait

# name -> module that defines it; imported on first use, so `import dial` costs nothing.
_LAZY = {
    "Dial": "dialer",
    "stream": "dialer",
    "database": "dialer",
    "Connection": "connection",
    "Stats": "connection",
    "DatabaseConnection": "databases.connection",
    "AddressError": "errors",
    "ArgumentError": "errors",
    "ConnectError": "errors",
    "DatabaseError": "errors",
    "DialError": "errors",
    "MissingDependency": "errors",
    "last_error": "errors",
    "Link": "link",
    "wait": "select",
    "pipe": "pipes",
}


def __getattr__(name: str) -> Any:
    import importlib

    module = _LAZY.get(name)
    if module is not None:
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    if name in ("aio", "tracking", "databases", "fmz"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dial' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
