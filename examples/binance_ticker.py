"""Binance spot tickers, streamed: every symbol's 24h mini ticker (`!miniTicker@arr`, the
default) or the full 24h tickers of chosen symbols through a combined stream.

python examples/binance_ticker.py              # wss://stream.binance.com:9443/ws/!miniTicker@arr
python examples/binance_ticker.py --url \
    'wss://stream.binance.com:9443/stream?streams=btcusdt@ticker/ethusdt@ticker'
python examples/binance_ticker.py --url ws://127.0.0.1:8765/ws/!miniTicker@arr --count 5
                                               # `dial simulate` instead

A mini ticker has no bid or ask (those columns show "-"); `<symbol>@ticker` has them. Binance
retired `!ticker@arr` on 2026-03-26: it still connects but never sends anything, so this reader
says so on stderr when a stream stays silent rather than printing nothing. It lives through
Binance's connection lifecycle: Dial answers the ping frames (every 20 s), `reconnect=true`
heals drops and the 24-hour cut, and on a `serverShutdown` event it opens a new connection at
once and then lets the old one go.

Checked against Binance's documentation of July 2026 (binance-spot-api-docs:
web-socket-streams.md and CHANGELOG.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://stream.binance.com:9443/ws/!miniTicker@arr"
DEFAULT_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
TICKER_EVENTS = ("24hrTicker", "24hrMiniTicker")
Tick = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<10} {'last':>14} {'bid':>14} {'ask':>14} {'high':>14} {'low':>14}"


def address(url: str) -> str:
    # reconnect=true: after a drop or the 24-hour cut the stream comes back by itself (the
    # streams are in the URL, so nothing needs to be sent again)
    return f"{url}|reconnect=true"


def events_of(message: str | bytes) -> list[dict[str, Any]]:
    """The event objects in one message: a raw event, an array of them, or either wrapped as
    a combined stream's {"stream": ..., "data": ...}."""
    try:
        payload = json.loads(message)
    except ValueError:
        return []
    if isinstance(payload, dict) and "stream" in payload and "data" in payload:
        payload = payload["data"]
    items = payload if isinstance(payload, list) else [payload]
    return [item for item in items if isinstance(item, dict)]


def server_shutdown(message: str | bytes) -> bool:
    """Binance's `serverShutdown` event: this connection is about to be closed."""
    return any(event.get("e") == "serverShutdown" for event in events_of(message))


def _price(event: dict[str, Any], key: str) -> float | None:
    return float(event[key]) if key in event else None


def handle(message: str | bytes, connection: object = None) -> list[Tick]:
    """Ticks in one message: 24hrTicker (with bid/ask) or 24hrMiniTicker (without)."""
    return [
        {
            "exchange": "binance",
            "symbol": event["s"],
            "last": float(event["c"]),
            "bid": _price(event, "b"),
            "ask": _price(event, "a"),
            "high": float(event["h"]),
            "low": float(event["l"]),
            "volume": float(event["q"]),
            "ts": int(event["E"]),
        }
        for event in events_of(message)
        if event.get("e") in TICKER_EVENTS
    ]


def row(tick: Tick) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(tick["ts"] / 1000))
    cells = [
        "-" if tick[key] is None else f"{tick[key]:.8g}"
        for key in ("last", "bid", "ask", "high", "low")
    ]
    return f"{clock:<8} {tick['symbol']!s:<10} " + " ".join(f"{cell:>14}" for cell in cells)


class Silence:
    """Says on stderr when no ticker row came for a while, and what did come instead."""

    def __init__(self, url: str, seconds: float, wanted: set[str] | None) -> None:
        self.url, self.seconds, self.wanted = url, seconds, wanted
        self.since = time.monotonic()
        self.messages = self.tickers = 0

    def saw(self, ticks: list[Tick], printed: int) -> None:
        self.messages += 1
        self.tickers += len(ticks)
        if printed:
            self.since = time.monotonic()
            self.messages = self.tickers = 0

    def check(self) -> None:
        if time.monotonic() - self.since < self.seconds:
            return
        if self.tickers:
            what = f"{self.tickers} tickers arrived, none for {','.join(sorted(self.wanted or ()))}"
        elif self.messages:
            what = f"{self.messages} messages arrived, none of them a ticker"
        else:
            what = "nothing arrived (Binance retired !ticker@arr on 2026-03-26: it sends nothing)"
        print(
            f"binance: no ticker for {self.seconds:g} s from {self.url}: {what}; "
            "try !miniTicker@arr or /stream?streams=btcusdt@ticker/ethusdt@ticker",
            file=sys.stderr,
            flush=True,
        )
        self.since = time.monotonic()
        self.messages = self.tickers = 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: Binance)")
    parser.add_argument("--count", type=int, help="stop after N ticker updates")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma list, or 'all'")
    parser.add_argument(
        "--quiet-after", type=float, default=10.0, help="warn when no ticker for this long (s)"
    )
    args = parser.parse_args(argv)
    wanted = None if args.symbols == "all" else set(args.symbols.upper().split(","))

    ws = Dial(address(args.url))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER, flush=True)
    silence = Silence(args.url, args.quiet_after, wanted)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    updates = 0
    try:
        while args.count is None or updates < args.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            silence.check()
            message = ws.read(200)
            if message is None:
                continue  # a quiet moment
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back
                continue
            if server_shutdown(message):
                ws = reconnect_now(ws, args.url)
                continue
            ticks = handle(message)
            shown = [t for t in ticks if wanted is None or t["symbol"] in wanted]
            for tick in shown:
                print(row(tick), flush=True)
            silence.saw(ticks, len(shown))
            updates += bool(shown)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


def reconnect_now(ws: Any, url: str) -> Any:
    """serverShutdown: open the new connection first, then drop the old one. If the new one
    cannot be opened yet, keep the old one: reconnect=true takes over when it is closed."""
    print("binance: serverShutdown received, reconnecting now", file=sys.stderr, flush=True)
    fresh = Dial(address(url))
    if not fresh:
        print(f"binance: reconnect failed: {last_error()}", file=sys.stderr, flush=True)
        return ws
    ws.close()
    return fresh


if __name__ == "__main__":
    sys.exit(main())
