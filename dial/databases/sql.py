"""The SQL that is the same on every database: `?` placeholders rewritten for each driver,
the parameter types every driver binds, and the two result shapes `exec` returns."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ..errors import ArgumentError

__all__ = [
    "BATCH_RETURNS_ROWS",
    "PARAMETER_TYPES",
    "Result",
    "bind",
    "changed_rows",
    "check_parameters",
    "listify",
    "parameter_rows",
    "plain_parameters",
    "rows_result",
    "status_result",
    "translate",
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


#: Why `exec_many` refuses a statement that returns rows: the same words on every database.
BATCH_RETURNS_ROWS = (
    "exec_many() runs a statement that changes rows (INSERT, UPDATE, DELETE, REPLACE) once "
    "per row; this one returns rows: use exec() for it"
)


def changed_rows(result: Result) -> int:
    """The rows one run of an `exec_many` statement changed; refuses a row-returning one
    (its result has no rowcount)."""
    try:
        count: int = result["rowcount"]
    except KeyError:
        raise ArgumentError(BATCH_RETURNS_ROWS) from None
    return count


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


def plain_parameters(params: tuple[Any, ...]) -> bool:
    """True when every parameter is exactly one of `PARAMETER_TYPES` (no subclass): the
    common case, answered in one pass at C speed."""
    return _EXACT_PARAMETER_TYPES.issuperset(map(type, params))


def check_parameters(params: tuple[Any, ...], extra: tuple[type, ...] = ()) -> None:
    """A clear error for a parameter no driver would bind (instead of its repr stored as
    text, or a driver's internal TypeError)."""
    if _EXACT_PARAMETER_TYPES.issuperset(map(type, params)):
        return
    for index, value in enumerate(params, 1):
        if type(value) in _EXACT_PARAMETER_TYPES:
            continue
        if not isinstance(value, PARAMETER_TYPES + extra):
            raise ArgumentError(f"parameter {index}: unsupported type {type(value).__name__}")


def translate(sql: str, params: tuple[Any, ...], style: str) -> str:
    """`sql` for a driver (`translate_placeholders`, cached), refused unless it has one
    placeholder per parameter."""
    translated, count = translate_placeholders(sql, style)
    if count != len(params):
        raise ArgumentError(
            f"statement has {count} placeholder{'s' if count != 1 else ''} (?) but "
            f"{len(params)} parameter{'s' if len(params) != 1 else ''} given"
        )
    return translated


def bind(sql: str, params: tuple[Any, ...], style: str, extra: tuple[type, ...] = ()) -> str:
    """Translate `sql` for a driver, check the parameter count and the parameter types
    (`PARAMETER_TYPES`, plus `extra` ones this driver binds too)."""
    translated = translate(sql, params, style)
    check_parameters(params, extra)
    return translated


# -- batches --------------------------------------------------------------------------------

_NOT_ROWS = (str, bytes, bytearray, memoryview, Mapping)


def _row_lengths(batch: list[Any]) -> list[int]:
    """The length of every row, refusing a row that is no parameter sequence. The usual
    batch (all tuples, all lists, or both) takes two passes at C speed; the check per row
    only runs for anything else."""
    kinds = list(map(type, batch))
    plain = kinds.count(tuple)
    if plain != len(kinds) and plain + kinds.count(list) != len(kinds):
        for index, row in enumerate(batch, 1):
            if isinstance(row, _NOT_ROWS) or not isinstance(row, Sequence):
                raise ArgumentError(
                    f"exec_many(): row {index} is a {type(row).__name__}, not a sequence "
                    "of parameters (a tuple or list)"
                )
    return list(map(len, batch))


def parameter_rows(rows: object) -> list[Sequence[Any]]:
    """The rows of an `exec_many`, checked before anything is sent: an iterable of
    parameter sequences (tuples, lists...), all of one length. A list of tuples or lists is
    used as it is (no copy); anything else iterable is read into a list once."""
    if isinstance(rows, _NOT_ROWS) or not isinstance(rows, Iterable):
        raise ArgumentError(
            "exec_many() takes the rows as an iterable of parameter sequences "
            f"(e.g. a list of tuples), not {type(rows).__name__}"
        )
    batch: list[Any] = rows if type(rows) is list else list(rows)
    if not batch:
        return batch
    lengths = _row_lengths(batch)
    width = lengths[0]
    if lengths.count(width) != len(lengths):
        index = next(i for i, length in enumerate(lengths, 1) if length != width)
        raise ArgumentError(
            f"exec_many(): row {index} has {lengths[index - 1]} parameters, row 1 has "
            f"{width}: every row needs one value per placeholder"
        )
    return batch
