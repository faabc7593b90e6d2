"""One consistent market behind every simulated venue and channel.

Each instrument keeps a real limit order book in integer ticks. A step sends one aggressive
order into the book: it fills against resting levels (those fills are the trades), market
makers then refill the spread and the far end of the book, and a few resting sizes change.
Everything a venue publishes is read off that one state, so book, trades, tickers and candles
agree: best bid < best ask, depth sorted, trade ids and book update ids strictly increasing, and
a diff-depth chain (`Step.changes` between `first_update_id` and `last_update_id`) applied to a
snapshot rebuilds exactly the book `depth()` shows. Candles are built by each venue from the
trades, because each venue aligns its bars its own way (UTC+8 days, Monday weeks, months).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SYMBOLS",
    "Instrument",
    "Market",
    "Step",
    "Trade",
    "now_ms",
]

# base, quote, starting price, tick size, lot size (base units)
DEFAULT_SYMBOLS: tuple[tuple[str, str, float, float, float], ...] = (
    ("BTC", "USDT", 65_000.0, 0.1, 0.00001),
    ("ETH", "USDT", 3_200.0, 0.01, 0.0001),
    ("SOL", "USDT", 150.0, 0.01, 0.001),
    ("BNB", "USDT", 580.0, 0.01, 0.001),
    ("XRP", "USDT", 0.52, 0.0001, 0.1),
    ("DOGE", "USDT", 0.15, 0.00001, 1.0),
)
BOOK_LEVELS = 100  # resting levels kept on each side; deeper levels are cancelled
MAX_SWEEP = 5  # most levels one aggressive order takes out
TARGET_SPREAD = 2  # ticks the makers close the spread back to


def now_ms() -> int:
    return int(time.time() * 1000)


def _decimals(step: float) -> int:
    """0.01 -> 2, 1.0 -> 0, 0.00001 -> 5."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


@dataclass(frozen=True)
class Trade:
    trade_id: int
    price: float
    size: float  # base currency
    buyer_is_taker: bool  # True: an aggressive buy lifted the ask ("buy" trade)
    time_ms: int


@dataclass
class Step:
    """What one market step did to one instrument: fills and resulting book changes.

    `changes` holds (side, price, new size) with size 0 meaning the level was removed, in the
    order they happened; update ids `first_update_id..last_update_id` were used by them."""

    inst: Instrument
    trades: list[Trade]
    changes: list[tuple[str, float, float]]
    first_update_id: int
    last_update_id: int
    time_ms: int


@dataclass(eq=False)
class Instrument:
    """One instrument's book, last trade and 24-hour statistics."""

    base: str
    quote: str
    last: float
    tick: float = 0.01
    lot: float = 0.001
    kind: str = "SPOT"  # SPOT or SWAP (a perpetual on the same base/quote)
    open: float = 0.0
    high: float = 0.0
    low: float = 0.0
    volume: float = 0.0  # base currency, since the simulator started (its "24h")
    quote_volume: float = 0.0
    last_size: float = 0.0
    trades: int = 0
    first_trade_id: int = 1
    update_id: int = 1000  # last book update id used
    updated_ms: int = field(default_factory=now_ms)
    bids: dict[int, float] = field(default_factory=dict)  # price in ticks -> size
    asks: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.open = self.high = self.low = self.last

    # -- prices ------------------------------------------------------------------------------

    @property
    def decimals(self) -> int:
        return _decimals(self.tick)

    @property
    def size_decimals(self) -> int:
        return _decimals(self.lot)

    def price(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)

    def fmt_price(self, price: float) -> str:
        return f"{price:.{self.decimals}f}"

    def fmt_size(self, size: float) -> str:
        return f"{size:.{self.size_decimals}f}"

    @property
    def best_bid_ticks(self) -> int:
        return max(self.bids)

    @property
    def best_ask_ticks(self) -> int:
        return min(self.asks)

    @property
    def bid(self) -> float:
        return self.price(self.best_bid_ticks)

    @property
    def ask(self) -> float:
        return self.price(self.best_ask_ticks)

    @property
    def bid_size(self) -> float:
        return self.bids[self.best_bid_ticks]

    @property
    def ask_size(self) -> float:
        return self.asks[self.best_ask_ticks]

    @property
    def spread(self) -> float:
        return self.ask - self.bid

    @property
    def change(self) -> float:
        return self.last - self.open

    @property
    def change_percent(self) -> float:
        return 100.0 * self.change / self.open if self.open else 0.0

    @property
    def weighted_average(self) -> float:
        return self.quote_volume / self.volume if self.volume else self.last

    @property
    def last_trade_id(self) -> int:
        return self.first_trade_id + self.trades - 1

    def depth(self, limit: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best `limit` levels: bids high to low, asks low to high, as (price, size)."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return (
            [(self.price(t), size) for t, size in bids],
            [(self.price(t), size) for t, size in asks],
        )

    # exchange spellings of the name
    @property
    def binance(self) -> str:
        return f"{self.base}{self.quote}"

    @property
    def okx(self) -> str:
        suffix = "-SWAP" if self.kind == "SWAP" else ""
        return f"{self.base}-{self.quote}{suffix}"

    @property
    def huobi(self) -> str:
        return f"{self.base}{self.quote}".lower()


