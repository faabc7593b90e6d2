"""exec() against the raw driver, in one run, on each database that is reachable:

* SELECT 100k rows x 5 columns (one statement, whole result materialised as lists/records)
* INSERT 10k rows, one parameterised statement per row (in one transaction where the database
  has transactions, so the disk's fsync rate does not hide the client-side cost)

Prints rows/s for both and the ratio exec/raw (target >= 0.8). Servers: the shared ones on
their default ports (start them with the test fixtures or tests/servers/databases.py); give
another port as NAME:PORT.
Usage: python benchmarks/databases.py [sqlite mysql postgres clickhouse[:PORT] ...]

What is compared: "raw" is the driver dialkit wraps, used the way its own documentation shows
- aiosqlite, aiomysql and asyncpg awaited from a coroutine inside an already running asyncio
loop, clickhouse-driver called from a plain thread. "exec" is `Dial(...).exec(...)` called
from a plain synchronous thread, as strategy code does. Raw and exec rounds alternate and the
best round of each counts, so a burst of load from other processes on a shared machine hits
both sides alike instead of deciding the ratio.
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
INSERT_ROWS = 10_000
ROW = (1, 2.5, "some text value", 42, 3.25)
SELECT_ROUNDS = 5
INSERT_ROUNDS = 3


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


def report(name: str, what: str, rows: int, raw: float, ours: float) -> float:
    ratio = raw / ours
    print(
        f"{name:<11} {what:<14} raw {rows / raw:>11,.0f} rows/s   exec {rows / ours:>11,.0f} "
        f"rows/s   ratio {ratio:4.2f} {'ok' if ratio >= 0.8 else 'BELOW 0.8'}",
        flush=True,
    )
    return ratio


class Side:
    """One way of running the two workloads; each call times one round (seconds)."""

    def select(self) -> float:
        raise NotImplementedError

    def insert(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        pass


class ViaExec(Side):
    def __init__(self, address: str, insert_sql: str, tx: bool) -> None:
        self.conn = Dial(address, raise_errors=True)
        self.insert_sql = insert_sql
        self.tx = tx

    def select(self) -> float:
        def run() -> None:
            result = self.conn.exec("SELECT a, b, c, d, e FROM bench_src")
            assert len(result["values"]) == SELECT_ROWS

        return timed(run)

    def insert(self) -> float:
        conn, insert_sql = self.conn, self.insert_sql
        conn.exec("DELETE FROM bench_dst" if self.tx else "TRUNCATE TABLE bench_dst")

        def run() -> None:
            if self.tx:
                conn.exec("BEGIN")
            for i in range(INSERT_ROWS):
                conn.exec(insert_sql, i, *ROW[1:])
            if self.tx:
                conn.exec("COMMIT")

        return timed(run)

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


class RawSqlite(InLoop):
    def __init__(self, path: str) -> None:
        super().__init__()
        import aiosqlite

        self.db = self.loop.run_until_complete(aiosqlite.connect(path, isolation_level=None))

    def select(self) -> float:
        async def run() -> None:
            async with self.db.execute("SELECT a, b, c, d, e FROM bench_src") as cursor:
                assert len(await cursor.fetchall()) == SELECT_ROWS

        return self._timed(run)

    def insert(self) -> float:
        db = self.db
        self.loop.run_until_complete(db.execute("DELETE FROM bench_dst"))

        async def run() -> None:
            await db.execute("BEGIN")
            for i in range(INSERT_ROWS):
                await db.execute("INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)", (i, *ROW[1:]))
            await db.execute("COMMIT")

        return self._timed(run)

    async def aclose(self) -> None:
        await self.db.close()


class RawPostgres(InLoop):
    def __init__(self, port: int) -> None:
        super().__init__()
        import asyncpg

        self.db = self.loop.run_until_complete(
            asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="test")
        )

    def select(self) -> float:
        async def run() -> None:
            assert len(await self.db.fetch("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

        return self._timed(run)

    def insert(self) -> float:
        db = self.db
        self.loop.run_until_complete(db.execute("DELETE FROM bench_dst"))

        async def run() -> None:
            async with db.transaction():
                for i in range(INSERT_ROWS):
                    await db.execute(
                        "INSERT INTO bench_dst VALUES ($1, $2, $3, $4, $5)", i, *ROW[1:]
                    )

        return self._timed(run)

    async def aclose(self) -> None:
        await self.db.close()


class RawMysql(InLoop):
    def __init__(self, port: int) -> None:
        super().__init__()
        import aiomysql

        self.db = self.loop.run_until_complete(
            aiomysql.connect(host="127.0.0.1", port=port, user="root", db="test", autocommit=True)
        )

    def select(self) -> float:
        async def run() -> None:
            async with self.db.cursor() as cursor:
                await cursor.execute("SELECT a, b, c, d, e FROM bench_src")
                assert len(await cursor.fetchall()) == SELECT_ROWS

        return self._timed(run)

    def insert(self) -> float:
        db = self.db

        async def clear() -> None:
            async with db.cursor() as cursor:
                await cursor.execute("DELETE FROM bench_dst")

        self.loop.run_until_complete(clear())

        async def run() -> None:
            async with db.cursor() as cursor:
                await cursor.execute("BEGIN")
                for i in range(INSERT_ROWS):
                    await cursor.execute(
                        "INSERT INTO bench_dst VALUES (%s, %s, %s, %s, %s)", (i, *ROW[1:])
                    )
                await cursor.execute("COMMIT")

        return self._timed(run)

    async def aclose(self) -> None:
        self.db.close()


class RawClickhouse(Side):
    def __init__(self, port: int) -> None:
        from clickhouse_driver import Client

        self.db = Client("127.0.0.1", port)

    def select(self) -> float:
        def run() -> None:
            assert len(self.db.execute("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

        return timed(run)

    def insert(self) -> float:
        db = self.db
        db.execute("TRUNCATE TABLE bench_dst")

        def run() -> None:
            for i in range(INSERT_ROWS):
                db.execute("INSERT INTO bench_dst VALUES", [(i, *ROW[1:])])

        return timed(run)

    def close(self) -> None:
        self.db.disconnect()


def compare(raw: Side, ours: Side) -> tuple[tuple[float, float], tuple[float, float]]:
    """Alternating rounds; the best of each side: ((raw select, exec select), (raw insert, ...))."""
    try:
        selects = [(raw.select(), ours.select()) for _ in range(SELECT_ROUNDS)]
        inserts = [(raw.insert(), ours.insert()) for _ in range(INSERT_ROUNDS)]
    finally:
        raw.close()
        ours.close()
    best_select = (min(r for r, _ in selects), min(o for _, o in selects))
    best_insert = (min(r for r, _ in inserts), min(o for _, o in inserts))
    return best_select, best_insert


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
    insert_sql = "INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)"
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
    select, insert = compare(raw, ViaExec(address, insert_sql, tx))
    return [
        report(name, f"SELECT {SELECT_ROWS // 1000}k x 5", SELECT_ROWS, *select),
        report(name, f"INSERT {INSERT_ROWS // 1000}k", INSERT_ROWS, *insert),
    ]


PORTS = {"sqlite": None, "mysql": 3306, "postgres": 5432, "clickhouse": 9000}


def main() -> None:
    wanted = sys.argv[1:] or list(PORTS)
    ratios: list[float] = []
    print(
        "raw: the async drivers awaited inside a running asyncio loop (clickhouse-driver: "
        "plain calls);\nexec: Dial(...).exec() from a plain thread. Alternating rounds, best "
        f"of {SELECT_ROUNDS} (SELECT) / {INSERT_ROUNDS} (INSERT) per side.",
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
        print(f"lowest ratio {min(ratios):.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
