"""A scriptable WebSocket server for the staying-alive tests, on 127.0.0.1 port 0.

It runs the `websockets` asyncio server on its own loop in a background thread (so it shares
nothing with dial's reactor) and lets a test act on live server-side connections: send to
them, or *stall* one - stop reading its socket, so pings and `ping` texts go unanswered while
the TCP connection stays open, which is what a silently dead exchange link looks like.

Protocol, per text message received:
  `ping`                  -> `pong` (an OKX-style text heartbeat)
  `echo:TEXT`             -> TEXT, whatever it looks like
  `subscribe:NAME`        -> remembered in `subscriptions`, answered `subscribed:NAME`
  JSON with `method`      -> Kraken-style response (see `kraken_reply`), answered in
                             reversed batches of `kraken_hold` (a partial batch after 50 ms),
                             or never, when its params say `"ignore": true`
  anything else           -> echoed
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


class AliveServer:
    def __init__(
        self, *, port: int = 0, answer_text_pings: bool = True, kraken_hold: int = 1
    ) -> None:
        self.port = port
        self.answer_text_pings = answer_text_pings
        self.kraken_hold = kraken_hold  # answer requests in reversed batches of this size
        self.connections: list[ServerConnection] = []
        self.subscriptions: list[str] = []
        self.text_pings = 0
        self._held: list[tuple[ServerConnection, str]] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alive-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")

    # -- test-side API (any thread) --------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def live(self) -> list[ServerConnection]:
        return [c for c in self.connections if c.state.name == "OPEN"]

    def send_all(self, messages: list[str]) -> None:
        async def send() -> None:
            for connection in self.live():
                for message in messages:
                    await connection.send(message)

        self.run(send())

    def send_each(self, make: Any, count: int) -> None:
        """Send `make(connection_index, i)` for i in range(count) on every live connection."""

        async def send() -> None:
            for index, connection in enumerate(self.live()):
                for i in range(count):
                    await connection.send(make(index, i))

        self.run(send())

    def stall(self, connection: ServerConnection) -> None:
        """Stop reading this connection: nothing is answered, the socket stays open."""
        self.loop.call_soon_threadsafe(connection.transport.pause_reading)

    def close(self) -> None:
        async def stop() -> None:
            for connection in self.connections:
                connection.transport.abort()
            self._server.close()
            await self._server.wait_closed()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    # -- server side -------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            ping_interval=None,  # the client does the heartbeating
            compression=None,
            close_timeout=1,
            max_queue=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections.append(connection)
        try:
            async for message in connection:
                await self._answer(connection, message)
        except Exception:  # a test aborting the socket is normal
            pass
        finally:
            await self._release_held()

    async def _answer(self, connection: ServerConnection, message: str | bytes) -> None:
        if message == "ping":
            self.text_pings += 1
            if self.answer_text_pings:
                await connection.send("pong")
        elif isinstance(message, str) and message.startswith("echo:"):
            await connection.send(message[5:])
        elif isinstance(message, str) and message.startswith("subscribe:"):
            name = message.split(":", 1)[1]
            self.subscriptions.append(name)
            await connection.send(f"subscribed:{name}")
        elif isinstance(message, str) and message.startswith("{") and '"method"' in message:
            await self._kraken(connection, message)
        else:
            await connection.send(message)

    async def _kraken(self, connection: ServerConnection, message: str) -> None:
        reply = kraken_reply(json.loads(message))
        if reply is None:
            return
        self._held.append((connection, reply))
        if len(self._held) >= self.kraken_hold:
            await self._release_held()
        elif len(self._held) == 1:  # a partial batch goes out shortly anyway
            self.loop.call_later(0.05, lambda: asyncio.ensure_future(self._release_held()))

    async def _release_held(self) -> None:
        held, self._held = self._held, []
        for connection, reply in reversed(held):  # out of order on purpose
            try:
                await connection.send(reply)
            except Exception:
                pass


def kraken_reply(request: dict[str, Any]) -> str | None:
    """A Kraken WS v2 style response; requests whose params say `"ignore": true` get none."""
    params = request.get("params") or {}
    if params.get("ignore"):
        return None
    method = request["method"]
    response: dict[str, Any] = {"method": method, "success": True}
    if "req_id" in request:
        response["req_id"] = request["req_id"]
    if method == "add_order":
        response["result"] = {
            "order_id": f"O-{params.get('cl_ord_id')}",
            "cl_ord_id": params.get("cl_ord_id"),
        }
    elif method == "cancel_order":
        response["result"] = {"order_id": params.get("order_id")}
    else:
        response = {"method": method, "success": False, "error": "EGeneral:Unknown method"}
        if "req_id" in request:
            response["req_id"] = request["req_id"]
    return json.dumps(response)
