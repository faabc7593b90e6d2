"""A local Binance spot order book, kept from the diff-depth stream the way Binance documents it
("How to manage a local order book correctly", web-socket-streams.md).

python examples/binance_book.py                      # BTCUSDT: wss://stream.binance.com:9443
                                                     # /ws/btcusdt@depth@100ms + api.binance.com
python examples/binance_book.py --symbol ETHUSDT --check      # keep it a while, then compare it
                                                              # with a fresh REST snapshot
python examples/binance_book.py --url ws://127.0.0.1:8765/ws/btcusdt@depth \
    --rest http://127.0.0.1:8765 --check                      # `dial simulate` instead

The procedure: buffer the stream's `depthUpdate` events; GET /api/v3/depth?symbol=&limit=5000;
if the snapshot's lastUpdateId is older than the first buffered event's U, get it again; drop
buffered events with u <= lastUpdateId; the first one left must hold lastUpdateId + 1 in
[U; u]; then apply each event (a size of 0 removes the level) whose U is the previous u + 1. A
gap, a drop of the connection or a `serverShutdown` event (which makes it reconnect at once)
starts it over. `--check` compares the kept book with a fresh snapshot, level for level at the
same update id (a level the straddling event changes is skipped), and prints whether they match:
exit 0 when they do, 3 when they do not, 1 when the stream or the REST API cannot be reached.

Checked against Binance's documentation of July 2026 (binance-spot-api-docs:
web-socket-streams.md and rest-api.md "Order book").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

from dial import Dial, last_error

DEFAULT_WS = "wss://stream.binance.com:9443"
DEFAULT_REST = "https://api.binance.com"
Event = dict[str, Any]
Side = dict[Decimal, Decimal]


class Unreachable(Exception):
    """The REST API could not be asked, or said no."""


class Resync(Exception):
    """The event chain broke: start over from a new snapshot."""


def events_of(message: str | bytes) -> list[Event]:
    """The events in one message, unwrapping a combined stream's {"stream","data"}."""
    try:
        payload = json.loads(message)
    except ValueError:
        return []
    if isinstance(payload, dict) and "stream" in payload and "data" in payload:
        payload = payload["data"]
    return [payload] if isinstance(payload, dict) else []


def snapshot(rest: str, symbol: str, limit: int) -> Event:
    """GET /api/v3/depth: {"lastUpdateId", "bids", "asks"}."""
    url = f"{rest.rstrip('/')}/api/v3/depth?symbol={symbol}&limit={limit}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: Event = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip()
        raise Unreachable(f"{url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"{url}: {reason}") from None


def levels(pairs: list[list[str]]) -> Side:
    return {Decimal(price): Decimal(size) for price, size in pairs}


class Book:
    """Bids and asks (price -> size) as of update id `last_id`."""

    def __init__(self, snap: Event) -> None:
        self.last_id: int = snap["lastUpdateId"]
        self.bids = levels(snap["bids"])
        self.asks = levels(snap["asks"])

    def apply(self, event: Event) -> None:
        for side, changes in ((self.bids, event["b"]), (self.asks, event["a"])):
            for price, size in levels(changes).items():
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)
        self.last_id = event["u"]

    def top(self) -> tuple[tuple[Decimal, Decimal] | None, tuple[Decimal, Decimal] | None]:
        bid = max(self.bids) if self.bids else None
        ask = min(self.asks) if self.asks else None
        return (
            None if bid is None else (bid, self.bids[bid]),
            None if ask is None else (ask, self.asks[ask]),
        )


class Keeper:
    """Binance's procedure: buffer, snapshot, drop old events, then chain U == last u + 1."""

    def __init__(self, rest: str, symbol: str, limit: int) -> None:
        self.rest, self.symbol, self.limit = rest, symbol, limit
        self.book: Book | None = None
        self.buffer: list[Event] = []
        self.resyncs = 0

    def reset(self, why: str) -> None:
        if self.book is not None or self.buffer:
            print(f"binance: {why}: resynchronising the book", file=sys.stderr, flush=True)
            self.resyncs += 1
        self.book, self.buffer = None, []

    def feed(self, event: Event) -> list[Event]:
        """Take one event; returns the events applied to the book (none while syncing)."""
        if self.book is None:
            self.buffer.append(event)
            return self._start()
        try:
            return [event] if self._apply(self.book, event) else []
        except Resync as gap:
            self.reset(str(gap))
            self.buffer.append(event)
            return self._start()

    def _start(self) -> list[Event]:
        snap = snapshot(self.rest, self.symbol, self.limit)
        first_u = self.buffer[0]["U"]
        if snap["lastUpdateId"] < first_u:
            return []  # older than what we buffered: the next event asks again
        events = [e for e in self.buffer if e["u"] > snap["lastUpdateId"]]
        self.buffer = []
        book = Book(snap)
        if events and not events[0]["U"] <= book.last_id + 1 <= events[0]["u"]:
            self.reset(f"first event {events[0]['U']}..{events[0]['u']} misses the snapshot")
            return []
        self.book = book
        applied = []
        try:
            for event in events:
                if self._apply(book, event):
                    applied.append(event)
        except Resync as gap:
            self.reset(str(gap))
            return []
        return applied

    @staticmethod
    def _apply(book: Book, event: Event) -> bool:
        if event["u"] <= book.last_id:
            return False  # already in the book
        if event["U"] > book.last_id + 1:
            raise Resync(f"gap: event starts at {event['U']}, book is at {book.last_id}")
        book.apply(event)
        return True


