"""Databases behind Dial: one shared table on all four (and ClickHouse through both clients),
address forms, fd() handles, bad inputs and leaks. Real servers only (tests/servers/databases.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import threading
import time
from decimal import Decimal

import pytest

import dial
from dial import Dial, DialError
from dial.databases import DatabaseConnection, release, translate_placeholders

from .servers.databases import clickhouse_server, mariadb_server, postgres_server  # noqa: F401

pytestmark = pytest.mark.timeout(120)

# One table, four dialects. Everything below the DDL is identical for every database.
DDL = {
    "sqlite": "CREATE TABLE {t} (id INTEGER, name TEXT, price REAL, amount DECIMAL(10,2), "
    "created TIMESTAMP, note TEXT)",
    "mysql": "CREATE TABLE {t} (id BIGINT, name VARCHAR(50), price DOUBLE, "
    "amount DECIMAL(10,2), created DATETIME, note VARCHAR(50) NULL)",
    "postgres": "CREATE TABLE {t} (id BIGINT, name TEXT, price DOUBLE PRECISION, "
    "amount NUMERIC(10,2), created TIMESTAMP, note TEXT)",
    "clickhouse": "CREATE TABLE {t} (id Int64, name String, price Float64, "
    "amount Decimal(10,2), created DateTime, note Nullable(String)) ENGINE = Memory",
}
DDL["chdb"] = DDL["clickhouse"]

ROWS = [
    [1, "plain", 1.5, Decimal("2.50"), dt.datetime(2024, 1, 2, 3, 4, 5), None],
    [2, "it's 100% ?", -0.25, Decimal("-7.05"), dt.datetime(1999, 12, 31, 23, 59, 59), "x"],
    [3, "ünïcode ✓", 1e10, Decimal("12345678.90"), dt.datetime(2030, 6, 1, 0, 0, 0), ""],
]
COLUMNS = ["id", "name", "price", "amount", "created", "note"]
NO_ROWS = {"columns": [], "values": [], "rowcount": 0}


@pytest.fixture(params=["sqlite", "mysql", "postgres", "clickhouse", "chdb"])
def database(request, tmp_path):
    """(kind, address) for each database; the servers are started when missing."""
    kind = request.param
    if kind == "sqlite":
        return kind, f"sqlite3://{tmp_path / 'shared.db'}"
    if kind == "mysql":
        port = request.getfixturevalue("mariadb_server")
        return kind, f"mysql://root:@tcp(127.0.0.1:{port})/test?charset=utf8mb4"
    if kind == "postgres":
        port = request.getfixturevalue("postgres_server")
        return kind, (
            f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port={port}"
        )
    if kind == "clickhouse":
        port = request.getfixturevalue("clickhouse_server")
        return (
            kind,
            f"clickhouse://tcp://127.0.0.1:{port}?username=default&password=&database=default",
        )
    return kind, "clickhouse://chdb://"


def table_name(kind: str) -> str:
    return f"dialkit_shared_{kind}_{os.getpid()}"


def test_shared_table_same_results_everywhere(database):
    kind, address = database
    table = table_name(kind)
    conn = Dial(address, raise_errors=True)
    try:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        assert conn.exec(DDL[kind].format(t=table)) == NO_ROWS
        for row in ROWS:
            assert conn.exec(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)", *row) == {
                "columns": [],
                "values": [],
                "rowcount": 1,
            }

        everything = conn.exec(f"SELECT * FROM {table} ORDER BY id")
        assert everything == {"columns": COLUMNS, "values": ROWS}
        types = [[type(value) for value in row] for row in everything["values"]]
        assert types[0] == [int, str, float, Decimal, dt.datetime, type(None)]
        assert all(row[1:5] == [str, float, Decimal, dt.datetime] for row in types)

        # placeholders bind values; ? and % inside quotes are SQL text
        picked = conn.exec(
            f"SELECT id, name FROM {table} WHERE name = ? OR (id = ? AND name <> '?%') ORDER BY id",
            "it's 100% ?",
            3,
        )
        expected = [[2, "it's 100% ?"], [3, ROWS[2][1]]]
        assert picked == {"columns": ["id", "name"], "values": expected}
        assert conn.exec(f"SELECT id FROM {table} WHERE note IS NULL") == {
            "columns": ["id"],
            "values": [[1]],
        }
        assert conn.exec(f"SELECT id, note FROM {table} WHERE id > ?", 99) == {
            "columns": ["id", "note"],
            "values": [],
        }
        assert conn.exec(f"SELECT COUNT(*) AS n FROM {table} WHERE created > ?", ROWS[1][4]) == {
            "columns": ["n"],
            "values": [[2]],
        }

        # a failing statement: None (here DialError) with the reason, the connection lives on
        conn.raise_errors = False
        assert conn.exec(f"SELECT (id FROM {table}") is None
        assert "syntax" in dial.last_error().lower()
        assert conn.exec(f"SELECT id FROM {table} WHERE id = ?", 1, 2) is None
        assert dial.last_error() == "statement has 1 placeholder (?) but 2 parameters given"
        assert conn.exec(f"SELECT MAX(id) AS top FROM {table}") == {
            "columns": ["top"],
            "values": [[3]],
        }
        assert dial.last_error() is None
        assert conn.exec(f"DROP TABLE {table}") == NO_ROWS
    finally:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_raise_errors_raises_dial_error_with_the_reason(database):
    _, address = database
    conn = Dial(address, raise_errors=True)
    try:
        with pytest.raises(DialError) as caught:
            conn.exec("SELECT * FROM dialkit_table_that_does_not_exist")
        assert "dialkit_table_that_does_not_exist" in str(caught.value)
        assert conn.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}
    finally:
        conn.close()


def test_exec_after_close_is_a_clear_failure(database):
    _, address = database
    conn = Dial(address)
    conn.close()
    conn.close()  # idempotent
    assert conn.exec("SELECT 1") is None
    assert dial.last_error() == "connection is closed"
    assert "closed" in repr(conn)


# -- address forms -------------------------------------------------------------------------


def test_sqlite_address_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Dial("sqlite3://test1.db") as conn:
        conn.exec("CREATE TABLE t (a INTEGER)")
        conn.exec("INSERT INTO t VALUES (?)", 7)
    assert (tmp_path / "test1.db").exists()
    with Dial("sqlite3://test1.db") as conn:  # a file keeps its data
        assert conn.exec("SELECT a FROM t")["values"] == [[7]]
        tables = conn.exec("SELECT name FROM sqlite_master WHERE type='table'")
        assert tables == {"columns": ["name"], "values": [["t"]]}
    with Dial("sqlite3://:memory:") as conn:
        assert conn.exec("SELECT name FROM sqlite_master") == {"columns": ["name"], "values": []}
    first = Dial("sqlite3://file:test.db?cache=shared&mode=memory")
    second = Dial("sqlite3://file:test.db?cache=shared&mode=memory")
    try:
        first.exec("CREATE TABLE shared (a TEXT)")
        first.exec("INSERT INTO shared VALUES (?)", "seen by both")
        assert second.exec("SELECT a FROM shared")["values"] == [["seen by both"]]
        assert not (tmp_path / "test.db").exists()  # mode=memory: nothing on disk
    finally:
        first.close()
        second.close()


def test_mysql_go_dsn_and_url_forms(mariadb_server):  # noqa: F811
    port = mariadb_server
    for address in (
        f"mysql://root:@tcp(127.0.0.1:{port})/test?charset=utf8mb4&parseTime=true",
        f"mysql://root@tcp(127.0.0.1:{port})/test",
        f"mysql://root@127.0.0.1:{port}/test",
        f"mysql://root:@127.0.0.1:{port}/test?charset=utf8mb4",
    ):
        conn = Dial(address)
        assert conn is not None, (address, dial.last_error())
        assert conn.exec("SELECT DATABASE() AS db") == {"columns": ["db"], "values": [["test"]]}
        conn.close()


def test_postgres_libpq_and_url_forms(postgres_server):  # noqa: F811
    port = postgres_server
    for address in (
        f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port={port}",
        f"postgres://user=postgres dbname='test' password='' host=localhost port={port}",
        f"postgres://postgres@127.0.0.1:{port}/test?sslmode=disable",
        f"postgresql://postgres@localhost:{port}/test",
    ):
        conn = Dial(address)
        assert conn is not None, (address, dial.last_error())
        assert conn.exec("SELECT current_database() AS db") == {
            "columns": ["db"],
            "values": [["test"]],
        }
        conn.close()


def test_postgres_multi_statement_script(postgres_server):  # noqa: F811
    with Dial(f"postgres://postgres@127.0.0.1:{postgres_server}/test") as conn:
        script = "CREATE TEMP TABLE s (a int); INSERT INTO s VALUES (1), (2)"
        assert conn.exec(script) == {"columns": [], "values": [], "rowcount": 2}
        assert conn.exec("SELECT sum(a) AS total FROM s") == {
            "columns": ["total"],
            "values": [[3]],
        }


def test_clickhouse_inline_values_and_multi_row_placeholders(clickhouse_server):  # noqa: F811
    address = f"clickhouse://tcp://127.0.0.1:{clickhouse_server}?database=default"
    table = f"dialkit_inline_{os.getpid()}"
    with Dial(address, raise_errors=True) as conn:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.exec(f"CREATE TABLE {table} (a Int32, b String) ENGINE = Memory")
        # inline literals (hang as-is on 18.x over the native protocol)
        inline = conn.exec(f"INSERT INTO {table} (a, b) VALUES (1, 'x, (y)'), (2, 'it''s')")
        assert inline == {"columns": [], "values": [], "rowcount": 2}
        many = conn.exec(f"INSERT INTO {table} VALUES (?, ?), (?, ?)", 3, "c", 4, "d")
        assert many == {"columns": [], "values": [], "rowcount": 2}
        mixed = conn.exec(f"INSERT INTO {table} VALUES (5, ?)", "e")
        assert mixed == {"columns": [], "values": [], "rowcount": 1}
        assert conn.exec(f"SELECT a, b FROM {table} ORDER BY a")["values"] == [
            [1, "x, (y)"],
            [2, "it's"],
            [3, "c"],
            [4, "d"],
            [5, "e"],
        ]
        conn.exec(f"DROP TABLE {table}")


def test_clickhouse_http_form_parses_and_fails_clearly_without_server():
    from dial.databases.backends.clickhouse import parse_clickhouse_target

    settings = parse_clickhouse_target("https://127.0.0.1?username=u&password=p&database=d")
    assert settings == {
        "kind": "https",
        "host": "127.0.0.1",
        "port": 8443,
        "user": "u",
        "password": "p",
        "database": "d",
    }
    from tests.servers.base import free_port

    port = free_port()
    assert Dial(f"clickhouse://http://127.0.0.1:{port}?username=u&password=secret", 5) is None
    reason = dial.last_error()
    assert f"clickhouse 127.0.0.1:{port}" in reason
    assert "secret" not in reason


# -- fd() handles --------------------------------------------------------------------------


def test_memory_sqlite_survives_close_through_its_handle():
    conn = Dial("sqlite3://:memory:")
    conn.exec("CREATE TABLE kept (a TEXT)")
    conn.exec("INSERT INTO kept VALUES (?)", "still here")
    handle = conn.fd()
    assert isinstance(handle, int)
    assert conn.fd() == handle  # one handle per database connection
    conn.close()
    assert conn.exec("SELECT 1") is None  # this object is closed...

    results: list[object] = []

    def worker() -> None:
        other = Dial(handle)  # ...but the database connection is not
        results.append(other.exec("SELECT a FROM kept"))
        other.exec("INSERT INTO kept VALUES (?)", "from a thread")
        other.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results[0] == {"columns": ["a"], "values": [["still here"]]}
    again = Dial(handle)
    assert again.exec("SELECT COUNT(*) AS n FROM kept")["values"] == [[5]]
    assert f"handle={handle}" in repr(again)

    again.release()  # the lifetime ends here, for every user of the handle
    assert Dial(handle) is None
    assert dial.last_error() == (
        f"unknown database handle {handle} (never issued by fd(), or released)"
    )
    assert release(handle) is False


def test_handle_shares_one_server_connection(postgres_server):  # noqa: F811
    conn = Dial(f"postgres://postgres@127.0.0.1:{postgres_server}/test")
    pid = conn.exec("SELECT pg_backend_pid() AS pid")["values"][0][0]
    handle = conn.fd()
    conn.close()
    seen: list[object] = []
    thread = threading.Thread(
        target=lambda: seen.append(Dial(handle).exec("SELECT pg_backend_pid() AS pid"))
    )
    thread.start()
    thread.join(10)
    assert seen == [{"columns": ["pid"], "values": [[pid]]}]
    assert release(handle) is True
    assert Dial(handle) is None


def test_without_fd_closing_the_last_user_closes_the_connection(postgres_server):  # noqa: F811
    address = f"postgres://postgres@127.0.0.1:{postgres_server}/test"
    watcher = Dial(address)
    conn = Dial(address)
    pid = conn.exec("SELECT pg_backend_pid() AS pid")["values"][0][0]
    conn.close()
    query = "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE pid = ?"
    deadline = time.monotonic() + 5
    while watcher.exec(query, pid)["values"] != [[0]] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watcher.exec(query, pid)["values"] == [[0]]
    watcher.close()


def test_bad_handles():
    assert Dial(123456789) is None
    assert "unknown database handle 123456789" in dial.last_error()
    with pytest.raises(DialError):
        Dial(123456789, raise_errors=True)


# -- bad inputs ----------------------------------------------------------------------------

MALFORMED = [
    ("sqlite3://", "has no target"),
    ("sqlite3:///no/such/dir/x.db", "unable to open database file"),
    ("sqlite3://x.db|reconnect=true", "not supported for sqlite3://"),
    ("mysql://root@tcp(127.0.0.1:3306/test", "malformed DSN"),
    ("mysql://root@tcp(127.0.0.1:99999)/test", "bad port"),
    ("mysql://root@127.0.0.1:3306/test?colour=blue", "unsupported parameter 'colour'"),
    ("mysql://root@unix()/test", "unix() needs a socket path"),
    ("postgres://user=postgres dbname='test", "expected key=value pairs"),
    ("postgres://user=postgres colour=blue", "unsupported setting colour"),
    ("postgres://user=postgres port=abc", "port 'abc' is not a number"),
    ("postgres://user=postgres sslmode=sometimes", "sslmode='sometimes'"),
    ("postgres://postgres@127.0.0.1:99999/test", "bad host or port"),
    ("clickhouse://127.0.0.1:9000", "expected tcp://host:9000"),
    ("clickhouse://tcp://:9000", "missing host"),
    ("clickhouse://tcp://127.0.0.1:9000?colour=blue", "unsupported parameter 'colour'"),
    ("clickhouse://tcp://127.0.0.1:9000?dial_timeout=soon", "dial_timeout='soon'"),
]


@pytest.mark.parametrize(("address", "reason"), MALFORMED)
def test_malformed_addresses_give_a_clear_reason(address, reason):
    assert Dial(address, 3) is None
    assert reason in dial.last_error()


def test_wrong_password_and_unknown_database(mariadb_server, clickhouse_server):  # noqa: F811
    cases = [
        (f"mysql://root:wrong@tcp(127.0.0.1:{mariadb_server})/test", "Access denied"),
        (f"mysql://root@tcp(127.0.0.1:{mariadb_server})/no_such_db", "Unknown database"),
        (f"clickhouse://tcp://127.0.0.1:{clickhouse_server}?password=wrong", "Wrong password"),
        (f"clickhouse://tcp://127.0.0.1:{clickhouse_server}?database=no_such_db", "doesn't exist"),
    ]
    for address, reason in cases:
        assert Dial(address, 5) is None, address
        assert reason in dial.last_error()
        assert "wrong" not in dial.last_error().replace("Wrong", "")  # password not echoed


def test_postgres_unknown_database(postgres_server):  # noqa: F811
    address = f"postgres://user=postgres dbname=no_such_db host=127.0.0.1 port={postgres_server}"
    assert Dial(address) is None
    assert 'database "no_such_db" does not exist' in dial.last_error()


def test_refused_port_is_a_clear_reason():
    from tests.servers.base import free_port

    port = free_port()
    for address in (
        f"postgres://postgres@127.0.0.1:{port}/test",
        f"mysql://root@tcp(127.0.0.1:{port})/test",
        f"clickhouse://tcp://127.0.0.1:{port}",
    ):
        assert Dial(address, 3) is None
        reason = dial.last_error()
        assert f"127.0.0.1:{port}" in reason and "refused" in reason.lower(), reason


def test_server_side_kill_is_survived(postgres_server, mariadb_server):  # noqa: F811
    """A connection the server dropped is noticed and replaced before the next statement."""
    pg = Dial(f"postgres://postgres@127.0.0.1:{postgres_server}/test")
    my = Dial(f"mysql://root@127.0.0.1:{mariadb_server}/test")
    killer_pg = Dial(f"postgres://postgres@127.0.0.1:{postgres_server}/test")
    killer_my = Dial(f"mysql://root@127.0.0.1:{mariadb_server}/test")
    try:
        pid = pg.exec("SELECT pg_backend_pid() AS p")["values"][0][0]
        thread_id = my.exec("SELECT CONNECTION_ID() AS c")["values"][0][0]
        killer_pg.exec("SELECT pg_terminate_backend(?)", pid)
        killer_my.exec(f"KILL {int(thread_id)}")
        time.sleep(0.3)
        assert pg.exec("SELECT pg_backend_pid() AS p")["values"][0][0] != pid
        assert my.exec("SELECT CONNECTION_ID() AS c")["values"][0][0] != thread_id
    finally:
        for conn in (pg, my, killer_pg, killer_my):
            conn.close()


@pytest.fixture
def wait_for_as_on_python_312(monkeypatch):
    """`asyncio.wait_for` that, like Python 3.12's (built on asyncio.timeout), refuses to
    run outside a task: the databases' own code must never call it where there is none."""
    original = asyncio.wait_for

    async def wait_for(awaitable, timeout):
        if asyncio.current_task() is None:
            raise RuntimeError("Timeout should be used inside a task")
        return await original(awaitable, timeout)

    monkeypatch.setattr(asyncio, "wait_for", wait_for)


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_a_reconnect_from_the_fast_statement_path_runs_in_a_task(
    kind,
    wait_for_as_on_python_312,
    postgres_server,  # noqa: F811
    mariadb_server,  # noqa: F811
):
    """A statement without a timeout is stepped without a task; when it finds the link dead
    the reconnect (connect and close have timeouts) runs as a task, on every Python."""
    address, whoami, kill = _killable(kind, postgres_server, mariadb_server)
    conn, killer = Dial(address, 5), Dial(address, 5)
    assert conn is not None and killer is not None, dial.last_error()
    try:
        session = conn.exec(whoami)["values"][0][0]
        assert killer.exec(kill, session) is not None, dial.last_error()
        time.sleep(0.3)
        renewed = conn.exec(whoami)
        assert renewed is not None, dial.last_error()
        assert renewed["values"][0][0] != session
        assert conn.stats().reconnects == 1
    finally:
        conn.close()
        killer.close()


