"""Plain-text tables for terminals: used by `dial exec` and by `dial.fmz.LogStatus`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

__all__ = ["cell_text", "format_table"]


def cell_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() != ""


def format_table(
    columns: Sequence[Any], rows: Sequence[Sequence[Any]], title: str | None = None
) -> str:
    """Aligned ASCII table; numbers right-aligned, everything else left-aligned."""
    header = [cell_text(col) for col in columns]
    body = [
        [value if isinstance(value, str) else cell_text(value) for value in row] for row in rows
    ]
    width = max([len(header), *(len(row) for row in body)], default=0)
    header += [""] * (width - len(header))
    body = [row + [""] * (width - len(row)) for row in body]
    sizes = [max(len(line[i]) for line in [header, *body]) for i in range(width)]

    def line(cells: list[str]) -> str:
        fitted = (
            cell.rjust(size) if _numeric(cell) else cell.ljust(size)
            for cell, size in zip(cells, sizes, strict=True)
        )
        return "| " + " | ".join(fitted) + " |"

    rule = "+" + "+".join("-" * (size + 2) for size in sizes) + "+"
    lines = [title] if title else []
    lines += [rule, line(header), rule, *(line(row) for row in body), rule]
    return "\n".join(lines)
