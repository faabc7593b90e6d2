"""A fault-injecting TCP proxy on 127.0.0.1, for tests of what a client does when the network
between it and a real server misbehaves while both ends stay up.

Every accepted connection is forwarded to `target` by two pumps (one per direction) on the
proxy's own asyncio loop in a background thread, so it shares nothing with dial's reactor. On
command the proxy can:

- `stall()`: stop forwarding both ways on every link, old and new, while keeping the sockets
  open (what a silently dead path looks like: no FIN, no RST, just nothing);
  `stall(existing_only=True)` stalls only the links open now and forwards new ones (a dead
  flow: a NAT entry or a load balancer lost the old connection, a new one works);
- `half_close(direction)`: shut down one direction of every live link (the peer on that side
  reads EOF while the other direction keeps working);
- `reset(mid_frame=True)`: forward only part of the next chunk in a direction, then reset both
  sockets (SO_LINGER 0, so an RST and not a FIN), leaving a frame cut in half;
- `blackhole()`: accept new connections but never connect them upstream (links open now
  are left as they are);
- `resume()`: forward normally again (connections accepted into the blackhole stay dead: the
  client has to give up on them, as it would on a real one).

`links` counts live forwarded connections and `accepted` every connection taken; tests wait
for `links == 0` after closing a client to know that the proxy released its sockets too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Direction", "FaultProxy"]

#: `to_client` is the server -> client direction, `to_server` the client -> server one.
Direction = Literal["to_client", "to_server"]
CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's socket, the upstream one, and their pumps."""

    client: socket.socket
    flowing: asyncio.Event
    upstream: socket.socket | None = None
    pumps: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    closed: bool = False


@dataclass
class Cut:
    """What `reset()` did: the size of the chunk it cut and how much of it went through."""

    direction: Direction
    chunk: int
    forwarded: int

    @property
    def mid_frame(self) -> bool:
        return 0 < self.forwarded < self.chunk


