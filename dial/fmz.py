"""Run FMZ-style Python strategy scripts in a terminal: `from dial.fmz import *`, then `main()`.

Provides the FMZ globals those scripts use: `Log`, `LogStatus` (a status block kept at the
bottom of the terminal; FMZ's backtick-wrapped table JSON is drawn as a text table), `Sleep`
(milliseconds), `_D`, `_N`, `Unix`, `UnixNano`, `SetErrorFilter`, `LogReset`, `LogProfit`,
`Dial` and a small `exchange` with `HMAC` / `Encode`.

As on FMZ, a module-level `onexit()` in the script runs once when the script ends, including
when it is stopped with Ctrl-C or SIGTERM (which end the script without a traceback).

`DIAL_REDIRECT="wss://ws.okx.com:8443=ws://127.0.0.1:8765 ..."` (space-separated
`FROM=TO` prefix rules; TO may carry `|options`) sends a script's real exchange addresses to
the simulator (`dial simulate` prints the line) without editing the script.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import hashlib
import hmac as _hmac
import json
import os
import re
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any

from .address import redact
from .connection import Connection, SessionView, session_of
from .tables import cell_text, format_table

__all__ = [
    "_D",
    "_N",
    "Dial",
    "Log",
    "LogProfit",
    "LogReset",
    "LogStatus",
    "SetErrorFilter",
    "Sleep",
    "Unix",
    "UnixNano",
    "exchange",
    "redirect",
    "render_status",
    "render_table",
    "rewrite",
]

REDIRECT_ENV = "DIAL_REDIRECT"
_COLOR = re.compile(r"^#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?$")
_lock = threading.RLock()
_status_lines = 0  # lines of the status block currently drawn at the bottom of a terminal
_status_text: list[str] = []
_redirects: list[tuple[str, str]] = []
_error_filter: re.Pattern[str] | None = None


# -- time ------------------------------------------------------------------------------------


def Sleep(milliseconds: float) -> None:
    """Pause the script; FMZ counts in milliseconds."""
    time.sleep(max(float(milliseconds), 0.0) / 1000.0)


def Unix() -> int:
    """Seconds since the epoch."""
    return int(time.time())


def UnixNano() -> int:
    return time.time_ns()


_FORMAT_TOKENS = (
    ("yyyy", "%Y"),
    ("MM", "%m"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("hh", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)


def _D(timestamp: float | None = None, fmt: str = "yyyy-MM-dd hh:mm:ss") -> str:
    """Local time as text: now, or a timestamp in milliseconds (seconds are accepted too)."""
    if timestamp is None:
        seconds = time.time()
    else:
        seconds = float(timestamp)
        if abs(seconds) >= 1e11:  # milliseconds, as FMZ passes them
            seconds /= 1000.0
    pattern = fmt
    for token, directive in _FORMAT_TOKENS:
        pattern = pattern.replace(token, directive)
    return datetime.fromtimestamp(seconds).strftime(pattern)


def _N(number: float, precision: int = 4) -> float:
    """Truncate (not round) to `precision` decimals, as FMZ's _N does."""
    factor: float = 10**precision
    return int(float(number) * factor) / factor


# -- logging ---------------------------------------------------------------------------------


def _tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _split_color(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """FMZ: a trailing "#RRGGBB" argument colours the line; a trailing "@" asks for a push."""
    color = None
    if args and isinstance(args[-1], str) and _COLOR.match(args[-1]):
        color, args = _COLOR.match(args[-1]).group(1), args[:-1]  # type: ignore[union-attr]
    if args and isinstance(args[-1], str) and args[-1].endswith("@"):
        args = (*args[:-1], args[-1][:-1])
    return args, color


def _text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bytes):
        return repr(value)
    return str(value)


def _paint(text: str, color: str | None) -> str:
    if color is None or not _tty():
        return text
    red, green, blue = (int(color[i : i + 2], 16) for i in (0, 2, 4))
    return f"\x1b[38;2;{red};{green};{blue}m{text}\x1b[0m"


def _erase_status() -> None:
    global _status_lines
    if _status_lines and _tty():
        sys.stdout.write(f"\x1b[{_status_lines}F\x1b[J")
    _status_lines = 0


