"""Fixtures for the core tests: real local servers (WebSocket, tcp/udp/unix/tls echo, TLS with a
trustme CA, a microsocks SOCKS5 proxy), each run for real on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers import base


class ServerThread:
    """One asyncio loop in a background thread hosting the test servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="test-servers", daemon=True
        )
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def server_thread() -> Iterator[ServerThread]:
    servers = ServerThread()
    yield servers
    servers.stop()


@dataclass
class WsServer:
    """A scriptable WebSocket server. Text commands from a client:

    `echo:X` replies X; `many:N` sends N numbered messages; `gzip:X`/`raw:X`/`zlib:X` send X
    compressed as binary; `bin:HEX` sends raw bytes; `close` closes the connection; anything
    else is echoed. Every received message is recorded in `received`.
    """

    port: int
    url: str
    received: list[Any] = field(default_factory=list)
    connections: list[Any] = field(default_factory=list)
    handshakes: int = 0
    extensions: list[str] = field(default_factory=list)
    server: Any = None
    owner: ServerThread | None = None

    def drop_all(self) -> None:
        """Abort every client's TCP connection, as a crashed server would."""

        async def drop() -> None:
            for ws in list(self.connections):
                ws.transport.abort()

        assert self.owner is not None
        self.owner.run(drop())

    def send_all(self, message: str | bytes) -> None:
        async def send() -> None:
            for ws in list(self.connections):
                await ws.send(message)

        assert self.owner is not None
        self.owner.run(send())


async def _ws_handler(state: WsServer, ws: Any) -> None:
    state.handshakes += 1
    state.extensions.append(ws.request.headers.get("Sec-WebSocket-Extensions", ""))
    state.connections.append(ws)
    try:
        async for message in ws:
            state.received.append(message)
            if isinstance(message, bytes):
                await ws.send(message)
                continue
            command, _, argument = message.partition(":")
            if command == "many":
                for i in range(int(argument)):
                    await ws.send(f"m{i}")
            elif command == "bomb":  # a tiny gzip frame that inflates to N bytes
                await ws.send(gzip.compress(b"0" * int(argument)))
            elif command == "gzip":
                await ws.send(gzip.compress(argument.encode()))
            elif command == "raw":
                compressor = zlib.compressobj(wbits=-15)
                await ws.send(compressor.compress(argument.encode()) + compressor.flush())
            elif command == "zlib":
                await ws.send(zlib.compress(argument.encode()))
            elif command == "bin":
                await ws.send(bytes.fromhex(argument))
            elif command == "close":
                await ws.close(1001, "going away")
            elif command == "echo":
                await ws.send(argument)
            else:
                await ws.send(message)
    except Exception:
        pass
    finally:
        state.connections.remove(ws)


def start_ws_server(owner: ServerThread, ssl_context: ssl.SSLContext | None = None) -> WsServer:
    from websockets.asyncio.server import serve

    async def start() -> WsServer:
        state = WsServer(port=0, url="")
        server = await serve(
            lambda ws: _ws_handler(state, ws), "127.0.0.1", 0, ssl=ssl_context, max_size=None
        )
        state.port = server.sockets[0].getsockname()[1]
        state.url = f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{state.port}/feed"
        state.server, state.owner = server, owner
        return state

    return owner.run(start())


def stop_server(owner: ServerThread, server: Any) -> None:
    async def stop() -> None:
        server.close()
        await server.wait_closed()

    owner.run(stop())


@pytest.fixture
def ws_server(server_thread: ServerThread) -> Iterator[WsServer]:
    state = start_ws_server(server_thread)
    yield state
    stop_server(server_thread, state.server)


def _picows_installed() -> bool:
    try:
        import dial.transports.picows_engine  # noqa: F401
    except ImportError:
        return False
    return True


WS_ENGINES = [
    "websockets",
    pytest.param(
        "picows",
        marks=pytest.mark.skipif(not _picows_installed(), reason="picows ([fast] extra) missing"),
    ),
]


@pytest.fixture(params=WS_ENGINES)
def ws_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once per WebSocket engine: addresses without `engine=` get this one."""
    from dial import registry

    monkeypatch.setattr(registry, "PREFERRED_WEBSOCKET_ENGINE", request.param)
    return str(request.param)


@dataclass
class Tls:
    ca_file: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(str(ca_file), context)


@pytest.fixture
def trust_test_ca(tls: Tls, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the test CA the one `SSL_CERT_FILE` points at, as a user would."""
    monkeypatch.setenv("SSL_CERT_FILE", tls.ca_file)
    return tls.ca_file