def test_repr_never_shows_the_password(mariadb_server):  # noqa: F811
    conn = Dial("postgres://user=postgres password=hunter2 host=127.0.0.1 port=1", 2)
    assert conn is None and "hunter2" not in dial.last_error()
    conn = Dial(f"mysql://root:@tcp(127.0.0.1:{mariadb_server})/test")
    assert isinstance(conn, DatabaseConnection)
    text = repr(conn)
    conn.close()
    assert text.startswith("<DatabaseConnection mysql://root")
    for address in (
        "mysql://root:hunter2@tcp(127.0.0.1:1)/test",
        "mysql://root:hunter2@127.0.0.1:1/test",
        "clickhouse://tcp://127.0.0.1:1?username=u&password=hunter2",
    ):
        assert Dial(address, 2) is None
        assert "hunter2" not in dial.last_error()


# -- leaks ---------------------------------------------------------------------------------


def test_no_leaked_threads_or_sockets(database):
    """15 dial/exec/close rounds leave no thread and no socket behind (a leak per round would
    add 15; the slack absorbs chDB's engine, which opens and closes files on its own)."""
    psutil = pytest.importorskip("psutil")
    _, address = database
    process = psutil.Process()

    def rounds(count: int) -> None:
        for _ in range(count):
            conn = Dial(address)
            assert conn.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}
            conn.close()
        abandoned = Dial(address)  # dropped without close(): the finalizer closes it
        assert abandoned.exec("SELECT 1 AS one")
        del abandoned
        gc.collect()

    def settled(floor: tuple[int, int]) -> tuple[int, int]:
        deadline = time.monotonic() + 5
        now = (threading.active_count(), process.num_fds())
        while (now[0] > floor[0] or now[1] > floor[1] + 4) and time.monotonic() < deadline:
            time.sleep(0.05)
            now = (threading.active_count(), process.num_fds())
        return now

    rounds(2)  # warm up: the reactor thread, imports, engine start-up
    before = (threading.active_count(), process.num_fds())
    rounds(15)
    middle = settled(before)
    rounds(15)
    after = settled(middle)
    assert after[0] <= before[0], f"threads {before[0]} -> {after[0]}"
    # A leak per round adds 15 in each batch; chDB's engine also opens files of its own once
    # (logs, caches) while it warms up, so for it only the second batch must add nothing.
    first = middle if "chdb" in address else before
    assert after[1] <= first[1] + 4, f"fds {before[1]} -> {middle[1]} -> {after[1]}"


