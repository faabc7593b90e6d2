"""`on_connect`: a fresh login at every (re)connect, against a real OKX-v5-style private
WebSocket server on loopback (and once against the simulator's OKX private endpoint).

The old failure mode: a login sent as `payload` is re-sent unchanged after a reconnect, the
exchange rejects its stale timestamp, and private channels go silent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import dial
import dial.aio
from dial import Dial, DialError, Link, last_error
from dial.reactor import reactor
from tests.conftest import ServerThread, fd_count, thread_count, wait_until
from tests.test_leaks import settle

API_KEY, SECRET, PASSPHRASE = "test-key", "test-secret", "test-passphrase"


def sign(timestamp: str, secret: str = SECRET) -> str:
    """OKX v5: base64(HMAC-SHA256(secret, timestamp + "GET" + "/users/self/verify"))."""
    mac = hmac.new(secret.encode(), f"{timestamp}GET/users/self/verify".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def login_request(timestamp: str | None = None, api_key: str = API_KEY) -> str:
    timestamp = timestamp or f"{time.time():.3f}"  # ms resolution: every login differs
    arg = {"apiKey": api_key, "passphrase": PASSPHRASE, "timestamp": timestamp}
    return json.dumps({"op": "login", "args": [{**arg, "sign": sign(timestamp)}]})


SUBSCRIBE = json.dumps({"op": "subscribe", "args": [{"channel": "orders", "instType": "ANY"}]})


def login(link: Link) -> None:
    """The hook as a user writes it: log in with a fresh signature, check the ack, subscribe."""
    link.send(login_request())
    ack = link.recv(timeout=5.0)
    if '"event":"login"' not in ack:
        raise RuntimeError(f"login refused: {ack}")
    link.send(SUBSCRIBE)


@dataclass
class PrivateServer:
    """OKX v5 `/ws/v5/private` as far as login and `orders` go: the login timestamp must be
    within `window` seconds of now (60006 otherwise), `orders` needs a login (60011)."""

    owner: ServerThread
    window: float = 30.0
    refuse: bool = False  # answer every login with 60009, as for a revoked key
    after_login: list[str] = field(default_factory=list)  # pushed right after a login ack
    logins: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, code)
    connections: list[Any] = field(default_factory=list)
    subscribed: set[Any] = field(default_factory=set)
    url: str = ""
    server: Any = None

    async def handler(self, ws: Any) -> None:
        self.connections.append(ws)
        logged_in = False
        try:
            async for message in ws:
                request = json.loads(message)
                op, arg = request["op"], request["args"][0]
                if op == "login":
                    if arg["apiKey"] == "silent":
                        continue  # never answers: a hung login
                    logged_in = await self.login(ws, arg)
                elif op == "subscribe" and not logged_in:
                    await self.send(ws, {"event": "error", "code": "60011", "msg": "Please log in"})
                elif op == "subscribe":
                    self.subscribed.add(ws)
                    await self.send(ws, {"event": "subscribe", "arg": arg, "connId": id(ws)})
        except Exception:
            pass
        finally:
            self.connections.remove(ws)
            self.subscribed.discard(ws)

    async def login(self, ws: Any, arg: dict[str, str]) -> bool:
        timestamp = arg["timestamp"]
        if self.refuse:
            code, msg = "60009", "Login failed."
        elif abs(time.time() - float(timestamp)) > self.window:
            code, msg = "60006", "Timestamp request expired"
        elif not hmac.compare_digest(arg["sign"], sign(timestamp)):
            code, msg = "60007", "Invalid sign"
        else:
            code, msg = "0", ""
        self.logins.append((timestamp, code))
        if code != "0":
            await self.send(ws, {"event": "error", "code": code, "msg": msg})
            return False
        await self.send(ws, {"event": "login", "code": "0", "msg": "", "connId": id(ws)})
        for text in self.after_login:
            await ws.send(text)
        return True

    @staticmethod
    async def send(ws: Any, obj: object) -> None:
        await ws.send(json.dumps(obj, separators=(",", ":")))

    def push_order(self, order_id: str) -> int:
        """Push one `orders` update to every logged-in subscriber; returns how many. Waits
        (briefly) for a subscriber first: a hook returns once it sent its subscribe, which the
        server may not have taken yet."""
        wait_until(lambda: bool(self.subscribed), 5)

        async def push() -> int:
            data = {"arg": {"channel": "orders", "instType": "ANY"}, "data": [{"ordId": order_id}]}
            for ws in list(self.subscribed):
                await self.send(ws, data)
            return len(self.subscribed)

        return self.owner.run(push())  # type: ignore[no-any-return]

    def drop_all(self) -> None:
        """Abort every client's TCP connection, as a crashed exchange gateway would."""

        async def drop() -> None:
            for ws in list(self.connections):
                ws.transport.abort()

        self.owner.run(drop())

    @property
    def accepted(self) -> list[str]:
        return [timestamp for timestamp, code in self.logins if code == "0"]


