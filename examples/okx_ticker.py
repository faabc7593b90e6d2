"""OKX v5 public tickers: raw-DEFLATE frames (`compress=gzip_raw`), resubscribed after every
reconnect (`reconnect=true&payload=...`), kept alive with a text `ping` when the feed is quiet.

    python examples/okx_ticker.py --inst BTC-USDT,ETH-USDT
    python examples/okx_ticker.py --url ws://127.0.0.1:8765/ws/v5/public --count 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://ws.okx.com:8443/ws/v5/public"
PING_AFTER = 20.0  # OKX closes a link idle for 30 s; ping when nothing came for 20 s
Tick = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<10} {'last':>14} {'bid':>14} {'ask':>14} {'high':>14} {'low':>14}"


def subscribe_message(instruments: list[str]) -> str:
    args = [{"channel": "tickers", "instId": inst} for inst in instruments]
    return json.dumps({"op": "subscribe", "args": args}, separators=(",", ":"))


def address(url: str, instruments: list[str] = ["BTC-USDT"]) -> str:  # noqa: B006
    # payload is re-sent after every (re)connect, so the subscription survives drops
    return (
        f"{url}|compress=gzip_raw&mode=recv&reconnect=true&payload={subscribe_message(instruments)}"
    )


def handle(message: str | bytes, connection: object = None) -> list[Tick]:
    """Ticks in one push; acks, errors and `pong` carry none."""
    if message == "pong":
        return []
    try:
        push = json.loads(message)
    except ValueError:
        return []
    if not isinstance(push, dict):
        return []
    if push.get("event") == "error":
        print(f"OKX error {push.get('code')}: {push.get('msg')}", file=sys.stderr)
    if push.get("arg", {}).get("channel") != "tickers" or "data" not in push:
        return []
    return [
        {
            "exchange": "okx",
            "symbol": item["instId"],
            "last": float(item["last"]),
            "bid": float(item["bidPx"]),
            "ask": float(item["askPx"]),
            "high": float(item["high24h"]),
            "low": float(item["low24h"]),
            "volume": float(item["volCcy24h"]),
            "ts": int(item["ts"]),
        }
        for item in push["data"]
    ]


def row(tick: Tick) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(tick["ts"] / 1000))
    prices = " ".join(f"{tick[key]:>14.8g}" for key in ("last", "bid", "ask", "high", "low"))
    return f"{clock:<8} {tick['symbol']!s:<10} {prices}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: OKX)")
    parser.add_argument("--count", type=int, help="stop after N ticker updates")
    parser.add_argument("--inst", default="BTC-USDT", help="comma list of instruments")
    args = parser.parse_args(argv)

    ws = Dial(address(args.url, args.inst.upper().split(",")))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    updates, last_heard = 0, time.monotonic()
    try:
        while args.count is None or updates < args.count:
            message = ws.read(1000)
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back
                continue
            if message is not None:
                last_heard = time.monotonic()
                for tick in handle(message):
                    print(row(tick), flush=True)
                    updates += 1
            elif time.monotonic() - last_heard > PING_AFTER:
                ws.write("ping")
                last_heard = time.monotonic()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
