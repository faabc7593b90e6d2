"""exec() and exec_many() against the raw driver, in one run, on each database that is reachable:

* SELECT 100k rows x 5 columns (one statement, whole result materialised as lists/records)
* INSERT, one parameterised statement per row, two ways:
  - autocommit: every row its own transaction, as a user writes single rows (the server's
    commit, an fsync, dominates: this is what a strategy that logs a trade pays);
  - in one transaction: BEGIN, the rows, COMMIT, so the client-side cost per row shows
* INSERT batch: `exec_many(sql, rows)` against the driver's own batch call

Prints rows/s for both and the ratio exec/raw (target >= 0.9). Servers: the shared ones on
their default ports (start them with the test fixtures or tests/servers/databases.py); give
another port as NAME:PORT.
Usage: python benchmarks/databases.py [sqlite mysql postgres clickhouse[:PORT] ...]

What is compared: "raw" is the driver used the way its own documentation shows:
- sqlite: the standard library's sqlite3, one connection, isolation_level=None (autocommit);
  `execute(sql, params)` per row, `executemany` between BEGIN and COMMIT for the batch;
- postgres: asyncpg awaited inside a running loop, one connection, `execute(sql, *args)`,
  `executemany(sql, rows)`;
- mysql: aiomysql awaited inside a running loop, autocommit=True, one cursor,
  `execute(sql, args)`, `executemany(sql, rows)` (its multi-row INSERT rewrite);
- clickhouse: clickhouse-driver (native protocol) from a plain thread,
  `execute("INSERT INTO t VALUES", rows)` (one row, or the whole batch as one block).
"exec" is `Dial(...).exec(...)` / `.exec_many(...)` called from a plain synchronous thread, as
strategy code does. Raw and exec rounds alternate (who goes first alternates too) and the best
round of each counts, so a burst of load from other processes on a shared machine hits both
sides alike. The target table is emptied before every round (TRUNCATE; DELETE on sqlite).

Where exec stays below the raw driver, and why: a sqlite INSERT inside an open transaction
costs the raw driver about 1.5 us, less than a call through any layer that checks, binds,
serialises threads and shapes a result (about 3 us here); a SELECT pays for the FMZ shape
(rows as lists, ~60 ns a row on top of sqlite3's tuples).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dial import Dial, last_error

SELECT_ROWS = 100_000
INSERT_ROWS = 2_000  # single-row INSERTs in one transaction (short rounds, many of them)
AUTOCOMMIT_ROWS = 300  # single-row INSERTs, each committed (an fsync each)
BATCH_ROWS = 50_000
ROW = (1, 2.5, "some text value", 42, 3.25)
#: Rounds per side; the best counts. Short rounds, many of them, for the cheap workload: on a
#: shared machine a clean stretch is more likely to hold one whole short round.
ROUNDS = {"select": 5, "autocommit": 9, "transaction": 15, "batch": 7}
TARGET = 0.9
WORKLOADS = ("select", "autocommit", "transaction", "batch")
TITLES = {
    "select": f"SELECT {SELECT_ROWS // 1000}k x 5",
    "autocommit": f"INSERT {AUTOCOMMIT_ROWS} autocommit",
    "transaction": f"INSERT {INSERT_ROWS:,} in 1 tx",
    "batch": f"exec_many {BATCH_ROWS // 1000}k",
}
COUNTS = {
    "select": SELECT_ROWS,
    "autocommit": AUTOCOMMIT_ROWS,
    "transaction": INSERT_ROWS,
    "batch": BATCH_ROWS,
}


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def rows_of(count: int) -> list[tuple[Any, ...]]:
    return [(i, *ROW[1:]) for i in range(count)]


def report(name: str, workload: str, raw: float, ours: float) -> float:
    rows = COUNTS[workload]
    ratio = raw / ours
    print(
        f"{name:<11} {TITLES[workload]:<22} raw {rows / raw:>11,.0f} rows/s   exec "
        f"{rows / ours:>11,.0f} rows/s   ratio {ratio:4.2f} "
        f"{'ok' if ratio >= TARGET else f'BELOW {TARGET}'}",
        flush=True,
    )
    return ratio


class Side:
    """One way of running the workloads; each call times one round (seconds). `clear` empties
    the target table first; `tx` says whether the database has transactions."""

    tx = True

    def select(self) -> float:
        raise NotImplementedError

    def autocommit(self) -> float:
        raise NotImplementedError

    def transaction(self) -> float:
        raise NotImplementedError

    def batch(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ViaExec(Side):
    def __init__(self, address: str, tx: bool, clear: str) -> None:
        self.conn = Dial(address, raise_errors=True)
        self.tx = tx
        self.clear_sql = clear  # TRUNCATE: no dead rows for the server to purge meanwhile
        self.insert_sql = "INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)"

    def clear(self) -> None:
        self.conn.exec(self.clear_sql)

    def select(self) -> float:
        def run() -> None:
            result = self.conn.exec("SELECT a, b, c, d, e FROM bench_src")
            assert len(result["values"]) == SELECT_ROWS

        return timed(run)

    def _singles(self, count: int, in_tx: bool) -> float:
        conn, insert_sql = self.conn, self.insert_sql
        self.clear()

        def run() -> None:
            if in_tx:
                conn.exec("BEGIN")
            for i in range(count):
                conn.exec(insert_sql, i, *ROW[1:])
            if in_tx:
                conn.exec("COMMIT")

        return timed(run)

    def autocommit(self) -> float:
        return self._singles(AUTOCOMMIT_ROWS, False)

    def transaction(self) -> float:
        return self._singles(INSERT_ROWS, self.tx)

    def batch(self) -> float:
        rows = rows_of(BATCH_ROWS)
        self.clear()
        return timed(lambda: self.conn.exec_many(self.insert_sql, rows))

    def close(self) -> None:
        self.conn.close()


class InLoop(Side):
    """A raw async driver: the workloads are coroutines timed inside one running loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def _timed(self, work: Callable[[], Awaitable[Any]]) -> float:
        async def round_() -> float:
            start = time.perf_counter()
            await work()
            return time.perf_counter() - start

        return self.loop.run_until_complete(round_())

    def close(self) -> None:
        self.loop.run_until_complete(self.aclose())
        self.loop.close()

    async def aclose(self) -> None:
        pass


