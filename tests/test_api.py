"""The public surface: what `dial` exports, which error class `raise_errors` raises, the one
validation path (sync and asyncio refuse the same inputs with the same words), the messages a
misuse gets, the help texts, and the layout rules (the registry decides, databases and
streams do not import each other)."""

from __future__ import annotations

import ast
import asyncio
import os
import pydoc
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import dial
import dial.aio
from dial import (
    AddressError,
    ArgumentError,
    ConnectError,
    Connection,
    DatabaseConnection,
    DatabaseError,
    Dial,
    DialError,
    MissingDependency,
    Stats,
    last_error,
)
from dial.cli import main
from dial.registry import SCHEMES, kind_of
from tests.conftest import EchoServers
from tests.servers.base import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
DIAL_CLI = [sys.executable, "-m", "dial.cli"]


# -- exports -----------------------------------------------------------------------------------


def test_everything_in_all_is_importable() -> None:
    for name in dial.__all__:
        assert getattr(dial, name) is not None, name
    assert {"Connection", "DatabaseConnection", "Stats", "MissingDependency"} <= set(dial.__all__)
    assert issubclass(MissingDependency, DialError) and issubclass(MissingDependency, ImportError)


def test_importing_dial_imports_no_connection_machinery() -> None:
    code = "import sys, dial; print(sorted(m for m in sys.modules if m.startswith('dial')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "['dial']", out


def test_connection_types(echo_servers: EchoServers) -> None:
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}") as conn:
        assert isinstance(conn, Connection)
        assert isinstance(conn.stats(), Stats)
        assert conn.scheme == "tcp"
    with Dial("sqlite3://:memory:") as db:
        assert isinstance(db, DatabaseConnection)


# -- raise_errors raises the specific class ------------------------------------------------------


def test_raise_errors_raises_the_specific_subclass() -> None:
    with pytest.raises(AddressError, match="unknown option"):
        Dial("ws://127.0.0.1:1/|nope=1", raise_errors=True)
    with pytest.raises(ConnectError, match="connection refused"):
        Dial("tcp://127.0.0.1:1", raise_errors=True)
    with pytest.raises(ArgumentError, match="seconds"):
        Dial("tcp://127.0.0.1:1", timeout=0, raise_errors=True)
    db = Dial("sqlite3://:memory:", raise_errors=True)
    with pytest.raises(DatabaseError, match="syntax error"):
        db.exec("SELEC 1")
    with pytest.raises(ArgumentError, match="1 placeholder"):
        db.exec("SELECT ?", 1, 2)
    db.close()
    with pytest.raises(DatabaseError, match="connection is closed"):
        db.exec("SELECT 1")


def test_a_missing_optional_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho", None)  # as if paho-mqtt were not installed
    monkeypatch.delitem(sys.modules, "dial.transports.mqtt", raising=False)
    with pytest.raises(MissingDependency, match=r"\[mqtt\] extra"):
        Dial("mqtt://127.0.0.1:1883?topic=t", raise_errors=True)
    assert Dial("mqtt://127.0.0.1:1883?topic=t") is None
    assert "pip install '.[mqtt]'" in last_error()


def test_the_aio_dial_raises_the_same_classes() -> None:
    async def run() -> None:
        with pytest.raises(AddressError):
            await dial.aio.dial("ftp://x", raise_errors=True)
        with pytest.raises(ArgumentError):
            await dial.aio.dial("tcp://127.0.0.1:1", timeout=5000, raise_errors=True)

    asyncio.run(run())


# -- one validation path --------------------------------------------------------------------------

BAD_EXEC = [
    (("SELECT 1",), {"timeout": 0}, "finite number of seconds > 0"),
    (("SELECT 1",), {"timeout": -1}, "finite number of seconds > 0"),
    (("SELECT 1",), {"timeout": float("nan")}, "finite number of seconds > 0"),
    (("SELECT 1",), {"timeout": "x"}, "must be seconds (a number), not str"),
    (("SELECT 1",), {"timeout": True}, "must be seconds (a number), not bool"),
    ((123,), {}, "takes the SQL as a str, not int"),
    (("   ",), {}, "empty statement"),
    (("SELECT ?", object()), {}, "parameter 1: unsupported type object"),
]


