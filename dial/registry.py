"""Scheme -> (kind, "module:Class", pip extra): the one table that says what an address is.

Everyone who needs to know "stream or database?" asks here (`Dial`, `dial.aio`, the `dial`
command); nobody inspects a class or an object to find out. Nothing is imported until its
scheme is dialled, so `import dial` stays light and optional libraries stay optional.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from .errors import AddressError, MissingDependency

if TYPE_CHECKING:
    from .address import Address
    from .databases.interfaces import DatabaseBackend
    from .transports.base import StreamTransport

__all__ = [
    "PREFERRED_WEBSOCKET_ENGINE",
    "SCHEMES",
    "WEBSOCKET_ENGINES",
    "Kind",
    "Scheme",
    "kind_of",
    "lookup",
    "transport_for",
    "websocket_transport",
]

log = logging.getLogger("dial")

Kind = Literal["stream", "database"]


@dataclass(frozen=True)
class Scheme:
    """One row of the table."""

    name: str
    kind: Kind
    implementation: str  # "dial.transports.socket:TcpTransport"
    extra: str | None  # the pip extra that installs its library, None when always present

    def _load(self) -> type:
        return _import(self.implementation, f"{self.name}://", self.extra)

    def transport(self) -> type[StreamTransport]:
        """The `StreamTransport` class of a stream scheme."""
        if self.kind != "stream":
            raise AddressError(f"{self.name}:// is a database, not a stream")
        return cast("type[StreamTransport]", self._load())

    def backend(self) -> type[DatabaseBackend]:
        """The `DatabaseBackend` class of a database scheme."""
        if self.kind != "database":
            raise AddressError(f"{self.name}:// is a stream, not a database")
        return cast("type[DatabaseBackend]", self._load())


def _import(implementation: str, what: str, extra: str | None) -> type:
    """Import "module:Class"; a missing library is a `MissingDependency` naming the extra."""
    module_name, _, class_name = implementation.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and not exc.name.startswith("dial"):
            hint = (
                f"install dialkit's [{extra}] extra "
                f"(pip install '.[{extra}]' in the dialkit checkout)"
                if extra
                else "reinstall dialkit"
            )
            detail = f" ({exc})" if "not supported" in str(exc) else ""
            raise MissingDependency(
                f"{what} needs the {exc.name!r} package{detail}: {hint}"
            ) from None
        raise
    loaded: type = getattr(module, class_name)
    return loaded


def _table(*rows: tuple[str, Kind, str, str | None]) -> dict[str, Scheme]:
    return {name: Scheme(name, kind, f"dial.{where}", extra) for name, kind, where, extra in rows}


SCHEMES: dict[str, Scheme] = _table(
    ("tcp", "stream", "transports.socket:TcpTransport", None),
    ("tls", "stream", "transports.socket:TlsTransport", None),
    ("udp", "stream", "transports.socket:UdpTransport", None),
    ("unix", "stream", "transports.socket:UnixTransport", None),
    ("ws", "stream", "transports.websocket:WebSocketTransport", None),
    ("wss", "stream", "transports.websocket:WebSocketTransport", None),
    ("mqtt", "stream", "transports.mqtt:MqttTransport", "mqtt"),
    ("nats", "stream", "transports.nats:NatsTransport", "nats"),
    ("amqp", "stream", "transports.amqp:AmqpTransport", "amqp"),
    ("kafka", "stream", "transports.kafka:KafkaTransport", "kafka"),
    ("sqlite3", "database", "databases.backends.sqlite:SqliteBackend", "sqlite"),
    ("mysql", "database", "databases.backends.mysql:MysqlBackend", "mysql"),
    ("postgres", "database", "databases.backends.postgres:PostgresBackend", "postgres"),
    ("postgresql", "database", "databases.backends.postgres:PostgresBackend", "postgres"),
    ("clickhouse", "database", "databases.backends.clickhouse:ClickhouseBackend", "clickhouse"),
)


#: ws:// and wss:// have two engines with the same behaviour (one WebSocket test suite runs
#: against both): the reference one on websockets' Sans-I/O protocol, always installed, and a
#: fast one on picows' C parser, from the [fast] extra.
WEBSOCKET_ENGINES: dict[str, tuple[str, str | None]] = {
    "websockets": ("dial.transports.websocket:WebSocketTransport", None),
    "picows": ("dial.transports.picows_engine:PicowsTransport", "fast"),
}
#: The engine an address without `engine=` gets when it can: picows when installed (and the
#: address needs nothing it lacks), else websockets. Tests set it to run one suite on each.
PREFERRED_WEBSOCKET_ENGINE = "picows"


def transport_for(address: Address) -> type[StreamTransport]:
    """The `StreamTransport` class that serves `address`: the scheme's, except that ws://
    and wss:// pick their engine (`websocket_transport`)."""
    scheme = lookup(address.scheme)
    if scheme.kind == "stream" and scheme.name in ("ws", "wss"):
        return websocket_transport(address)
    return scheme.transport()


def websocket_transport(address: Address) -> type[StreamTransport]:
    """Which engine serves a ws:// or wss:// address - decided here and nowhere else.

    `engine=websockets` or `engine=picows` in the address is obeyed (picows not installed:
    `MissingDependency` naming the [fast] extra; with an option picows lacks: `AddressError`).
    Without it: `PREFERRED_WEBSOCKET_ENGINE` when it is installed and the address needs
    nothing it lacks (picows has no permessage-deflate: `enableCompression=true` gets
    websockets), else websockets. Proxies, TLS options and codecs work on both."""
    options = address.options
    wanted = options.engine
    if wanted is not None:
        return _engine(wanted, f"engine={wanted}")
    needs_reference = options.enable_compression  # permessage-deflate: websockets only
    if PREFERRED_WEBSOCKET_ENGINE != "websockets" and not needs_reference:
        fast = _optional_engine(PREFERRED_WEBSOCKET_ENGINE)
        if fast is not None:
            return fast
    return _engine("websockets", f"{address.scheme}://")


_missing_engines: dict[str, str] = {}


def _optional_engine(name: str) -> type[StreamTransport] | None:
    """The engine's class, or None when its library is not installed (remembered)."""
    if name in _missing_engines:
        return None
    try:
        return _engine(name, f"engine={name}")
    except MissingDependency as exc:
        _missing_engines[name] = str(exc)
        log.debug("WebSocket engine %s unavailable, using websockets: %s", name, exc)
        return None


def _engine(name: str, what: str) -> type[StreamTransport]:
    implementation, extra = WEBSOCKET_ENGINES[name]
    return cast("type[StreamTransport]", _import(implementation, what, extra))


def lookup(scheme: str) -> Scheme:
    """The row of `scheme` (lower case, as `dial.address.parse` gives it)."""
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise AddressError(
            f"unsupported scheme {scheme!r}; supported: {', '.join(sorted(SCHEMES))}"
        ) from None


def kind_of(address: str | int) -> Kind | None:
    """ "stream" or "database" for an address (an int is a database handle); None when the
    address does not parse or its scheme is unknown (Dial then says why)."""
    if isinstance(address, int):
        return None if isinstance(address, bool) else "database"
    from .address import parse

    try:
        return lookup(parse(address).scheme).kind
    except AddressError:
        return None
