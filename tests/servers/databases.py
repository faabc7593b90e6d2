"""Real database servers for the database tests: PostgreSQL, MariaDB and ClickHouse.

The shared servers on their default ports are reused when they listen (never restarted);
otherwise they are started here. Fault tests get private instances on free ports through
`PrivatePostgres` / `PrivateMariadb` / `PrivateClickhouse`, which they may stop and restart.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .base import ensure_binary, free_port, port_open, start, stop, temp_dir, unavailable

__all__ = [
    "CLICKHOUSE_HTTP_PORT",
    "CLICKHOUSE_PORT",
    "MARIADB_PORT",
    "POSTGRES_PORT",
    "PrivateClickhouse",
    "PrivateMariadb",
    "PrivatePostgres",
    "clickhouse_server",
    "mariadb_server",
    "postgres_server",
]

POSTGRES_PORT = 5432
MARIADB_PORT = 3306
CLICKHOUSE_PORT = 9000
CLICKHOUSE_HTTP_PORT = 8123


def _chown(path: Path, user: str) -> None:
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=False)


def _as(user: str) -> list[str]:
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if candidates:
        return str(candidates[-1])
    ensure_binary("psql", "postgresql")
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        unavailable(f"PostgreSQL's {name} is not installed")
    return str(candidates[-1])


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own that tests may restart: database `test`, user
    `postgres` with password `PASSWORD` over TCP (so a wrong password is refused)."""

    PASSWORD = "s3cret"

    port: int = field(default_factory=free_port)
    data: Path = field(default_factory=lambda: temp_dir("pg-"))
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        initdb = _postgres_bin("initdb")
        _chown(self.data, "postgres")
        (self.data / "pw").write_text(self.PASSWORD)
        _chown(self.data, "postgres")
        argv = [*_as("postgres"), initdb, "-D", str(self.data / "db"), "-U", "postgres"]
        argv += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={self.data}/pw"]
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode:
            unavailable(f"initdb failed: {result.stderr[-300:]}")

    def start(self) -> None:
        postgres = _postgres_bin("postgres")
        argv = [*_as("postgres"), postgres, "-D", str(self.data / "db"), "-p", str(self.port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-k", str(self.data), "-c", "fsync=off"]
        self.process = start(f"pg-{self.port}", argv, self.port, stop_signal=signal.SIGINT)
        if not hasattr(self, "_created"):
            psql = _postgres_bin("psql")
            argv = [*_as("postgres"), psql, "-h", str(self.data), "-p", str(self.port)]
            subprocess.run([*argv, "-c", "CREATE DATABASE test"], capture_output=True, check=False)
            self._created = True

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@dataclass
class PrivateMariadb:
    """A MariaDB server of our own (root, empty password, database `test`)."""

    port: int = field(default_factory=free_port)
    data: Path = field(default_factory=lambda: temp_dir("maria-"))
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        ensure_binary("mariadbd", "mariadb-server")
        install = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
        _chown(self.data, "mysql")
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.data}",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode:
            unavailable(f"mariadb-install-db failed: {result.stderr[-300:]}")
        (self.data / "test").mkdir(exist_ok=True)  # a directory is a database to MariaDB
        _chown(self.data, "mysql")

    def start(self) -> None:
        mariadbd = ensure_binary("mariadbd", "mariadb-server")
        argv = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.data}",
            "--user=mysql",
            "--bind-address=127.0.0.1",
            f"--port={self.port}",
            f"--socket={self.data}/sock",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
        ]
        self.process = start(f"maria-{self.port}", argv, self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@dataclass
class PrivateClickhouse:
    """A ClickHouse server from Debian's package, configured into a private directory."""

    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    data: Path = field(default_factory=lambda: temp_dir("ch-"))
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        ensure_binary("clickhouse-server", "clickhouse-server")
        source = Path("/etc/clickhouse-server")
        if not (source / "config.xml").exists():
            unavailable("/etc/clickhouse-server/config.xml is missing")
        config = (source / "config.xml").read_text()
        config = re.sub(r"<listen_host>.*?</listen_host>", "", config)
        config = config.replace("<tcp_port>9000</tcp_port>", f"<tcp_port>{self.port}</tcp_port>")
        config = config.replace(
            "<http_port>8123</http_port>",
            f"<http_port>{self.http_port}</http_port><listen_host>127.0.0.1</listen_host>",
        )
        config = re.sub(
            r"<interserver_http_port>\d+</interserver_http_port>",
            f"<interserver_http_port>{free_port()}</interserver_http_port>",
            config,
        )
        config = config.replace("/var/lib/clickhouse/", f"{self.data}/lib/")
        config = config.replace("/var/log/clickhouse-server/", f"{self.data}/log/")
        config = re.sub(r"<timezone>.*?</timezone>", "", config)
        config = config.replace("<default_database>", "<timezone>UTC</timezone><default_database>")
        (self.data / "config.xml").write_text(config)
        shutil.copy(source / "users.xml", self.data / "users.xml")
        for sub in ("lib", "log"):
            (self.data / sub).mkdir(exist_ok=True)
        _chown(self.data, "clickhouse")

    def start(self) -> None:
        server = ensure_binary("clickhouse-server", "clickhouse-server")
        argv = [*_as("clickhouse"), server, f"--config-file={self.data / 'config.xml'}"]
        self.process = start(f"clickhouse-{self.port}", argv, self.port, ready_seconds=30)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@pytest.fixture(scope="session")
def postgres_server() -> int:
    """Port of a PostgreSQL with trust auth and a `test` database."""
    if port_open(POSTGRES_PORT):
        return POSTGRES_PORT
    server = PrivatePostgres(port=POSTGRES_PORT)
    server.start()
    return POSTGRES_PORT


@pytest.fixture(scope="session")
def mariadb_server() -> int:
    """Port of a MariaDB with root/empty password and a `test` database."""
    if port_open(MARIADB_PORT):
        return MARIADB_PORT
    server = PrivateMariadb(port=MARIADB_PORT)
    server.start()
    return MARIADB_PORT


@pytest.fixture(scope="session")
def clickhouse_server() -> int:
    """Native-protocol port of a ClickHouse server (user `default`, empty password)."""
    if port_open(CLICKHOUSE_PORT):
        return CLICKHOUSE_PORT
    server = PrivateClickhouse(port=CLICKHOUSE_PORT, http_port=CLICKHOUSE_HTTP_PORT)
    server.start()
    return CLICKHOUSE_PORT