class Market:
    """Every instrument's book, moved by random aggressive orders.

    Instruments come in SPOT and SWAP (perpetual) kinds for the same base/quote; each has its
    own book. `sweep` sets how many levels an aggressive order takes (the volatility).
    Deterministic for a given `seed` (timestamps aside)."""

    def __init__(
        self,
        symbols: tuple[tuple[str, str, float, float, float], ...] = DEFAULT_SYMBOLS,
        sweep: float = 1.5,
        seed: int | None = None,
        swaps: bool = True,
    ) -> None:
        self._random = random.Random(seed)
        self.sweep = sweep
        self.instruments: list[Instrument] = []
        kinds = ("SPOT", "SWAP") if swaps else ("SPOT",)
        for kind in kinds:
            for base, quote, price, tick, lot in symbols:
                # the perpetual trades a little above spot (a small positive basis)
                start = price * (1.0003 if kind == "SWAP" else 1.0)
                inst = Instrument(base, quote, round(start / tick) * tick, tick, lot, kind)
                inst.last = inst.open = inst.high = inst.low = round(start, inst.decimals)
                self._seed_book(inst)
                self.instruments.append(inst)
        self.steps = 0
        self._by_name = {(i.binance, i.kind): i for i in self.instruments}

    @property
    def spot(self) -> list[Instrument]:
        return [inst for inst in self.instruments if inst.kind == "SPOT"]

    @property
    def swaps(self) -> list[Instrument]:
        return [inst for inst in self.instruments if inst.kind == "SWAP"]

    def find(self, name: str, kind: str = "SPOT") -> Instrument | None:
        """Look an instrument up by any spelling: BTCUSDT, btcusdt, BTC-USDT, BTC-USDT-SWAP."""
        key = name.upper()
        if key.endswith("-SWAP"):
            key, kind = key[: -len("-SWAP")], "SWAP"
        key = key.replace("-", "").replace("_", "")
        return self._by_name.get((key, kind))

    # -- moving the market -------------------------------------------------------------------

    def step(self) -> list[Step]:
        """Move every instrument once; returns what happened to each."""
        stamp = now_ms()
        steps = [self._step(inst, stamp) for inst in self.instruments]
        self.steps += 1
        return steps

    def _level_size(self, inst: Instrument) -> float:
        notional = self._random.uniform(500.0, 20_000.0)
        lots = max(1, round(notional / max(inst.last, 1e-9) / inst.lot))
        return round(lots * inst.lot, inst.size_decimals)

    def _seed_book(self, inst: Instrument) -> None:
        mid = round(inst.last / inst.tick)
        for k in range(BOOK_LEVELS):
            inst.bids[mid - 1 - k] = self._level_size(inst)
            inst.asks[mid + 1 + k] = self._level_size(inst)

    def _step(self, inst: Instrument, stamp: int) -> Step:
        rand = self._random
        changes: list[tuple[str, float, float]] = []
        trades: list[Trade] = []
        buy = rand.random() < 0.5
        book = inst.asks if buy else inst.bids
        side = "ask" if buy else "bid"
        # an aggressive order that sweeps one to a few levels
        levels = min(MAX_SWEEP, 1 + int(abs(rand.gauss(0.0, self.sweep))))
        best = min(book) if buy else max(book)
        ordered = sorted(book) if buy else sorted(book, reverse=True)
        remaining = sum(book[t] for t in ordered[:levels]) * rand.uniform(0.6, 1.0)
        remaining = max(remaining, inst.lot)
        for ticks in ordered:
            if remaining <= inst.lot / 2:
                break
            resting = book[ticks]
            fill = round(min(resting, remaining), inst.size_decimals)
            if fill <= 0:
                break
            remaining -= fill
            left = round(resting - fill, inst.size_decimals)
            price = inst.price(ticks)
            inst.trades += 1
            trades.append(Trade(inst.last_trade_id, price, fill, buy, stamp))
            if left > 0:
                book[ticks] = left
            else:
                del book[ticks]
            changes.append((side, price, max(left, 0.0)))
        if not book:  # never leave a side empty
            book[best] = self._level_size(inst)
            changes.append((side, inst.price(best), book[best]))
        self._refill(inst, changes)
        for trade in trades:
            self._record(inst, trade)
        first = inst.update_id + 1
        inst.update_id += len(changes)
        inst.updated_ms = stamp
        return Step(inst, trades, changes, first, inst.update_id, stamp)

    def _refill(self, inst: Instrument, changes: list[tuple[str, float, float]]) -> None:
        """Makers close the spread, keep BOOK_LEVELS on each side and move a few sizes."""
        rand = self._random
        bid, ask = max(inst.bids), min(inst.asks)
        while ask - bid > TARGET_SPREAD:
            if rand.random() < 0.5:
                bid += 1
                inst.bids[bid] = self._level_size(inst)
                changes.append(("bid", inst.price(bid), inst.bids[bid]))
            else:
                ask -= 1
                inst.asks[ask] = self._level_size(inst)
                changes.append(("ask", inst.price(ask), inst.asks[ask]))
        for book, side, outward in ((inst.bids, "bid", -1), (inst.asks, "ask", 1)):
            edge = min(book) if outward < 0 else max(book)
            while len(book) < BOOK_LEVELS:
                edge += outward
                book[edge] = self._level_size(inst)
                changes.append((side, inst.price(edge), book[edge]))
            while len(book) > BOOK_LEVELS:
                far = min(book) if outward < 0 else max(book)
                del book[far]
                changes.append((side, inst.price(far), 0.0))
            for _ in range(2):  # resting orders come and go
                ticks = rand.choice(list(book))
                book[ticks] = self._level_size(inst)
                changes.append((side, inst.price(ticks), book[ticks]))

    def _record(self, inst: Instrument, trade: Trade) -> None:
        inst.last = trade.price
        inst.last_size = trade.size
        inst.high = max(inst.high, trade.price)
        inst.low = min(inst.low, trade.price)
        inst.volume += trade.size
        inst.quote_volume += trade.size * trade.price
