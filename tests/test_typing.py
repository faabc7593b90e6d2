"""A type checker helps a user of dial: mypy, run on a user's script the way a user would (the
package found where it is installed, editable installs included), reports the misuses and
accepts the right uses."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

GOOD = """
    import asyncio

    import dial
    import dial.aio
    from dial import Connection, DatabaseConnection, Dial, Stats, last_error

    ws = dial.stream("wss://stream.binance.com:9443/ws/btcusdt@ticker|reconnect=true", 10)
    if ws is None:
        raise SystemExit(last_error())
    message: str | bytes | None = ws.read(1000)
    sent: int = ws.write("ping")
    stats: Stats = ws.stats()
    ws.close()

    db = dial.database("sqlite3://:memory:", raise_errors=True)
    result = db.exec("SELECT ?", 1)
    if result is not None:
        print(result["columns"], result["values"])
    handle = db.fd()

    conn = Dial("tcp://127.0.0.1:9000")
    if isinstance(conn, Connection):
        conn.write(b"raw")
    elif isinstance(conn, DatabaseConnection):
        conn.exec("SELECT 1")

    async def main() -> None:
        feed = await dial.aio.dial("ws://127.0.0.1:8765/ws", raise_errors=True)
        await feed.close()

    asyncio.run(main())
"""

BAD = """
    import dial
    from dial import Dial

    ws = dial.stream("wss://example.com/ws", raise_errors=True)
    ws.reed()                                   # line 6: a typo
    count: int = ws.read()                      # line 7: read() gives str | bytes | None
    db = dial.database("sqlite3://:memory:", raise_errors=True)
    db.write("x")                               # line 9: databases have exec, not write
    any_kind = Dial("wss://example.com/ws", raise_errors=True)
    any_kind.reed()                             # line 11: neither kind has reed()
    Dial("wss://example.com/ws", timeout="10")  # line 12: seconds as a number
"""


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), script.name],
        cwd=tmp_path,  # outside the checkout: dial must be found as installed
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_accepts_the_right_uses(tmp_path: Path) -> None:
    result = mypy(tmp_path, GOOD)
    assert "Cannot find implementation or library stub" not in result.stdout, (
        "mypy cannot find the installed package (an editable install needs "
        "--config-settings editable_mode=compat, as the Makefile does)\n" + result.stdout
    )
    assert result.returncode == 0, result.stdout


def test_mypy_reports_the_misuses(tmp_path: Path) -> None:
    result = mypy(tmp_path, BAD)
    assert "Cannot find implementation or library stub" not in result.stdout, result.stdout
    lines = {int(n) for n in re.findall(r"user_script\.py:(\d+): error", result.stdout)}
    assert lines == {6, 7, 9, 11, 12}, result.stdout
    assert '"Connection" has no attribute "reed"' in result.stdout
    assert '"DatabaseConnection" has no attribute "write"' in result.stdout