def compare(
    book: Book, snap: Event, limit: int, skip: set[tuple[str, Decimal]]
) -> tuple[int, list[str]]:
    """(levels compared, differences) over the snapshot's price range, `skip` left out.

    A snapshot holding `limit` levels on a side shows only the best ones, so the book is compared
    down to the snapshot's last level there; a shorter side is the whole side."""
    compared, differences = 0, []
    for name, local, remote in (
        ("bid", book.bids, levels(snap["bids"])),
        ("ask", book.asks, levels(snap["asks"])),
    ):
        prices = set(remote) | set(local)
        if remote and len(remote) >= min(limit, 5000):
            if name == "bid":
                prices = {p for p in prices if p >= min(remote)}
            else:
                prices = {p for p in prices if p <= max(remote)}
        for price in sorted(prices):
            if (name, price) in skip:
                continue
            compared += 1
            if local.get(price) != remote.get(price):
                differences.append(
                    f"{name} {price}: book {local.get(price, '-')}, snapshot "
                    f"{remote.get(price, '-')}"
                )
    return compared, differences


def line(book: Book, symbol: str, stamp: int) -> str:
    bid, ask = book.top()
    clock = time.strftime("%H:%M:%S", time.localtime(stamp / 1000))
    bid_text = "-" if bid is None else f"{bid[0].normalize():f} x {bid[1].normalize():f}"
    ask_text = "-" if ask is None else f"{ask[0].normalize():f} x {ask[1].normalize():f}"
    return (
        f"{clock:<8} {symbol:<9} u={book.last_id:<12} bid {bid_text:<28} ask {ask_text:<28} "
        f"levels {len(book.bids)}/{len(book.asks)}"
    )


def reconnect_now(ws: Any, url: str) -> Any:
    """serverShutdown: open the new connection first, then let the old one go."""
    print("binance: serverShutdown received, reconnecting now", file=sys.stderr, flush=True)
    fresh = Dial(f"{url}|reconnect=true")
    if not fresh:
        print(f"binance: reconnect failed: {last_error()}", file=sys.stderr, flush=True)
        return ws
    ws.close()
    return fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="BTCUSDT", help="spot symbol (default BTCUSDT)")
    parser.add_argument("--url", help="diff-depth stream (default: Binance's <symbol>@depth@100ms)")
    parser.add_argument("--rest", default=DEFAULT_REST, help=f"REST base URL ({DEFAULT_REST})")
    parser.add_argument("--limit", type=int, default=5000, help="snapshot levels (max 5000)")
    parser.add_argument("--count", type=int, help="stop after N events applied")
    parser.add_argument("--seconds", type=float, help="stop after this many seconds")
    parser.add_argument("--check", action="store_true", help="then compare with a new snapshot")
    args = parser.parse_args(argv)
    symbol = args.symbol.upper()
    url = args.url or f"{DEFAULT_WS}/ws/{symbol.lower()}@depth@100ms"
    if args.check and args.count is None and args.seconds is None:
        args.count = 20

    ws = Dial(f"{url}|reconnect=true")
    if not ws:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    keeper = Keeper(args.rest, symbol, args.limit)
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    applied = 0
    try:
        while args.count is None or applied < args.count:
            if deadline is not None and time.monotonic() >= deadline:
                break
            message = ws.read(200)
            if message is None:
                continue
            if message == "":
                keeper.reset("disconnected")
                time.sleep(0.1)  # reconnect=true brings it back
                continue
            for event in events_of(message):
                if event.get("e") == "serverShutdown":
                    keeper.reset("serverShutdown")
                    ws = reconnect_now(ws, url)
                elif event.get("e") == "depthUpdate":
                    if event.get("s") != symbol:
                        print(f"the stream is for {event.get('s')}, not {symbol}", file=sys.stderr)
                        return 1
                    for done in keeper.feed(event):
                        applied += 1
                        assert keeper.book is not None
                        print(line(keeper.book, symbol, done["E"]), flush=True)
        if args.check:
            return check(ws, keeper, symbol)
    except Unreachable as exc:
        print(f"cannot get the snapshot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


def check(ws: Any, keeper: Keeper, symbol: str, attempts: int = 3) -> int:
    """Compare the book with a fresh snapshot, at the snapshot's update id."""
    for _ in range(attempts):
        if keeper.book is None:
            break
        snap = snapshot(keeper.rest, symbol, keeper.limit)
        target = snap["lastUpdateId"]
        while keeper.book is not None and keeper.book.last_id < target:
            message = ws.read(5000)
            if not message:
                keeper.reset("no event while checking")
                break
            for event in events_of(message):
                book = keeper.book
                if event.get("e") != "depthUpdate" or book is None:
                    continue
                if event["U"] <= book.last_id + 1 <= target < event["u"]:
                    # this event moves the book past the snapshot: compare before it, leaving
                    # out the levels it changes (their size at `target` is unknown)
                    touched = {("bid", p) for p in levels(event["b"])}
                    touched |= {("ask", p) for p in levels(event["a"])}
                    return verdict(book, snap, keeper.limit, touched)
                keeper.feed(event)
        if keeper.book is not None and keeper.book.last_id == target:
            return verdict(keeper.book, snap, keeper.limit, set())
    print("check: the book could not be compared (no book, or no snapshot met it)", file=sys.stderr)
    return 1


def verdict(book: Book, snap: Event, limit: int, skip: set[tuple[str, Decimal]]) -> int:
    compared, differences = compare(book, snap, limit, skip)
    skipped = f", {len(skip)} changing levels skipped" if skip else ""
    where = f"at lastUpdateId {snap['lastUpdateId']}"
    if not differences:
        print(f"check: book matches the snapshot {where}: {compared} levels equal{skipped}")
        return 0
    print(f"check: book DIFFERS from the snapshot {where}: {len(differences)} of {compared}")
    for difference in differences[:10]:
        print(f"  {difference}")
    return 3


if __name__ == "__main__":
    sys.exit(main())
