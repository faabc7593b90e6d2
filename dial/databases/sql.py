"""The SQL that is the same on every database: `?` placeholders rewritten for each driver,
the parameter types every driver binds, and the two result shapes `exec` returns."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..errors import ArgumentError

__all__ = [
    "PARAMETER_TYPES",
    "Result",
    "bind",
    "check_parameters",
    "listify",
    "rows_result",
    "status_result",
    "translate_placeholders",
]

#: What `exec` returns: `{"columns": [...], "values": [[...], ...]}` for rows, else
#: `{"columns": [], "values": [], "rowcount": n}`.
Result = dict[str, Any]


def rows_result(columns: list[str], values: list[list[Any]]) -> Result:
    """The shape of a row-returning statement (FMZ DBExec)."""
    return {"columns": columns, "values": values}


def status_result(rowcount: int | None) -> Result:
    """The shape of every other statement: no columns, no values, rows affected (>= 0)."""
    return {"columns": [], "values": [], "rowcount": rowcount if rowcount and rowcount > 0 else 0}


def listify(rows: Iterable[Iterable[Any]]) -> list[list[Any]]:
    """Driver rows (tuples, records) -> lists (runs inside a statement, GC paused)."""
    return list(map(list, rows))


# -- placeholders ---------------------------------------------------------------------------

# Things a `?` or `%` inside must not be touched in: quoted strings and identifiers, comments,
# PostgreSQL dollar quoting. Whatever remains is SQL text.
_SQL_TOKENS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'
    |"(?:[^"\\]|\\.|"")*"
    |`[^`]*`
    |--[^\n]*
    |/\*.*?\*/
    |\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$
    |(?P<mark>\?)
    |(?P<percent>%)""",
    re.S | re.X,
)


@lru_cache(maxsize=1024)
def translate_placeholders(sql: str, style: str) -> tuple[str, int]:
    """Rewrite the user's `?` placeholders for a driver; returns (sql, placeholder count).

    style: "qmark" (`?`, unchanged), "format" (`%s`, with `%` doubled), "numeric" (`$1`),
    "pyformat" (`%(p0)s`, with `%` doubled). `?` inside quotes or comments is left alone.
    """
    count = 0
    doubles_percent = style in ("format", "pyformat")

    def substitute(match: re.Match[str]) -> str:
        nonlocal count
        if match.group("mark"):
            count += 1
            if style == "format":
                return "%s"
            if style == "numeric":
                return f"${count}"
            if style == "pyformat":
                return f"%(p{count - 1})s"
            return "?"
        text = match.group(0)
        return text.replace("%", "%%") if doubles_percent else text

    return _SQL_TOKENS.sub(substitute, sql), count


# -- parameters -----------------------------------------------------------------------------

#: Parameter types every database binds (bytes-likes as binary values).
PARAMETER_TYPES: tuple[type, ...] = (
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    bytearray,
    memoryview,
    Decimal,
    dt.datetime,
    dt.date,
    dt.time,
)
_EXACT_PARAMETER_TYPES = frozenset(PARAMETER_TYPES)


def check_parameters(params: tuple[Any, ...], extra: tuple[type, ...] = ()) -> None:
    """A clear error for a parameter no driver would bind (instead of its repr stored as
    text, or a driver's internal TypeError)."""
    for index, value in enumerate(params, 1):
        if type(value) in _EXACT_PARAMETER_TYPES:
            continue
        if not isinstance(value, PARAMETER_TYPES + extra):
            raise ArgumentError(f"parameter {index}: unsupported type {type(value).__name__}")


def bind(sql: str, params: tuple[Any, ...], style: str, extra: tuple[type, ...] = ()) -> str:
    """Translate `sql` for a driver, check the parameter count and the parameter types
    (`PARAMETER_TYPES`, plus `extra` ones this driver binds too)."""
    translated, count = translate_placeholders(sql, style)
    if count != len(params):
        raise ArgumentError(
            f"statement has {count} placeholder{'s' if count != 1 else ''} (?) but "
            f"{len(params)} parameter{'s' if len(params) != 1 else ''} given"
        )
    check_parameters(params, extra)
    return translated
