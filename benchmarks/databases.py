"""exec() against the raw driver, in one run, on each database that is reachable:

* SELECT 100k rows x 5 columns (one statement, whole result materialised as lists/records)
* INSERT 10k rows, one parameterised statement per row (in one transaction where the database
  has transactions, so the disk's fsync rate does not hide the client-side cost)

Prints rows/s for both and the ratio exec/raw (target >= 0.8). Servers: the shared ones on
their default ports (start them with the test fixtures or tests/servers/databases.py).
Usage: python benchmarks/databases.py [sqlite mysql postgres clickhouse]
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dial import Dial, last_error

SELECT_ROWS = 100_000
INSERT_ROWS = 10_000
ROW = (1, 2.5, "some text value", 42, 3.25)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def best(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def report(name: str, what: str, rows: int, raw: float, ours: float) -> float:
    ratio = raw / ours
    print(
        f"{name:<11} {what:<14} raw {rows / raw:>11,.0f} rows/s   exec {rows / ours:>11,.0f} "
        f"rows/s   ratio {ratio:4.2f} {'ok' if ratio >= 0.8 else 'BELOW 0.8'}",
        flush=True,
    )
    return ratio


def via_exec(address: str, fill_sql: str, insert_sql: str, tx: bool) -> tuple[float, float]:
    conn = Dial(address, raise_errors=True)
    try:

        def select() -> None:
            result = conn.exec("SELECT a, b, c, d, e FROM bench_src")
            assert len(result["values"]) == SELECT_ROWS

        def insert() -> None:
            conn.exec("DELETE FROM bench_dst" if tx else "TRUNCATE TABLE bench_dst")
            if tx:
                conn.exec("BEGIN")
            for i in range(INSERT_ROWS):
                conn.exec(insert_sql, i, *ROW[1:])
            if tx:
                conn.exec("COMMIT")

        return best(3, select), best(2, insert)
    finally:
        conn.close()


# -- raw drivers -----------------------------------------------------------------------------


def raw_sqlite(path: str) -> tuple[float, float]:
    import aiosqlite

    async def main() -> tuple[float, float]:
        async with aiosqlite.connect(path, isolation_level=None) as db:

            async def select() -> None:
                async with db.execute("SELECT a, b, c, d, e FROM bench_src") as cursor:
                    assert len(await cursor.fetchall()) == SELECT_ROWS

            async def insert() -> None:
                await db.execute("DELETE FROM bench_dst")
                await db.execute("BEGIN")
                for i in range(INSERT_ROWS):
                    await db.execute("INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)", (i, *ROW[1:]))
                await db.execute("COMMIT")

            return await abest(3, select), await abest(2, insert)

    return asyncio.run(main())


def raw_postgres(port: int) -> tuple[float, float]:
    import asyncpg

    async def main() -> tuple[float, float]:
        db = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="test")

        async def select() -> None:
            assert len(await db.fetch("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

        async def insert() -> None:
            await db.execute("DELETE FROM bench_dst")
            async with db.transaction():
                for i in range(INSERT_ROWS):
                    await db.execute(
                        "INSERT INTO bench_dst VALUES ($1, $2, $3, $4, $5)", i, *ROW[1:]
                    )

        try:
            return await abest(3, select), await abest(2, insert)
        finally:
            await db.close()

    return asyncio.run(main())


def raw_mysql(port: int) -> tuple[float, float]:
    import aiomysql

    async def main() -> tuple[float, float]:
        db = await aiomysql.connect(
            host="127.0.0.1", port=port, user="root", db="test", autocommit=True
        )

        async def select() -> None:
            async with db.cursor() as cursor:
                await cursor.execute("SELECT a, b, c, d, e FROM bench_src")
                assert len(await cursor.fetchall()) == SELECT_ROWS

        async def insert() -> None:
            async with db.cursor() as cursor:
                await cursor.execute("DELETE FROM bench_dst")
                await cursor.execute("BEGIN")
                for i in range(INSERT_ROWS):
                    await cursor.execute(
                        "INSERT INTO bench_dst VALUES (%s, %s, %s, %s, %s)", (i, *ROW[1:])
                    )
                await cursor.execute("COMMIT")

        try:
            return await abest(3, select), await abest(2, insert)
        finally:
            db.close()

    return asyncio.run(main())


def raw_clickhouse(port: int) -> tuple[float, float]:
    from clickhouse_driver import Client

    db = Client("127.0.0.1", port)

    def select() -> None:
        assert len(db.execute("SELECT a, b, c, d, e FROM bench_src")) == SELECT_ROWS

    def insert() -> None:
        db.execute("TRUNCATE TABLE bench_dst")
        for i in range(INSERT_ROWS):
            db.execute("INSERT INTO bench_dst VALUES", [(i, *ROW[1:])])

    try:
        return best(3, select), best(2, insert)
    finally:
        db.disconnect()


async def abest(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await run()
        times.append(time.perf_counter() - start)
    return min(times)


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


def run(name: str) -> list[float]:
    insert_sql = "INSERT INTO bench_dst VALUES (?, ?, ?, ?, ?)"
    if name == "sqlite":
        path = str(Path(tempfile.mkdtemp()) / "bench.db")
        with sqlite3.connect(path) as db:
            for table in ("bench_src", "bench_dst"):
                db.execute(f"CREATE TABLE {table} (a INTEGER, b REAL, c TEXT, d INTEGER, e REAL)")
            db.executemany(
                "INSERT INTO bench_src VALUES (?, ?, ?, ?, ?)",
                ((i, *ROW[1:]) for i in range(SELECT_ROWS)),
            )
        raw = raw_sqlite(path)
        ours = via_exec(f"sqlite3://{path}", "", insert_sql, tx=True)
    elif name == "postgres":
        address = "postgres://user=postgres dbname=test sslmode=disable host=127.0.0.1 port=5432"
        prepare(
            address,
            SERVER_DDL,
            [
                "INSERT INTO bench_src SELECT g, 2.5, 'some text value', 42, 3.25 "
                f"FROM generate_series(1, {SELECT_ROWS}) g"
            ],
        )
        raw = raw_postgres(5432)
        ours = via_exec(address, "", insert_sql, tx=True)
    elif name == "mysql":
        address = "mysql://root:@tcp(127.0.0.1:3306)/test?charset=utf8mb4"
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
        raw = raw_mysql(3306)
        ours = via_exec(address, "", insert_sql, tx=True)
    else:
        address = "clickhouse://tcp://127.0.0.1:9000?username=default&database=default"
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
        raw = raw_clickhouse(9000)
        ours = via_exec(address, "", insert_sql, tx=False)
    return [
        report(name, f"SELECT {SELECT_ROWS // 1000}k x 5", SELECT_ROWS, raw[0], ours[0]),
        report(name, f"INSERT {INSERT_ROWS // 1000}k", INSERT_ROWS, raw[1], ours[1]),
    ]


PORTS = {"sqlite": None, "mysql": 3306, "postgres": 5432, "clickhouse": 9000}


def main() -> None:
    names = sys.argv[1:] or list(PORTS)
    ratios: list[float] = []
    for name in names:
        port = PORTS[name]
        if port is not None and not listening(port):
            print(f"{name:<11} skipped: nothing listens on 127.0.0.1:{port}")
            continue
        try:
            ratios += run(name)
        except Exception as exc:  # report and go on with the next database
            print(f"{name:<11} failed: {exc} {last_error() or ''}")
    if ratios:
        print(f"lowest ratio {min(ratios):.2f} (target >= 0.80)")


if __name__ == "__main__":
    main()
