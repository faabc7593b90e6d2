"""dialkit: `Dial(address)` turns an FMZ-style address string into a live connection.

from dial import Dial
ws = Dial("wss://host/ws|compress=gzip&reconnect=true&payload=...")
while True:
    message = ws.read()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Dial", "DialError", "Link", "__version__", "last_error", "wait"]

if TYPE_CHECKING:
    from .dialer import Dial
    from .errors import DialError, last_error
    from .link import Link
    from .select import wait


def __getattr__(name: str) -> Any:
    # Lazy, so `import dial` costs nothing until something is dialled.
    if name == "Dial":
        from .dialer import Dial

        return Dial
    if name in ("DialError", "last_error"):
        from . import errors

        return getattr(errors, name)
    if name == "Link":
        from .link import Link

        return Link
    if name == "wait":
        from .select import wait

        return wait
    if name in ("aio", "tracking"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'dial' has no attribute {name!r}")