@pytest.mark.parametrize(("args", "kwargs", "reason"), BAD_EXEC)
def test_sync_and_async_exec_refuse_the_same_inputs_with_the_same_words(
    args: tuple, kwargs: dict, reason: str
) -> None:
    db = Dial("sqlite3://:memory:")
    assert db.exec(*args, **kwargs) is None
    sync_reason = last_error()
    assert reason in sync_reason

    async def run() -> str | None:
        adb = await dial.aio.dial("sqlite3://:memory:")
        assert await adb.exec(*args, **kwargs) is None
        await adb.close()
        return last_error()

    assert asyncio.run(run()) == sync_reason
    db.close()


@pytest.mark.parametrize(
    ("timeout", "reason"),
    [
        (0, "timeout must be > 0 and <= 600 seconds, got 0"),
        (5000, "in seconds, not milliseconds: did you mean 5?"),
        (601, "timeout must be > 0 and <= 600 seconds, got 601"),
        (float("inf"), "timeout must be > 0 and <= 600 seconds"),
        ("3", "timeout must be a number of seconds, got '3'"),
    ],
)
def test_dial_timeouts_are_seconds_and_bounded_the_same_way_in_both_apis(
    timeout: object, reason: str
) -> None:
    assert Dial("tcp://127.0.0.1:1", timeout) is None  # type: ignore[arg-type]
    sync_reason = last_error()
    assert reason in sync_reason

    async def run() -> str | None:
        assert await dial.aio.dial("tcp://127.0.0.1:1", timeout) is None  # type: ignore[arg-type]
        return last_error()

    assert asyncio.run(run()) == sync_reason


def test_sync_and_async_write_refuse_the_same_data(echo_servers: EchoServers) -> None:
    address = f"tcp://127.0.0.1:{echo_servers.tcp}"
    with Dial(address) as conn, pytest.raises(TypeError) as sync_error:
        conn.write(123)  # type: ignore[arg-type]

    async def run() -> str:
        conn = await dial.aio.dial(address, raise_errors=True)
        try:
            with pytest.raises(TypeError) as async_error:
                await conn.write(123)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="milliseconds"):
                await conn.read("soon")  # type: ignore[arg-type]
        finally:
            await conn.close()
        return str(async_error.value)

    assert asyncio.run(run()) == str(sync_error.value) == "write() takes str or bytes, not int"


# -- misuse gets a message naming the right call --------------------------------------------------


def test_read_or_write_on_a_database_names_exec() -> None:
    with Dial("sqlite3://:memory:") as db:
        for name in ("read", "write"):
            with pytest.raises(AttributeError, match=rf"no {name}\(\): run SQL with exec"):
                getattr(db, name)
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            db.nope  # type: ignore[attr-defined]  # noqa: B018


def test_exec_on_a_stream_names_the_databases(echo_servers: EchoServers) -> None:
    conn = Dial(f"tcp://127.0.0.1:{echo_servers.tcp}")
    with conn, pytest.raises(AttributeError, match=r"a stream has no exec\(\)"):
        conn.exec("SELECT 1")  # type: ignore[union-attr]


def test_typed_helpers_refuse_the_other_kind(echo_servers: EchoServers) -> None:
    assert dial.stream("sqlite3://:memory:") is None
    assert "sqlite3:// is a database: use dial.database()" in last_error()
    assert dial.database(f"tcp://127.0.0.1:{echo_servers.tcp}") is None
    assert "tcp:// is a stream: use dial.stream()" in last_error()
    with dial.database("sqlite3://:memory:", raise_errors=True) as db:
        assert db.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}
        handle = db.fd()
        assert handle is not None
        again = dial.database(handle, raise_errors=True)
        assert isinstance(again, DatabaseConnection)
        again.release()