@pytest.fixture
def private(server_thread: ServerThread, ws_engine: str) -> Iterator[PrivateServer]:
    """The private WebSocket server; every test using it runs once per WebSocket engine."""
    from websockets.asyncio.server import serve

    state = PrivateServer(server_thread)

    async def start() -> None:
        state.server = await serve(state.handler, "127.0.0.1", 0)
        state.url = f"ws://127.0.0.1:{state.server.sockets[0].getsockname()[1]}/ws/v5/private"

    server_thread.run(start())
    yield state

    async def stop() -> None:
        state.server.close()
        await state.server.wait_closed()

    server_thread.run(stop())


def read_order(conn: Any, order_id: str, seconds: float = 5.0) -> list[Any]:
    """Read until the `orders` push with `order_id`; returns everything read up to it."""
    seen: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = conn.read(100)
        if message:
            seen.append(message)
            if f'"ordId":"{order_id}"' in message:
                return seen
    raise AssertionError(f"order {order_id} not read within {seconds} s; read {seen!r}")


def reconnected(conn: Any, server: PrivateServer, count: int) -> bool:
    """The connection came back `count` times and is subscribed again."""
    return wait_until(lambda: conn.reconnects >= count and conn.connected and server.subscribed)


# -- (1) fresh login after every reconnect -------------------------------------------------------


def test_private_data_keeps_flowing_after_drops_with_a_new_login_each_time(
    private: PrivateServer,
) -> None:
    with Dial(f"{private.url}|reconnect=true&interval=100", on_connect=login) as conn:
        assert conn, last_error()
        assert private.push_order("first") == 1
        first = read_order(conn, "first")
        assert not any('"event":"login"' in m for m in first)  # the hook took the ack
        for n in range(1, 4):
            private.drop_all()
            assert reconnected(conn, private, n), conn.stats()
            assert private.push_order(f"after-drop-{n}") == 1
            read_order(conn, f"after-drop-{n}")
        stamps = private.accepted
        assert len(stamps) == 4 and private.logins == [(s, "0") for s in stamps]
        assert [float(s) for s in stamps] == sorted({float(s) for s in stamps})  # all new
        assert conn.stats().on_connect_failures == 0


# -- (2) the old failure mode: a static payload login goes stale --------------------------------


def test_a_static_payload_login_goes_stale_where_the_hook_logs_in_afresh(
    private: PrivateServer,
) -> None:
    private.window = 0.5  # seconds a login timestamp may be off (OKX allows 30)
    options = "reconnect=true&interval=100"
    static = Dial(f"{private.url}|{options}&payload={login_request()}")
    fresh = Dial(f"{private.url}|{options}", on_connect=login)
    try:
        assert '"event":"login"' in static.read(3000)  # the payload login works once
        time.sleep(0.7)  # longer than the window: the payload's timestamp is now stale
        private.drop_all()
        stale = static.read(5000)
        while stale == "":  # "" while reconnecting, then the server's answer
            time.sleep(0.02)
            stale = static.read(5000)
        assert '"code":"60006"' in stale and "Timestamp request expired" in stale
        assert reconnected(fresh, private, 1)
        assert private.push_order("still-private") == 1  # only the hook's link is subscribed
        read_order(fresh, "still-private")
        codes = [code for _, code in private.logins]
        assert sorted(codes) == ["0", "0", "0", "60006"]
    finally:
        static.close()
        fresh.close()


# -- (3) a hook that fails --------------------------------------------------------------------


