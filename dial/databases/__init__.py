"""SQL databases behind `Dial`: sqlite3, mysql, postgres and clickhouse with one `exec`.

interfaces.py   DatabaseBackend: every hook a backend may offer, with its default
sql.py          `?` placeholders, parameter types, the two result shapes
shared.py       one driver connection, its private loop, reconnects, `fd()` handles
connection.py   the objects users hold: DatabaseConnection, AsyncDatabaseConnection
backends/       one module per database, imported only when its scheme is dialled
"""

from __future__ import annotations

from .connection import AsyncDatabaseConnection, DatabaseConnection, DatabaseStats
from .shared import release
from .sql import Result, translate_placeholders

__all__ = [
    "AsyncDatabaseConnection",
    "DatabaseConnection",
    "DatabaseStats",
    "Result",
    "release",
    "translate_placeholders",
]
