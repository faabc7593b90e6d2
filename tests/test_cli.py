"""The `dial` command: every verb against the simulator and local servers, including the
failure paths a user meets (bad address, server gone, wrong SQL). Errors must be one line."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from dial.cli import main
from dial.simulator import Simulator
from tests.servers.base import free_port, wait_port
from tests.servers.databases import mariadb_server
from tests.servers.simulator import Script, own_simulator, run, script_env, simulator

__all__ = ["mariadb_server", "own_simulator", "simulator"]  # fixtures used by name

DIAL = [sys.executable, "-m", "dial.cli"]
OKX_SUB = '{"op":"subscribe","args":[{"channel":"tickers","instId":"BTC-USDT"}]}'


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err
    assert lines[0].startswith("dial: error: ")
    return lines[0]


# -- read ----------------------------------------------------------------------------------------


def test_read_prints_n_messages_and_exits_0(simulator: Simulator, capsys) -> None:
    assert main(["read", simulator.url("binance"), "-n", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert all(json.loads(line)[0]["e"] == "24hrMiniTicker" for line in out)


def test_read_json_gives_one_envelope_per_line(simulator: Simulator, capsys) -> None:
    address = f"{simulator.url('okx')}|payload={OKX_SUB}"
    assert main(["read", address, "-n", "2", "--json"]) == 0
    envelopes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [envelope["kind"] for envelope in envelopes] == ["text", "text"]
    assert envelopes[0]["source"] == simulator.url("okx")
    assert json.loads(envelopes[0]["payload"])["event"] == "subscribe"
    assert json.loads(envelopes[1]["payload"])["arg"]["channel"] == "tickers"


def test_read_json_wraps_text_and_binary(simulator: Simulator, capsys) -> None:
    # Huobi frames read without the gzip codec are binary: base64 in --json
    address = f'{simulator.url("huobi")}|payload={{"sub":"market.btcusdt.detail","id":"1"}}'
    assert main(["read", address, "-n", "1", "--json"]) == 0
    envelope = json.loads(capsys.readouterr().out)
    assert envelope["kind"] == "binary" and "payload" not in envelope
    assert envelope["payload_b64"]


def test_read_bad_address_is_one_line(capsys) -> None:
    assert main(["read", "ws://127.0.0.1:80/x|nosuch=1"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "unknown option 'nosuch'" in line


def test_read_unknown_scheme(capsys) -> None:
    assert main(["read", "gopher://127.0.0.1:70"]) == 1
    assert "unsupported scheme 'gopher'" in one_error_line(capsys.readouterr().err)


def test_read_on_a_database_points_to_exec(capsys) -> None:
    assert main(["read", "sqlite3://:memory:"]) == 1
    assert "is a database: use `dial exec" in one_error_line(capsys.readouterr().err)


def test_simulate_bad_port_is_a_usage_error() -> None:
    result = subprocess.run(
        [*DIAL, "simulate", "--port", "99999"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "port must be 0-65535" in result.stderr and "Traceback" not in result.stderr


def test_read_server_gone_is_one_line(capsys) -> None:
    port = free_port()
    assert main(["read", f"ws://127.0.0.1:{port}/ws", "--connect-timeout", "3"]) == 1
    assert "refused" in one_error_line(capsys.readouterr().err)


def test_read_timeout_when_nothing_arrives(simulator: Simulator, capsys) -> None:
    # the OKX public feed says nothing until asked to subscribe
    started = time.monotonic()
    assert main(["read", simulator.url("okx"), "--timeout", "300"]) == 1
    assert "no message within 300 ms" in one_error_line(capsys.readouterr().err)
    assert time.monotonic() - started < 5


def test_read_reports_a_drop_before_n_messages(own_simulator: Simulator, capsys) -> None:
    timer = threading.Timer(1.0, own_simulator.drop_all)
    timer.start()
    try:
        code = main(["read", own_simulator.url("binance"), "-n", "1000"])
    finally:
        timer.cancel()
    captured = capsys.readouterr()
    assert code == 1
    line = one_error_line(captured.err)
    assert "disconnected after" in line and "of 1000 messages" in line
    assert "1012" in line
    assert 0 < len(captured.out.splitlines()) < 1000


def test_read_without_n_ends_0_when_the_peer_closes(own_simulator: Simulator, capsys) -> None:
    timer = threading.Timer(0.8, own_simulator.drop_all)
    timer.start()
    code = main(["read", own_simulator.url("binance")])
    timer.cancel()
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip()
    assert "dial: disconnected:" in captured.err


def test_read_with_reconnect_survives_a_drop(own_simulator: Simulator, capsys) -> None:
    options = f"reconnect=true&interval=100&payload={OKX_SUB}"
    address = f"{own_simulator.url('okx')}|{options}"
    timer = threading.Timer(0.8, own_simulator.drop_all)
    timer.start()
    code = main(["read", address, "-n", "25", "--timeout", "5000"])
    timer.cancel()
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 25
    acks = [line for line in lines if '"event":"subscribe"' in line]
    assert len(acks) == 2, "the payload was not re-sent after the reconnect"


def test_read_status_line_on_a_terminal(own_simulator: Simulator) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*DIAL, "read", f"{own_simulator.url('binance')}|reconnect=true&interval=100", "-n", "30"],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=script_env(),
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 20
    dropped = False
    while process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                seen += os.read(leader, 4096)
            except OSError:
                break
        if not dropped and b"msg/s" in seen:
            own_simulator.drop_all()
            dropped = True
    process.wait(10)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert process.returncode == 0
    assert "msg/s" in text and "drops 0" in text
    assert "reconnects 1" in text
    assert text.endswith("\r\x1b[K"), "the status line must be cleared at the end"


def test_no_status_line_when_stderr_is_not_a_terminal(simulator: Simulator) -> None:
    result = run([*DIAL, "read", simulator.url("binance"), "-n", "2"])
    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 2


def test_read_ctrl_c_exits_130_without_traceback(simulator: Simulator) -> None:
    script = Script([*DIAL, "read", simulator.url("binance")])
    assert script.wait_for("24hrMiniTicker")
    assert script.interrupt() == 130
    assert "Traceback" not in script.err


def test_read_into_a_closed_pipe_is_quiet(simulator: Simulator) -> None:
    reader = subprocess.Popen(
        [*DIAL, "read", simulator.url("binance")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=script_env(),
    )
    assert reader.stdout is not None
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(20) == 0
    assert b"Traceback" not in reader.stderr.read()


# -- write ---------------------------------------------------------------------------------------


class TcpSink:
    """A TCP server that keeps every byte it receives."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while chunk := conn.recv(65536):
                self.received += chunk

    def close(self) -> bytes:
        self.thread.join(10)
        self.server.close()
        return bytes(self.received)


