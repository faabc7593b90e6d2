"""The simulator's WebSocket server: one port serves every enabled exchange's paths.

`Simulator` runs it on a private event loop in a background thread, so tests and the demo can
start it with one line; `serve()` runs it on the caller's loop (the `dial simulate` command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from .binance import BinanceFeed
from .feed import Feed, Settings
from .huobi import HuobiFeed
from .market import Market
from .okx import OkxFeed

__all__ = ["EXCHANGES", "PATHS", "Simulator"]

log = logging.getLogger("dial.simulator")

EXCHANGES: dict[str, type[Feed]] = {"binance": BinanceFeed, "okx": OkxFeed, "huobi": HuobiFeed}
#: feed name (as accepted by `Simulator.url`) -> path
PATHS = {
    "binance": "/ws/!ticker@arr",
    "okx": "/ws/v5/public",
    "okx-private": "/ws/v5/private",
    "huobi": "/ws",
}
DROP_CODE = 1012  # "service restart": what an exchange sends when it sheds connections


def _exchange_names(exchanges: str | Iterable[str]) -> tuple[str, ...]:
    names = [exchanges] if isinstance(exchanges, str) else list(exchanges)
    if "all" in names:
        names = list(EXCHANGES)
    unknown = [name for name in names if name not in EXCHANGES]
    if unknown or not names:
        raise ValueError(
            f"unknown exchange {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(EXCHANGES)} or all"
        )
    return tuple(dict.fromkeys(names))


class Simulator:
    """Binance / OKX / Huobi public feeds (and OKX private) on one local port.

    >>> with Simulator(rate=10) as sim:
    ...     ws = Dial(sim.url("okx") + "|compress=gzip_raw&payload=...")
    """

    def __init__(
        self,
        exchanges: str | Iterable[str] = "all",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float = 2.0,
        huobi_ping_interval: float = 5.0,
        huobi_missed_pings: int = 2,
        okx_credentials: dict[str, tuple[str, str]] | None = None,
        seed: int | None = None,
    ) -> None:
        self.exchanges = _exchange_names(exchanges)
        self.host = host
        self.port = port
        self.settings = Settings(
            rate=rate,
            huobi_ping_interval=huobi_ping_interval,
            huobi_missed_pings=huobi_missed_pings,
            seed=seed,
        )
        if okx_credentials is not None:
            self.settings.okx_credentials = dict(okx_credentials)
        self.market = Market(seed=seed)
        self.counters: Counter[str] = Counter()
        self.feeds = [
            EXCHANGES[name](self.market, self.settings, self.counters) for name in self.exchanges
        ]
        self.connections: set[ServerConnection] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------

    def url(self, feed: str = "binance") -> str:
        """`ws://host:port/path` of a feed: binance, okx, okx-private or huobi."""
        if feed not in PATHS:
            raise ValueError(f"unknown feed {feed!r}; choose from {', '.join(PATHS)}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{PATHS[feed]}"

    def urls(self) -> dict[str, str]:
        return {feed: self.url(feed) for feed in PATHS if feed.split("-", 1)[0] in self.exchanges}

    @property
    def clients(self) -> int:
        return len(self.connections)

    # -- running on the caller's loop --------------------------------------------------------

    async def start_async(self) -> None:
        """Bind the port (0 picks a free one; `self.port` tells which) and start the feeds."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._route,
            ping_interval=20,
            ping_timeout=20,
            max_size=2**20,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self._ticker = asyncio.ensure_future(self._tick_forever())

    async def stop_async(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve(self) -> None:
        """Run until cancelled (Ctrl-C in `dial simulate`)."""
        await self.start_async()
        try:
            await asyncio.Future()
        finally:
            await self.stop_async()

    async def drop_all_async(self, abrupt: bool = False) -> int:
        dropped = list(self.connections)
        for ws in dropped:
            if abrupt:
                ws.transport.abort()
            else:
                await ws.close(DROP_CODE, "simulator dropped all clients")
        self.counters["drops"] += len(dropped)
        return len(dropped)

    # -- running in a background thread ------------------------------------------------------

    def start(self) -> Simulator:
        """Start on a background thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("simulator already running")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # bind failed: report it to start()
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop_async())
                loop.close()

        self._thread = threading.Thread(target=run, name="dial-simulator", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every client and the port; `start()` may be called again (same port)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = self._loop = None

    def drop_all(self, abrupt: bool = False) -> int:
        """Disconnect every client (close frame 1012, or a TCP abort); the port stays open."""
        return self._run(self.drop_all_async(abrupt))

    def set_rate(self, rate: float) -> None:
        self.settings.rate = rate

    def _run(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("simulator is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<Simulator {','.join(self.exchanges)} {self.host}:{self.port} {state}>"

    # -- internals ---------------------------------------------------------------------------

    def _feed_for(self, path: str) -> Feed | None:
        return next((feed for feed in self.feeds if feed.serves(path)), None)

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path = unquote(request.path.split("?", 1)[0])
        if self._feed_for(path) is not None:
            return None
        known = ", ".join(url.split(str(self.port), 1)[1] for url in self.urls().values())
        return connection.respond(404, f"no simulated feed at {path}; paths: {known}\n")

    async def _handle(self, ws: ServerConnection) -> None:
        path = unquote(ws.request.path.split("?", 1)[0])
        feed = self._feed_for(path)
        if feed is None:  # pragma: no cover - _route refused it already
            return
        self.connections.add(ws)
        self.counters[f"{feed.name}.connections"] += 1
        try:
            await feed.handle(ws, path)
        finally:
            self.connections.discard(ws)

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            rate = self.settings.rate
            due += 1.0 / rate if rate > 0 else 0.25
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # fell far behind (a paused process): skip, don't burst
                due = loop.time()
            else:
                await asyncio.sleep(0)
            if rate <= 0:
                continue
            self.market.step()
            for feed in self.feeds:
                try:
                    feed.tick()
                except Exception:  # one feed's bug must not stop the others
                    log.exception("simulator feed %s failed to push", feed.name)
