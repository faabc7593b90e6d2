"""OKX v5 WebSocket API as OKX documents it (https://www.okx.com/docs-v5/en/, pages of
June-August 2026): `/ws/v5/public` (tickers, books, books5, bbo-tbt, trades), `/ws/v5/business`
(candle*, trades-all) and `/ws/v5/private` (login, then orders and positions).

Every frame is plain JSON text, as on OKX v5; `okx_legacy_deflate` brings back the raw DEFLATE
binary frames FMZ-era scripts read with `compress=gzip_raw`. Text `ping` gets text `pong`; a
link that was sent nothing for `okx_idle_timeout` (30) seconds is closed with 4004. SWAP sizes
are contracts of OKX's contract value (ctVal: 0.01 BTC per BTC-USDT-SWAP contract, ...).
The `books` checksum is fixed to 0 as OKX documents since 2026-06-23 (`okx_book_checksum`
brings back the CRC32 of the top 25 levels that OKX documented before).
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import hashlib
import hmac
import itertools
import json
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .feed import Feed
from .market import Instrument, Step, Trade, now_ms

__all__ = ["BARS", "CONTRACT_VALUES", "OkxFeed", "deflate_raw", "login_signature"]

PUBLIC = "/ws/v5/public"
BUSINESS = "/ws/v5/business"
PRIVATE = "/ws/v5/private"
VERIFY_PATH = "/users/self/verify"

#: contract value (ctVal) of OKX's USDT-margined perpetuals, in base currency per contract
CONTRACT_VALUES = {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "BNB": 0.01, "XRP": 100.0, "DOGE": 1000.0}
#: candle bar -> its length in seconds, or -N for N calendar months
_BAR_LENGTHS = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1H": 3600, "2H": 7200,
    "4H": 14400, "6H": 21600, "12H": 43200, "1D": 86400, "2D": 172800, "3D": 259200,
    "5D": 432000, "1W": 604800, "1M": -1, "3M": -3,
}  # fmt: skip
_UTC_BARS = ("6H", "12H", "1D", "2D", "3D", "5D", "1W", "1M", "3M")
#: every documented candle channel -> (bar length, starts at 00:00 UTC+8 rather than UTC):
#: `candle1s` ... `candle3M` (6H and longer follow Hong Kong time), `candle6Hutc` ... `candle3Mutc`
BARS: dict[str, tuple[int, bool]] = {
    **{
        f"candle{bar}": (length, length >= 21600 or length < 0)
        for bar, length in _BAR_LENGTHS.items()
    },
    **{f"candle{bar}utc": (_BAR_LENGTHS[bar], False) for bar in _UTC_BARS},
}
PUBLIC_CHANNELS = ("tickers", "books", "books5", "bbo-tbt", "trades")
BUSINESS_CHANNELS = ("trades-all", *BARS)
VIP_BOOKS = ("books-l2-tbt", "books50-l2-tbt")  # VIP4+ only: not served here
ORDER_INST_TYPES = ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION", "EVENTS", "ANY")
POSITION_INST_TYPES = ("MARGIN", "SWAP", "FUTURES", "OPTION", "EVENTS", "ANY")
IDLE_CLOSE = (4004, "No data received in 30s")  # OKX's documented close frame
UPGRADE_NOTICE = "The connection will soon be closed for a service upgrade. Please reconnect."
CANDLE_PUSH_SECONDS = 1.0  # "the push frequency is the fastest interval 1 second"
HK_OFFSET_MS = 8 * 3_600_000  # non-utc bars of 6H and longer start at 00:00 UTC+8
_EPOCH_MONDAY_MS = 4 * 86_400_000  # 1970-01-05, the first Monday


def deflate_raw(text: str) -> bytes:
    """One message as raw DEFLATE (no zlib or gzip header): OKX's v3 framing."""
    packer = zlib.compressobj(wbits=-15)
    return packer.compress(text.encode()) + packer.flush()


