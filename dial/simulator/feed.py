"""What every simulated venue shares: settings, counters and the feed interface."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.asyncio.server import ServerConnection

from .market import Market, Step

__all__ = ["DEMO_CREDENTIALS", "Feed", "Settings"]

#: OKX api key -> (secret key, passphrase) accepted by the simulator when none are given
DEMO_CREDENTIALS = {"demo-key": ("demo-secret", "demo-passphrase")}


@dataclass
class Settings:
    """Tunable behaviour. `rate` is market steps (and so pushes) per second.

    The defaults are the venues' documented values; tests shorten the long ones."""

    rate: float = 2.0
    binance_ping_interval: float = 20.0  # Binance sends a ping frame every 20 s ...
    binance_pong_timeout: float = 60.0  # ... and disconnects after a minute without a pong
    binance_max_lifetime: float = 86_400.0  # a connection is only valid for 24 hours
    binance_shutdown_grace: float = 10.0  # serverShutdown event -> close (undocumented)
    binance_legacy_ticker_arr: bool = False  # FMZ-era !ticker@arr (retired 2026-03-26)
    okx_idle_timeout: float = 30.0  # OKX closes a link with no subscription or data for 30 s
    okx_legacy_deflate: bool = False  # FMZ-era OKX v3 framing: every frame raw DEFLATE
    okx_book_checksum: bool = False  # books CRC32 as documented before 2026-06-23 (now 0)
    okx_order_ticks: int = 5  # market steps between synthetic `orders` channel updates
    okx_positions_interval: float = 5.0  # OKX pushes a positions snapshot around every 5 s
    huobi_ping_interval: float = 5.0  # seconds between Huobi {"ping": ts} heartbeats
    huobi_missed_pings: int = 2  # unanswered pings after which Huobi drops a client
    huobi_depth_interval: float = 1.0  # HTX pushes market.$symbol.depth.$type once a second
    okx_credentials: dict[str, tuple[str, str]] = field(
        default_factory=lambda: dict(DEMO_CREDENTIALS)
    )
    okx_login_window: float = 30.0  # seconds a login timestamp may be off
    seed: int | None = None


class Feed:
    """One venue's endpoints, served on a port of its own (as each venue has its own host).

    `handle(ws, path)` runs for each client connection on the simulator's event loop and
    returns when the client should be disconnected; `tick(steps)` is called `rate` times a
    second with what the market step did and pushes it to subscribers; `http()` answers plain
    HTTP requests (REST snapshots) on the same port."""

    name: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]

    _ids = itertools.count(1)

    def __init__(self, market: Market, settings: Settings, counters: Counter[str]) -> None:
        self.market = market
        self.settings = settings
        self.counters = counters

    def serves(self, path: str) -> bool:
        return path in self.paths

    async def handle(self, ws: ServerConnection, path: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def tick(self, steps: list[Step]) -> None:  # pragma: no cover
        raise NotImplementedError

    def http(self, method: str, path: str, query: dict[str, str]) -> tuple[int, object] | None:
        """A REST answer as (status, JSON body), or None for 404. Runs on the event loop."""
        return None

    def keepalive(self) -> tuple[float | None, float | None]:
        """WebSocket ping frames the server sends: (interval, pong deadline) seconds, or None."""
        return None, None

    def describe(self) -> list[str]:
        """Lines for `dial simulate --help`: each path and channel this venue serves."""
        return [f"{path}" for path in self.paths]

    def count(self, what: str, n: int = 1) -> None:
        self.counters[f"{self.name}.{what}"] += n

    @classmethod
    def connection_id(cls) -> str:
        return f"{next(cls._ids):08x}"
