"""ws:// and wss:// against a real websockets server: codecs, payload, reconnect, TLS, proxy.

Every test here runs once per WebSocket engine (the `ws_engine` fixture: websockets, and
picows when the [fast] extra is installed): both must behave the same."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator

import pytest

from dial import Dial, last_error
from dial.connection import session_of
from tests.conftest import Socks, WsServer, wait_until

pytestmark = pytest.mark.usefixtures("ws_engine")


def engine_of(conn) -> str:
    return session_of(conn).transport.engine


def test_the_chosen_engine_serves_the_connection(ws_server: WsServer, ws_engine: str) -> None:
    with Dial(ws_server.url) as conn:
        assert engine_of(conn) == ws_engine
        conn.write("echo:hi")
        assert conn.read(3000) == "hi"


@pytest.mark.parametrize(
    ("compress", "command"),
    [("gzip", "gzip"), ("gzip_raw", "raw"), ("deflate", "zlib"), ("zlib", "zlib")],
)
def test_compressed_binary_frames_are_decoded(ws_server: WsServer, compress: str, command: str):
    with Dial(f"{ws_server.url}|compress={compress}&mode=recv") as conn:
        conn.write(f"{command}:hello {compress}")
        assert conn.read(3000) == f"hello {compress}"


def test_compression_bomb_drops_the_link_instead_of_the_memory(ws_server: WsServer) -> None:
    conn = Dial(f"{ws_server.url}|compress=gzip")
    conn.write("bomb:100000000")  # ~100 KB on the wire, 100 MB inflated
    assert conn.read(5000) == ""
    assert "inflates to more than" in conn.stats().last_error
    conn.close()


def test_uncompressed_frames_pass_through_the_codec(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|compress=gzip_raw") as conn:
        conn.write("pong")
        assert conn.read(3000) == "pong"
        conn.write("bin:00ff10")  # binary, not deflate data, not UTF-8
        assert conn.read(3000) == b"\x00\xff\x10"
        conn.write("bin:706f6e67")  # a binary "pong" the codec cannot inflate: bytes
        assert conn.read(3000) == b"pong"


def test_send_mode_compresses_outgoing_messages(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|compress=gzip&mode=send") as conn:
        conn.write("outgoing")
        echoed = conn.read(3000)  # the server echoes our binary frame; recv is not decoded
        assert gzip.decompress(echoed) == b"outgoing"
    assert gzip.decompress(ws_server.received[-1]) == b"outgoing"


def test_dual_mode_compresses_both_ways(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|compress=deflate&mode=dual") as conn:
        conn.write("both ways")
        assert conn.read(3000) == "both ways"
    assert zlib.decompress(ws_server.received[-1]) == b"both ways"


def test_enable_compression_negotiates_permessage_deflate(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|enableCompression=true") as conn:
        assert engine_of(conn) == "websockets"  # picows has no permessage-deflate
        conn.write("x" * 10_000)
        assert conn.read(3000) == "x" * 10_000
    assert "permessage-deflate" in ws_server.extensions[-1]
    with Dial(ws_server.url) as conn:
        assert conn.write("plain")
    assert "permessage-deflate" not in ws_server.extensions[-1]


def test_payload_is_sent_after_connect(ws_server: WsServer) -> None:
    with Dial(f'{ws_server.url}|payload={{"op":"subscribe","args":["a=b&c"]}}') as conn:
        assert conn.read(3000) == '{"op":"subscribe","args":["a=b&c"]}'


def test_read_type_follows_the_frame_kind_not_the_content(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        conn.write("echo:text frame")
        assert conn.read(3000) == "text frame"  # str
        conn.write(b"\xff\xfe\x00")
        assert conn.read(3000) == b"\xff\xfe\x00"
        conn.write("bin:68690a")  # valid UTF-8, but in a binary frame: still bytes
        assert conn.read(3000) == b"hi\n"


def test_inflated_binary_frames_are_str_even_when_not_utf8(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|compress=gzip") as conn:
        conn.write(gzip.compress(b'{"px":"\xff"}'))  # echoed back as a binary frame
        message = conn.read(3000)
        assert message == '{"px":"\udcff"}'  # str; surrogateescape keeps the stray byte
        assert message.encode("utf-8", "surrogateescape") == b'{"px":"\xff"}'
        conn.write("bin:68690a")  # binary, not gzip: the codec passes it through as bytes
        assert conn.read(3000) == b"hi\n"


@pytest.fixture
def raw_ws_server() -> Iterator[Callable[[bytes], str]]:
    """`start(frames)`: a one-client server that completes the WebSocket handshake, sends
    `frames` verbatim (valid or not), holds the line for a second and hangs up."""
    from websockets.utils import accept_key

    listeners: list[socket.socket] = []

    def start(frames: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            client, _ = listener.accept()
            request = client.recv(4096).decode()
            key = next(
                line.split(":", 1)[1].strip()
                for line in request.split("\r\n")
                if line.lower().startswith("sec-websocket-key")
            )
            client.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept_key(key).encode()
                + b"\r\n\r\n"
            )
            client.sendall(frames)
            time.sleep(1)
            client.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"ws://127.0.0.1:{listener.getsockname()[1]}/"

    yield start
    for listener in listeners:
        listener.close()


def test_text_frame_with_invalid_utf8_stays_str(raw_ws_server) -> None:
    """A sloppy server sending non-UTF-8 in a text frame must not kill the connection, and
    the frame is still a str (nothing lost: surrogateescape gives the bytes back)."""
    conn = Dial(raw_ws_server(b"\x81\x02\xff\xfe" + b"\x81\x02ok"))
    message = conn.read(2000)
    assert message == "\udcff\udcfe"
    assert message.encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert conn.read(2000) == "ok"
    assert conn.connected
    conn.close()


def test_reconnect_recovers_three_drops_and_resends_payload(ws_server: WsServer) -> None:
    conn = Dial(f"{ws_server.url}|reconnect=true&interval=100&payload=subscribe-me")
    assert conn.read(3000) == "subscribe-me"
    for drop in range(1, 4):
        ws_server.drop_all()
        assert wait_until(lambda: conn.read(-1) == "", 3)  # down: "" at once
        assert conn.write("during outage") in (0, len("during outage"))
        assert next_message(conn) == "subscribe-me", f"payload not re-sent after drop {drop}"
        assert conn.reconnects == drop
        conn.write(f"echo:after {drop}")
        assert conn.read(3000) == f"after {drop}"
    assert ws_server.received.count("subscribe-me") == 4
    assert ws_server.handshakes == 4
    conn.close()


def next_message(conn, seconds: float = 5.0):
    """Poll as an FMZ loop does: while reconnecting read() returns "" at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = conn.read(100)
        if message:
            return message
        time.sleep(0.01)
    return None


