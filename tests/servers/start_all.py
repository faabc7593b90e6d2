"""`make services` without Docker: start every broker, database and the SOCKS5 proxy the
examples and tests use, on their default ports, and leave them running.

Reuses whatever already listens. Starters come from `tests/servers/brokers.py` and
`tests/servers/databases.py` when those modules are present. Started daemons keep running after
this script ends; their PIDs are written to `.services/started.pids` (stop them with `kill`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import pytest

from . import base

SOCKS_PORT = 1080


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(f"{__package__}.{module}")
    except ImportError:
        return None


def start_microsocks(port: int = SOCKS_PORT) -> Any:
    binary = base.ensure_binary("microsocks", "microsocks")
    return base.start(f"microsocks-{port}", [binary, "-i", "127.0.0.1", "-p", str(port)], port)


def plan() -> list[tuple[str, int, Callable[[], Any] | None]]:
    """(service, port, starter or None when its starter module is absent)."""
    brokers, databases = _optional("brokers"), _optional("databases")
    items: list[tuple[str, int, Callable[[], Any] | None]] = []
    if brokers is not None:
        items += [
            ("mosquitto", brokers.MOSQUITTO_PORT, lambda: brokers.start_mosquitto(1883)),
            ("nats", brokers.NATS_PORT, lambda: brokers.start_nats(4222)),
            ("rabbitmq", brokers.RABBITMQ_PORT, brokers.start_rabbitmq),
            ("kafka (tansu)", brokers.KAFKA_PORT, lambda: brokers.start_tansu(9092)),
        ]
    else:
        items += [(name, port, None) for name, port in _BROKERS]
    if databases is not None:
        items += [
            ("postgres", 5432, lambda: databases.PrivatePostgres(port=5432).start()),
            ("mariadb", 3306, lambda: databases.PrivateMariadb(port=3306).start()),
            (
                "clickhouse",
                9000,
                lambda: databases.PrivateClickhouse(port=9000, http_port=8123).start(),
            ),
        ]
    else:
        items += [(name, port, None) for name, port in _DATABASES]
    items.append(("socks5 (microsocks)", SOCKS_PORT, start_microsocks))
    return items


_BROKERS = [("mosquitto", 1883), ("nats", 4222), ("rabbitmq", 5672), ("kafka", 9092)]
_DATABASES = [("postgres", 5432), ("mariadb", 3306), ("clickhouse", 9000)]
_NOT_STARTED = (pytest.skip.Exception, pytest.fail.Exception)


def main() -> int:
    failed = 0
    for name, port, starter in plan():
        if base.port_open(port):
            print(f"  {name:<20} 127.0.0.1:{port}  already running")
            continue
        if starter is None:
            print(f"  {name:<20} 127.0.0.1:{port}  no starter available here")
            failed += 1
            continue
        try:
            starter()
        except _NOT_STARTED as exc:
            print(f"  {name:<20} 127.0.0.1:{port}  NOT started: {exc}")
            failed += 1
            continue
        print(f"  {name:<20} 127.0.0.1:{port}  started")
    started = list(base._started)
    base._started.clear()  # detach: leave them running after we exit
    if started:
        base.STATE.mkdir(exist_ok=True)
        with open(base.STATE / "started.pids", "a") as pids:
            for process in started:
                pids.write(f"{process.pid} {' '.join(map(str, process.args))[:120]}\n")
        print(f"PIDs of the daemons started here: {base.STATE / 'started.pids'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
