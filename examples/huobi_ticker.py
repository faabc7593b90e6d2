"""HTX (Huobi) spot market data: tickers, trades and order books from one gzip WebSocket.

    python examples/huobi_ticker.py                         # live HTX, wss://api.huobi.pro/ws
    python examples/huobi_ticker.py --symbols ethusdt --channels trade.detail,bbo
    python examples/huobi_ticker.py --url ws://127.0.0.1:8765/ws --count 5   # dial simulate

Reads HTX's public market feed `wss://api.huobi.pro/ws`. Every server frame is gzip-compressed
JSON (`compress=gzip`); each topic is one `{"sub": "market.<symbol>.<channel>", "id": ...}`; the
server's heartbeat `{"ping": ts}` must be answered with `{"pong": ts}` (after two unanswered
pings HTX disconnects). `reconnect=true` brings the link back after a drop and the reader then
sends its subscriptions again. Every message HTX documents is printed or skipped, never fatal:
acks and `rep` answers are skipped, errors go to stderr, pushes become rows. The `last` column
is the ticker's close, the trade price, the kline close, or the book's mid price (depth, bbo).
Checked against HTX's documentation of August 2021 ("Websocket Market Data", spot v1).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://api.huobi.pro/ws"
DEFAULT_SYMBOLS = "btcusdt,ethusdt,solusdt"
DEFAULT_CHANNELS = "ticker,trade.detail,depth.step0"
#: channels HTX documents on /ws (MBP incremental lives on /feed and needs a book to apply to)
CHANNEL = re.compile(
    r"^(ticker|detail|bbo|trade\.detail|depth\.step[0-5]|mbp\.refresh\.(5|10|20)"
    r"|kline\.(1min|5min|15min|30min|60min|4hour|1day|1week|1mon|1year))$"
)
ALIASES = {"trade": "trade.detail", "depth": "depth.step0", "kline": "kline.1min"}
Row = dict[str, Any]
HEADER = f"{'time':<8} {'symbol':<10} {'last':>14} {'channel':<13} details"


def address(url: str, symbol: str = "btcusdt") -> str:
    """One symbol's `ticker`, subscribed by `payload` after every (re)connect."""
    sub = json.dumps({"sub": f"market.{symbol}.ticker", "id": "dialkit"})
    return f"{stream_address(url)}&payload={sub}"


def stream_address(url: str) -> str:
    return f"{url}|compress=gzip&mode=recv&reconnect=true"


def parse(message: str | bytes) -> dict[str, Any] | None:
    """One frame as a JSON object (the gzip codec already inflated it), or None."""
    try:
        push = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        return None
    return push if isinstance(push, dict) else None


def handle(message: str | bytes, connection: Any = None) -> list[Row]:
    """Answer a heartbeat on `connection`; return the ticker rows in a push (for the demo)."""
    push = parse(message)
    if push is None:
        return []
    if "ping" in push:
        if connection is not None:
            connection.write(json.dumps({"pong": push["ping"]}))
        return []
    report(push)
    return [row for row in rows(push) if row["channel"] in ("ticker", "detail")]


def report(push: dict[str, Any]) -> None:
    if push.get("status") == "error":
        code, text = push.get("err-code"), push.get("err-msg")
        print(f"HTX error {code}: {text} (id {push.get('id')})", file=sys.stderr)


# -- pushes -> rows ------------------------------------------------------------------------------


def rows(push: dict[str, Any]) -> list[Row]:
    """The rows one `{"ch", "ts", "tick"}` push holds; [] for anything else or malformed."""
    channel, tick = push.get("ch"), push.get("tick")
    if not isinstance(channel, str) or not isinstance(tick, dict):
        return []
    parts = channel.split(".")
    if len(parts) < 3 or parts[0] != "market":
        return []
    kind = ".".join(parts[2:])
    reader = READERS.get(kind) or READERS.get(parts[2])
    if reader is None or (kind.startswith("mbp.") and not kind.startswith("mbp.refresh.")):
        return []  # MBP increments only mean something applied to a book
    ts = push.get("ts")
    base = {
        "exchange": "huobi",
        "symbol": parts[1].upper(),
        "channel": kind,
        "ts": ts if isinstance(ts, int) else int(time.time() * 1000),
    }
    try:
        return reader(base, tick)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return []


def _ticker(base: Row, tick: dict[str, Any]) -> list[Row]:
    """`ticker` (with best bid/ask) and `detail` (without): the 24h summary."""
    bid, ask = tick.get("bid"), tick.get("ask")
    row = {
        **base,
        "last": float(tick["close"]),
        "open": float(tick["open"]),
        "high": float(tick["high"]),
        "low": float(tick["low"]),
        "volume": float(tick["vol"]),
        "bid": None if bid is None else float(bid),
        "ask": None if ask is None else float(ask),
    }
    quote = "" if bid is None or ask is None else f"bid {row['bid']:.8g} ask {row['ask']:.8g} "
    row["details"] = f"{quote}high {row['high']:.8g} low {row['low']:.8g} vol {row['volume']:.6g}"
    return [row]