def test_a_failing_hook_makes_the_first_dial_return_none_with_the_reason(
    private: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    private.refuse = True
    with caplog.at_level("WARNING", logger="dial"):
        assert Dial(private.url, on_connect=login) is None
    reason = last_error()
    assert reason.startswith('on_connect failed: RuntimeError: login refused: {"event":"error"')
    assert '"code":"60009"' in reason
    assert reason in caplog.text
    with pytest.raises(DialError, match="on_connect failed: RuntimeError: login refused"):
        Dial(private.url, on_connect=login, raise_errors=True)
    assert wait_until(lambda: not private.connections)  # the failed attempts' links closed


def test_a_hook_reason_is_redacted(private: PrivateServer) -> None:
    def leaky(link: Link) -> None:
        raise ValueError('bad reply to {"apiKey":"test-key","sign":"c2VjcmV0"}')

    assert Dial(private.url, on_connect=leaky) is None
    assert (
        last_error() == 'on_connect failed: ValueError: bad reply to {"apiKey":"***","sign":"***"}'
    )


def test_reconnect_keeps_retrying_while_the_hook_fails(private: PrivateServer) -> None:
    conn = Dial(f"{private.url}|reconnect=true&interval=100", on_connect=login)
    try:
        assert conn and private.push_order("before") == 1
        read_order(conn, "before")
        private.refuse = True
        private.drop_all()
        assert wait_until(lambda: conn.stats().on_connect_failures >= 3), conn.stats()
        stats = conn.stats()
        assert stats.last_error.startswith("on_connect failed: RuntimeError: login refused:")
        assert '"code":"60009"' in stats.last_error
        assert not stats.connected and conn.write("x") == 0 and conn.read(-1) == ""
        assert wait_until(lambda: not private.connections)  # each failed link was closed
        private.refuse = False
        assert reconnected(conn, private, 1)
        assert private.push_order("after") == 1
        read_order(conn, "after")
    finally:
        conn.close()


def test_a_hung_hook_is_cut_off_and_its_thread_released(private: PrivateServer) -> None:
    outcome: list[BaseException] = []

    def hangs(link: Link) -> None:
        link.send(login_request(api_key="silent"))  # the server never answers this one
        try:
            link.recv(timeout=30)
        except BaseException as exc:
            outcome.append(exc)
            raise

    started = time.monotonic()
    assert Dial(private.url, on_connect=hangs, on_connect_timeout=0.5) is None
    assert 0.5 <= time.monotonic() - started < 3
    assert last_error() == "on_connect failed: did not return within 0.5 s"
    assert wait_until(lambda: bool(outcome))  # the abandoned recv() was woken ...
    assert isinstance(outcome[0], ConnectionError)  # ... with the link's end, not a hang

    def impatient(link: Link) -> None:
        link.send(login_request(api_key="silent"))
        link.recv(timeout=0.2)

    assert Dial(private.url, on_connect=impatient) is None
    assert last_error() == "on_connect failed: TimeoutError: no message within 0.2 s"


# -- (4) what the hook does not read reaches read(), in order -------------------------------------


def test_messages_the_hook_did_not_take_reach_read_in_order(private: PrivateServer) -> None:
    private.after_login = ["notice-1", "notice-2", "notice-3"]
    box: dict[str, Any] = {}

    def slow_login(link: Link) -> None:
        login(link)
        time.sleep(0.3)  # the notices (and the subscribe ack) arrive while the hook runs
        if "conn" in box:  # a reconnect: how much reached the buffer so far
            box["messages_in"] = box["conn"].stats().messages_in

    with Dial(f"{private.url}|reconnect=true&interval=100", on_connect=slow_login) as conn:
        box["conn"] = conn
        got = [conn.read(3000) for _ in range(4)]
        assert got[:3] == ["notice-1", "notice-2", "notice-3"]
        assert '"event":"subscribe"' in got[3]  # the subscribe ack, after the held notices
        assert conn.read(-1) is None  # the login ack was the hook's: never delivered again
        private.drop_all()
        assert reconnected(conn, private, 1)
        assert box["messages_in"] == 4  # nothing of the new link reached read() mid-hook
        assert [conn.read(3000) for _ in range(3)] == ["notice-1", "notice-2", "notice-3"]


# -- (5) nothing left behind -------------------------------------------------------------------


def test_hooked_connections_leak_no_threads_or_sockets(private: PrivateServer) -> None:
    address = f"{private.url}|reconnect=true&interval=50"
    Dial(address, on_connect=login).close()  # warm-up: reactor thread, imports
    settle()
    threads, fds, tasks = thread_count(), fd_count(), reactor_tasks()
    for i in range(10):
        conn = Dial(address, on_connect=login)
        assert conn, f"cycle {i}: {last_error()}"
        private.drop_all()
        assert reconnected(conn, private, 1)
        conn.close()
    for _ in range(5):
        assert Dial(private.url, on_connect=lambda link: 1 / 0) is None
    settle()
    assert wait_until(lambda: thread_count() == threads), threading.enumerate()
    assert wait_until(lambda: fd_count() == fds)
    assert reactor_tasks() == tasks


def reactor_tasks() -> int:
    """Tasks alive on the shared reactor loop, this probe excluded."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return reactor.call(count(), 5)


# -- the async API -------------------------------------------------------------------------------


def test_async_hook_logs_in_afresh_after_a_drop(private: PrivateServer) -> None:
    async def alogin(link: dial.aio.AsyncLink) -> None:
        await link.send(login_request())
        ack = await link.recv(timeout=5.0)
        if '"event":"login"' not in ack:
            raise RuntimeError(f"login refused: {ack}")
        await link.send(SUBSCRIBE)

    async def main() -> None:
        url = f"{private.url}|reconnect=true&interval=100"
        ws = await dial.aio.dial(url, on_connect=alogin, raise_errors=True)
        assert '"event":"subscribe"' in await ws.read(3000)
        await asyncio.to_thread(private.drop_all)
        assert '"event":"subscribe"' in await anext(ws)  # through the reconnect
        assert len(private.accepted) == 2 and len(set(private.accepted)) == 2
        await ws.close()
        sync_hooked = await dial.aio.dial(private.url, on_connect=login, raise_errors=True)
        assert '"event":"subscribe"' in await sync_hooked.read(3000)  # a plain hook works too
        await sync_hooked.close()
        private.refuse = True
        assert await dial.aio.dial(private.url, on_connect=alogin) is None
        assert last_error().startswith("on_connect failed: RuntimeError: login refused")

    asyncio.run(asyncio.wait_for(main(), 30))


# -- what takes a hook ---------------------------------------------------------------------------


def test_on_connect_is_refused_where_it_cannot_work(tmp_path: Any) -> None:
    assert Dial(f"sqlite3://{tmp_path / 'x.db'}", on_connect=login) is None
    assert last_error() == "on_connect is for streaming connections; sqlite3:// is a database"
    assert Dial("ws://127.0.0.1:9/", on_connect="login") is None
    assert last_error() == "on_connect must be a function taking the link, not str"
    with pytest.raises(DialError, match="on_connect_timeout must be > 0"):
        Dial("ws://127.0.0.1:9/", on_connect=login, on_connect_timeout=0, raise_errors=True)


# -- the simulator's OKX private endpoint --------------------------------------------------------


def test_simulator_okx_private_channel_survives_drops_with_fresh_logins() -> None:
    from dial.simulator import DEMO_CREDENTIALS, Simulator, login_signature

    api_key, (secret, passphrase) = next(iter(DEMO_CREDENTIALS.items()))
    timestamps: list[str] = []

    def okx_login(link: Link) -> None:
        timestamp = f"{time.time():.3f}"
        timestamps.append(timestamp)
        arg = {"apiKey": api_key, "passphrase": passphrase, "timestamp": timestamp}
        link.send(
            json.dumps(
                {"op": "login", "args": [{**arg, "sign": login_signature(timestamp, secret)}]}
            )
        )
        ack = link.recv(timeout=5.0)
        if '"event":"login"' not in ack:
            raise RuntimeError(f"login refused: {ack}")
        channels = [{"channel": c, "instType": "ANY"} for c in ("positions", "orders")]
        link.send(json.dumps({"op": "subscribe", "args": channels}))

    def private_push(conn: Any) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = conn.read(200)
            if message and '"data"' in message:
                return json.loads(message)["arg"]["channel"] in ("positions", "orders")
        return False

    with Simulator("okx", rate=10) as sim:
        sim.settings.okx_login_window = 1.0
        with Dial(
            f"{sim.url('okx-private')}|reconnect=true&interval=100", on_connect=okx_login
        ) as ws:
            assert ws, last_error()
            assert private_push(ws)
            for n in range(1, 3):
                time.sleep(1.2)  # a re-sent login would now be outside the window
                sim.drop_all()
                assert wait_until(lambda n=n: ws.reconnects >= n and ws.connected, 10), ws.stats()
                assert private_push(ws), f"no private data after drop {n}"
        assert len(timestamps) == 3 and len(set(timestamps)) == 3
        assert ws.stats().on_connect_failures == 0
