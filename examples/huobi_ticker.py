"""Huobi (HTX) market detail: gzip frames (`compress=gzip`), and the heartbeat every Huobi
client must keep: answer each `{"ping": ts}` with `{"pong": ts}` or be dropped.

    python examples/huobi_ticker.py --symbol ethusdt
    python examples/huobi_ticker.py --url ws://127.0.0.1:8765/ws --count 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://api.huobi.pro/ws"
Tick = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<10} {'last':>14} {'open':>14} {'high':>14} {'low':>14}"


def address(url: str, symbol: str = "btcusdt") -> str:
    sub = json.dumps({"sub": f"market.{symbol}.detail", "id": "dialkit"})
    return f"{url}|compress=gzip&mode=recv&reconnect=true&payload={sub}"


def handle(message: str | bytes, connection: Any = None) -> list[Tick]:
    """Answer heartbeats on `connection`; return the ticks in a `market.*.detail` push."""
    try:
        push = json.loads(message)
    except ValueError:
        return []
    if not isinstance(push, dict):
        return []
    if "ping" in push:
        if connection is not None:
            connection.write(json.dumps({"pong": push["ping"]}))
        return []
    if push.get("status") == "error":
        print(f"Huobi error: {push.get('err-msg')}", file=sys.stderr)
    channel, tick = str(push.get("ch", "")), push.get("tick")
    if not channel.endswith(".detail") or not isinstance(tick, dict):
        return []
    return [
        {
            "exchange": "huobi",
            "symbol": channel.split(".")[1].upper(),
            "last": float(tick["close"]),
            "open": float(tick["open"]),
            "bid": tick.get("bid"),
            "ask": tick.get("ask"),
            "high": float(tick["high"]),
            "low": float(tick["low"]),
            "volume": float(tick["vol"]),
            "ts": int(push["ts"]),
        }
    ]


def row(tick: Tick) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(tick["ts"] / 1000))
    prices = " ".join(f"{tick[key]:>14.8g}" for key in ("last", "open", "high", "low"))
    return f"{clock:<8} {tick['symbol']!s:<10} {prices}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: Huobi)")
    parser.add_argument("--count", type=int, help="stop after N ticker updates")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--symbol", default="btcusdt")
    args = parser.parse_args(argv)

    ws = Dial(address(args.url, args.symbol.lower()))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    updates, pongs, deadline = 0, 0, None
    if args.seconds is not None:
        deadline = time.monotonic() + args.seconds
    try:
        while args.count is None or updates < args.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            message = ws.read(500)
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back
                continue
            if message is None:
                continue
            pongs += '"ping"' in message
            for tick in handle(message, ws):
                print(row(tick), flush=True)
                updates += 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        stats = ws.stats()
        ws.close()
    print(
        f"{updates} updates, {pongs} pings answered, {stats.reconnects} reconnects",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
