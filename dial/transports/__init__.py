"""Scheme -> transport registry. Nothing here imports a transport module until its scheme is
dialled, so `import dial` stays light and optional libraries stay optional."""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import AddressError, MissingDependency

__all__ = ["SCHEMES", "load"]

# scheme -> ("module:Class", pip extra that provides its library or None)
SCHEMES: dict[str, tuple[str, str | None]] = {
    "tcp": ("socket:TcpTransport", None),
    "tls": ("socket:TlsTransport", None),
    "udp": ("socket:UdpTransport", None),
    "unix": ("socket:UnixTransport", None),
    "ws": ("websocket:WebSocketTransport", None),
    "wss": ("websocket:WebSocketTransport", None),
    "mqtt": ("mqtt:MqttTransport", "mqtt"),
    "nats": ("nats:NatsTransport", "nats"),
    "amqp": ("amqp:AmqpTransport", "amqp"),
    "kafka": ("kafka:KafkaTransport", "kafka"),
    "sqlite3": ("sqlite:SqliteBackend", "sqlite"),
    "mysql": ("mysql:MysqlBackend", "mysql"),
    "postgres": ("postgres:PostgresBackend", "postgres"),
    "postgresql": ("postgres:PostgresBackend", "postgres"),
    "clickhouse": ("clickhouse:ClickhouseBackend", "clickhouse"),
}


def load(scheme: str) -> Any:
    """Import and return the class serving `scheme`."""
    try:
        spec, extra = SCHEMES[scheme]
    except KeyError:
        raise AddressError(
            f"unsupported scheme {scheme!r}; supported: {', '.join(sorted(SCHEMES))}"
        ) from None
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        if exc.name and not exc.name.startswith("dial"):
            hint = f"pip install 'dialkit[{extra}]'" if extra else "pip install dialkit"
            raise MissingDependency(f"{scheme}:// needs the {exc.name!r} package: {hint}") from None
        raise
    return getattr(module, class_name)