class FaultProxy:
    """See the module docstring. Use as a context manager, or call `close()`."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.accepted = 0
        self._links: set[_Link] = set()
        self._blackholed: dict[socket.socket, asyncio.Task[None]] = {}
        self.swallowed = 0  # connections taken into the blackhole
        self._blackhole = False
        self._reset_armed: Direction | None = None
        self._reset_done: asyncio.Future[Cut] | None = None
        self.loop = asyncio.new_event_loop()
        self._stalled = False  # new links start stalled
        self._listener = socket.create_server(("127.0.0.1", port), backlog=128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        self._accepting = self._call(self._start_accepting())

    # -- test-side API (any thread) ----------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def links(self) -> int:
        """Live forwarded connections plus blackholed ones not yet given up by the client."""
        return len(self._links) + len(self._blackholed)

    def stall(self, existing_only: bool = False) -> None:
        self._call(self._stall(existing_only))

    def blackhole(self) -> None:
        self._call(self._set_blackhole())

    def resume(self) -> None:
        """Clear every fault: forward on every link again, connect new connections."""
        self._call(self._resume())

    def half_close(self, direction: Direction) -> int:
        """Shut one direction of every live link down; returns how many links it touched."""
        return self._call(self._half_close(direction))

    def reset(self, direction: Direction = "to_client", mid_frame: bool = True) -> Cut | None:
        """With `mid_frame`, arm a cut of the next chunk flowing in `direction` and return at
        once (`wait_reset()` tells what was cut); without it, reset every link now."""
        return self._call(self._reset(direction, mid_frame))

    def wait_reset(self, seconds: float) -> Cut:
        """The `Cut` of the armed reset once a chunk went by (TimeoutError if none did)."""
        future = self._reset_done
        assert future is not None, "reset(mid_frame=True) was not called"
        return self._call(asyncio.wait_for(asyncio.shield(future), seconds), seconds + 1)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # -- on the proxy loop --------------------------------------------------------------------

    async def _start_accepting(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._accept_forever())

    async def _stall(self, existing_only: bool) -> None:
        if not existing_only:
            self._stalled = True
        for link in self._links:
            link.flowing.clear()

    async def _set_blackhole(self) -> None:
        self._blackhole = True

    async def _resume(self) -> None:
        self._blackhole = False
        self._stalled = False
        for link in self._links:
            link.flowing.set()

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(self._listener)
            client.setblocking(False)
            self.accepted += 1
            if self._blackhole:
                self.swallowed += 1
                self._blackholed[client] = asyncio.ensure_future(self._swallow(client))
                continue
            link = _Link(client, asyncio.Event())
            if not self._stalled:
                link.flowing.set()
            self._links.add(link)
            link.pumps["connect"] = asyncio.ensure_future(self._open(link))

    async def _swallow(self, client: socket.socket) -> None:
        """A blackholed connection: read and discard until the client gives up."""
        loop = asyncio.get_running_loop()
        try:
            while await loop.sock_recv(client, CHUNK):
                pass
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._blackholed.pop(client, None)
            client.close()

    async def _open(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        link.upstream = upstream
        try:
            await loop.sock_connect(upstream, self.target)
        except OSError:
            self._abort(link)  # the target is down: the client sees a reset, like a refusal
            return
        except asyncio.CancelledError:
            return  # _abort() closes the sockets
        link.pumps.pop("connect", None)
        for sock in (link.client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.pumps["to_server"] = asyncio.ensure_future(
            self._pump(link, link.client, upstream, "to_server")
        )
        link.pumps["to_client"] = asyncio.ensure_future(
            self._pump(link, upstream, link.client, "to_client")
        )

    async def _pump(
        self, link: _Link, source: socket.socket, sink: socket.socket, direction: Direction
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await link.flowing.wait()
                data = await loop.sock_recv(source, CHUNK)
                if not data:  # EOF: pass the half-close on
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    break
                await link.flowing.wait()  # stalled while this chunk was in flight: hold it
                if self._reset_armed == direction:
                    await self._cut(link, sink, data, direction)
                    return
                await loop.sock_sendall(sink, data)
        except asyncio.CancelledError:
            if link.pumps.get(direction) is asyncio.current_task():
                self._abort(link)  # cancelled from outside, not by half_close()
            return
        except OSError:
            self._abort(link)  # a reset on one side is passed on to the other
            return
        link.pumps.pop(direction, None)
        if not link.pumps:
            self._abort(link, rst=False)

    async def _cut(
        self, link: _Link, sink: socket.socket, data: bytes, direction: Direction
    ) -> None:
        self._reset_armed = None
        forwarded = len(data) // 2
        if forwarded:
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().sock_sendall(sink, data[:forwarded])
            await asyncio.sleep(0.02)  # let the partial frame reach the peer before the RST
        self._abort(link)
        if self._reset_done is not None and not self._reset_done.done():
            self._reset_done.set_result(Cut(direction, len(data), forwarded))

    def _abort(self, link: _Link, rst: bool = True) -> asyncio.Future[None] | None:
        """Close both sockets of `link`: with `rst`, by an RST (SO_LINGER 0). Returns a
        future done once they are closed (None if they already were)."""
        if link.closed:
            return None
        link.closed = True
        current = asyncio.current_task()
        pumps = [task for task in link.pumps.values() if task is not current]
        link.pumps.clear()
        for task in pumps:
            task.cancel()
        sockets = [sock for sock in (link.client, link.upstream) if sock is not None]
        if rst:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return asyncio.ensure_future(self._close_after(link, pumps, sockets))

    async def _close_after(
        self, link: _Link, pumps: list[asyncio.Task[None]], sockets: list[socket.socket]
    ) -> None:
        """Close only once the cancelled pumps have unregistered their fds from the loop: a
        closed fd number is reused at once, and a late unregister would hit the new socket."""
        await asyncio.gather(*pumps, return_exceptions=True)
        for sock in sockets:
            sock.close()
        self._links.discard(link)

    async def _half_close(self, direction: Direction) -> int:
        touched = 0
        for link in list(self._links):
            pump = link.pumps.pop(direction, None)
            if pump is None:
                continue
            pump.cancel()
            sink = link.client if direction == "to_client" else link.upstream
            with contextlib.suppress(OSError):
                assert sink is not None
                sink.shutdown(socket.SHUT_WR)
            touched += 1
        return touched

    async def _reset(self, direction: Direction, mid_frame: bool) -> Cut | None:
        if mid_frame:
            self._reset_done = asyncio.get_running_loop().create_future()
            self._reset_armed = direction
            return None
        closing = [self._abort(link) for link in list(self._links)]
        await asyncio.gather(*(future for future in closing if future is not None))
        return Cut(direction, 0, 0)

    async def _shutdown(self) -> None:
        self._accepting.cancel()
        for link in list(self._links):
            self._abort(link)
        while self._links:
            await asyncio.sleep(0.01)
        swallowing = list(self._blackholed.values())
        for task in swallowing:
            task.cancel()
        await asyncio.gather(*swallowing, self._accepting, return_exceptions=True)
        self._listener.close()