def test_failed_dials_leak_nothing(mariadb_server, postgres_server, clickhouse_server):  # noqa: F811
    psutil = pytest.importorskip("psutil")
    process = psutil.Process()
    bad = [
        f"mysql://root:wrong@tcp(127.0.0.1:{mariadb_server})/test",
        f"postgres://user=postgres dbname=no_such_db host=127.0.0.1 port={postgres_server}",
        f"clickhouse://tcp://127.0.0.1:{clickhouse_server}?password=wrong",
        "sqlite3:///no/such/dir/x.db",
    ]
    for address in bad:  # warm up imports and the reactor
        Dial(address, 5)
    before = (threading.active_count(), process.num_fds())
    for _ in range(3):
        for address in bad:
            assert Dial(address, 5) is None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = (threading.active_count(), process.num_fds())
        if after[0] <= before[0] and after[1] <= before[1]:
            break
        time.sleep(0.05)
    assert after[0] <= before[0] and after[1] <= before[1], (before, after)


# -- placeholders --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("qmark", "SELECT ?, '?', \"?\", `?`, ? -- ?\n /* ? */ $$?$$, '%'"),
        ("format", "SELECT %s, '?', \"?\", `?`, %s -- ?\n /* ? */ $$?$$, '%%'"),
        ("numeric", "SELECT $1, '?', \"?\", `?`, $2 -- ?\n /* ? */ $$?$$, '%'"),
        ("pyformat", "SELECT %(p0)s, '?', \"?\", `?`, %(p1)s -- ?\n /* ? */ $$?$$, '%%'"),
    ],
)
def test_placeholders_outside_quotes_and_comments(style, expected):
    sql = "SELECT ?, '?', \"?\", `?`, ? -- ?\n /* ? */ $$?$$, '%'"
    assert translate_placeholders(sql, style) == (expected, 2)


