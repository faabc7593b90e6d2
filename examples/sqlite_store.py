"""Store ticks in SQLite as they stream in, then query them back.

python examples/sqlite_store.py --count 20                   # real Binance, ./ticks.db
python examples/sqlite_store.py --url ws://127.0.0.1:8765/ws/!ticker@arr --db :memory:
"""

from __future__ import annotations

import argparse
import json
import sys

from dial import Dial, last_error

DEFAULT_URL = "wss://stream.binance.com:9443/ws/!ticker@arr"
SCHEMA = """CREATE TABLE IF NOT EXISTS ticks (
    exchange TEXT, symbol TEXT, last REAL, bid REAL, ask REAL, volume REAL, ts INTEGER)"""
INSERT = "INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?)"
SUMMARY = """SELECT symbol, COUNT(*) AS ticks, MIN(last) AS low, MAX(last) AS high,
    ROUND(AVG(ask - bid), 8) AS avg_spread FROM ticks GROUP BY symbol ORDER BY symbol"""


def print_table(result: dict) -> None:
    columns, values = result["columns"], result["values"]
    cells = [[str(v) for v in columns]] + [[str(v) for v in row] for row in values]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="Binance !ticker@arr stream")
    parser.add_argument("--db", default="ticks.db", help="SQLite file (or :memory:)")
    parser.add_argument("--count", type=int, default=10, help="messages to store (default 10)")
    args = parser.parse_args(argv)

    db = Dial(f"sqlite3://{args.db}")
    if not db:
        print(f"cannot open {args.db}: {last_error()}", file=sys.stderr)
        return 1
    ws = Dial(f"{args.url}|reconnect=true")
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        db.close()
        return 1
    stored = messages = 0
    try:
        if db.exec(SCHEMA) is None:
            print(f"cannot create table: {last_error()}", file=sys.stderr)
            return 1
        while messages < args.count:
            message = ws.read(1000)
            if not message:
                continue  # None: quiet second; "": reconnecting
            try:
                events = json.loads(message)
            except ValueError:
                continue
            for e in events if isinstance(events, list) else []:
                row = (
                    "binance", e["s"], float(e["c"]), float(e["b"]), float(e["a"]),
                    float(e["q"]), int(e["E"]),
                )  # fmt: skip
                if db.exec(INSERT, *row) is None:
                    print(f"insert failed: {last_error()}", file=sys.stderr)
                    return 1
                stored += 1
            messages += 1
            if sys.stdout.isatty():
                print(f"\rstored {stored} ticks from {messages} messages", end="", flush=True)
        print(f"\rstored {stored} ticks from {messages} messages")
        summary = db.exec(SUMMARY)
        if summary is None:
            print(f"query failed: {last_error()}", file=sys.stderr)
            return 1
        print_table(summary)
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