def test_write_sends_each_message() -> None:
    sink = TcpSink()
    assert main(["write", f"tcp://127.0.0.1:{sink.port}", "hello ", "world"]) == 0
    assert sink.close() == b"hello world"


def test_write_reads_lines_from_stdin() -> None:
    sink = TcpSink()
    result = subprocess.run(
        [*DIAL, "write", f"tcp://127.0.0.1:{sink.port}"],
        input="one\ntwo\n",
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert sink.close() == b"onetwo"


def test_write_to_a_websocket_reaches_the_server(own_simulator: Simulator, capsys) -> None:
    sub = '{"sub":"market.btcusdt.detail","id":"cli"}'
    assert main(["write", own_simulator.url("huobi"), sub]) == 0
    assert own_simulator.counters["huobi.connections"] == 1


def test_write_server_gone_is_one_line(capsys) -> None:
    assert main(["write", f"tcp://127.0.0.1:{free_port()}", "x", "--connect-timeout", "3"]) == 1
    assert "refused" in one_error_line(capsys.readouterr().err)


def test_write_with_nothing_to_send(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["write", "tcp://127.0.0.1:9"]) == 1
    assert "nothing to write" in one_error_line(capsys.readouterr().err)


# -- exec ----------------------------------------------------------------------------------------


def test_exec_sqlite_prints_a_table(tmp_path: Path, capsys) -> None:
    address = f"sqlite3://{tmp_path / 'cli.db'}"
    assert main(["exec", address, "CREATE TABLE t (id INTEGER, name TEXT, price REAL)"]) == 0
    assert main(["exec", address, "INSERT INTO t VALUES (1, 'btc', 65000.5), (2, NULL, 0.25)"]) == 0
    assert main(["exec", address, "SELECT * FROM t ORDER BY id"]) == 0
    out = capsys.readouterr().out
    assert "OK, 2 rows affected" in out
    assert "| id | name | price   |" in out
    assert "|  1 | btc  | 65000.5 |" in out
    assert "|  2 | NULL |    0.25 |" in out
    assert "(2 rows)" in out


def test_exec_json(tmp_path: Path, capsys) -> None:
    assert main(["exec", "sqlite3://:memory:", "SELECT 1 AS one, 'x' AS s", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"columns": ["one", "s"], "values": [[1, "x"]]}


def test_exec_bad_sql_is_one_line(capsys) -> None:
    assert main(["exec", "sqlite3://:memory:", "SELEC 1"]) == 1
    assert "syntax error" in one_error_line(capsys.readouterr().err)


def test_exec_on_a_stream_address_explains(simulator: Simulator, capsys) -> None:
    assert main(["exec", simulator.url("binance"), "SELECT 1"]) == 1
    assert "not a database" in one_error_line(capsys.readouterr().err)


def test_exec_against_mariadb(mariadb_server: int, capsys) -> None:
    address = f"mysql://root@tcp(127.0.0.1:{mariadb_server})/test"
    assert main(["exec", address, "SELECT 1 + 1 AS two, 'dial' AS name"]) == 0
    out = capsys.readouterr().out
    assert "| two | name |" in out and "|   2 | dial |" in out


def test_exec_database_gone_is_one_line(capsys) -> None:
    address = f"mysql://root@tcp(127.0.0.1:{free_port()})/test"
    assert main(["exec", address, "SELECT 1", "--connect-timeout", "3"]) == 1
    one_error_line(capsys.readouterr().err)


# -- simulate, plugin, usage -----------------------------------------------------------------------


def test_simulate_serves_until_terminated() -> None:
    port = free_port()
    script = Script([*DIAL, "simulate", "okx", "--port", str(port), "--rate", "20"])
    try:
        assert script.wait_for("Ctrl-C stops it."), script.err
        assert f"ws://127.0.0.1:{port}/ws/v5/public" in script.out
        assert "binance" not in script.out.split("DIAL_REDIRECT")[0]
        assert "DIAL_REDIRECT=" in script.out
        assert (
            main(
                [
                    "read",
                    f"ws://127.0.0.1:{port}/ws/v5/public|payload={OKX_SUB}",
                    "-n",
                    "2",
                ]
            )
            == 0
        )
    finally:
        script.process.send_signal(signal.SIGTERM)
    assert script.wait() == 0
    assert "Traceback" not in script.err


def test_simulate_help_lists_every_venue_path_and_channel() -> None:
    result = run([*DIAL, "simulate", "--help"], seconds=30)
    assert result.returncode == 0, result.stderr
    for venue in ("binance", "okx", "huobi"):
        assert f"{venue} (stands in for wss://" in result.stdout
    for served in (
        "/ws/<stream>", "/stream?streams=", "@aggTrade", "@depth", "@kline_", "!miniTicker@arr",
        "/api/v3/depth", "/ws/v5/public", "/ws/v5/business", "/ws/v5/private", "books5",
        "bbo-tbt", "candle1m", "orders", "market.<symbol>.ticker", "depth.step0-5",
        "trade.detail", "bbo",
    ):  # fmt: skip
        assert served in result.stdout, served


def test_simulate_ctrl_c_exits_0() -> None:
    port = free_port()
    script = Script([*DIAL, "simulate", "--port", str(port)])
    assert script.wait_for("Ctrl-C stops it.")
    assert wait_port(port, 5)
    assert script.interrupt() == 0
    assert "Traceback" not in script.err


def test_simulate_busy_port_is_one_line(simulator: Simulator) -> None:
    result = run([*DIAL, "simulate", "--port", str(simulator.port)], seconds=30)
    assert result.returncode == 1
    assert "address already in use" in one_error_line(result.stderr)


def test_usage_errors_exit_2(capsys) -> None:
    assert main([]) == 2
    assert main(["read"]) == 2
    assert main(["simulate", "kraken"]) == 2
    assert main(["read", "ws://x", "-n", "0"]) == 1


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("dial ")


def test_plugin_verb_is_wired(capsys) -> None:
    code = main(["plugin", "--help"])
    assert code == 0
    assert "okx" in capsys.readouterr().out


def test_installed_entry_point(simulator: Simulator) -> None:
    dial = Path(sys.executable).parent / "dial"
    assert dial.exists(), "pip install -e . installs the `dial` entry point next to python"
    result = run([str(dial), "read", simulator.url("binance"), "-n", "1"])
    assert result.returncode == 0
    assert "24hrMiniTicker" in result.stdout


# -- library logs ---------------------------------------------------------------------------------


def _pipe_into_a_closed_kafka_port(*flags: str) -> subprocess.CompletedProcess[str]:
    """aiokafka logs its own "Unable connect" error when the broker is not there."""
    sink = f"kafka://127.0.0.1:{free_port()}/t"
    command = [*DIAL, *flags, "pipe", "ws://127.0.0.1:1/x", sink, "--connect-timeout", "5"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_library_logs_stay_off_stderr_without_verbose() -> None:
    result = _pipe_into_a_closed_kafka_port()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "cannot reach the broker" in line
    assert "Unable connect" not in result.stderr


def test_verbose_shows_library_logs_with_their_logger_name() -> None:
    result = _pipe_into_a_closed_kafka_port("-v")
    assert result.returncode == 1
    assert "aiokafka: Unable connect" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("dial: error: ")


def test_main_leaves_logging_as_it_found_it(capsys) -> None:
    import logging

    root, ours = logging.getLogger(), logging.getLogger("dial")
    handlers, level = list(root.handlers), ours.level
    main(["-v", "read", "ws://127.0.0.1:1/x", "-n", "1", "--connect-timeout", "1"])
    main(["read", "ws://127.0.0.1:1/x", "-n", "1", "--connect-timeout", "1"])
    assert root.handlers == handlers
    assert ours.level == level
