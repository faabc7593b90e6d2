"""A database server restart: while it is down `exec` fails with a clear reason; once it is back
the next `exec` succeeds on the same connection object, without a new Dial. Each test runs its
OWN server on a free port (the shared ones are never touched)."""

from __future__ import annotations

import pytest

import dial
from dial import Dial

from .servers.databases import PrivateClickhouse, PrivateMariadb, PrivatePostgres

pytestmark = pytest.mark.timeout(120)


def survive_restart(server, address: str, table_ddl: str) -> None:
    server.start()
    conn = Dial(address, 10)
    assert conn is not None, dial.last_error()
    try:
        assert conn.exec(table_ddl) == {"columns": [], "values": [], "rowcount": 0}
        assert conn.exec("INSERT INTO kept VALUES (?)", 1)["rowcount"] == 1
        handle = conn.fd()

        server.stop()
        assert conn.exec("SELECT a FROM kept") is None
        reason = dial.last_error()
        assert "reconnect failed" in reason or "connection lost" in reason, reason
        assert "refused" in reason.lower() or "lost" in reason.lower(), reason

        server.start()
        assert conn.exec("SELECT a FROM kept") == {"columns": ["a"], "values": [[1]]}
        assert Dial(handle).exec("SELECT COUNT(*) AS n FROM kept")["values"] == [[1]]
    finally:
        conn.release()
        server.stop()


def test_postgres_restart():
    server = PrivatePostgres()
    address = (
        f"postgres://user=postgres password={server.PASSWORD} dbname=test host=127.0.0.1 "
        f"port={server.port} sslmode=disable"
    )
    survive_restart(server, address, "CREATE TABLE kept (a INTEGER)")


def test_mariadb_restart():
    server = PrivateMariadb()
    address = f"mysql://root:@tcp(127.0.0.1:{server.port})/test?charset=utf8mb4"
    survive_restart(server, address, "CREATE TABLE kept (a INTEGER)")


def test_clickhouse_restart():
    server = PrivateClickhouse()
    address = f"clickhouse://tcp://127.0.0.1:{server.port}?username=default&database=default"
    survive_restart(server, address, "CREATE TABLE kept (a Int32) ENGINE = TinyLog")


def test_postgres_wrong_password():
    server = PrivatePostgres()
    server.start()
    try:
        address = f"postgres://postgres:wrong@127.0.0.1:{server.port}/test"
        assert Dial(address, 5) is None
        reason = dial.last_error()
        assert 'password authentication failed for user "postgres"' in reason
        assert "wrong" not in reason
    finally:
        server.stop()
