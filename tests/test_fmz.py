"""`dial.fmz`: the FMZ globals, and FMZ's own Python `Dial` examples (as scripts in
tests/fmz_scripts/, unchanged but for `from dial.fmz import *` and `main()`) run against the
simulator and a local TLS server through DIAL_REDIRECT."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pty
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import trustme

from dial import fmz
from dial.simulator import Simulator
from tests.servers.simulator import Script, script_env

SCRIPTS = Path(__file__).parent / "fmz_scripts"
TICKER_TABLE = {
    "type": "table",
    "title": "Ticker Chart",
    "cols": ["Currency", "Last", "Volume"],
    "rows": [["BTCUSDT", "65000.10", 12.5], ["ETHUSDT", "3200.00", 7]],
}


# -- time and numbers ----------------------------------------------------------------------------


def test_D_formats_milliseconds_seconds_and_now() -> None:
    stamp = datetime(2024, 3, 5, 7, 8, 9).timestamp()
    assert fmz._D(stamp * 1000) == "2024-03-05 07:08:09"
    assert fmz._D(stamp) == "2024-03-05 07:08:09"
    assert fmz._D(stamp * 1000, "yyyy/MM/dd hh:mm") == "2024/03/05 07:08"
    now = datetime.strptime(fmz._D(), "%Y-%m-%d %H:%M:%S")
    assert abs((datetime.now() - now).total_seconds()) < 2


def test_sleep_counts_milliseconds_and_unix_counts_seconds() -> None:
    started = time.monotonic()
    fmz.Sleep(120)
    assert 0.11 <= time.monotonic() - started < 1.0
    assert isinstance(fmz.Unix(), int) and abs(fmz.Unix() - time.time()) < 2
    assert abs(fmz.UnixNano() / 1e9 - time.time()) < 2


def test_N_truncates() -> None:
    assert fmz._N(3.14159, 2) == 3.14
    assert fmz._N(2.999, 1) == 2.9
    assert fmz._N(1234.5678) == 1234.5678


# -- exchange shim -------------------------------------------------------------------------------


def test_exchange_hmac_matches_okx_signing() -> None:
    message = "1700000000.123GET/users/self/verify"
    expected = base64.b64encode(hmac.new(b"secret", message.encode(), "sha256").digest()).decode()
    assert fmz.exchange.HMAC("sha256", "base64", message, "secret") == expected
    assert fmz.exchange.HMAC("md5", "hex", "abc", "k") == hmac.new(b"k", b"abc", "md5").hexdigest()


def test_exchange_encode() -> None:
    assert fmz.exchange.Encode("sha256", "raw", "hex", "abc") == hashlib.sha256(b"abc").hexdigest()
    signed = fmz.exchange.Encode("sha256", "string", "base64", "abc", "string", "key")
    assert signed == base64.b64encode(hmac.new(b"key", b"abc", "sha256").digest()).decode()
    assert fmz.exchange.Encode("raw", "hex", "base64", "6869") == "aGk="
    with pytest.raises(ValueError, match="not supported"):
        fmz.exchange.Encode("ed25519.seed", "raw", "base64", "abc")


# -- Log and LogStatus ---------------------------------------------------------------------------


def test_log_prints_a_timestamped_line_without_colour_codes_off_a_terminal(capsys) -> None:
    fmz.Log("price", 65000.5, {"side": "buy"}, "#FF0000")
    line = capsys.readouterr().out
    assert line.endswith('price 65000.5 {"side": "buy"}\n')
    datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
    assert "\x1b" not in line and "#FF0000" not in line


def test_log_push_marker_is_dropped(capsys) -> None:
    fmz.Log("filled@")
    assert capsys.readouterr().out.endswith(" filled\n")


def test_set_error_filter_hides_matching_lines(capsys) -> None:
    try:
        fmz.SetErrorFilter("timeout|502")
        fmz.Log("read timeout")
        fmz.Log("kept")
    finally:
        fmz.SetErrorFilter("")
    out = capsys.readouterr().out
    assert "timeout" not in out and "kept" in out


def test_log_status_renders_a_backtick_table(capsys) -> None:
    fmz.LogStatus("`" + json.dumps(TICKER_TABLE) + "`")
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "Ticker Chart",
        "+----------+----------+--------+",
        "| Currency | Last     | Volume |",
        "+----------+----------+--------+",
        "| BTCUSDT  | 65000.10 |   12.5 |",
        "| ETHUSDT  |  3200.00 |      7 |",
        "+----------+----------+--------+",
    ]


def test_status_with_text_several_tables_and_buttons() -> None:
    second = {"type": "table", "title": "Orders", "cols": ["id", "action"],
              "rows": [[1, {"type": "button", "cmd": "cancel", "name": "Cancel"}]]}  # fmt: skip
    text = fmz.render_status("Account\n`" + json.dumps([TICKER_TABLE, second]) + "`\nend")
    assert text.startswith("Account\nTicker Chart\n")
    assert "Orders" in text and "| Cancel |" in text
    assert text.endswith("\nend")


def test_status_leaves_other_backticks_alone() -> None:
    assert fmz.render_status("a `b` c") == "a `b` c"
    assert fmz.render_status("odd ` tick") == "odd ` tick"
    assert fmz.render_status('`{"type": "chart"}`') == '`{"type": "chart"}`'


def test_log_status_redraws_in_place_on_a_terminal() -> None:
    code = (
        "from dial.fmz import *\n"
        "LogStatus('first')\nLogStatus('second\\nline')\nLog('event')\nLogStatus('third')\n"
    )
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=follower, stderr=follower, env=script_env()
    )
    os.close(follower)
    seen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 5)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    process.wait(10)
    os.close(leader)
    text = seen.decode().replace("\r\n", "\n")
    assert process.returncode == 0
    # 'first' is erased (1 line) before 'second\nline' is drawn; the log line goes above the
    # status (2 lines erased, redrawn after it); 'third' replaces it.
    assert text.count("\x1b[1F\x1b[J") == 1
    assert text.count("\x1b[2F\x1b[J") == 2
    assert text.index("event") < text.rindex("second\nline") < text.index("third")


# -- Dial redirects ------------------------------------------------------------------------------


def test_rewrite_merges_options_and_respects_host_boundaries(monkeypatch) -> None:
    monkeypatch.setenv(
        fmz.REDIRECT_ENV, "wss://ws.okx.com:8443=ws://127.0.0.1:1|verify=false tls://a:1=tls://b:2"
    )
    assert fmz.rewrite("wss://ws.okx.com:8443/ws/v5/public|compress=gzip_raw&payload={}") == (
        "ws://127.0.0.1:1/ws/v5/public|verify=false&compress=gzip_raw&payload={}"
    )
    assert fmz.rewrite("wss://ws.okx.com:84430/x") == "wss://ws.okx.com:84430/x"
    assert fmz.rewrite("tls://a:1") == "tls://b:2"
    assert fmz.rewrite("tls://a:1||payload=x|y") == "tls://b:2||payload=x|y"


def test_failed_dial_logs_the_reason_and_returns_none(capsys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert fmz.Dial(f"ws://127.0.0.1:{port}/ws", 3) is None
    out = capsys.readouterr().out
    assert f"Dial(ws://127.0.0.1:{port}/ws) failed:" in out and "refused" in out


# -- FMZ's own examples --------------------------------------------------------------------------


@pytest.fixture
def fmz_simulator() -> Iterator[Simulator]:
    """Slow enough that FMZ's one-read-per-second loops keep up; knows FMZ's "xxx" keys."""
    with Simulator(
        rate=0.5,
        huobi_ping_interval=1.5,
        okx_credentials={"xxx": ("xxx", "xxx")},
        binance_legacy_ticker_arr=True,  # FMZ's example reads the retired !ticker@arr
    ) as sim:
        yield sim


def redirect_env(sim: Simulator, **extra: str) -> dict[str, str]:
    return script_env(DIAL_REDIRECT=sim.redirect_rules(), **extra)


def fmz_script(name: str, env: dict[str, str]) -> Script:
    return Script([sys.executable, str(SCRIPTS / name)], env=env)


@pytest.fixture
def tls_http_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Answers one HTTP request over TLS (certificate for localhost) and closes."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = socket.create_server(("127.0.0.1", 0))
    body = b"hello from a local TLS server"

    def serve() -> None:
        conn, _ = server.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            request = b""
            while b"\n\n" not in request and (chunk := tls.recv(4096)):
                request += chunk
            tls.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], ca_file
    thread.join(5)
    server.close()


def test_fmz_tls_example(tls_http_server: tuple[int, Path]) -> None:
    port, ca_file = tls_http_server
    env = script_env(
        DIAL_REDIRECT=f"tls://www.baidu.com:443=tls://localhost:{port}", SSL_CERT_FILE=str(ca_file)
    )
    script = fmz_script("tls_request.py", env)
    assert script.wait(30) == 0, script.err
    assert "HTTP/1.1 200 OK" in script.out
    assert "hello from a local TLS server" in script.out


def test_fmz_binance_table_example_ends_when_the_feed_closes(fmz_simulator: Simulator) -> None:
    fmz_simulator.set_rate(4)
    script = fmz_script("binance_ticker_table.py", redirect_env(fmz_simulator))
    assert script.wait_for("Ticker Chart", count=3), script.err
    fmz_simulator.drop_all()
    assert script.wait(20) == 0, script.err
    out = script.out
    assert out.startswith("Connecting...\n")
    assert "| Currency | Highest" in out and "| Update time         |" in out
    assert "| BTCUSDT  |" in out
    assert "Traceback" not in script.err


def test_fmz_okx_example_resubscribes_after_a_drop(fmz_simulator: Simulator) -> None:
    script = fmz_script("okx_public_reconnect.py", redirect_env(fmz_simulator))
    assert script.wait_for('"channel":"tickers","instId":"BTC-USDT"},"data"'), script.err
    fmz_simulator.drop_all()
    assert script.wait_for('"event":"subscribe"', count=2, seconds=20), script.out
    assert script.wait_for('"data"', count=script.out.count('"data"') + 1, seconds=20)
    assert "Current time:" in script.out
    assert script.interrupt() == 130
    assert script.out.rstrip().endswith(" exit"), "onexit() did not run"
    assert "Traceback" not in script.err


def test_fmz_huobi_example_answers_pings(fmz_simulator: Simulator) -> None:
    script = fmz_script("huobi_heartbeat.py", redirect_env(fmz_simulator))
    assert script.wait_for("Respond to ping, send pong:", count=3, seconds=30), script.out
    assert fmz_simulator.counters["huobi.pongs"] >= 2
    assert fmz_simulator.counters["huobi.heartbeat_drops"] == 0
    assert '"subbed":"market.btcusdt.detail"' in script.out
    assert script.interrupt() == 130
    assert "Execute the ws.close() function" in script.out
    assert "Traceback" not in script.err


def test_fmz_okx_private_example_logs_in_with_exchange_hmac(fmz_simulator: Simulator) -> None:
    script = fmz_script("okx_private_login.py", redirect_env(fmz_simulator))
    assert script.wait_for('"event":"login","code":"0"', seconds=20), script.out
    assert script.wait_for('"channel":"positions"', count=2, seconds=20), script.out
    assert fmz_simulator.counters["okx.logins"] == 1
    assert script.interrupt() == 130
    assert "Close the connection! None" in script.out
    assert "Traceback" not in script.err


def test_fmz_okx_private_on_connect_logs_in_afresh_after_drops(fmz_simulator: Simulator) -> None:
    """A login in `payload` would go stale; through `on_connect` each reconnect signs anew."""
    fmz_simulator.settings.okx_login_window = 1.0
    fmz_simulator.settings.okx_positions_interval = 0.2
    script = fmz_script("okx_private_on_connect.py", redirect_env(fmz_simulator))
    try:
        for logins in (1, 2, 3):
            assert script.wait_for("logged in at", count=logins, seconds=20), script.out
            assert script.wait_for('"channel":"positions"', count=2 * logins, seconds=20)
            time.sleep(1.2)  # longer than the login window: a replayed login would be refused
            fmz_simulator.drop_all()
        assert script.wait_for("logged in at", count=4, seconds=20), script.out
        assert fmz_simulator.counters["okx.logins"] == 4
        assert fmz_simulator.counters["okx.login_failures"] == 0
    finally:
        assert script.interrupt() == 130
    assert "Traceback" not in script.err


def test_fmz_script_sigterm_runs_onexit(fmz_simulator: Simulator) -> None:
    script = fmz_script("huobi_heartbeat.py", redirect_env(fmz_simulator))
    assert script.wait_for("ret:"), script.err
    script.process.terminate()
    assert script.wait(15) == 128 + 15
    assert "Execute the ws.close() function" in script.out


def test_scripts_are_the_fmz_examples_plus_two_lines() -> None:
    for path in SCRIPTS.glob("*.py"):
        lines = path.read_text().splitlines()
        assert lines[:2] == ["# ruff: noqa", "from dial.fmz import *"], path.name
        assert lines[-1] == "main()", path.name