def test_escaped_quotes_do_not_end_a_string():
    assert translate_placeholders("SELECT 'it''s ?', 'a\\'?', ?", "numeric") == (
        "SELECT 'it''s ?', 'a\\'?', $1",
        1,
    )


# -- faults inside transactions and bad statement arguments ---------------------------------


def _killable(kind: str, postgres_port: int, mariadb_port: int) -> tuple[str, str, str]:
    """(address, "who am I" SQL, kill SQL taking that id) for one server database."""
    if kind == "postgres":
        return (
            f"postgres://postgres@127.0.0.1:{postgres_port}/test",
            "SELECT pg_backend_pid() AS id",
            "SELECT pg_terminate_backend(?)",
        )
    return (
        f"mysql://root@tcp(127.0.0.1:{mariadb_port})/test",
        "SELECT CONNECTION_ID() AS id",
        "KILL ?",
    )


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_link_lost_inside_a_transaction_is_reported_not_papered_over(
    kind,
    postgres_server,  # noqa: F811
    mariadb_server,  # noqa: F811
):
    """The server rolled the transaction back with the killed session: the next statement must
    not run on a fresh autocommit link (it would commit what the program later rolls back)."""
    address, whoami, kill = _killable(kind, postgres_server, mariadb_server)
    table = f"dialkit_tx_{kind}_{os.getpid()}"
    conn, killer = Dial(address, 5), Dial(address, 5)
    assert conn is not None and killer is not None, dial.last_error()
    try:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        assert conn.exec(f"CREATE TABLE {table} (id INTEGER)") == NO_ROWS
        session = conn.exec(whoami)["values"][0][0]
        assert conn.exec("BEGIN") is not None
        assert conn.exec(f"INSERT INTO {table} VALUES (1)")["rowcount"] == 1
        assert killer.exec(kill, session) is not None, dial.last_error()
        time.sleep(0.3)

        assert conn.exec(f"INSERT INTO {table} VALUES (2)") is None
        assert dial.last_error() == (
            "connection lost inside a transaction: the server rolled it back; "
            "start the transaction again"
        )
        # The link is renewed for the next statement; nothing of the transaction survived.
        assert conn.exec(f"SELECT COUNT(*) AS n FROM {table}")["values"] == [[0]]
        assert conn.exec(whoami)["values"][0][0] != session
        # Between transactions a loss is still repaired silently.
        killer.exec(kill, conn.exec(whoami)["values"][0][0])
        time.sleep(0.3)
        assert conn.exec(f"SELECT COUNT(*) AS n FROM {table}")["values"] == [[0]]
        # A committed transaction leaves nothing open: a later loss is silent again.
        assert conn.exec("BEGIN") and conn.exec(f"INSERT INTO {table} VALUES (3)")
        assert conn.exec("COMMIT") is not None
        killer.exec(kill, conn.exec(whoami)["values"][0][0])
        time.sleep(0.3)
        assert conn.exec(f"SELECT id FROM {table}")["values"] == [[3]]
    finally:
        killer.exec(f"DROP TABLE IF EXISTS {table}")
        conn.close()
        killer.close()


