"""What every simulated exchange feed shares: settings, counters and the feed interface."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from websockets.asyncio.server import ServerConnection

from .market import Market

__all__ = ["DEMO_CREDENTIALS", "Feed", "Settings"]

#: OKX api key -> (secret key, passphrase) accepted by the simulator when none are given
DEMO_CREDENTIALS = {"demo-key": ("demo-secret", "demo-passphrase")}


@dataclass
class Settings:
    """Tunable behaviour. `rate` is pushes per second per subscription (all feeds)."""

    rate: float = 2.0
    huobi_ping_interval: float = 5.0  # seconds between Huobi {"ping": ts} heartbeats
    huobi_missed_pings: int = 2  # unanswered pings after which Huobi drops a client
    okx_credentials: dict[str, tuple[str, str]] = field(
        default_factory=lambda: dict(DEMO_CREDENTIALS)
    )
    okx_login_window: float = 30.0  # seconds a login timestamp may be off
    seed: int | None = None


class Feed:
    """One exchange's WebSocket endpoints.

    `handle(ws, path)` runs for each client connection on the simulator's event loop and
    returns when the client should be disconnected; `tick()` is called `rate` times a second
    after the market moved and pushes the new prices to subscribers."""

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

    def tick(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def count(self, what: str, n: int = 1) -> None:
        self.counters[f"{self.name}.{what}"] += n

    @classmethod
    def connection_id(cls) -> str:
        return f"{next(cls._ids):08x}"
