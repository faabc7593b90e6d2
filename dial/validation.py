"""Whether an argument is acceptable, decided once for the sync and the asyncio API alike.

`Dial` and `dial.aio.dial`, `Connection.write` and `AsyncConnection.write`,
`DatabaseConnection.exec` and `AsyncDatabaseConnection.exec` all call these, so they accept and
refuse the same inputs with the same words. Units: `Dial` timeouts are seconds, `read()`
timeouts milliseconds (FMZ's choice), `exec` and `write` timeouts seconds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .errors import ArgumentError

if TYPE_CHECKING:
    from .buffer import Message

__all__ = [
    "DEFAULT_DIAL_TIMEOUT",
    "MAX_DIAL_TIMEOUT",
    "batch_limit",
    "batch_timeout",
    "connect_seconds",
    "dial_timeout",
    "outgoing",
    "read_timeout",
    "statement",
    "statement_timeout",
    "write_timeout",
]

DEFAULT_DIAL_TIMEOUT = 10.0  # seconds for the first connect when Dial() is given none
#: The longest connect a Dial may wait, in seconds. Anything longer is far more likely to be
#: milliseconds (FMZ's read() unit) than a real wish: Dial(url, 5000) would wait 83 minutes.
MAX_DIAL_TIMEOUT = 600.0


def _number(value: object) -> float | None:
    """`value` as a float when it is a real number (not a bool, not nan), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def dial_timeout(value: object) -> float:
    """The first-connect timeout of a `Dial`, in seconds; None means the default."""
    return DEFAULT_DIAL_TIMEOUT if value is None else connect_seconds(value, "timeout")


def connect_seconds(value: object, name: str) -> float:
    """A connect-time bound in seconds (`timeout`, `on_connect_timeout`): > 0 and at most
    `MAX_DIAL_TIMEOUT`, so a value meant as milliseconds is refused, not waited out."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArgumentError(f"{name} must be a number of seconds, got {value!r}")
    if not 0 < value <= MAX_DIAL_TIMEOUT:  # also refuses nan
        hint = ""
        if value > MAX_DIAL_TIMEOUT and math.isfinite(value):
            hint = f" ({name} is in seconds, not milliseconds: did you mean {value / 1000:g}?)"
        raise ArgumentError(
            f"{name} must be > 0 and <= {MAX_DIAL_TIMEOUT:g} seconds, got {value:g}{hint}"
        )
    return float(value)


def statement(sql: object) -> str:
    """The SQL text of an `exec`: a non-empty str."""
    if not isinstance(sql, str):
        raise ArgumentError(f"exec() takes the SQL as a str, not {type(sql).__name__}")
    if not sql.strip():
        raise ArgumentError("exec() got an empty statement")
    return sql


def statement_timeout(value: object) -> float | None:
    """An `exec` timeout in seconds, refused before anything is sent: a zero or negative one
    would report a failure for a statement that still runs."""
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ArgumentError(
            f"exec() timeout must be seconds (a number), not {type(value).__name__}"
        )
    if not math.isfinite(value) or value <= 0:
        raise ArgumentError(f"exec() timeout must be a finite number of seconds > 0, not {value!r}")
    return float(value)


def outgoing(data: object) -> tuple[Message, int]:
    """What `write()` sends and its size in bytes: str as text, bytes-likes as bytes."""
    if isinstance(data, str):
        return data, len(data.encode())
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return raw, len(raw)
    raise TypeError(f"write() takes str or bytes, not {type(data).__name__}")


def write_timeout(value: object) -> float | None:
    """How long `write()` may wait for room in a full outbox, in seconds (None: while up)."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        raise TypeError(f"write() timeout must be a number of seconds, got {value!r}")
    return seconds


def read_timeout(value: object, call: str = "read()") -> float:
    """A `read()` timeout other than None, in milliseconds: < 0 polls (-2: the newest),
    N > 0 waits up to N ms, inf waits like None."""
    milliseconds = _number(value)
    if milliseconds is None:
        raise TypeError(f"{call} timeout must be a number of milliseconds, got {value!r}")
    return milliseconds


def batch_timeout(value: object) -> float:
    """A `read_many()` timeout other than None, in milliseconds, as for `read()`: < 0 only
    takes what is buffered, N > 0 waits up to N ms for the first message. -2 (read()'s
    "newest, discard the rest") is refused: a batch is always every message, oldest first."""
    milliseconds = read_timeout(value, "read_many()")
    if milliseconds == -2:
        raise ArgumentError(
            "read_many() timeout -2 is read()'s 'newest only': a batch is every buffered "
            "message, oldest first; use read(-2) for the newest, read_many(timeout=-1) to "
            "take the batch without waiting"
        )
    return milliseconds


def batch_limit(value: object) -> int:
    """How many messages one `read_many()` may return: a whole number >= 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"read_many() max must be a whole number of messages, got {value!r}")
    if value < 1:
        raise ArgumentError(f"read_many() max must be at least 1 message, got {value}")
    return value
