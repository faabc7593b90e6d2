"""Huobi (HTX) market data `/ws`: every server frame is gzip-compressed JSON (read with
`compress=gzip`). The server sends `{"ping": ts}` every few seconds and drops a client that
leaves two pings unanswered by `{"pong": ts}`. `sub` / `unsub` to `market.<symbol>.detail`
(24h summary) or `market.<symbol>.ticker` (with best bid/ask)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed

from .feed import Feed
from .market import Instrument, now_ms

__all__ = ["HEARTBEAT_CLOSE_CODE", "HuobiFeed", "gzip_json"]

PATH = "/ws"
HEARTBEAT_CLOSE_CODE = 1008
_TOPIC = re.compile(r"^market\.([a-z0-9]+)\.(detail|ticker)$")


def gzip_json(obj: object) -> bytes:
    return gzip.compress(json.dumps(obj, separators=(",", ":")).encode(), mtime=0)


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    unanswered: set[int] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)


class HuobiFeed(Feed):
    name = "huobi"
    paths = (PATH,)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.topic_clients: dict[str, set[ServerConnection]] = {}

    async def handle(self, ws: ServerConnection, path: str) -> None:
        client = _Client(ws)
        heartbeat = asyncio.ensure_future(self._heartbeat(client))
        try:
            async for message in ws:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            heartbeat.cancel()
            for topic in client.topics:
                self.topic_clients.get(topic, set()).discard(ws)

    async def _heartbeat(self, client: _Client) -> None:
        interval = self.settings.huobi_ping_interval
        while True:
            await asyncio.sleep(interval)
            if len(client.unanswered) >= self.settings.huobi_missed_pings:
                self.count("heartbeat_drops")
                await client.ws.close(HEARTBEAT_CLOSE_CODE, "heartbeat timeout")
                return
            stamp = now_ms()
            while stamp in client.unanswered:
                stamp += 1
            client.unanswered.add(stamp)
            self.count("pings")
            try:
                await client.ws.send(gzip_json({"ping": stamp}))
            except ConnectionClosed:
                return

    async def _on_message(self, client: _Client, message: str | bytes) -> None:
        if isinstance(message, bytes):  # a client gzipping its requests (mode=dual)
            try:
                message = gzip.decompress(message).decode()
            except (OSError, EOFError, UnicodeDecodeError):
                message = message.decode(errors="replace")
        try:
            request = json.loads(message)
            if not isinstance(request, dict):
                raise TypeError
        except (ValueError, TypeError):
            await self._error(client, None, "invalid json")
            return
        if "pong" in request:
            if request["pong"] in client.unanswered:
                client.unanswered.clear()
                self.count("pongs")
            return
        if "ping" in request:
            await client.ws.send(gzip_json({"pong": request["ping"]}))
            return
        request_id = request.get("id")
        if "sub" in request or "unsub" in request:
            op = "sub" if "sub" in request else "unsub"
            topic = str(request[op])
            if not _TOPIC.match(topic) or self._instrument(topic) is None:
                await self._error(client, request_id, f"invalid topic {topic}")
                return
            group = self.topic_clients.setdefault(topic, set())
            if op == "sub":
                group.add(client.ws)
                client.topics.add(topic)
            else:
                group.discard(client.ws)
                client.topics.discard(topic)
            answer = {"id": request_id, "status": "ok", f"{op}bed": topic, "ts": now_ms()}
            await client.ws.send(gzip_json(answer))
            return
        await self._error(client, request_id, "unsupported request")

    async def _error(self, client: _Client, request_id: object, text: str) -> None:
        self.count("errors")
        answer = {
            "id": request_id,
            "status": "error",
            "err-code": "bad-request",
            "err-msg": text,
            "ts": now_ms(),
        }
        await client.ws.send(gzip_json(answer))

    def _instrument(self, topic: str) -> Instrument | None:
        match = _TOPIC.match(topic)
        return self.market.find(match.group(1)) if match else None

    def tick(self) -> None:
        stamp = now_ms()
        for topic, clients in self.topic_clients.items():
            inst = self._instrument(topic)
            if not clients or inst is None:
                continue
            body = _detail(inst) if topic.endswith(".detail") else _ticker(inst)
            broadcast(clients, gzip_json({"ch": topic, "ts": stamp, "tick": body}))
            self.count("sent", len(clients))


def _detail(inst: Instrument) -> dict[str, object]:
    return {
        "id": inst.updated_ms // 1000,
        "low": inst.low,
        "high": inst.high,
        "open": inst.open,
        "close": inst.last,
        "vol": round(inst.quote_volume, 4),
        "amount": round(inst.volume, 6),
        "version": inst.updated_ms // 1000,
        "count": inst.trades,
    }


def _ticker(inst: Instrument) -> dict[str, object]:
    return {
        **_detail(inst),
        "bid": inst.bid,
        "bidSize": 1.5,
        "ask": inst.ask,
        "askSize": 2.25,
        "lastPrice": inst.last,
        "lastSize": inst.last_size,
    }