def test_mysql_bad_parameter_leaves_the_link_and_its_transaction_alone(mariadb_server):  # noqa: F811
    conn = Dial(f"mysql://root@tcp(127.0.0.1:{mariadb_server})/test", 5)
    table = f"dialkit_param_{os.getpid()}"
    try:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.exec(f"CREATE TABLE {table} (id INTEGER) ENGINE=InnoDB")
        session = conn.exec("SELECT CONNECTION_ID() AS id")["values"]
        assert conn.exec("BEGIN") and conn.exec(f"INSERT INTO {table} VALUES (1)")
        assert conn.exec("SELECT ? AS v", float("nan")) is None
        assert dial.last_error() == "mysql: parameter 1: nan can not be used with MySQL"
        assert conn.exec("SELECT ? AS v, ? AS w", 1, object()) is None
        assert dial.last_error() == "parameter 2: unsupported type object"
        assert conn.exec("COMMIT") is not None
        assert conn.exec("SELECT CONNECTION_ID() AS id")["values"] == session
        assert conn.exec(f"SELECT id FROM {table}")["values"] == [[1]]
    finally:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_mysql_binds_bytes_as_binary(mariadb_server):  # noqa: F811
    conn = Dial(f"mysql://root@tcp(127.0.0.1:{mariadb_server})/test", 5)
    table = f"dialkit_blob_{os.getpid()}"
    blob = bytes(range(256)) + b"'\\%s?"
    try:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.exec(f"CREATE TABLE {table} (id INTEGER, b BLOB)")
        assert conn.exec(f"INSERT INTO {table} VALUES (?, ?)", 1, blob)["rowcount"] == 1
        assert conn.exec(f"INSERT INTO {table} VALUES (?, ?)", 2, bytearray(b"ab"))
        assert conn.exec(f"INSERT INTO {table} VALUES (?, ?)", 3, memoryview(b""))
        assert conn.exec(f"SELECT b FROM {table} ORDER BY id")["values"] == [
            [blob],
            [b"ab"],
            [b""],
        ]
        assert conn.exec("SELECT ? AS v, '%' AS p", "%s %% ?") == {
            "columns": ["v", "p"],
            "values": [["%s %% ?", "%"]],
        }
    finally:
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.close()