def _trades(base: Row, tick: dict[str, Any]) -> list[Row]:
    out = []
    for trade in tick["data"]:
        amount = float(trade["amount"])
        details = f"{trade.get('direction', '?')} {amount:.8g} #{trade.get('tradeId', '?')}"
        ts = trade.get("ts", base["ts"])
        out.append({**base, "ts": ts, "last": float(trade["price"]), "details": details})
    return out


def _book(base: Row, tick: dict[str, Any]) -> list[Row]:
    """`depth.stepN`, `mbp.refresh.N`: best bid and ask of the snapshot."""
    bids, asks = tick["bids"], tick["asks"]
    if not bids or not asks:
        return []
    (bid, bid_size), (ask, ask_size) = bids[0][:2], asks[0][:2]
    return [_quote(base, float(bid), float(bid_size), float(ask), float(ask_size), bids, asks)]


def _bbo(base: Row, tick: dict[str, Any]) -> list[Row]:
    bid, ask = float(tick["bid"]), float(tick["ask"])
    return [_quote(base, bid, float(tick["bidSize"]), ask, float(tick["askSize"]))]


def _quote(
    base: Row, bid: float, bid_size: float, ask: float, ask_size: float, *sides: list[Any]
) -> Row:
    details = f"bid {bid:.8g} x {bid_size:.6g} | ask {ask:.8g} x {ask_size:.6g}"
    if sides:
        details += f" | {len(sides[0])}/{len(sides[1])} levels"
    return {**base, "last": (bid + ask) / 2, "bid": bid, "ask": ask, "details": details}


def _kline(base: Row, tick: dict[str, Any]) -> list[Row]:
    opened = time.strftime("%H:%M", time.localtime(int(tick["id"])))
    details = (
        f"from {opened} open {float(tick['open']):.8g} high {float(tick['high']):.8g} "
        f"low {float(tick['low']):.8g} trades {tick.get('count', '?')}"
    )
    return [{**base, "last": float(tick["close"]), "details": details}]


READERS: dict[str, Callable[[Row, dict[str, Any]], list[Row]]] = {
    "ticker": _ticker,
    "detail": _ticker,
    "trade.detail": _trades,
    "depth": _book,
    "mbp": _book,
    "bbo": _bbo,
    "kline": _kline,
}


def row(item: Row) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(item["ts"] / 1000))
    return (
        f"{clock:<8} {item['symbol']!s:<10} {item['last']:>14.8g} {item['channel']:<13} "
        f"{item['details']}"
    )


# -- the reader ----------------------------------------------------------------------------------


def channels(text: str) -> list[str]:
    chosen = [ALIASES.get(name, name) for name in text.replace(" ", "").split(",") if name]
    bad = [name for name in chosen if not CHANNEL.match(name)]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown channel {', '.join(bad) or '(none)'}; choose from ticker, detail, bbo, "
            "trade.detail, depth.step0-5, kline.<period>, mbp.refresh.<5|10|20>"
        )
    return chosen


def symbols(text: str) -> list[str]:
    chosen = [name.lower() for name in text.replace(" ", "").split(",") if name]
    if not chosen or not all(name.isalnum() for name in chosen):
        raise argparse.ArgumentTypeError(f"bad symbol list {text!r} (e.g. btcusdt,ethusdt)")
    return chosen


def subscribe(ws: Any, topics: list[str]) -> bool:
    """One `sub` per topic; False when the link went down meanwhile (try again later)."""
    return all(ws.write(json.dumps({"sub": topic, "id": topic})) for topic in topics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: HTX)")
    parser.add_argument("--count", type=int, help="stop after N rows")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument(
        "--symbols",
        "--symbol",
        type=symbols,
        default=symbols(DEFAULT_SYMBOLS),
        help=f"comma-separated (default {DEFAULT_SYMBOLS})",
    )
    parser.add_argument(
        "--channels",
        type=channels,
        default=channels(DEFAULT_CHANNELS),
        help=f"comma-separated (default {DEFAULT_CHANNELS}; trade, depth are short names)",
    )
    args = parser.parse_args(argv)
    topics = [f"market.{symbol}.{channel}" for symbol in args.symbols for channel in args.channels]

    ws = Dial(stream_address(args.url))
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER, flush=True)
    printed, pongs, subscribed_on = 0, 0, -1
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    code = 0
    try:
        while args.count is None or printed < args.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            reconnects = ws.stats().reconnects
            if reconnects != subscribed_on and subscribe(ws, topics):
                subscribed_on = reconnects  # subscribed on this link (again after a drop)
            message = ws.read(500)
            if message == "":
                time.sleep(0.1)  # disconnected; reconnect=true brings it back
                continue
            push = None if message is None else parse(message)
            if push is None:
                continue
            if "ping" in push:
                pongs += ws.write(json.dumps({"pong": push["ping"]})) > 0
                continue
            report(push)
            for item in rows(push)[: None if args.count is None else args.count - printed]:
                print(row(item), flush=True)
                printed += 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        code = 130
    finally:
        stats = ws.stats()
        ws.close()
    print(
        f"{printed} rows, {pongs} pings answered, {stats.reconnects} reconnects",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