def test_without_reconnect_a_drop_is_final(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    ws_server.drop_all()
    assert wait_until(lambda: conn.read(-1) == "")
    time.sleep(0.3)
    assert conn.reconnects == 0 and ws_server.handshakes == 1
    assert conn.write("x") == 0
    conn.close()


def test_wss_verifies_against_ssl_cert_file(wss_server: WsServer, trust_test_ca: str) -> None:
    with Dial(wss_server.url) as conn:
        conn.write("echo:secure")
        assert conn.read(3000) == "secure"


def test_wss_untrusted_certificate_fails_with_reason(wss_server: WsServer, monkeypatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert Dial(wss_server.url, timeout=3) is None
    assert "certificate" in last_error() and "verify=false" in last_error()


def test_wss_verify_false_skips_verification(wss_server: WsServer, monkeypatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with Dial(f"{wss_server.url}|verify=false") as conn:
        conn.write("echo:unverified")
        assert conn.read(3000) == "unverified"


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_ws_through_socks5_proxy(ws_server: WsServer, socks_proxy: Socks, scheme: str) -> None:
    proxy = socks_proxy.url().replace("socks5://", f"{scheme}://")
    with Dial(f"{ws_server.url}|proxy={proxy}") as conn:
        conn.write("echo:proxied")
        assert conn.read(3000) == "proxied"


def test_wss_through_authenticated_socks5_proxy(
    wss_server: WsServer, socks_proxy_auth: Socks, trust_test_ca: str
) -> None:
    with Dial(f"{wss_server.url}|proxy={socks_proxy_auth.url()}&compress=gzip") as conn:
        conn.write("gzip:via auth proxy")
        assert conn.read(3000) == "via auth proxy"
        assert socks_proxy_auth.password not in repr(conn)


def test_wrong_proxy_password_fails_cleanly(
    ws_server: WsServer, socks_proxy_auth: Socks, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"{ws_server.url}|proxy={socks_proxy_auth.url(password='wrong-pw')}"
    start = time.monotonic()
    assert Dial(address, timeout=3) is None
    assert time.monotonic() - start < 4
    assert "proxy" in last_error()
    assert "wrong-pw" not in last_error() and "wrong-pw" not in caplog.text


def test_garbage_after_handshake_is_a_clean_disconnect(raw_ws_server) -> None:
    """A server that answers the handshake then sends bytes that are not WebSocket frames."""
    conn = Dial(raw_ws_server(b"\x81\x02ok" + b"\x8f\xff garbage that is not a frame"))
    assert conn.read(2000) == "ok"
    assert conn.read(2000) == ""
    assert "protocol error" in conn.stats().last_error
    conn.close()


def test_write_accepts_str_and_bytes_and_rejects_others(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        assert conn.write("héllo") == len("héllo".encode())
        assert conn.write(b"\x01\x02") == 2
        with pytest.raises(TypeError):
            conn.write(12345)
        assert conn.read(3000) == "héllo"


def test_fragmented_messages_are_joined_and_keep_their_frame_kind(raw_ws_server) -> None:
    text = b"\x01\x03hel" + b"\x00\x01l" + b"\x80\x01o"  # text: start, continue, end
    binary = b"\x02\x02\x00\xff" + b"\x80\x01\x10"  # binary: start, end
    conn = Dial(raw_ws_server(text + b"\x89\x00" + binary))  # a ping between messages
    assert conn.read(2000) == "hello"
    assert conn.read(2000) == b"\x00\xff\x10"
    assert conn.connected
    conn.close()


def test_a_continuation_without_a_start_is_a_protocol_error(raw_ws_server) -> None:
    conn = Dial(raw_ws_server(b"\x81\x02ok" + b"\x80\x02no"))
    assert conn.read(2000) == "ok"
    assert conn.read(2000) == ""
    assert "protocol error" in conn.stats().last_error
    conn.close()


def test_server_close_frame_gives_its_code_and_reason(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    conn.write("echo:before")
    conn.write("close")
    assert conn.read(3000) == "before"
    assert conn.read(3000) == ""
    assert conn.stats().last_error == "server closed the WebSocket (code 1001, going away)"
    assert conn.write("x") == 0
    conn.close()


def test_close_sends_a_normal_close_frame(ws_server: WsServer) -> None:
    conn = Dial(ws_server.url)
    conn.write("echo:x")
    assert conn.read(3000) == "x"
    assert wait_until(lambda: len(ws_server.connections) == 1)
    server_side = ws_server.connections[0]
    conn.close()
    assert wait_until(lambda: server_side.close_code is not None, 3)
    assert server_side.close_code == 1000


def test_a_large_message_arrives_whole(ws_server: WsServer) -> None:
    big = "y" * 3_000_000  # many socket reads, one message
    with Dial(ws_server.url) as conn:
        conn.write(f"echo:{big}")
        assert conn.read(5000) == big
        assert conn.stats().bytes_in > 3_000_000


def test_ping_on_demand_round_trip(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        rtt = conn.ping(3)
        assert rtt is not None and 0 <= rtt < 1
        assert conn.stats().last_rtt == rtt
