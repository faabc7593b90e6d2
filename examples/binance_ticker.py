"""Binance 24h tickers for every symbol, one JSON array per second (`!ticker@arr`).

python examples/binance_ticker.py                        # the real Binance stream
python examples/binance_ticker.py --url ws://127.0.0.1:8765/ws/!ticker@arr --count 5
                                                         # `dial simulate` instead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://stream.binance.com:9443/ws/!ticker@arr"
DEFAULT_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
Tick = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<10} {'last':>14} {'bid':>14} {'ask':>14} {'high':>14} {'low':>14}"


def address(url: str) -> str:
    # reconnect=true: after a drop the stream comes back by itself (no subscription needed)
    return f"{url}|reconnect=true"


def handle(message: str | bytes, connection: object = None) -> list[Tick]:
    """Ticks in one message (the stream sends a JSON array of 24hrTicker events)."""
    try:
        events = json.loads(message)
    except ValueError:
        return []
    if isinstance(events, dict):  # a single-symbol stream, or a control answer
        events = [events] if events.get("e") == "24hrTicker" else []
    return [
        {
            "exchange": "binance",
            "symbol": event["s"],
            "last": float(event["c"]),
            "bid": float(event["b"]),
            "ask": float(event["a"]),
            "high": float(event["h"]),
            "low": float(event["l"]),
            "volume": float(event["q"]),
            "ts": int(event["E"]),
        }
        for event in events
        if isinstance(event, dict) and event.get("e") == "24hrTicker"
    ]


def row(tick: Tick) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(tick["ts"] / 1000))
    prices = " ".join(f"{tick[key]:>14.8g}" for key in ("last", "bid", "ask", "high", "low"))
    return f"{clock:<8} {tick['symbol']!s:<10} {prices}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: Binance)")
    parser.add_argument("--count", type=int, help="stop after N ticker updates")
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma list, or 'all'")
    args = parser.parse_args(argv)
    wanted = None if args.symbols == "all" else set(args.symbols.upper().split(","))

    ws = Dial(address(args.url))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    updates = 0
    try:
        while args.count is None or updates < args.count:
            message = ws.read(1000)
            if message is None:
                continue  # quiet second
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back
                continue
            ticks = [t for t in handle(message) if wanted is None or t["symbol"] in wanted]
            for tick in ticks:
                print(row(tick), flush=True)
            updates += bool(ticks)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
