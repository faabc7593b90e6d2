"""FMZ custom-protocol plugins: an HTTP server the FMZ docker POSTs to, and exchange adapters.

```python
from dial.plugin import Exchange, PluginServer, Reply
from dial.plugin.okx import Okx
```
The server needs aiohttp (`pip install 'dialkit[plugin]'`). Names are imported lazily so that
`dial.plugin.cli` (the `dial plugin ...` commands) loads without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dial.plugin.exchange import (
        Call,
        Exchange,
        NotSupported,
        PluginError,
        Reply,
        Symbol,
        UpstreamError,
    )
    from dial.plugin.server import PluginServer

__all__ = [
    "Call",
    "Exchange",
    "NotSupported",
    "PluginError",
    "PluginServer",
    "Reply",
    "Symbol",
    "UpstreamError",
]

_WHERE = {name: "dial.plugin.exchange" for name in __all__} | {"PluginServer": "dial.plugin.server"}


def require_aiohttp() -> None:
    """Raise `MissingDependency` naming the pip extra when aiohttp is absent."""
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        from dial.errors import MissingDependency

        raise MissingDependency(
            "the FMZ plugin server needs aiohttp: pip install 'dialkit[plugin]'"
        ) from exc


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dial.plugin' has no attribute {name!r}")
    require_aiohttp()
    return getattr(importlib.import_module(_WHERE[name]), name)