def _draw_status() -> None:
    global _status_lines
    if not _status_text:
        return
    sys.stdout.write("\n".join(_status_text) + "\n")
    _status_lines = len(_status_text) if _tty() else 0


def Log(*args: Any) -> None:
    """Print a timestamped log line (tables in backticks are drawn as tables)."""
    args, color = _split_color(args)
    message = render_status(" ".join(_text(arg) for arg in args))
    if _error_filter is not None and _error_filter.search(message):
        return
    line = f"{_D()} {message}"
    with _lock:
        on_tty = _tty()
        if on_tty:
            _erase_status()
        sys.stdout.write(_paint(line, color) + "\n")
        if on_tty:
            _draw_status()
        sys.stdout.flush()


def LogStatus(*args: Any) -> None:
    """Replace the status block: kept at the bottom of a terminal, printed as is elsewhere."""
    global _status_text
    args, _ = _split_color(args)
    text = render_status(" ".join(_text(arg) for arg in args))
    with _lock:
        _erase_status()
        _status_text = text.splitlines() or [""]
        _draw_status()
        sys.stdout.flush()


def LogReset(*_: Any) -> None:
    """FMZ clears its stored log; a terminal has nothing to clear."""


def LogProfit(profit: float, *args: Any) -> None:
    Log("profit:", profit, *args)


def SetErrorFilter(pattern: str) -> None:
    """Hide log lines matching the regular expression (FMZ filters its error log this way)."""
    global _error_filter
    _error_filter = re.compile(pattern) if pattern else None


# -- status tables ---------------------------------------------------------------------------


def render_status(text: str) -> str:
    """Draw every backtick-wrapped table (or list of tables) in `text`; keep the rest."""
    if "`" not in text:
        return text
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: not FMZ table markup
        return text
    out: list[str] = []
    for index, part in enumerate(parts):
        if index % 2 == 0:
            out.append(part)
            continue
        tables = _as_tables(part)
        out.append("\n".join(render_table(t) for t in tables) if tables else f"`{part}`")
    return "".join(out)


def _as_tables(text: str) -> list[dict[str, Any]] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(t, dict) and t.get("type") == "table" for t in items):
        return items
    return None


def _cell(value: Any) -> str:
    if isinstance(value, dict):  # FMZ buttons and styled cells
        for key in ("body", "name", "text", "label"):
            if key in value:
                return _cell(value[key])
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return ""
    text = _text(value) if isinstance(value, (str, bytes, dict, list, tuple)) else cell_text(value)
    match = re.search(r"#[0-9A-Fa-f]{6}(?:[0-9A-Fa-f]{2})?$", text)
    return text[: match.start()] if match else text


def render_table(table: dict[str, Any]) -> str:
    """One FMZ status table ({"type": "table", "title", "cols", "rows"}) as aligned text."""
    cols = [_cell(col) for col in table.get("cols") or []]
    rows = [[_cell(cell) for cell in row] for row in table.get("rows") or [] if row is not None]
    title = str(table["title"]) if table.get("title") else None
    return format_table(cols, rows, title)


# -- Dial ------------------------------------------------------------------------------------


def redirect(prefix: str, replacement: str) -> None:
    """Dial `replacement` whenever a script dials an address starting with `prefix`."""
    _redirects.append((prefix, replacement))


def _env_redirects() -> list[tuple[str, str]]:
    rules = []
    for rule in os.environ.get(REDIRECT_ENV, "").split():
        prefix, sep, replacement = rule.partition("=")
        if sep and prefix and replacement:
            rules.append((prefix, replacement))
    return rules


def rewrite(address: str) -> str:
    """Apply the redirect rules; options of the replacement come before the script's own."""
    for prefix, replacement in [*_redirects, *_env_redirects()]:
        rest = address[len(prefix) :]
        if not address.startswith(prefix) or (rest and rest[0] not in "/|?"):
            continue
        target, bar, options = rest.partition("|")
        options = options[1:] if bar and options.startswith("|") else options
        new_base, _, new_options = replacement.partition("|")
        merged = "&".join(part for part in (new_options, options) if part)
        separator = "||" if "|" in merged else "|"
        return f"{new_base}{target}{separator}{merged}" if merged else f"{new_base}{target}"
    return address