def test_unsupported_parameter_types_are_refused_everywhere(database):
    _, address = database
    conn = Dial(address, 10)
    try:
        for bad in (object(), {1, 2}, Dial):
            assert conn.exec("SELECT ? AS v", bad) is None
            assert dial.last_error() == f"parameter 1: unsupported type {type(bad).__name__}"
        assert conn.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}
    finally:
        conn.close()


def test_mysql_reconnects_after_the_server_dropped_the_link(mariadb_server):  # noqa: F811
    """MariaDB closes a link that sent a packet over max_allowed_packet: the statement fails,
    and the next one reconnects first instead of failing on the dead link."""
    conn = Dial(f"mysql://root@tcp(127.0.0.1:{mariadb_server})/test", 5)
    try:
        limit = conn.exec("SELECT @@max_allowed_packet AS m")["values"][0][0]
        assert limit <= 64 * 1024 * 1024, f"max_allowed_packet {limit} is too big to exceed"
        assert conn.exec("SELECT ? AS v", "y" * (limit + 1024)) is None
        assert "max_allowed_packet" in dial.last_error()
        assert conn.exec("SELECT 1 AS one") == {"columns": ["one"], "values": [[1]]}, (
            dial.last_error()
        )
    finally:
        conn.close()


SILENT_SERVER = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
held = []
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    server.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        held.append(server.accept()[0])
    except OSError:
        break