@pytest.fixture
def wss_server(server_thread: ServerThread, tls: Tls) -> Iterator[WsServer]:
    state = start_ws_server(server_thread, tls.server_context)
    yield state
    stop_server(server_thread, state.server)


@dataclass
class EchoServers:
    tcp: int
    tls: int
    udp: int
    unix: str


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data == b"bye\n":
            self.transport.close()
        else:
            self.transport.write(data)


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


@pytest.fixture(scope="session")
def echo_servers(
    server_thread: ServerThread, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EchoServers]:
    unix_path = str(tmp_path_factory.mktemp("unix") / "echo.sock")

    async def start() -> tuple[EchoServers, list[Any]]:
        loop = asyncio.get_running_loop()
        tcp = await loop.create_server(_Echo, "127.0.0.1", 0)
        tls_server = await loop.create_server(_Echo, "127.0.0.1", 0, ssl=tls.server_context)
        unix = await loop.create_unix_server(_Echo, unix_path)
        udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        ports = EchoServers(
            tcp=tcp.sockets[0].getsockname()[1],
            tls=tls_server.sockets[0].getsockname()[1],
            udp=udp.get_extra_info("sockname")[1],
            unix=unix_path,
        )
        return ports, [tcp, tls_server, unix, udp]

    ports, servers = server_thread.run(start())
    yield ports

    async def stop() -> None:
        for server in servers:
            server.close()

    server_thread.run(stop())


@dataclass
class Socks:
    port: int
    user: str | None = None
    password: str | None = None

    def url(self, password: str | None = None) -> str:
        if self.user is None:
            return f"socks5://127.0.0.1:{self.port}"
        return f"socks5://{self.user}:{password or self.password}@127.0.0.1:{self.port}"


def _start_microsocks(user: str | None = None, password: str | None = None) -> Iterator[Socks]:
    binary = base.ensure_binary("microsocks", "microsocks")
    port = base.free_port()
    argv = [binary, "-i", "127.0.0.1", "-p", str(port)]
    if user:
        argv += ["-u", user, "-P", password or ""]
    process = base.start(f"microsocks-{port}", argv, port)
    yield Socks(port, user, password)
    base.stop(process)


@pytest.fixture(scope="session")
def socks_proxy() -> Iterator[Socks]:
    yield from _start_microsocks()


@pytest.fixture(scope="session")
def socks_proxy_auth() -> Iterator[Socks]:
    yield from _start_microsocks("trader", "s3cret-pw")