def test_a_failure_is_printed_once_not_also_by_the_library() -> None:
    """A program without logging set up prints a failure itself (if it wants to): the library's
    warning must not reach stderr a second time through logging's last-resort handler."""
    code = (
        "from dial import Dial, last_error\n"
        "import sys\n"
        "assert Dial('tcp://127.0.0.1:1') is None\n"
        "db = Dial('sqlite3://:memory:')\n"
        "assert db.exec('SELEC 1') is None\n"
        "print('cannot connect:', last_error(), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


# -- help texts -----------------------------------------------------------------------------------


def test_help_of_dial_shows_the_address_grammar_units_and_an_example() -> None:
    text = pydoc.render_doc(dial.Dial, renderer=pydoc.plaintext)
    for needle in (
        "scheme://target[|option=value&option=value...]",
        "compress=gzip|gzip_raw|deflate|zlib",
        "interval=MS (milliseconds",
        "seconds for the first connect",
        "at most 600",
        "Example:",
        "sqlite3://file.db",
    ):
        assert needle in text, needle


@pytest.mark.parametrize("verb", [[], ["read"], ["write"], ["exec"]])
def test_every_subcommand_help_shows_the_address_grammar_and_an_example(
    verb: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert "address: scheme://target[|option=value" in out
    assert "interval=MS (milliseconds" in out
    assert "example:\n  dial " in out
    if verb:
        assert "--connect-timeout S" in out and "seconds allowed for connecting" in out


# -- the dial command -----------------------------------------------------------------------------


def test_cli_write_to_a_database_names_exec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["write", "sqlite3://:memory:", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "dial: error: sqlite3:// is a database: use `dial exec ADDRESS SQL`"


def test_cli_connect_timeout_in_milliseconds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["read", "tcp://127.0.0.1:1", "--connect-timeout", "5000"]) == 1
    assert "did you mean 5?" in capsys.readouterr().err


@pytest.mark.parametrize("level", ["info", "debug"])
def test_plugin_log_level_is_honoured(level: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*DIAL_CLI, "plugin", "okx", "--listen", f"127.0.0.1:{port}", "--log-level", level],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_port(port, 20), "the plugin did not start"
        assert process.stdout is not None
        assert process.stdout.readline().startswith("serving ")  # signal handlers are set
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    assert "INFO dial.plugin" in err and "plugin serving" in err, err


# -- layout ---------------------------------------------------------------------------------------


def test_the_registry_says_what_each_scheme_is() -> None:
    from dial.databases.interfaces import DatabaseBackend
    from dial.transports.base import StreamTransport

    for name, scheme in SCHEMES.items():
        if scheme.kind == "database":
            assert issubclass(scheme.backend(), DatabaseBackend), name
        else:
            assert issubclass(scheme.transport(), StreamTransport), name
    assert kind_of("sqlite3://:memory:") == "database"
    assert kind_of(7) == "database"
    assert kind_of("wss://host/ws|reconnect=true") == "stream"
    assert kind_of("gopher://x") is None and kind_of("not an address") is None


def _dial_imports(path: Path) -> set[str]:
    """The dial modules `path` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "dial" or name.startswith("dial.")}


def test_databases_and_transports_do_not_import_each_other() -> None:
    for path in (ROOT / "dial" / "databases").rglob("*.py"):
        assert not any(m.startswith("dial.transports") for m in _dial_imports(path)), path
    for path in (ROOT / "dial" / "transports").rglob("*.py"):
        assert not any(m.startswith("dial.databases") for m in _dial_imports(path)), path
    backends = sorted(p.stem for p in (ROOT / "dial" / "databases" / "backends").glob("[!_]*.py"))
    assert backends == ["clickhouse", "mysql", "postgres", "sqlite"]


CORE = ["aio.py", "cli.py", "connection.py", "dialer.py", "fmz.py", "select.py", "tracking.py"]


@pytest.mark.parametrize("name", [*CORE, "databases/shared.py", "databases/connection.py"])
def test_nobody_probes_another_module_for_capabilities(name: str) -> None:
    """Decisions come from the registry and declared interfaces, not from hasattr() or from
    reading another object's private attributes."""
    tree = ast.parse((ROOT / "dial" / name).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "hasattr", f"{name}:{node.lineno} hasattr()"
            if node.func.id == "getattr" and len(node.args) > 1:
                attribute = node.args[1]
                assert not (
                    isinstance(attribute, ast.Constant) and str(attribute.value).startswith("_")
                ), f"{name}:{node.lineno} getattr of a private attribute"


def test_the_checkout_has_no_databases_left_in_transports() -> None:
    left = {p.stem for p in (ROOT / "dial" / "transports").glob("*.py")}
    assert not left & {"sqlite", "mysql", "postgres", "clickhouse"}
    assert not (ROOT / "dial" / "database.py").exists()
    assert os.access(ROOT / "dial" / "py.typed", os.R_OK)
