"""OKX v5: `/ws/v5/public` (subscribe to `tickers`; every frame the server sends is raw DEFLATE,
RFC 1951, read with `compress=gzip_raw`; text `ping` gets a plain `pong`) and `/ws/v5/private`
(plain text; `login` with an HMAC-SHA256 signature checked as OKX does, then `positions`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .feed import Feed
from .market import Instrument, now_ms

__all__ = ["OkxFeed", "deflate_raw", "login_signature"]

PUBLIC = "/ws/v5/public"
PRIVATE = "/ws/v5/private"
VERIFY_PATH = "/users/self/verify"
INST_TYPES = ("ANY", "SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION")


def deflate_raw(text: str) -> bytes:
    """One message as raw DEFLATE (no zlib or gzip header), as OKX compresses frames."""
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


def _price(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".")


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    private: bool
    conn_id: str
    logged_in: bool = False
    api_key: str = ""
    tickers: set[str] = field(default_factory=set)


@dataclass
class _Position:
    inst: Instrument
    side: str  # long / short
    size: float
    avg_px: float
    pos_id: str
    created_ms: int = field(default_factory=now_ms)

    def as_okx(self, stamp: int) -> dict[str, str]:
        sign = 1.0 if self.side == "long" else -1.0
        mark = self.inst.last
        upl = sign * (mark - self.avg_px) * self.size
        margin = self.avg_px * self.size / 10
        return {
            "instType": "SWAP",
            "instId": f"{self.inst.okx}-SWAP",
            "posId": self.pos_id,
            "posSide": self.side,
            "pos": _price(self.size),
            "avgPx": _price(self.avg_px),
            "markPx": _price(mark),
            "last": _price(mark),
            "upl": f"{upl:.4f}",
            "uplRatio": f"{upl / margin:.6f}" if margin else "0",
            "lever": "10",
            "mgnMode": "cross",
            "ccy": self.inst.quote,
            "notionalUsd": f"{mark * self.size:.2f}",
            "cTime": str(self.created_ms),
            "uTime": str(stamp),
            "pTime": str(stamp),
        }


class OkxFeed(Feed):
    name = "okx"
    paths = (PUBLIC, PRIVATE)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.ticker_clients: dict[str, set[ServerConnection]] = {}
        self.position_clients: set[ServerConnection] = set()
        btc, eth = self.market.instruments[0], self.market.instruments[1]
        self.positions = [
            _Position(btc, "long", 0.5, btc.last * 0.995, "1001"),
            _Position(eth, "short", 4.0, eth.last * 1.004, "1002"),
        ]

    async def handle(self, ws: ServerConnection, path: str) -> None:
        client = _Client(ws, private=path == PRIVATE, conn_id=self.connection_id())
        try:
            async for message in ws:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            for group in self.ticker_clients.values():
                group.discard(ws)
            self.position_clients.discard(ws)

    # -- requests ----------------------------------------------------------------------------

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        if isinstance(message, bytes):  # a client compressing its requests (mode=dual)
            try:
                message = zlib.decompress(message, -15).decode()
            except (zlib.error, UnicodeDecodeError):
                message = message.decode(errors="replace")
        if message == "ping":
            self.count("pings")
            await client.ws.send("pong")  # never compressed, on OKX as here
            return
        try:
            request = json.loads(message)
            op, args = request["op"], request.get("args", [])
            if not isinstance(args, list):
                raise TypeError
        except (ValueError, TypeError, KeyError):
            await self._error(client, "60012", f"Invalid request: {message[:200]}")
            return
        if op == "login" and client.private:
            await self._login(client, args)
        elif op in ("subscribe", "unsubscribe"):
            for arg in args:
                await self._subscription(client, op, arg)
        else:
            await self._error(client, "60012", f"Invalid request: {message[:200]}")

    async def _login(self, client: _Client, args: list[object]) -> None:
        arg = args[0] if len(args) == 1 and isinstance(args[0], dict) else {}
        api_key, passphrase = str(arg.get("apiKey", "")), str(arg.get("passphrase", ""))
        timestamp, sign = str(arg.get("timestamp", "")), str(arg.get("sign", ""))
        credentials = self.settings.okx_credentials.get(api_key)
        try:
            skew = abs(time.time() - float(timestamp))
        except ValueError:
            skew = float("inf")
        if not api_key or not sign:
            await self._error(client, "60009", "Login failed.")
        elif credentials is None:
            await self._error(client, "60005", "Invalid OK-ACCESS-KEY")
        elif skew > self.settings.okx_login_window:
            await self._error(client, "60006", "Timestamp request expired")
        elif not hmac.compare_digest(passphrase, credentials[1]):
            await self._error(client, "60024", "Wrong passphrase")
        elif not hmac.compare_digest(sign, login_signature(timestamp, credentials[0])):
            await self._error(client, "60007", "Invalid sign")
        else:
            client.logged_in, client.api_key = True, api_key
            self.count("logins")
            await self._send(
                client, {"event": "login", "code": "0", "msg": "", "connId": client.conn_id}
            )
            return
        self.count("login_failures")

    async def _subscription(self, client: _Client, op: str, arg: object) -> None:
        if not isinstance(arg, dict):
            await self._error(client, "60012", f"Invalid request: {arg!r}")
            return
        channel = arg.get("channel")
        if client.private and channel == "positions":
            if not client.logged_in:
                await self._error(client, "60011", "Please log in")
                return
            if arg.get("instType", "ANY") not in INST_TYPES:
                await self._error(
                    client,
                    "60018",
                    f"Wrong URL or channel:positions,instType:{arg.get('instType')} doesn't exist.",
                )
                return
            if op == "subscribe":
                self.position_clients.add(client.ws)
            else:
                self.position_clients.discard(client.ws)
            await self._send(client, {"event": op, "arg": arg, "connId": client.conn_id})
            if op == "subscribe":
                await self._send(client, self._positions_push(arg))
            return
        inst_id = str(arg.get("instId", ""))
        if not client.private and channel == "tickers" and self.market.find(inst_id):
            group = self.ticker_clients.setdefault(inst_id, set())
            if op == "subscribe":
                group.add(client.ws)
            else:
                group.discard(client.ws)
            await self._send(client, {"event": op, "arg": arg, "connId": client.conn_id})
            return
        await self._error(
            client, "60018", f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist."
        )

    async def _error(self, client: _Client, code: str, msg: str) -> None:
        self.count("errors")
        await self._send(
            client, {"event": "error", "code": code, "msg": msg, "connId": client.conn_id}
        )

    async def _send(self, client: _Client, obj: object) -> None:
        text = _dumps(obj)
        await client.ws.send(text if client.private else deflate_raw(text))

    # -- pushes ------------------------------------------------------------------------------

    def _positions_push(self, arg: dict[str, object]) -> dict[str, object]:
        stamp = now_ms()
        return {
            "arg": {**arg, "uid": "77982378738415879"},
            "data": [position.as_okx(stamp) for position in self.positions],
        }

    def tick(self) -> None:
        stamp = str(now_ms())
        for inst_id, clients in self.ticker_clients.items():
            inst = self.market.find(inst_id)
            if not clients or inst is None:
                continue
            push = {
                "arg": {"channel": "tickers", "instId": inst_id},
                "data": [self._ticker(inst, inst_id, stamp)],
            }
            broadcast(clients, deflate_raw(_dumps(push)))
            self.count("sent", len(clients))
        if self.position_clients:
            push = self._positions_push({"channel": "positions", "instType": "ANY"})
            broadcast(self.position_clients, _dumps(push))
            self.count("sent", len(self.position_clients))

    @staticmethod
    def _ticker(inst: Instrument, inst_id: str, stamp: str) -> dict[str, str]:
        return {
            "instType": "SPOT",
            "instId": inst_id,
            "last": _price(inst.last),
            "lastSz": _price(inst.last_size),
            "askPx": _price(inst.ask),
            "askSz": "2.25",
            "bidPx": _price(inst.bid),
            "bidSz": "1.5",
            "open24h": _price(inst.open),
            "high24h": _price(inst.high),
            "low24h": _price(inst.low),
            "volCcy24h": f"{inst.quote_volume:.4f}",
            "vol24h": f"{inst.volume:.6f}",
            "sodUtc0": _price(inst.open),
            "sodUtc8": _price(inst.open),
            "ts": stamp,
        }