def wait_until(predicate: Any, seconds: float = 5.0) -> bool:
    """Poll `predicate` until it is true or `seconds` pass; returns its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    return threading.active_count()


ROOT = Path(__file__).resolve().parents[1]


# -- slow tests ---------------------------------------------------------------------------------

#: Tests marked `slow` here besides those decorated `@pytest.mark.slow`: each takes a second or
#: more (daemons restarted, subprocesses, seconds of simulated market, waiting out timeouts).
#: `make test-fast` (`pytest -m "not slow"`) leaves them out; `make test` runs everything.
#: "*" marks a whole file. Kept in one table so that files being edited elsewhere stay untouched.
SLOW: dict[str, frozenset[str]] = {
    name: frozenset(tests)
    for name, tests in {
        "test_faults_proxy.py": ["*"],
        "test_faults_netns.py": ["*"],
        "test_databases_restart.py": ["*"],
        "test_examples.py": ["*"],
        "test_examples_binance.py": ["*"],
        "test_examples_huobi.py": ["*"],
        "test_examples_okx.py": ["*"],
        "test_typing.py": ["*"],
        "test_address.py": ["test_option_strings_never_escape_as_other_exceptions"],
        "test_alive_heartbeat.py": [
            "test_exponential_backoff_reconnects_once_the_server_is_back",
            "test_fed_channel_is_not_stale",
            "test_ping_on_demand_measures_a_round_trip",
            "test_quiet_channel_with_working_heartbeats_is_not_restarted",
            "test_silent_server_is_detected_within_ping_plus_deadline_and_resubscribed",
            "test_stale_channel_is_restarted_within_idle_although_heartbeats_work",
        ],
        "test_alive_tracking.py": [
            "test_ten_thousand_requests_with_a_tenth_unanswered_leave_no_pending_entry",
        ],
        "test_alive_wait.py": ["test_idle_wait_uses_no_cpu"],
        "test_brokers.py": [
            "test_amqp_reconnects_after_the_broker_drops_the_connection",
            "test_an_independent_client_reads_what_dial_writes",
            "test_kafka_consumer_group",
            "test_kafka_starts_at_the_moment_of_dial_unless_earliest",
            "test_reconnects_after_the_broker_is_killed_and_restarted",
            "test_slow_reader_keeps_the_newest_2000",
            "test_without_reconnect_a_lost_link_stays_down",
        ],
        "test_cli.py": [
            "test_read_reports_a_drop_before_n_messages",
            "test_read_status_line_on_a_terminal",
            "test_read_with_reconnect_survives_a_drop",
            "test_read_without_n_ends_0_when_the_peer_closes",
            "test_simulate_bad_port_is_a_usage_error",
            "test_simulate_ctrl_c_exits_0",
        ],
        "test_databases.py": [
            "test_failed_clickhouse_dial_to_a_silent_peer_leaves_nothing",
            "test_link_lost_inside_a_transaction_is_reported_not_papered_over",
            "test_no_leaked_threads_or_sockets",
            "test_shared_table_same_results_everywhere",
        ],
        "test_dial_errors.py": ["test_dead_addresses_give_none_within_4_seconds"],
        "test_fmz.py": [
            "test_fmz_binance_table_example_ends_when_the_feed_closes",
            "test_fmz_huobi_example_answers_pings",
            "test_fmz_okx_example_resubscribes_after_a_drop",
            "test_fmz_okx_private_example_logs_in_with_exchange_hmac",
            "test_fmz_script_sigterm_runs_onexit",
        ],
        "test_leaks.py": [
            "test_100_dial_close_cycles_leak_nothing",
            "test_connection_dropped_without_close_is_cleaned_up",
            "test_failed_dials_leak_nothing",
        ],
        "test_on_connect.py": [
            "test_a_hung_hook_is_cut_off_and_its_thread_released",
            "test_a_static_payload_login_goes_stale_where_the_hook_logs_in_afresh",
            "test_hooked_connections_leak_no_threads_or_sockets",
            "test_messages_the_hook_did_not_take_reach_read_in_order",
            "test_simulator_okx_private_channel_survives_drops_with_fresh_logins",
        ],
        "test_plugin_cli.py": [
            "test_absurd_number_does_not_stall_the_server",
            "test_call_errors_are_one_line",
            "test_okx_bad_arguments_are_one_line",
            "test_serve_call_and_stop",
        ],
        "test_plugin_server.py": [
            "test_no_piece_of_a_secret_in_logs_answers_or_reprs",
            "test_request_log_shows_a_key_fingerprint",
            "test_upstream_timeout_does_not_block_other_requests",
        ],
        "test_sim_binance.py": [
            "test_a_client_that_answers_pings_stays",
            "test_a_client_that_does_not_answer_pings_is_dropped",
            "test_a_kline_is_pushed_closed_then_the_next_one_opens",
            "test_connections_are_cut_at_the_maximum_lifetime",
            "test_diff_depth_chain_rebuilds_the_rest_snapshot_exactly",
            "test_server_shutdown_event_then_disconnect",
            "test_stream_values_are_consistent",
            "test_subscribe_list_unsubscribe",
            "test_well_formed_streams_without_data_are_accepted_and_silent",
        ],
        "test_sim_huobi.py": [
            "test_huobi_a_wrong_pong_does_not_count",
            "test_huobi_depth_is_pushed_once_a_second",
            "test_huobi_drops_a_client_right_before_the_third_unanswered_ping",
            "test_huobi_keeps_a_client_that_answers_pings",
            "test_huobi_kline_bars_start_on_their_period",
            "test_huobi_mbp_increments_rebuild_the_book",
            "test_huobi_unsub_acks_and_stops_the_pushes",
        ],
        "test_sim_okx.py": [
            "test_acks_echo_id_and_errors_use_the_documented_codes",
            "test_books_snapshot_then_updates_chain_by_seq_id_and_rebuild_the_book",
            "test_business_candles_and_trades_all",
            "test_idle_link_is_closed_with_4004_unless_data_or_pongs_flow",
            "test_orders_channel_pushes_documented_order_updates",
            "test_positions_snapshot_regular_pushes_and_event_updates",
            "test_positions_update_interval_zero_pushes_only_events",
        ],
        "test_simulator.py": [
            "test_no_thread_left_after_stop",
            "test_rate_sets_how_often_prices_are_pushed",
        ],
        "test_websocket.py": [
            "test_compression_bomb_drops_the_link_instead_of_the_memory",
            "test_text_frame_with_invalid_utf8_stays_str",
        ],
    }.items()
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        slow = SLOW.get(item.path.name)
        if slow and ("*" in slow or getattr(item, "originalname", item.name) in slow):
            item.add_marker(pytest.mark.slow)
