"""The simulator's servers: each venue on a port of its own, as each venue has its own host.

`Simulator` runs them on a private event loop in a background thread, so tests and the demo can
start it with one line; `serve()` runs them on the caller's loop (the `dial simulate` command).
A port answers its venue's WebSocket paths and, for plain HTTP GETs, its REST snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .binance import BinanceFeed
from .feed import Feed, Settings
from .huobi import HuobiFeed
from .market import Market
from .okx import OkxFeed

__all__ = ["EXCHANGES", "PATHS", "REAL_HOSTS", "Simulator"]

log = logging.getLogger("dial.simulator")

EXCHANGES: dict[str, type[Feed]] = {"binance": BinanceFeed, "okx": OkxFeed, "huobi": HuobiFeed}
#: feed name (as accepted by `Simulator.url`) -> (venue, path)
PATHS: dict[str, tuple[str, str]] = {
    "binance": ("binance", "/ws/!miniTicker@arr"),
    "binance-stream": ("binance", "/stream?streams=btcusdt@trade/ethusdt@bookTicker"),
    "okx": ("okx", "/ws/v5/public"),
    "okx-business": ("okx", "/ws/v5/business"),
    "okx-private": ("okx", "/ws/v5/private"),
    "huobi": ("huobi", "/ws"),
    "huobi-feed": ("huobi", "/feed"),
}
#: the real hosts each venue stands in for (the FMZ shim's DIAL_REDIRECT rules map them here)
REAL_HOSTS: dict[str, tuple[str, ...]] = {
    "binance": ("wss://stream.binance.com:9443", "wss://stream.binance.com:443"),
    "okx": ("wss://ws.okx.com:8443", "wss://wspap.okx.com:8443"),
    "huobi": ("wss://api.huobi.pro", "wss://api-aws.huobi.pro", "wss://api.htx.com"),
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
    """Binance / OKX / Huobi (HTX) public and private feeds, one local port per venue.

    >>> with Simulator(rate=10) as sim:
    ...     ws = Dial(sim.url("okx") + '|payload={"op":"subscribe",...}')

    `port=0` picks free ports; `port=N` binds venue i (in `exchanges` order) to N + i.
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
        **settings: Any,
    ) -> None:
        self.exchanges = _exchange_names(exchanges)
        self.host = host
        self.ports = {name: (port + i if port else 0) for i, name in enumerate(self.exchanges)}
        self.settings = Settings(
            rate=rate,
            huobi_ping_interval=huobi_ping_interval,
            huobi_missed_pings=huobi_missed_pings,
            seed=seed,
            **settings,
        )
        if okx_credentials is not None:
            self.settings.okx_credentials = dict(okx_credentials)
        self.market = Market(seed=seed)
        self.counters: Counter[str] = Counter()
        self.feeds = {
            name: EXCHANGES[name](self.market, self.settings, self.counters)
            for name in self.exchanges
        }
        self.connections: set[ServerConnection] = set()
        self._servers: list[Server] = []
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The first venue's port (the only one when a single venue is simulated)."""
        return self.ports[self.exchanges[0]]

    def base_url(self, exchange: str, scheme: str = "ws") -> str:
        """`ws://host:port` standing in for the venue's host (`http` for its REST API)."""
        if exchange not in self.ports:
            raise ValueError(f"{exchange} is not simulated here; running: {self.exchanges}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.ports[exchange]}"

    def url(self, feed: str = "binance") -> str:
        """`ws://host:port/path` of a feed: one of `PATHS`."""
        if feed not in PATHS:
            raise ValueError(f"unknown feed {feed!r}; choose from {', '.join(PATHS)}")
        exchange, path = PATHS[feed]
        return self.base_url(exchange) + path

    def urls(self) -> dict[str, str]:
        return {feed: self.url(feed) for feed, (venue, _) in PATHS.items() if venue in self.ports}

    def redirect_rules(self) -> str:
        """`DIAL_REDIRECT` value sending FMZ scripts' real venue URLs to this simulator."""
        return " ".join(
            f"{real}={self.base_url(venue)}"
            for venue in self.exchanges
            for real in REAL_HOSTS[venue]
        )

    def describe(self) -> list[str]:
        """What each simulated venue serves, for `dial simulate --help` and the banner."""
        lines = []
        for name, feed in self.feeds.items():
            lines.append(f"{name} (stands in for {', '.join(REAL_HOSTS[name])}):")
            lines.extend(f"  {line}" for line in feed.describe())
        return lines

    @property
    def clients(self) -> int:
        return len(self.connections)

    # -- running on the caller's loop --------------------------------------------------------

    async def start_async(self) -> None:
        """Bind the ports (0 picks free ones; `self.ports` tells which) and start the feeds."""
        try:
            for name, feed in self.feeds.items():
                ping_interval, ping_timeout = feed.keepalive()
                server = await serve(
                    functools.partial(self._handle, feed),
                    self.host,
                    self.ports[name],
                    process_request=functools.partial(self._route, feed),
                    ping_interval=ping_interval,
                    ping_timeout=ping_timeout,
                    max_size=2**20,
                    compression=None,
                )
                self._servers.append(server)
                self.ports[name] = next(iter(server.sockets)).getsockname()[1]
        except BaseException:
            await self.stop_async()
            raise
        self._ticker = asyncio.ensure_future(self._tick_forever())

    async def stop_async(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()

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
        """Start on a background thread; returns once the ports accept connections."""
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
        """Close every client and port; `start()` may be called again (same ports)."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._thread = self._loop = None

    def drop_all(self, abrupt: bool = False) -> int:
        """Disconnect every client (close frame 1012, or a TCP abort); the ports stay open."""
        return self._run(self.drop_all_async(abrupt))

    def call(self, function: Any, *args: Any) -> Any:
        """Run `function(*args)` on the simulator's loop (e.g. a feed's `shutdown`)."""

        async def run() -> Any:
            result = function(*args)
            return await result if asyncio.iscoroutine(result) else result

        return self._run(run())

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
        state = "running" if self._servers else "stopped"
        ports = ",".join(f"{name}:{port}" for name, port in self.ports.items())
        return f"<Simulator {self.host} {ports} {state}>"

    # -- internals ---------------------------------------------------------------------------

    def _route(self, feed: Feed, conn: ServerConnection, request: Request) -> Response | None:
        split = urlsplit(request.path)
        path = unquote(split.path)
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            answer = feed.http("GET", path, query)
            if answer is not None:
                return _json_response(*answer)
        elif feed.serves(path):
            return None
        paths = ", ".join(feed.paths)
        return conn.respond(404, f"no simulated {feed.name} endpoint at {path}; paths: {paths}\n")

    async def _handle(self, feed: Feed, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handshake is done before the handler runs
        self.connections.add(ws)
        self.counters[f"{feed.name}.connections"] += 1
        try:
            await feed.handle(ws, unquote(ws.request.path.split("?", 1)[0]))
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
            steps = self.market.step()
            for feed in self.feeds.values():
                try:
                    feed.tick(steps)
                except Exception:  # one venue's bug must not stop the others
                    log.exception("simulator feed %s failed to push", feed.name)


def _json_response(status: int, body: object) -> Response:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return Response(status, HTTPStatus(status).phrase, headers, payload)
