"""`make demo`: the whole job offline, ending by itself.

Starts the exchange simulator, reads Binance, OKX and Huobi tickers through the three
example readers (each a `Dial` with its exchange's codec and resubscribe payload), stores every
tick in SQLite through `Dial("sqlite3://...")`, shows a live ticker table, has the simulator
drop every client halfway so the readers reconnect by themselves, then queries the stored
ticks back and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import binance_ticker
import huobi_ticker
import okx_ticker

from dial import Dial, last_error
from dial.simulator import Simulator
from dial.tables import format_table

SCHEMA = """CREATE TABLE ticks (exchange TEXT, symbol TEXT, last REAL, bid REAL, ask REAL,
    high REAL, low REAL, ts INTEGER)"""
INSERT = "INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SUMMARY = """SELECT exchange, symbol, COUNT(*) AS ticks, MIN(last) AS low, MAX(last) AS high
    FROM ticks GROUP BY exchange, symbol ORDER BY symbol, exchange"""
BINANCE_SYMBOLS = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


class Reader(threading.Thread):
    """One example reader on its own thread, collecting ticks for the main thread."""

    def __init__(self, name: str, module: Any, address: str) -> None:
        super().__init__(name=f"demo-{name}", daemon=True)
        self.exchange = name
        self.module = module
        self.connection = Dial(address, 10)
        if not self.connection:
            raise SystemExit(f"demo: {name}: cannot connect: {last_error()}")
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.pending: list[dict[str, Any]] = []
        self.ticks = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.connection.read(200)
            if message == "":
                time.sleep(0.05)  # the simulator dropped us; reconnect=true is at work
                continue
            if not message:
                continue
            ticks = self.module.handle(message, self.connection)
            if self.exchange == "binance":
                ticks = [t for t in ticks if t["symbol"] in BINANCE_SYMBOLS]
            with self.lock:
                self.pending.extend(ticks)
                self.ticks += len(ticks)

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.connection.close()


def store(db: Any, readers: list[Reader], latest: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """Insert the ticks the readers collected since last time; remember the newest of each."""
    for reader in readers:
        for tick in reader.take():
            latest[(tick["symbol"], tick["exchange"])] = tick
            row = [tick[k] for k in ("exchange", "symbol", "last")]
            row += [tick.get(k) for k in ("bid", "ask")]
            row += [tick[k] for k in ("high", "low", "ts")]
            if db.exec(INSERT, *row) is None:
                print(f"demo: insert failed: {last_error()}", file=sys.stderr)
                return False
    return True


def live_table(latest: dict[tuple[str, str], dict[str, Any]], readers: list[Reader]) -> str:
    rows = []
    for (symbol, exchange), tick in sorted(latest.items()):
        rows.append(
            [
                symbol,
                exchange,
                f"{tick['last']:.6g}",
                "" if tick.get("bid") is None else f"{tick['bid']:.6g}",
                "" if tick.get("ask") is None else f"{tick['ask']:.6g}",
                f"{tick['high']:.6g}",
                f"{tick['low']:.6g}",
                time.strftime("%H:%M:%S", time.localtime(tick["ts"] / 1000)),
            ]
        )
    table = format_table(["symbol", "exchange", "last", "bid", "ask", "high", "low", "at"], rows)
    footer = "  ".join(
        f"{r.exchange}: {r.ticks} ticks, {r.connection.stats().reconnects} reconnects"
        for r in readers
    )
    return f"{table}\n{footer}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    parser.add_argument("--rate", type=float, default=4.0, help="simulator pushes per second")
    parser.add_argument("--db", help="SQLite file to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    on_tty = sys.stdout.isatty()
    logging.getLogger("dial").setLevel(logging.ERROR)  # the footer counts the reconnects

    with tempfile.TemporaryDirectory(prefix="dialkit-demo-") as tmp:
        db_path = args.db or str(Path(tmp) / "ticks.db")
        db = Dial(f"sqlite3://{db_path}")
        if not db or db.exec("DROP TABLE IF EXISTS ticks") is None or db.exec(SCHEMA) is None:
            print(f"demo: sqlite: {last_error()}", file=sys.stderr)
            return 1
        with Simulator(rate=args.rate, huobi_ping_interval=2.0) as sim:
            print(f"simulator on 127.0.0.1:{sim.port}; ticks stored in sqlite3://{db_path}")
            readers = [
                Reader("binance", binance_ticker, binance_ticker.address(sim.url("binance"))),
                Reader(
                    "okx", okx_ticker, okx_ticker.address(sim.url("okx"), ["BTC-USDT", "ETH-USDT"])
                ),
                Reader("huobi", huobi_ticker, huobi_ticker.address(sim.url("huobi"))),
            ]
            for reader in readers:
                reader.start()
            latest: dict[tuple[str, str], dict[str, Any]] = {}
            start = time.monotonic()
            dropped = False
            drawn_lines, last_print = 0, 0.0
            try:
                while (elapsed := time.monotonic() - start) < args.seconds:
                    time.sleep(0.25)
                    if not store(db, readers, latest):
                        return 1
                    if not dropped and elapsed >= args.seconds / 2:
                        dropped = True
                        count = sim.drop_all()
                        message = f"simulator dropped all {count} clients: readers reconnect"
                        if on_tty:
                            sys.stdout.write(f"\x1b[{drawn_lines}F\x1b[J" if drawn_lines else "")
                            drawn_lines = 0
                        print(f"-- {message} --")
                    if on_tty:
                        text = live_table(latest, readers)
                        erase = f"\x1b[{drawn_lines}F\x1b[J" if drawn_lines else ""
                        sys.stdout.write(erase + text + "\n")
                        sys.stdout.flush()
                        drawn_lines = text.count("\n") + 1
                    elif elapsed - last_print >= 2.5:
                        last_print = elapsed
                        print(f"\n[{elapsed:4.1f} s]\n{live_table(latest, readers)}", flush=True)
            except KeyboardInterrupt:
                print("stopped", file=sys.stderr)
                return 130
            finally:
                for reader in readers:
                    reader.stop()
            if not store(db, readers, latest):
                return 1
        if not on_tty:
            print(f"\n[{args.seconds:4.1f} s]\n{live_table(latest, readers)}")
        summary = db.exec(SUMMARY)
        db.close()
    if summary is None:
        print(f"demo: query failed: {last_error()}", file=sys.stderr)
        return 1
    print("\nStored ticks, queried back from SQLite:")
    print(format_table(summary["columns"], summary["values"]))
    silent = [r.exchange for r in readers if r.ticks == 0]
    if silent:
        print(f"demo: no ticks from {', '.join(silent)}", file=sys.stderr)
        return 1
    reconnected = all(r.connection.stats().reconnects >= 1 for r in readers)
    print("every reader reconnected after the drop" if reconnected else "")
    return 0 if reconnected else 1


if __name__ == "__main__":
    sys.exit(main())