# -- raw drivers -----------------------------------------------------------------------------


class RawSqlite(Side):
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.insert_sql = "INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)"

    def select(self) -> float:
        def run() -> None:
            assert len(self.db.execute("SELECT a, b, c, d, e FROM bench_src").fetchall()) == (
                SELECT_ROWS
            )

        return timed(run)

    def _singles(self, count: int, in_tx: bool) -> float:
        db, insert_sql = self.db, self.insert_sql
        db.execute("DELETE FROM bench_dst")

        def run() -> None:
            if in_tx:
                db.execute("BEGIN")
            for i in range(count):
                db.execute(insert_sql, (i, *ROW[1:]))
            if in_tx:
                db.execute("COMMIT")

        return timed(run)

    def autocommit(self) -> float:
        return self._singles(AUTOCOMMIT_ROWS, False)

    def transaction(self) -> float:
        return self._singles(INSERT_ROWS, True)

    def batch(self) -> float:
        db, rows = self.db, rows_of(BATCH_ROWS)
        db.execute("DELETE FROM bench_dst")

        def run() -> None:
            db.execute("BEGIN")
            db.executemany(self.insert_sql, rows)
            db.execute("COMMIT")

        return timed(run)

    def close(self) -> None:
        self.db.close()


class RawPostgres(InLoop):
    def __init__(self, port: int) -> None:
        super().__init__()
        import asyncpg

        self.db = self.loop.run_until_complete(
            asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="test")
        )
        self.insert_sql = "INSERT INTO bench_dst VALUES ($1, $2, $3, $4, $5)"

    def select(self) -> float:
        async def run() -> None:
            assert len(await self.db.fetch("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

        return self._timed(run)

    def _singles(self, count: int, in_tx: bool) -> float:
        db, insert_sql = self.db, self.insert_sql
        self.loop.run_until_complete(db.execute("TRUNCATE TABLE bench_dst"))

        async def run() -> None:
            if in_tx:
                await db.execute("BEGIN")
            for i in range(count):
                await db.execute(insert_sql, i, *ROW[1:])
            if in_tx:
                await db.execute("COMMIT")

        return self._timed(run)

    def autocommit(self) -> float:
        return self._singles(AUTOCOMMIT_ROWS, False)

    def transaction(self) -> float:
        return self._singles(INSERT_ROWS, True)

    def batch(self) -> float:
        db, rows = self.db, rows_of(BATCH_ROWS)
        self.loop.run_until_complete(db.execute("TRUNCATE TABLE bench_dst"))
        return self._timed(lambda: db.executemany(self.insert_sql, rows))

    async def aclose(self) -> None:
        await self.db.close()


class RawMysql(InLoop):
    def __init__(self, port: int) -> None:
        super().__init__()
        import aiomysql

        self.db = self.loop.run_until_complete(
            aiomysql.connect(host="127.0.0.1", port=port, user="root", db="test", autocommit=True)
        )
        self.cursor = self.loop.run_until_complete(self._cursor())
        self.insert_sql = "INSERT INTO bench_dst VALUES (%s, %s, %s, %s, %s)"

    async def _cursor(self) -> Any:
        return await self.db.cursor()

    def _clear(self) -> None:
        self.loop.run_until_complete(self.cursor.execute("TRUNCATE TABLE bench_dst"))

    def select(self) -> float:
        async def run() -> None:
            await self.cursor.execute("SELECT a, b, c, d, e FROM bench_src")
            assert len(await self.cursor.fetchall()) == SELECT_ROWS

        return self._timed(run)

    def _singles(self, count: int, in_tx: bool) -> float:
        cursor, insert_sql = self.cursor, self.insert_sql
        self._clear()

        async def run() -> None:
            if in_tx:
                await cursor.execute("BEGIN")
            for i in range(count):
                await cursor.execute(insert_sql, (i, *ROW[1:]))
            if in_tx:
                await cursor.execute("COMMIT")

        return self._timed(run)

    def autocommit(self) -> float:
        return self._singles(AUTOCOMMIT_ROWS, False)

    def transaction(self) -> float:
        return self._singles(INSERT_ROWS, True)

    def batch(self) -> float:
        rows = rows_of(BATCH_ROWS)
        self._clear()
        return self._timed(lambda: self.cursor.executemany(self.insert_sql, rows))

    async def aclose(self) -> None:
        await self.cursor.close()
        self.db.close()


class RawClickhouse(Side):
    tx = False

    def __init__(self, port: int) -> None:
        from clickhouse_driver import Client

        self.db = Client("127.0.0.1", port)

    def select(self) -> float:
        def run() -> None:
            assert len(self.db.execute("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

        return timed(run)

    def _singles(self, count: int) -> float:
        db = self.db
        db.execute("TRUNCATE TABLE bench_dst")

        def run() -> None:
            for i in range(count):
                db.execute("INSERT INTO bench_dst VALUES", [(i, *ROW[1:])])

        return timed(run)

    def autocommit(self) -> float:
        return self._singles(AUTOCOMMIT_ROWS)

    def transaction(self) -> float:
        return self._singles(INSERT_ROWS)

    def batch(self) -> float:
        rows = rows_of(BATCH_ROWS)
        self.db.execute("TRUNCATE TABLE bench_dst")
        return timed(lambda: self.db.execute("INSERT INTO bench_dst VALUES", rows))

    def close(self) -> None:
        self.db.disconnect()


def one_round(raw: Side, ours: Side, workload: str, number: int) -> tuple[float, float]:
    """(raw, exec) seconds of one round each; who goes first alternates, so that what one
    side leaves behind (a purge, a checkpoint) does not always fall on the other."""
    if number % 2:
        ours_first = getattr(ours, workload)()
        return getattr(raw, workload)(), ours_first
    raw_first = getattr(raw, workload)()
    return raw_first, getattr(ours, workload)()


def compare(raw: Side, ours: Side) -> dict[str, tuple[float, float]]:
    """Alternating rounds; the best of each side per workload: {workload: (raw, exec)}."""
    best: dict[str, tuple[float, float]] = {}
    try:
        for workload in WORKLOADS:
            if workload == "transaction" and not raw.tx:
                continue  # no transactions: the autocommit rows are the same workload
            rounds = [one_round(raw, ours, workload, number) for number in range(ROUNDS[workload])]
            best[workload] = (min(r for r, _ in rounds), min(o for _, o in rounds))
    finally:
        raw.close()
        ours.close()
    return best


# -- per database ------------------------------------------------------------------------------


def prepare(address: str, ddl: str, fill: list[str]) -> None:
    conn = Dial(address, raise_errors=True)
    for table in ("bench_src", "bench_dst"):
        conn.exec(f"DROP TABLE IF EXISTS {table}")
        conn.exec(ddl.format(table=table))
    for statement in fill:
        conn.exec(statement)
    conn.close()


SERVER_DDL = (
    "CREATE TABLE {table} (a BIGINT, b DOUBLE PRECISION, c VARCHAR(64), d BIGINT, "
    "e DOUBLE PRECISION)"
)


def run(name: str, port: int | None) -> list[float]:
    raw: Side
    if name == "sqlite":
        path = str(Path(tempfile.mkdtemp()) / "bench.db")
        with sqlite3.connect(path) as db:
            for table in ("bench_src", "bench_dst"):
                db.execute(f"CREATE TABLE {table} (a INTEGER, b REAL, c TEXT, d INTEGER, e REAL)")
            db.executemany(
                "INSERT INTO bench_src VALUES (?, ?, ?, ?, ?)",
                ((i, *ROW[1:]) for i in range(SELECT_ROWS)),
            )
        address = f"sqlite3://{path}"
        raw = RawSqlite(path)
        tx = True
    elif name == "postgres":
        address = f"postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port={port}"
        prepare(
            address,
            SERVER_DDL,
            [
                "INSERT INTO bench_src SELECT g, 2.5, 'some text value', 42, 3.25 "
                f"FROM generate_series(1, {SELECT_ROWS}) g"
            ],
        )
        raw = RawPostgres(port or 5432)
        tx = True
    elif name == "mysql":
        address = f"mysql://root:@tcp(127.0.0.1:{port})/test?charset=utf8mb4"
        prepare(
            address,
            SERVER_DDL + " ENGINE=InnoDB",
            [
                "SET SESSION max_recursive_iterations = 1000000",
                "INSERT INTO bench_src WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                f"FROM g WHERE n < {SELECT_ROWS}) "
                "SELECT n, 2.5, 'some text value', 42, 3.25 FROM g",
            ],
        )
        raw = RawMysql(port or 3306)
        tx = True
    else:
        address = f"clickhouse://tcp://127.0.0.1:{port}?username=default&database=default"
        ddl = "CREATE TABLE {table} (a Int64, b Float64, c String, d Int64, e Float64) "
        ddl += "ENGINE = Memory"
        prepare(
            address,
            ddl,
            [
                "INSERT INTO bench_src SELECT number, 2.5, 'some text value', 42, 3.25 "
                f"FROM system.numbers LIMIT {SELECT_ROWS}"
            ],
        )
        raw = RawClickhouse(port or 9000)
        tx = False
    clear = "DELETE FROM bench_dst" if name == "sqlite" else "TRUNCATE TABLE bench_dst"
    best = compare(raw, ViaExec(address, tx, clear))
    return [report(name, workload, *times) for workload, times in best.items()]


PORTS = {"sqlite": None, "mysql": 3306, "postgres": 5432, "clickhouse": 9000}


def main() -> None:
    wanted = sys.argv[1:] or list(PORTS)
    ratios: list[float] = []
    print(
        "raw: sqlite3 (autocommit connection), asyncpg / aiomysql awaited inside a running loop,"
        " clickhouse-driver plain calls;\nexec: Dial(...).exec() / exec_many() from a plain "
        "thread. Alternating rounds, the best of each side counts (rounds: "
        + ", ".join(f"{name} {count}" for name, count in ROUNDS.items())
        + ").",
        flush=True,
    )
    for item in wanted:
        name, _, given = item.partition(":")
        if name not in PORTS:
            raise SystemExit(f"unknown database {name!r}; choose from {', '.join(PORTS)}")
        port = int(given) if given else PORTS[name]
        if port is not None and not listening(port):
            print(f"{name:<11} skipped: nothing listens on 127.0.0.1:{port}")
            continue
        try:
            ratios += run(name, port)
        except Exception as exc:  # report and go on with the next database
            print(f"{name:<11} failed: {exc} {last_error() or ''}")
    if ratios:
        print(f"lowest ratio {min(ratios):.2f} (target >= {TARGET})")


if __name__ == "__main__":
    main()