def Dial(address: str | int, timeout: float | None = None, on_connect: Any = None) -> Any:
    """FMZ's Dial: a connection object, or None (the reason is logged) on failure.

    `on_connect(link)` is dialkit's addition: it runs after every (re)connect, so a login
    signed with a fresh timestamp survives drops (a login in `payload` goes stale)."""
    from .dialer import Dial as dial_address
    from .errors import last_error

    if isinstance(address, str):
        address = rewrite(address)
    if on_connect is not None:
        connection = dial_address(address, timeout, on_connect=on_connect)
    else:
        connection = dial_address(address, timeout)
    if connection is None:
        shown = redact(address) if isinstance(address, str) else address
        Log(f"Dial({shown}) failed: {last_error()}", "#FF0000")
        return None
    if isinstance(connection, Connection) and connection.scheme in RAW_SOCKETS:
        return TextReads(connection)
    return connection


RAW_SOCKETS = frozenset({"tcp", "tls", "unix", "udp"})


class TextReads(SessionView):
    """A raw-socket connection whose read() gives text, as FMZ gives scripts strings there
    (`Log(buf)`, `buf == ""`), while dialkit itself returns bytes; invalid UTF-8 becomes
    U+FFFD. Everything else is the wrapped connection's, and `dial.wait()` accepts it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._session = session_of(connection)
        self._buffer = self._session.buffer

    def read(self, timeout: float | None = None) -> str | None:
        message = self._connection.read(timeout)
        return message.decode("utf-8", "replace") if isinstance(message, bytes) else message

    def write(self, data: str | bytes, timeout: float | None = None) -> int:
        return self._connection.write(data, timeout)

    def ping(self, timeout: float = 10.0) -> float | None:
        return self._connection.ping(timeout)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> TextReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self._connection.close()

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return repr(self._connection)


# -- exchange.HMAC / Encode ------------------------------------------------------------------


def _decode(data: str | bytes, fmt: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if fmt == "hex":
        return binascii.unhexlify(data)
    if fmt == "base64":
        return base64.b64decode(data)
    return data.encode()


def _encode(digest: bytes, fmt: str) -> str | bytes:
    if fmt == "hex":
        return digest.hex()
    if fmt == "base64":
        return base64.b64encode(digest).decode()
    if fmt in ("string", "raw"):
        try:
            return digest.decode()
        except UnicodeDecodeError:
            return digest
    raise ValueError(f"unsupported output format {fmt!r}: use hex, base64 or raw")


class _Exchange:
    """Just enough of FMZ's `exchange` for signing: HMAC and Encode."""

    def HMAC(self, algo: str, output_format: str, data: str, key: str) -> str | bytes:
        """Deprecated on FMZ in favour of Encode, still used by its OKX login example."""
        digest = _hmac.new(key.encode(), data.encode(), algo.lower()).digest()
        return _encode(digest, output_format)

    def Encode(
        self,
        algo: str,
        input_format: str,
        output_format: str,
        data: str | bytes,
        key_format: str | None = None,
        key: str | bytes | None = None,
    ) -> str | bytes:
        raw = _decode(data, input_format)
        name = algo.lower()
        if name == "raw":
            digest = raw
        elif name not in hashlib.algorithms_available:
            raise ValueError(f"exchange.Encode: algorithm {algo!r} is not supported here")
        elif key is not None:
            digest = _hmac.new(_decode(key, key_format or "raw"), raw, name).digest()
        else:
            digest = hashlib.new(name, raw).digest()
        return _encode(digest, output_format)

    def GetName(self) -> str:
        return "Simulator"

    def __repr__(self) -> str:
        return "<fmz exchange shim>"


exchange = _Exchange()


# -- lifecycle: onexit, Ctrl-C ---------------------------------------------------------------

_exit_done = False


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run_onexit() -> None:
    global _exit_done
    if _exit_done:
        return
    _exit_done = True
    onexit = getattr(sys.modules.get("__main__"), "onexit", None)
    if callable(onexit):
        try:
            onexit()
        except BaseException as exc:  # the script is ending: report, never trace back
            sys.stderr.write(f"onexit failed: {exc.__class__.__name__}: {exc}\n")
    sys.stdout.flush()


def _install_lifecycle() -> None:
    atexit.register(_run_onexit)
    if threading.current_thread() is not threading.main_thread() or "pytest" in sys.modules:
        return  # a test runner keeps its own Ctrl-C handling
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop)


_install_lifecycle()
