"""A tiny random-walk market shared by every simulated exchange, so the three feeds quote
consistent prices for the same instrument."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

__all__ = ["DEFAULT_SYMBOLS", "Instrument", "Market", "now_ms"]

# base, quote, starting price
DEFAULT_SYMBOLS: tuple[tuple[str, str, float], ...] = (
    ("BTC", "USDT", 65_000.0),
    ("ETH", "USDT", 3_200.0),
    ("SOL", "USDT", 150.0),
    ("BNB", "USDT", 580.0),
    ("XRP", "USDT", 0.52),
    ("DOGE", "USDT", 0.15),
)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Instrument:
    """One instrument's 24-hour statistics, updated by every step of the walk."""

    base: str
    quote: str
    last: float
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: float = 0.0  # base currency
    quote_volume: float = 0.0
    last_size: float = 0.0
    trades: int = 0
    first_trade_id: int = 1
    updated_ms: int = field(default_factory=now_ms)

    def __post_init__(self) -> None:
        self.open = self.high = self.low = self.last

    @property
    def spread(self) -> float:
        return max(self.last * 0.0001, 10**-self.decimals)

    @property
    def bid(self) -> float:
        return round(self.last - self.spread / 2, self.decimals)

    @property
    def ask(self) -> float:
        return round(self.last + self.spread / 2, self.decimals)

    @property
    def decimals(self) -> int:
        """Price precision: 2 decimals above 100, more for cheap coins."""
        if self.last >= 100:
            return 2
        if self.last >= 1:
            return 4
        return 6

    @property
    def change(self) -> float:
        return self.last - self.open

    @property
    def change_percent(self) -> float:
        return 100.0 * self.change / self.open if self.open else 0.0

    @property
    def weighted_average(self) -> float:
        return self.quote_volume / self.volume if self.volume else self.last

    # exchange spellings of the name
    @property
    def binance(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def okx(self) -> str:
        return f"{self.base}-{self.quote}"

    @property
    def huobi(self) -> str:
        return f"{self.base}{self.quote}".lower()


class Market:
    """Geometric random walk: each step moves every price by a small normal shock."""

    def __init__(
        self,
        symbols: tuple[tuple[str, str, float], ...] = DEFAULT_SYMBOLS,
        volatility: float = 0.0008,
        seed: int | None = None,
    ) -> None:
        self._random = random.Random(seed)
        self.volatility = volatility
        self.instruments = [Instrument(base, quote, price) for base, quote, price in symbols]
        self.steps = 0

    def step(self) -> None:
        gauss, uniform = self._random.gauss, self._random.uniform
        stamp = now_ms()
        for inst in self.instruments:
            price = round(inst.last * math.exp(gauss(0.0, self.volatility)), inst.decimals)
            inst.last = max(price, 10**-inst.decimals)
            inst.high = max(inst.high, inst.last)
            inst.low = min(inst.low, inst.last)
            size = round(uniform(0.001, 2.0) * 1000 / max(inst.last, 1.0), 6) or 0.001
            inst.last_size = size
            inst.volume += size
            inst.quote_volume += size * inst.last
            inst.trades += 1
            inst.updated_ms = stamp
        self.steps += 1

    def find(self, name: str) -> Instrument | None:
        """Look an instrument up by any exchange's spelling (BTCUSDT, BTC-USDT, btcusdt)."""
        key = name.replace("-", "").replace("_", "").upper()
        for inst in self.instruments:
            if inst.binance == key:
                return inst
        return None
