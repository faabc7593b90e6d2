"""OKX v5 public market data: tickers, books5 and trades on SPOT and SWAP instruments, from
wss://ws.okx.com:8443/ws/v5/public (checked against OKX's documentation of August 2026).

OKX v5 sends plain JSON text frames (no compression option is needed). The subscription rides
in `payload`, so `reconnect=true` re-subscribes after every drop by itself. As OKX recommends,
a text "ping" goes out when nothing arrived for 20 s (OKX closes a link idle for 30 s) and the
"pong" is expected back. SWAP sizes are in contracts (ctVal: 0.01 BTC per BTC-USDT-SWAP).

    python examples/okx_ticker.py                                  # tickers, a few SPOT + SWAP
    python examples/okx_ticker.py --channels tickers,books5,trades --inst BTC-USDT,BTC-USDT-SWAP
    python examples/okx_ticker.py --url ws://127.0.0.1:8765/ws/v5/public --count 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://ws.okx.com:8443/ws/v5/public"
DEFAULT_INSTRUMENTS = "BTC-USDT,ETH-USDT,BTC-USDT-SWAP,ETH-USDT-SWAP"
CHANNELS = ("tickers", "books5", "trades")
PING_AFTER = 20.0  # seconds of silence before a "ping" (OKX: N < 30)
Tick = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<15} {'last':>12} {'bid':>12} {'ask':>12} {'high':>12} {'low':>12}"


def subscribe_message(instruments: Sequence[str], channels: Sequence[str] = ("tickers",)) -> str:
    args = [{"channel": channel, "instId": inst} for channel in channels for inst in instruments]
    return json.dumps({"op": "subscribe", "args": args}, separators=(",", ":"))


def address(
    url: str,
    instruments: Sequence[str] = ("BTC-USDT",),
    channels: Sequence[str] = ("tickers",),
) -> str:
    """The Dial address: `payload` (re)subscribes after every (re)connect."""
    return f"{url}|reconnect=true&payload={subscribe_message(instruments, channels)}"


def parse(message: str | bytes) -> dict[str, Any] | None:
    """One OKX message as a dict; `pong` and anything that is not a JSON object give None.
    Error and notice events are reported on stderr."""
    if message == "pong":
        return None
    try:
        decoded = json.loads(message)
    except ValueError:
        return None
    if not isinstance(decoded, dict):
        return None
    if decoded.get("event") in ("error", "notice"):
        print(
            f"OKX {decoded['event']} {decoded.get('code')}: {decoded.get('msg')}", file=sys.stderr
        )
    return decoded


def channel_of(push: dict[str, Any] | None) -> str | None:
    if push is None or "data" not in push:
        return None
    channel = push.get("arg", {}).get("channel")
    return channel if isinstance(channel, str) else None


def ticks(push: dict[str, Any] | None) -> list[Tick]:
    """The tickers in one push (the demo stores these)."""
    if channel_of(push) != "tickers":
        return []
    assert push is not None
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


def handle(message: str | bytes, connection: object = None) -> list[Tick]:
    """Ticker ticks in one message; acks, errors, other channels and `pong` carry none."""
    return ticks(parse(message))


def _clock(ts: str | int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(int(ts) / 1000))


def rows(push: dict[str, Any] | None) -> list[str]:
    """Printable lines for a tickers, books5 or trades push."""
    channel = channel_of(push)
    if channel is None:
        return []
    assert push is not None
    inst = push["arg"].get("instId", "")
    if channel == "tickers":
        return [row(tick) for tick in ticks(push)]
    if channel == "books5":
        out = []
        for book in push["data"]:
            bids = [level[0] for level in book["bids"]]
            asks = [level[0] for level in book["asks"]]
            mid = (float(bids[0]) + float(asks[0])) / 2 if bids and asks else 0.0
            out.append(
                f"{_clock(book['ts']):<8} {inst:<15} {mid:>12.8g} {bids[0] if bids else '-':>12} "
                f"{asks[0] if asks else '-':>12} book5 bids={','.join(bids)} asks={','.join(asks)}"
            )
        return out
    if channel == "trades":
        return [
            f"{_clock(t['ts']):<8} {t['instId']:<15} {float(t['px']):>12.8g} "
            f"{t['side']:>12} {t['sz']:>12} trade id={t['tradeId']}"
            for t in push["data"]
        ]
    return []


def row(tick: Tick) -> str:
    prices = " ".join(f"{tick[key]:>12.8g}" for key in ("last", "bid", "ask", "high", "low"))
    return f"{_clock(tick['ts']):<8} {tick['symbol']!s:<15} {prices}"


def _list(text: str, known: Sequence[str] | None = None) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if known is not None and item not in known]
    if not items or unknown:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(known or ['instrument ids'])}"
        )
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: OKX)")
    parser.add_argument("--count", type=int, help="stop after N rows")
    parser.add_argument(
        "--inst",
        type=lambda text: _list(text.upper()),
        default=_list(DEFAULT_INSTRUMENTS),
        help=f"comma list of instruments, SPOT and/or SWAP (default {DEFAULT_INSTRUMENTS})",
    )
    parser.add_argument(
        "--channels",
        type=lambda text: _list(text, CHANNELS),
        default=["tickers"],
        help=f"comma list of {', '.join(CHANNELS)} (default tickers)",
    )
    parser.add_argument(
        "--ping-after",
        type=float,
        default=PING_AFTER,
        help=f"send 'ping' after this many quiet seconds (default {PING_AFTER:g}; OKX: < 30)",
    )
    args = parser.parse_args(argv)

    ws = Dial(address(args.url, args.inst, args.channels))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    printed, last_heard, pinged = 0, time.monotonic(), False
    try:
        while args.count is None or printed < args.count:
            message = ws.read(1000)
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back and resubscribes
                last_heard = time.monotonic()
                continue
            if message is not None:
                last_heard, pinged = time.monotonic(), False
                lines = rows(parse(message))
                if args.count is not None:
                    lines = lines[: args.count - printed]
                for line in lines:
                    print(line, flush=True)
                printed += len(lines)
            elif time.monotonic() - last_heard > args.ping_after:
                if pinged:  # no pong either: OKX is about to drop us; reconnect=true follows
                    print(f"no answer to ping for {args.ping_after:g} s", file=sys.stderr)
                ws.write("ping")
                last_heard, pinged = time.monotonic(), True
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
