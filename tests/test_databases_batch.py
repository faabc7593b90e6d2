"""`exec_many(sql, rows)`: one statement over a batch of parameter rows, on every database
(ClickHouse through both clients: clickhouse-driver natively, clickhouse-connect on chDB), its
row counts, atomicity, refusals of bad input, the async form, and single statements that are
interrupted while the driver waits. Real servers only (tests/servers/databases.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import threading
from decimal import Decimal

import pytest

import dial
import dial.aio
from dial import Dial, DialError

from .servers.databases import clickhouse_server, mariadb_server, postgres_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

DDL = {
    "sqlite": "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, "
    "amount DECIMAL(10,2), created TIMESTAMP, note TEXT)",
    "mysql": "CREATE TABLE {t} (id BIGINT PRIMARY KEY, name VARCHAR(400) NOT NULL, "
    "price DOUBLE, amount DECIMAL(10,2), created DATETIME, note VARCHAR(50) NULL) ENGINE=InnoDB",
    "postgres": "CREATE TABLE {t} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, "
    "price DOUBLE PRECISION, amount NUMERIC(10,2), created TIMESTAMP, note TEXT)",
    "clickhouse": "CREATE TABLE {t} (id Int64, name String, price Float64, "
    "amount Decimal(10,2), created DateTime, note Nullable(String)) ENGINE = Memory",
}
TRANSACTIONAL = ("sqlite", "mysql", "postgres")

ROWS = [
    (1, "plain", 1.5, Decimal("2.50"), dt.datetime(2024, 1, 2, 3, 4, 5), None),
    [2, "it's 100% ?", -0.25, Decimal("-7.05"), dt.datetime(1999, 12, 31, 23, 59, 59), "x"],
    (3, "ünïcode ✓", 1e10, Decimal("12345678.90"), dt.datetime(2030, 6, 1, 0, 0, 0), ""),
]
INSERT = "INSERT INTO {t} VALUES (?, ?, ?, ?, ?, ?)"


@pytest.fixture(params=["sqlite", "mysql", "postgres", "clickhouse", "clickhouse-chdb"])
def table(request, tmp_path):
    """(kind, connection, table name): an empty table of the shape above on each database."""
    yield from open_table(request, tmp_path, request.param)


@pytest.fixture(params=TRANSACTIONAL)
def transactional_table(request, tmp_path):
    """`table`, on the databases with transactions and row-level UPDATE (not ClickHouse)."""
    yield from open_table(request, tmp_path, request.param)


def open_table(request, tmp_path, name):
    kind = name.split("-")[0]
    if name == "sqlite":
        address = f"sqlite3://{tmp_path / 'batch.db'}"
    elif name == "mysql":
        port = request.getfixturevalue("mariadb_server")
        address = f"mysql://root:@tcp(127.0.0.1:{port})/test?charset=utf8mb4"
    elif name == "postgres":
        port = request.getfixturevalue("postgres_server")
        address = f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port={port}"
    elif name == "clickhouse":
        port = request.getfixturevalue("clickhouse_server")
        address = f"clickhouse://tcp://127.0.0.1:{port}?username=default&database=default"
    else:  # clickhouse-connect's path (the local server is too old for its HTTP form)
        address = "clickhouse://chdb://"
    conn = Dial(address, raise_errors=True)
    table = f"dialkit_batch_{name.replace('-', '_')}_{os.getpid()}"
    conn.exec(f"DROP TABLE IF EXISTS {table}")
    conn.exec(DDL[kind].format(t=table))
    yield kind, conn, table
    conn.exec(f"DROP TABLE IF EXISTS {table}")
    conn.close()


def stored(conn, table: str) -> list[list[object]]:
    return conn.exec(f"SELECT * FROM {table} ORDER BY id")["values"]


def test_a_batch_stores_every_row_as_exec_would(table):
    kind, conn, name = table
    assert conn.exec_many(INSERT.format(t=name), ROWS) == 3
    batch = stored(conn, name)
    # The same rows, one exec each, into a second table: identical values and types.
    single = f"{name}_single"
    conn.exec(f"DROP TABLE IF EXISTS {single}")
    conn.exec(DDL[kind].format(t=single))
    try:
        for row in ROWS:
            conn.exec(INSERT.format(t=single), *row)
        assert batch == stored(conn, single)
    finally:
        conn.exec(f"DROP TABLE {single}")
    assert [row[0] for row in batch] == [1, 2, 3]
    assert batch[1][1] == "it's 100% ?" and batch[2][3] == Decimal("12345678.90")


def test_rows_may_come_from_any_iterable_and_columns_may_be_named(table):
    _, conn, name = table
    rows = ((i, f"n{i}") for i in range(10, 15))
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows) == 5
    assert conn.exec(f"SELECT id, name FROM {name} ORDER BY id")["values"] == [
        [i, f"n{i}"] for i in range(10, 15)
    ]


def test_a_large_batch_is_counted_and_complete(table):
    """20k rows of 100 characters: MySQL needs several multi-row INSERTs (1 MB each)."""
    _, conn, name = table
    rows = [(i, f"{i:>100}") for i in range(20_000)]
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows) == 20_000
    counted = conn.exec(f"SELECT COUNT(*) AS n, SUM(id) AS s, MAX(name) AS m FROM {name}")
    assert counted["values"] == [[20_000, sum(range(20_000)), f"{19_999:>100}"]]


@pytest.mark.parametrize("size", [5, 20_000])
def test_a_failing_row_writes_nothing_where_the_database_has_transactions(
    transactional_table, size
):
    """The last row repeats a primary key: all rows or none (sqlite, mysql, postgres)."""
    _, conn, name = transactional_table
    rows = [(i, "x") for i in range(size)] + [(0, "duplicate")]
    with pytest.raises(DialError, match=r"(?i)duplicate|unique|primary"):
        conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows)
    assert stored(conn, name) == []
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows[:-1]) == size


def test_a_batch_joins_an_open_transaction(transactional_table):
    _, conn, name = transactional_table
    conn.exec("BEGIN")
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", [(1, "a"), (2, "b")])
    assert len(stored(conn, name)) == 2
    conn.exec("ROLLBACK")
    assert stored(conn, name) == []


def test_other_statements_report_the_rows_they_changed(transactional_table):
    """ClickHouse is left out: it changes rows with ALTER TABLE ... UPDATE, asynchronously."""
    kind, conn, name = transactional_table
    conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", [(i, "old") for i in range(6)])
    update = f"UPDATE {name} SET name = ? WHERE id >= ?"
    assert conn.exec_many(update, [("new", 4), ("newer", 5), ("none", 99)]) == 3
    assert conn.exec(f"SELECT name FROM {name} WHERE id >= 4 ORDER BY id")["values"] == [
        ["new"],
        ["newer"],
    ]
    if kind == "postgres":  # asyncpg reports no counts from its batch: counted per row here
        upsert = f"INSERT INTO {name} (id, name) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
        assert conn.exec_many(upsert, [(0, "taken"), (100, "free")]) == 1


BAD_ROWS = [
    (5, "takes the rows as an iterable of parameter sequences"),
    ("abc", "not str"),
    ({"id": 1}, "not dict"),
    ([(1, "a"), (2,)], "row 2 has 1 parameters, row 1 has 2"),
    ([(1, "a"), "ab"], "row 2 is a str, not a sequence"),
    ([(1, "a"), 7], "row 2 is a int, not a sequence"),
    ([(1, "a", "extra")], "3 parameters given"),
]


@pytest.mark.parametrize(("rows", "reason"), BAD_ROWS)
def test_bad_rows_are_refused_before_anything_is_sent(table, rows, reason):
    _, conn, name = table
    conn.raise_errors = False
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows) is None
    assert reason in dial.last_error()
    assert stored(conn, name) == []
    conn.raise_errors = True
    with pytest.raises(DialError, match=reason):
        conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows)


@pytest.mark.parametrize("rows", [[], (), iter(())], ids=["list", "tuple", "iterator"])
def test_an_empty_batch_is_no_work_not_a_failure(table, rows):
    """DB-API `executemany` treats no rows as a no-op: a filtered batch that came out empty
    returns 0 (it is not None, the failure value), and nothing is sent or counted."""
    _, conn, name = table
    conn.raise_errors = False
    before = conn.stats().statements
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows) == 0
    assert dial.last_error() is None
    assert conn.stats().statements == before
    assert stored(conn, name) == []


def test_a_statement_that_returns_rows_is_refused_the_same_everywhere(table):
    """exec_many() is for statements that change rows: a SELECT (or a write that returns
    rows) gets one clear reason on every database instead of a driver's KeyError, a
    miscount or its own words, and writes nothing."""
    kind, conn, name = table
    conn.raise_errors = False
    reason = "exec_many() runs a statement that changes rows"
    assert conn.exec_many("SELECT ? AS x", [(1,), (2,)]) is None
    assert reason in dial.last_error() and "use exec() for it" in dial.last_error()
    if kind in ("sqlite", "postgres"):  # INSERT ... RETURNING: rolled back, all or none
        returning = f"INSERT INTO {name} (id, name) VALUES (?, ?) RETURNING id"
        assert conn.exec_many(returning, [(1, "a"), (2, "b")]) is None
        assert reason in dial.last_error()
    assert stored(conn, name) == []
    assert conn.exec("SELECT 1 AS x") == {"columns": ["x"], "values": [[1]]}


def test_bad_statement_and_closed_connection(table):
    _, conn, name = table
    conn.raise_errors = False
    assert conn.exec_many("", [(1,)]) is None
    assert "empty statement" in dial.last_error()
    assert conn.exec_many(f"INSERT INTO {name}_missing (id) VALUES (?)", [(1,)]) is None
    assert dial.last_error()
    conn.close()
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", [(1, "a")]) is None
    assert "closed" in dial.last_error()


def test_async_exec_many(postgres_server, tmp_path):  # noqa: F811
    async def main(address: str) -> tuple[int | None, object, int | None]:
        conn = await dial.aio.dial(address, raise_errors=True)
        try:
            await conn.exec("CREATE TABLE IF NOT EXISTS batch_async (a BIGINT, b TEXT)")
            await conn.exec("DELETE FROM batch_async")
            count = await conn.exec_many("INSERT INTO batch_async VALUES (?, ?)", [(1, "x")] * 4)
            rows = await conn.exec("SELECT COUNT(*) AS n FROM batch_async")
            conn.raise_errors = False
            empty = await conn.exec_many("INSERT INTO batch_async VALUES (?, ?)", [])
            await conn.exec("DROP TABLE batch_async")
            return count, rows, empty
        finally:
            await conn.close()

    for address in (
        f"sqlite3://{tmp_path / 'async.db'}",
        "postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 "
        f"port={postgres_server}",
    ):
        count, rows, empty = asyncio.run(main(address))
        assert count == 4
        assert rows == {"columns": ["n"], "values": [[4]]}
        assert empty == 0


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_statement_interrupted_while_waiting_leaves_the_connection_usable(kind, request):
    """Ctrl-C while the driver waits for the server (the statement is stepped in the calling
    thread): the interrupt reaches the caller, and the next statements get their own answers."""
    if kind == "postgres":
        port = request.getfixturevalue("postgres_server")
        address = f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port={port}"
        slow, echo = "SELECT pg_sleep(2)", "SELECT ?::bigint AS n"
    else:
        port = request.getfixturevalue("mariadb_server")
        address = f"mysql://root:@tcp(127.0.0.1:{port})/test"
        slow, echo = "SELECT SLEEP(2)", "SELECT ? AS n"

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    conn = Dial(address, raise_errors=True)
    try:
        assert conn.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            conn.exec(slow)
        for number in range(2, 5):
            assert conn.exec(echo, number) == {"columns": ["n"], "values": [[number]]}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        conn.close()


def test_a_bad_value_in_a_later_row_is_refused_and_writes_nothing(table):
    """Only the first row's types are checked up front (a check per value would cost sqlite3
    a quarter of its batch speed): later rows are refused by the driver. The row is named
    1-based, as in dialkit's own checks, wherever it can be told (asyncpg's own words count
    from 0); the ClickHouse clients do not say which row."""
    kind, conn, name = table
    conn.raise_errors = False
    rows = [(1, "a"), (2, object())]
    assert conn.exec_many(f"INSERT INTO {name} (id, name) VALUES (?, ?)", rows) is None
    expected = {
        "sqlite": "row 2: parameter 2: unsupported type object",
        "mysql": "row 2: parameter 2: unsupported type object",
        "postgres": "postgres: row 2: invalid input for query argument $2: <object object",
        "clickhouse": "bad parameter",
    }
    assert expected[kind] in dial.last_error()
    assert "element #" not in dial.last_error()
    assert stored(conn, name) == []


def test_postgres_names_the_failing_row_of_a_row_by_row_batch(postgres_server):  # noqa: F811
    """A statement other than a plain INSERT runs row by row: a refusal names its row."""
    conn = Dial(
        f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 "
        f"port={postgres_server}"
    )
    table = f"dialkit_batch_rows_{os.getpid()}"
    try:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.exec(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT)")
        upsert = f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
        rows = [(1, "a"), (2, "b"), (3, object())]
        assert conn.exec_many(upsert, rows) is None
        assert dial.last_error().startswith("postgres: row 3: invalid input for query argument")
        assert conn.exec(f"SELECT COUNT(*) AS n FROM {table}")["values"] == [[0]]
    finally:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_sqlite_adapts_its_own_parameters_and_leaves_sqlite3_alone(tmp_path):
    """datetime, date, time and Decimal are converted for our connections only: another
    sqlite3 user in the process keeps sqlite3's own behaviour (it refuses a Decimal)."""

    class Stamp(dt.datetime):  # a subclass, as pandas' Timestamp is
        pass

    conn = Dial(f"sqlite3://{tmp_path / 'adapt.db'}", raise_errors=True)
    try:
        conn.exec("CREATE TABLE t (id INTEGER, amount DECIMAL(10,2), at TIMESTAMP, t TEXT)")
        # Row 1 needs no adapting; later rows do (the batch is run again, adapted).
        rows = [
            (1, None, None, None),
            (2, Decimal("2.50"), dt.datetime(2024, 1, 2, 3, 4, 5), dt.time(12, 30)),
            [3, Decimal("-7.05"), Stamp(1999, 12, 31, 23, 59, 59), None],
        ]
        assert conn.exec_many("INSERT INTO t VALUES (?, ?, ?, ?)", rows) == 3
        assert conn.exec("INSERT INTO t VALUES (?, ?, ?, ?)", 4, Decimal("1"), None, dt.time(1))
        assert conn.exec("SELECT * FROM t ORDER BY id")["values"] == [
            [1, None, None, None],
            [2, Decimal("2.50"), dt.datetime(2024, 1, 2, 3, 4, 5), "12:30:00"],
            [3, Decimal("-7.05"), dt.datetime(1999, 12, 31, 23, 59, 59), None],
            [4, Decimal("1"), None, "01:00:00"],
        ]
    finally:
        conn.close()
    other = sqlite3.connect(":memory:")
    try:
        for value in (Decimal("1.5"), dt.time(12, 30)):
            with pytest.raises(sqlite3.Error, match="binding parameter"):
                other.execute("SELECT ?", (value,))
    finally:
        other.close()