def login_signature(timestamp: str, secret_key: str) -> str:
    """base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify"))."""
    digest = hmac.new(
        secret_key.encode(), f"{timestamp}GET{VERIFY_PATH}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _trim(text: str) -> str:
    """OKX writes numbers without trailing zeros: "65000", "0.0123"."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _decimals(step: float) -> int:
    return max(0, len(f"{step:.10f}".rstrip("0").split(".")[1]))


def _inflate_request(data: bytes) -> str:
    try:
        return zlib.decompress(data, -15).decode()
    except (zlib.error, UnicodeDecodeError):
        return data.decode(errors="replace")


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def _uid(api_key: str) -> str:
    """A stable OKX-looking user id for an API key."""
    return str(10**16 + int.from_bytes(hashlib.sha256(api_key.encode()).digest()[:6], "big"))


@dataclass(frozen=True)
class _Spec:
    """How OKX spells one instrument's numbers: prices, and sizes in base or contracts."""

    inst: Instrument
    inst_type: str  # SPOT or SWAP
    ct_val: float  # base currency per size unit (1 for SPOT)
    size_decimals: int

    @classmethod
    def of(cls, inst: Instrument) -> _Spec:
        if inst.kind != "SWAP":
            return cls(inst, "SPOT", 1.0, inst.size_decimals)
        ct_val = CONTRACT_VALUES.get(inst.base, 1.0)
        return cls(inst, "SWAP", ct_val, _decimals(inst.lot / ct_val))

    def px(self, price: float) -> str:
        return _trim(self.inst.fmt_price(price))

    def sz(self, base_size: float) -> str:
        """A size as OKX sends it: base currency for SPOT, contracts for SWAP."""
        return _trim(f"{base_size / self.ct_val:.{self.size_decimals}f}")

    def base(self, base_size: float) -> str:
        return _trim(f"{base_size:.{self.inst.size_decimals}f}")

    def quote(self, amount: float) -> str:
        return _trim(f"{amount:.{min(8, self.inst.decimals + self.inst.size_decimals)}f}")

    def level(self, price: float, size: float) -> list[str]:
        """[price, size, "0" (deprecated), number of orders] as OKX's books send a level."""
        orders = 1 + round(size / self.inst.lot) % 9 if size else 0
        return [self.px(price), self.sz(size), "0", str(orders)]


def _bar_bounds(channel: str, at_ms: int) -> tuple[int, int]:
    """[start, next start) in ms of the candle of `channel` containing `at_ms`."""
    length, hong_kong = BARS[channel]
    offset = HK_OFFSET_MS if hong_kong else 0
    local = at_ms + offset
    if length < 0:  # calendar months (1M, 3M): quarters start in Jan, Apr, Jul, Oct
        day = datetime.fromtimestamp(local / 1000, timezone.utc)
        first = (day.month - 1) // -length * -length
        start = calendar.timegm((day.year, first + 1, 1, 0, 0, 0))
        year, month = divmod(first - length, 12)
        after = calendar.timegm((day.year + year, month + 1, 1, 0, 0, 0))
        return start * 1000 - offset, after * 1000 - offset
    span = length * 1000
    anchor = _EPOCH_MONDAY_MS if length == 604_800 else 0  # weeks start on Monday
    start = local - (local - anchor) % span
    return start - offset, start - offset + span


@dataclass
class _Bar:
    """One candle of one channel, built from the market's trades."""

    start: int
    end: int  # the next bar's start
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0  # base currency
    quote: float = 0.0
    changed: bool = True
    pushed_at: float = 0.0

    def add(self, trade: Trade) -> None:
        self.high = max(self.high, trade.price)
        self.low = min(self.low, trade.price)
        self.close = trade.price
        self.volume += trade.size
        self.quote += trade.size * trade.price
        self.changed = True

    def as_okx(self, spec: _Spec, confirm: str) -> list[str]:
        """[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]: vol in contracts for SWAP."""
        vol_ccy = spec.base(self.volume) if spec.inst_type == "SWAP" else spec.quote(self.quote)
        prices = [spec.px(p) for p in (self.open, self.high, self.low, self.close)]
        return [
            str(self.start),
            *prices,
            spec.sz(self.volume),
            vol_ccy,
            spec.quote(self.quote),
            confirm,
        ]


@dataclass
class _PrivateSub:
    """One `orders` / `positions` subscription of one logged-in client."""

    arg: dict[str, str]
    interval: float | None = None  # positions: seconds between regular snapshots
    pushed_at: float = 0.0

    def matches(self, spec: _Spec) -> bool:
        inst_type = self.arg.get("instType")
        if inst_type not in ("ANY", spec.inst_type):
            return False
        family = self.arg.get("instFamily")
        if family and (spec.inst_type == "SPOT" or family != f"{spec.inst.base}-{spec.inst.quote}"):
            return False
        inst_id = self.arg.get("instId")
        return not inst_id or inst_id == spec.inst.okx


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    path: str
    conn_id: str
    last_sent: float = field(default_factory=time.monotonic)
    api_key: str = ""
    uid: str = ""
    subs: set[tuple[str, str]] = field(default_factory=set)  # (channel, instId)
    private: dict[str, list[_PrivateSub]] = field(default_factory=dict)  # channel -> subs

    @property
    def logged_in(self) -> bool:
        return bool(self.api_key)


@dataclass
class _Position:
    spec: _Spec
    side: str  # long / short
    size: float  # base currency
    avg_px: float
    pos_id: str
    created_ms: int = field(default_factory=now_ms)
    updated_ms: int = field(default_factory=now_ms)
    trade_id: str = ""
    fee: float = 0.0

    def as_okx(self, index_px: float, stamp: int) -> dict[str, object]:
        """The documented `positions` push fields (a cross-margin USDT perpetual)."""
        spec, mark, lever = self.spec, self.spec.inst.last, 10.0
        sign = 1.0 if self.side == "long" else -1.0
        upl = sign * (mark - self.avg_px) * self.size
        notional = mark * self.size
        imr, mmr = notional / lever, notional * 0.004
        ratio = upl * lever / (self.avg_px * self.size) if self.size else 0.0
        liq = self.avg_px * (1 - sign * (1 / lever - 0.004))
        return {
            "adl": "1", "availPos": "", "avgPx": spec.px(self.avg_px),
            "cTime": str(self.created_ms), "ccy": spec.inst.quote,
            "deltaBS": "", "deltaPA": "", "gammaBS": "", "gammaPA": "", "hedgedPos": "",
            "imr": f"{imr:.8f}", "instId": spec.inst.okx, "instType": "SWAP", "interest": "0",
            "idxPx": spec.px(index_px), "last": spec.px(mark), "usdPx": "1",
            "bePx": spec.px(self.avg_px * (1 + sign * 0.0005)), "lever": "10",
            "liab": "", "liabCcy": "", "liqPx": spec.px(liq), "markPx": spec.px(mark),
            "margin": "", "mgnMode": "cross", "mgnRatio": f"{imr / mmr:.4f}",
            "mmr": f"{mmr:.8f}", "notionalUsd": f"{notional:.8f}", "optVal": "",
            "pTime": str(stamp), "pendingCloseOrdLiabVal": "", "pos": spec.sz(self.size),
            "baseBorrowed": "", "baseInterest": "", "quoteBorrowed": "", "quoteInterest": "",
            "posCcy": "", "posId": self.pos_id, "posSide": self.side,
            "spotInUseAmt": "", "clSpotInUseAmt": "", "maxSpotInUseAmt": "",
            "spotInUseCcy": "", "bizRefId": "", "bizRefType": "", "thetaBS": "", "thetaPA": "",
            "tradeId": self.trade_id, "uTime": str(self.updated_ms),
            "upl": f"{upl:.8f}", "uplLastPx": f"{upl:.8f}",
            "uplRatio": f"{ratio:.8f}", "uplRatioLastPx": f"{ratio:.8f}",
            "vegaBS": "", "vegaPA": "",
            "realizedPnl": f"{self.fee:.8f}", "pnl": "0", "fee": f"{self.fee:.8f}",
            "fundingFee": "0", "liqPenalty": "0", "nonSettleAvgPx": "", "settledPnl": "",
            "closeOrderAlgo": [],
        }  # fmt: skip


@dataclass
class _Order:
    """A synthetic resting order walking live -> partially_filled -> filled (or canceled)."""

    spec: _Spec
    ord_id: str
    side: str
    px: float
    size: float  # base currency
    created_ms: int
    cancel: bool
    state: str = "live"
    filled: float = 0.0
    fee: float = 0.0

    @property
    def fee_ccy(self) -> str:
        """Spot buys pay the fee in the base currency, everything else in the quote."""
        inst = self.spec.inst
        return inst.base if self.spec.inst_type == "SPOT" and self.side == "buy" else inst.quote

    def fill_fee(self, fill: float) -> float:
        """The maker fee of filling `fill` (base), negative, in `fee_ccy`."""
        rate = 0.0002 if self.spec.inst_type == "SWAP" else 0.0008
        return -rate * fill * (self.px if self.fee_ccy == self.spec.inst.quote else 1.0)

    def as_okx(self, stamp: int, fill: float, trade_id: str) -> dict[str, object]:
        """The documented `orders` push fields for the update that filled `fill` (base)."""
        spec, swap = self.spec, self.spec.inst_type == "SWAP"
        inst, fee_ccy, filled = spec.inst, self.fee_ccy, bool(fill)
        return {
            "accFillSz": spec.sz(self.filled), "algoClOrdId": "", "algoId": "",
            "amendResult": "", "amendSource": "",
            "avgPx": spec.px(self.px) if self.filled else "0",
            "cancelSource": "1" if self.state == "canceled" else "", "category": "normal",
            "ccy": inst.quote if swap else "", "clOrdId": "", "code": "0",
            "cTime": str(self.created_ms), "execType": "M" if filled else "",
            "fee": _trim(f"{self.fee:.10f}"), "feeCcy": fee_ccy,
            "fillFee": _trim(f"{self.fill_fee(fill):.10f}"),
            "fillFeeCcy": fee_ccy if filled else "",
            "fillNotionalUsd": f"{fill * self.px:.8f}" if filled else "",
            "fillPx": spec.px(self.px) if filled else "", "fillSz": spec.sz(fill),
            "fillPnl": "0", "fillTime": str(stamp) if filled else "",
            "fillPxVol": "", "fillPxUsd": "", "fillMarkVol": "", "fillFwdPx": "",
            "fillMarkPx": spec.px(inst.last) if filled and swap else "", "fillIdxPx": "",
            "instId": inst.okx, "instType": spec.inst_type, "lever": "10" if swap else "0",
            "msg": "", "notionalUsd": f"{self.size * self.px:.8f}", "ordId": self.ord_id,
            "ordType": "limit", "pnl": "0", "posSide": "net" if swap else "",
            "px": spec.px(self.px), "pxUsd": "", "pxVol": "", "pxType": "",
            "quickMgnType": "", "rebate": "0",
            "rebateCcy": inst.quote if swap or self.side == "buy" else inst.base,
            "reduceOnly": "false", "reqId": "", "side": self.side, "attachAlgoClOrdId": "",
            "slOrdPx": "", "slTriggerPx": "", "slTriggerPxType": "", "source": "",
            "state": self.state, "stpId": "", "stpMode": "cancel_maker",
            "sz": spec.sz(self.size), "tag": "", "tdMode": "cross" if swap else "cash",
            "tgtCcy": "", "tpOrdPx": "", "tpTriggerPx": "", "tpTriggerPxType": "",
            "attachAlgoOrds": [], "tradeId": trade_id,
            "tradeQuoteCcy": "" if swap else inst.quote, "lastPx": spec.px(inst.last),
            "uTime": str(stamp), "isTpLimit": "false", "linkedAlgoOrd": {"algoId": ""},
        }  # fmt: skip


class OkxFeed(Feed):
    name = "okx"
    paths = (PUBLIC, BUSINESS, PRIVATE)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.specs = {inst.okx: _Spec.of(inst) for inst in self.market.instruments}
        self.clients: dict[ServerConnection, _Client] = {}
        self.private_clients: set[_Client] = set()  # with an orders/positions subscription
        #: instId -> channel -> subscribed connections (public and business channels)
        self.groups: dict[str, dict[str, set[ServerConnection]]] = {}
        self.pushed_at: dict[tuple[str, str], float] = {}  # (channel, instId) -> last push
        self.views: dict[tuple[str, str], object] = {}  # last pushed top of book per channel
        self.bars: dict[tuple[str, str], _Bar] = {}
        self.ticks = 0
        self._order_ids = itertools.count(int(time.time()) * 1000)
        self._trade_ids = itertools.count(700_000_000)
        self._order_count = 0
        self.order: _Order | None = None
        self.positions = [
            _Position(self.specs["BTC-USDT-SWAP"], "long", 0.5, 0.0, "1001"),
            _Position(self.specs["ETH-USDT-SWAP"], "short", 4.0, 0.0, "1002"),
        ]
        for position in self.positions:
            position.avg_px = position.spec.inst.last * (
                0.995 if position.side == "long" else 1.004
            )
        self._closing: set[asyncio.Task[None]] = set()

    def describe(self) -> list[str]:
        bars = "1s/3m/5m/15m/30m/1H/2H/4H/6H/12H/1D/2D/3D/5D/1W/1M/3M, +utc"
        return [
            f"{PUBLIC}    tickers, books (snapshot+update, seqId), books5, bbo-tbt, trades",
            f"{BUSINESS}  candle1m (and {bars}), trades-all",
            f"{PRIVATE}   login (fresh HMAC timestamp), orders, positions",
            "  instId BTC-USDT... (SPOT), BTC-USDT-SWAP... (SWAP: sizes in contracts of ctVal)",
            "  text frames, 'ping'->'pong', idle 30 s -> close 4004, notice 64008 before upgrade",
        ]

    # -- connections -------------------------------------------------------------------------

    async def handle(self, ws: ServerConnection, path: str) -> None:
        client = _Client(ws, path, self.connection_id())
        self.clients[ws] = client
        watchdog = asyncio.ensure_future(self._idle_watch(client))
        try:
            async for message in ws:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        self.clients.pop(client.ws, None)
        self.private_clients.discard(client)
        for channel, inst_id in client.subs:
            self.groups.get(inst_id, {}).get(channel, set()).discard(client.ws)

    async def _idle_watch(self, client: _Client) -> None:
        """OKX: "The connection will break automatically if the subscription is not
        established or data has not been pushed for more than 30 seconds"."""
        while True:
            last = max([client.last_sent, *(self.pushed_at.get(key, 0.0) for key in client.subs)])
            remaining = last + self.settings.okx_idle_timeout - time.monotonic()
            if remaining <= 0:
                self.count("idle_drops")
                await client.ws.close(*IDLE_CLOSE)
                return
            await asyncio.sleep(remaining)

    def notice_upgrade(self, close_after: float | None = None) -> int:
        """Send OKX's `notice` event 64008 (sent 60 s before a service upgrade) to every
        public and private client (the paths OKX supports it on); close them with 1012
        `close_after` seconds later when given. Returns how many were told."""
        told = [c for c in self.clients.values() if c.path in (PUBLIC, PRIVATE)]
        for client in told:
            self._reply(client, None, event="notice", code="64008", msg=UPGRADE_NOTICE)
        self.count("notices", len(told))
        if close_after is not None:
            loop = asyncio.get_running_loop()
            loop.call_later(close_after, self._close_all, [c.ws for c in told])
        return len(told)

    def _close_all(self, sockets: list[ServerConnection]) -> None:
        for ws in sockets:
            task = asyncio.ensure_future(ws.close(1012, "service upgrade"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # -- sending -----------------------------------------------------------------------------

    def _frame(self, text: str, path: str) -> str | bytes:
        """Plain text as OKX v5 sends it; raw DEFLATE for FMZ-era public scripts."""
        if self.settings.okx_legacy_deflate and path != PRIVATE:
            return deflate_raw(text)
        return text

    def _send(self, client: _Client, text: str, framed: bool = True) -> None:
        """Write now, in order with the broadcasts (no await: a tick cannot slip between)."""
        broadcast([client.ws], self._frame(text, client.path) if framed else text)
        client.last_sent = time.monotonic()

    def _reply(self, client: _Client, request_id: object, **fields: object) -> None:
        """An event answer: `id` first when the request had one, `connId` last."""
        head = {"id": request_id} if isinstance(request_id, str) else {}
        self._send(client, _dumps({**head, **fields, "connId": client.conn_id}))

    def _error(self, client: _Client, request_id: object, code: str, msg: str) -> None:
        self.count("errors")
        self._reply(client, request_id, event="error", code=code, msg=msg)

    def _wrong(
        self, client: _Client, request_id: object, channel: object, key: str, value: object
    ) -> None:
        self._error(
            client,
            request_id,
            "60018",
            f"Wrong URL or channel:{channel},{key}:{value if value is not None else ''} doesn't "
            "exist. Please use the correct URL, channel and parameters referring to API document.",
        )

    # -- requests ----------------------------------------------------------------------------

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        if isinstance(message, bytes):  # an FMZ-era client compressing requests (mode=dual)
            message = _inflate_request(message)
        if message == "ping":
            self.count("pings")
            self._send(client, "pong", framed=False)  # never compressed, even in v3
            return
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            self._error(client, None, "60012", f"Invalid request: {message[:500]}")
            return
        op, request_id, args = request["op"], request.get("id"), request.get("args")
        if op not in ("login", "subscribe", "unsubscribe"):
            self._error(client, request_id, "60019", f"Invalid op: {op}")
        elif not isinstance(args, list) or not args:
            self._error(client, request_id, "60012", f"Invalid request: {message[:500]}")
        elif op == "login":
            self._login(client, request_id, args)
        else:
            for arg in args:
                if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
                    self._error(client, request_id, "60012", f"Invalid request: {message[:500]}")
                elif client.path == PRIVATE:
                    self._private_subscription(client, request_id, op, arg)
                else:
                    self._subscription(client, request_id, op, arg)

    def _login(self, client: _Client, request_id: object, args: list[object]) -> None:
        """Checked as OKX documents: sign = base64(HMAC-SHA256(secret, timestamp + 'GET' +
        '/users/self/verify')); "the request will expire 30 seconds after the timestamp"."""
        failure = self._login_failure(client, args)
        if failure is not None:
            self.count("login_failures")
            self._error(client, request_id, *failure)
            return
        arg = args[0]
        assert isinstance(arg, dict)
        client.api_key = str(arg["apiKey"])
        client.uid = _uid(client.api_key)
        self.count("logins")
        self._reply(client, request_id, event="login", code="0", msg="")

    def _login_failure(self, client: _Client, args: list[object]) -> tuple[str, str] | None:
        if client.logged_in or len(args) != 1:
            return "60031", "The WebSocket endpoint does not allow multiple or repeated logins."
        arg = args[0]
        if not isinstance(arg, dict):
            return "60009", "Login failed."
        for name in ("apiKey", "passphrase", "timestamp", "sign"):
            if not isinstance(arg.get(name), str) or not arg[name]:
                return "60027", f"Parameter {name} can not be empty."
        try:
            skew = abs(time.time() - float(arg["timestamp"]))
        except ValueError:
            return "60004", "Invalid timestamp"
        credentials = self.settings.okx_credentials.get(arg["apiKey"])
        if credentials is None:
            return "60005", "Invalid apiKey"
        if skew > self.settings.okx_login_window:
            return "60006", "Timestamp request expired"
        if not hmac.compare_digest(arg["passphrase"], credentials[1]):
            return "60024", "Wrong passphrase"
        if not hmac.compare_digest(arg["sign"], login_signature(arg["timestamp"], credentials[0])):
            return "60007", "Invalid sign"
        return None

    def _subscription(
        self, client: _Client, request_id: object, op: str, arg: dict[str, object]
    ) -> None:
        channel, inst_id = arg["channel"], arg.get("instId")
        assert isinstance(channel, str)
        if channel in VIP_BOOKS and client.path == PUBLIC:
            if client.logged_in:
                self._error(
                    client,
                    request_id,
                    "64003",
                    "Your trading fee tier doesn't meet the requirement to access this channel",
                )
            else:
                self._error(client, request_id, "60011", "Please log in")
            return
        served = PUBLIC_CHANNELS if client.path == PUBLIC else BUSINESS_CHANNELS
        spec = self.specs.get(inst_id) if isinstance(inst_id, str) else None
        if channel not in served or spec is None:
            self._wrong(client, request_id, channel, "instId", inst_id)
            return
        assert isinstance(inst_id, str)
        group = self.groups.setdefault(inst_id, {}).setdefault(channel, set())
        self._reply(client, request_id, event=op, arg=arg)
        if op == "unsubscribe":
            group.discard(client.ws)
            client.subs.discard((channel, inst_id))
            return
        initial = self._initial(channel, spec)
        if initial is not None:
            self._send(client, initial)
        group.add(client.ws)  # after the snapshot, with no await between: no update is lost
        client.subs.add((channel, inst_id))

    def _private_subscription(
        self, client: _Client, request_id: object, op: str, arg: dict[str, object]
    ) -> None:
        channel, inst_type = arg["channel"], arg.get("instType")
        assert isinstance(channel, str)
        if channel not in ("orders", "positions"):
            self._wrong(client, request_id, channel, "instId", arg.get("instId"))
            return
        if not client.logged_in:
            self._error(client, request_id, "60011", "Please log in")
            return
        allowed = ORDER_INST_TYPES if channel == "orders" else POSITION_INST_TYPES
        if inst_type not in allowed:
            self._wrong(client, request_id, channel, "instType", inst_type)
            return
        subs = client.private.setdefault(channel, [])
        wanted = {
            k: str(v)
            for k, v in arg.items()
            if k in ("channel", "instType", "instFamily", "instId")
        }
        subs[:] = [sub for sub in subs if sub.arg != wanted]
        self._reply(client, request_id, event=op, arg=arg)
        if op == "unsubscribe":
            return
        sub = _PrivateSub(wanted, self._positions_interval(arg) if channel == "positions" else None)
        subs.append(sub)
        self.private_clients.add(client)
        if channel == "positions":  # "Initial snapshot will be pushed"; orders push nothing
            self._push_positions(client, sub, time.monotonic(), None)

    def _positions_interval(self, arg: dict[str, object]) -> float | None:
        """extraParams {"updateInterval": "0"|"2000"|"3000"|"4000"}, else around every 5 s."""
        try:
            extra = json.loads(str(arg.get("extraParams", "{}")))
            interval = int(extra.get("updateInterval", -1)) if isinstance(extra, dict) else -1
        except (ValueError, TypeError):
            interval = -1
        if interval == 0:
            return None
        if interval in (2000, 3000, 4000):
            return interval / 1000
        return self.settings.okx_positions_interval

    # -- public pushes -----------------------------------------------------------------------

    def tick(self, steps: list[Step]) -> None:
        now = time.monotonic()
        for step in steps:
            channels = self.groups.get(step.inst.okx)
            if channels:
                self._push_instrument(step, channels, now)
        self.ticks += 1
        if self.private_clients:
            self._tick_private(now)

    def _push_instrument(
        self, step: Step, channels: dict[str, set[ServerConnection]], now: float
    ) -> None:
        spec = self.specs[step.inst.okx]
        for channel, clients in channels.items():
            if not clients:
                continue
            if channel.startswith("candle"):
                frames = self._candle_frames(channel, spec, step, now)
            else:
                frames = getattr(self, "_" + channel.replace("-", "_"))(spec, step)
            for text in frames:
                broadcast(clients, self._frame(text, PUBLIC))
            if frames:
                self.count("sent", len(frames) * len(clients))
                self.pushed_at[(channel, spec.inst.okx)] = now

    def _initial(self, channel: str, spec: _Spec) -> str | None:
        """What OKX pushes right after the subscribe ack, if anything."""
        stamp = str(now_ms())
        if channel == "books":
            return self._book_snapshot(spec, stamp)
        if channel in ("books5", "bbo-tbt"):
            depth = 5 if channel == "books5" else 1
            return self._depth_frame(channel, spec, depth, stamp, spec.inst.update_id)
        if channel == "tickers":
            return self._ticker_frame(spec, stamp)
        if channel.startswith("candle"):
            bar = self._bar(channel, spec, now_ms())
            return self._candle_frame(channel, spec, bar, "0")
        return None  # trades: only when there is a trade

    def _tickers(self, spec: _Spec, step: Step) -> list[str]:
        """ "The events which can trigger update: trade, the change on best ask/bid"."""
        inst = spec.inst
        top = (inst.bid, inst.bid_size, inst.ask, inst.ask_size)
        key = ("tickers", inst.okx)
        if not step.trades and self.views.get(key) == top:
            return []
        self.views[key] = top
        return [self._ticker_frame(spec, str(step.time_ms))]

    def _ticker_frame(self, spec: _Spec, stamp: str) -> str:
        inst, swap = spec.inst, spec.inst_type == "SWAP"
        data = {
            "instType": spec.inst_type, "instId": inst.okx,
            "last": spec.px(inst.last), "lastSz": spec.sz(inst.last_size),
            "askPx": spec.px(inst.ask), "askSz": spec.sz(inst.ask_size),
            "bidPx": spec.px(inst.bid), "bidSz": spec.sz(inst.bid_size),
            "open24h": spec.px(inst.open), "high24h": spec.px(inst.high),
            "low24h": spec.px(inst.low),
            "volCcy24h": spec.base(inst.volume) if swap else spec.quote(inst.quote_volume),
            "vol24h": spec.sz(inst.volume),
            "sodUtc0": spec.px(inst.open), "sodUtc8": spec.px(inst.open), "ts": stamp,
        }  # fmt: skip
        return _dumps({"arg": {"channel": "tickers", "instId": inst.okx}, "data": [data]})

    def _book_snapshot(self, spec: _Spec, stamp: str) -> str:
        bids, asks = spec.inst.depth(400)
        data = {
            "asks": [spec.level(p, s) for p, s in asks],
            "bids": [spec.level(p, s) for p, s in bids],
            "ts": stamp,
            "checksum": self._checksum(spec),
            "prevSeqId": -1,
            "seqId": spec.inst.update_id,
        }
        arg = {"channel": "books", "instId": spec.inst.okx}
        return _dumps({"arg": arg, "action": "snapshot", "data": [data]})

    def _books(self, spec: _Spec, step: Step) -> list[str]:
        """One incremental update per step: each changed level's final size (0 = removed)."""
        changed: dict[tuple[str, float], float] = {}
        for side, price, size in step.changes:
            changed[(side, price)] = size
        asks = sorted((p, s) for (side, p), s in changed.items() if side == "ask")
        bids = sorted(((p, s) for (side, p), s in changed.items() if side == "bid"), reverse=True)
        data = {
            "asks": [spec.level(p, s) for p, s in asks],
            "bids": [spec.level(p, s) for p, s in bids],
            "ts": str(step.time_ms),
            "checksum": self._checksum(spec),
            "prevSeqId": step.first_update_id - 1,
            "seqId": step.last_update_id,
        }
        arg = {"channel": "books", "instId": spec.inst.okx}
        return [_dumps({"arg": arg, "action": "update", "data": [data]})]

    def _checksum(self, spec: _Spec) -> int:
        """0, as OKX documents now ("Deprecated ... its value is fixed to 0"); with
        `okx_book_checksum`, the CRC32 OKX documented before: the top 25 bids and asks
        alternating, "bidPx:bidSz:askPx:askSz:...", as a signed 32-bit integer."""
        if not self.settings.okx_book_checksum:
            return 0
        bids, asks = spec.inst.depth(25)
        parts: list[str] = []
        for i in range(max(len(bids), len(asks))):
            for levels in (bids, asks):
                if i < len(levels):
                    parts += [spec.px(levels[i][0]), spec.sz(levels[i][1])]
        return _signed32(zlib.crc32(":".join(parts).encode()))

    def _books5(self, spec: _Spec, step: Step) -> list[str]:
        return self._depth_changed("books5", spec, 5, step)

    def _bbo_tbt(self, spec: _Spec, step: Step) -> list[str]:
        return self._depth_changed("bbo-tbt", spec, 1, step)

    def _depth_changed(self, channel: str, spec: _Spec, depth: int, step: Step) -> list[str]:
        """books5 / bbo-tbt push a snapshot of the top levels when they changed."""
        top = spec.inst.depth(depth)
        key = (channel, spec.inst.okx)
        if self.views.get(key) == top:
            return []
        self.views[key] = top
        return [self._depth_frame(channel, spec, depth, str(step.time_ms), step.last_update_id)]

    def _depth_frame(self, channel: str, spec: _Spec, depth: int, stamp: str, seq: int) -> str:
        bids, asks = spec.inst.depth(depth)
        data: dict[str, object] = {
            "asks": [spec.level(p, s) for p, s in asks],
            "bids": [spec.level(p, s) for p, s in bids],
        }
        if channel == "books5":
            data["instId"] = spec.inst.okx
        data.update(ts=stamp, seqId=seq)
        return _dumps({"arg": {"channel": channel, "instId": spec.inst.okx}, "data": [data]})

    def _trades(self, spec: _Spec, step: Step) -> list[str]:
        """One message per taker order and price (each of our fills is at its own price)."""
        arg = {"channel": "trades", "instId": spec.inst.okx}
        return [
            _dumps(
                {
                    "arg": arg,
                    "data": [
                        {
                            **self._trade(spec, trade),
                            "count": "1",
                            "source": "0",
                            "seqId": step.last_update_id,
                        }
                    ],
                }
            )
            for trade in step.trades
        ]

    def _trades_all(self, spec: _Spec, step: Step) -> list[str]:
        arg = {"channel": "trades-all", "instId": spec.inst.okx}
        return [
            _dumps(
                {
                    "arg": arg,
                    "data": [{**self._trade(spec, trade), "source": "0", "ts": str(trade.time_ms)}],
                }
            )
            for trade in step.trades
        ]

    @staticmethod
    def _trade(spec: _Spec, trade: Trade) -> dict[str, str]:
        return {
            "instId": spec.inst.okx,
            "tradeId": str(trade.trade_id),
            "px": spec.px(trade.price),
            "sz": spec.sz(trade.size),
            "side": "buy" if trade.buyer_is_taker else "sell",
            "ts": str(trade.time_ms),
        }

    def _bar(self, channel: str, spec: _Spec, at_ms: int) -> _Bar:
        key = (channel, spec.inst.okx)
        bar = self.bars.get(key)
        if bar is None or at_ms >= bar.end:
            start, end = _bar_bounds(channel, at_ms)
            last = spec.inst.last
            bar = self.bars[key] = _Bar(start, end, last, last, last, last)
        return bar

    def _candle_frames(self, channel: str, spec: _Spec, step: Step, now: float) -> list[str]:
        frames = []
        bar = self.bars.get((channel, spec.inst.okx))
        if bar is not None and step.time_ms >= bar.end:  # over: pushed once more, completed
            frames.append(self._candle_frame(channel, spec, bar, "1"))
        bar = self._bar(channel, spec, step.time_ms)
        for trade in step.trades:
            bar.add(trade)
        if bar.changed and now - bar.pushed_at >= CANDLE_PUSH_SECONDS:
            bar.changed, bar.pushed_at = False, now
            frames.append(self._candle_frame(channel, spec, bar, "0"))
        return frames

    @staticmethod
    def _candle_frame(channel: str, spec: _Spec, bar: _Bar, confirm: str) -> str:
        arg = {"channel": channel, "instId": spec.inst.okx}
        return _dumps({"arg": arg, "data": [bar.as_okx(spec, confirm)]})

    # -- private pushes ----------------------------------------------------------------------

    def _tick_private(self, now: float) -> None:
        every = max(1, self.settings.okx_order_ticks)
        if self.ticks % every == 0 and any(c.private.get("orders") for c in self.private_clients):
            self._advance_order()
        for client in list(self.private_clients):
            for sub in client.private.get("positions", []):
                if sub.interval is not None and now - sub.pushed_at >= sub.interval:
                    self._push_positions(client, sub, now, None)

    def _advance_order(self) -> None:
        """The next step of the synthetic order: a new one rests at the touch, then fills in
        two halves (every fourth is canceled instead)."""
        order, stamp = self.order, now_ms()
        fill, trade_id = 0.0, ""
        if order is None or order.state in ("filled", "canceled"):
            order = self.order = self._new_order(stamp)
        elif order.cancel:
            order.state = "canceled"
        else:
            fill = order.size / 2 if order.state == "live" else order.size - order.filled
            order.filled += fill
            order.fee += order.fill_fee(fill)
            order.state = "filled" if order.filled >= order.size - 1e-12 else "partially_filled"
            trade_id = str(next(self._trade_ids))
            self._fill_position(order, fill, trade_id, stamp)
        push = order.as_okx(stamp, fill, trade_id)
        for client in list(self.private_clients):
            for sub in client.private.get("orders", []):
                if sub.matches(order.spec):
                    arg: dict[str, str] = {**sub.arg, "uid": client.uid}
                    self._send(client, _dumps({"arg": arg, "data": [push]}))
                    self.count("sent")

    def _new_order(self, stamp: int) -> _Order:
        names = ("BTC-USDT", "BTC-USDT-SWAP", "ETH-USDT", "ETH-USDT-SWAP")
        self._order_count += 1
        spec = self.specs[names[self._order_count % len(names)]]
        inst, side = spec.inst, "buy" if self._order_count % 3 else "sell"
        if spec.inst_type == "SWAP":
            size = 2 * spec.ct_val  # two contracts: fills one, then the other
        else:
            size = 2 * max(1, round(50.0 / inst.last / inst.lot)) * inst.lot
        price = inst.bid if side == "buy" else inst.ask
        return _Order(
            spec, str(next(self._order_ids)), side, price, size, stamp, self._order_count % 4 == 0
        )

    def _fill_position(self, order: _Order, fill: float, trade_id: str, stamp: int) -> None:
        """A SWAP fill moves the matching position; subscribers get an event_update."""
        for position in self.positions:
            if position.spec is not order.spec:
                continue
            adds = (order.side == "buy") == (position.side == "long")
            if adds:
                position.avg_px = (position.avg_px * position.size + order.px * fill) / (
                    position.size + fill
                )
            position.size = max(position.spec.ct_val, position.size + (fill if adds else -fill))
            position.updated_ms, position.trade_id = stamp, trade_id
            position.fee += order.fill_fee(fill)
            now = time.monotonic()
            for client in list(self.private_clients):
                for sub in client.private.get("positions", []):
                    if sub.matches(position.spec):
                        self._push_positions(client, sub, now, [position])

    def _push_positions(
        self, client: _Client, sub: _PrivateSub, now: float, event: list[_Position] | None
    ) -> None:
        """A regular `snapshot` of every matching position, or an `event_update` of some."""
        stamp = now_ms()
        chosen = [p for p in (event or self.positions) if sub.matches(p.spec)]
        data = [p.as_okx(self._index(p.spec), stamp) for p in chosen]
        push: dict[str, object] = {"arg": {**sub.arg, "uid": client.uid}}
        if event is None:
            push.update(eventType="snapshot", curPage=1, lastPage=True)
            sub.pushed_at = now
        else:
            push["eventType"] = "event_update"
        push["data"] = data
        self._send(client, _dumps(push))
        self.count("sent")

    def _index(self, spec: _Spec) -> float:
        """The underlying index: the spot price of the same base and quote."""
        spot = self.specs.get(f"{spec.inst.base}-{spec.inst.quote}")
        return (spot or spec).inst.last