"""


@pytest.fixture
def silent_port():
    """A local port that accepts TCP and never answers (its own process)."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait(5)


@pytest.mark.parametrize("form", ["tcp", "http"])
def test_failed_clickhouse_dial_to_a_silent_peer_leaves_nothing(form, silent_port):
    """The Dial timeout bounds the blocking drivers: no worker thread or socket survives a
    failed Dial, and a program whose Dial failed exits at once (not after 300 s)."""
    import subprocess
    import sys

    psutil = pytest.importorskip("psutil")
    process = psutil.Process()
    address = f"clickhouse://{form}://127.0.0.1:{silent_port}"
    assert Dial(address, 0.5) is None  # warm up: imports, pools
    before = (threading.active_count(), process.num_fds())
    for _ in range(5):
        assert Dial(address, 0.5) is None
        assert dial.last_error() == f"{address}: no connection within 0.5 s"
    after = (threading.active_count(), process.num_fds())
    assert after[0] <= before[0], [t.name for t in threading.enumerate()]
    assert after[1] <= before[1], f"fds {before[1]} -> {after[1]}"

    script = f"from dial import Dial; assert Dial({address!r}, 1) is None"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_unusable_exec_timeouts_are_refused_before_sending(timeout, tmp_path):
    conn = Dial(f"sqlite3://{tmp_path / 'timeouts.db'}")
    try:
        conn.exec("CREATE TABLE t (a INTEGER)")
        assert conn.exec("INSERT INTO t VALUES (1)", timeout=timeout) is None
        assert dial.last_error().startswith("exec() timeout must be"), dial.last_error()
        assert repr(timeout) in dial.last_error() or type(timeout).__name__ in dial.last_error()
        assert conn.exec("SELECT COUNT(*) AS n FROM t")["values"] == [[0]]
        assert conn.exec("INSERT INTO t VALUES (1)", timeout=5)["rowcount"] == 1
    finally:
        conn.close()


def test_mysql_unknown_charset_is_a_clear_reason(capfd):
    assert Dial("mysql://root@127.0.0.1:3306/test?charset=bogus", 2) is None
    assert dial.last_error() == "mysql://: unknown charset 'bogus'"
    gc.collect()
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "address",
    ["postgres://garbage", "mysql://root@tcp(garbage:3306)/test", "mysql://root@garbage/test"],
)
def test_unresolvable_host_is_a_clear_reason(address, monkeypatch):
    """No DNS query leaves the machine: the resolver is replaced by one that knows no name."""
    import socket

    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "unknown to the test resolver")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert Dial(address, 3) is None
    reason = dial.last_error()
    assert "cannot resolve host 'garbage' (unknown to the test resolver)" in reason, reason
    assert "Unknown error" not in reason
