"""Raw tcp / tls / udp / unix sockets against real local echo servers."""

from __future__ import annotations

from dial import Dial, last_error
from tests.conftest import EchoServers, Socks, wait_until


def read_exactly(conn, size: int) -> bytes:
    """Join chunks until `size` bytes came; every chunk must be bytes (never str)."""
    chunks = []
    total = 0
    while total < size:
        chunk = conn.read(3000)
        assert chunk, f"stream ended after {total} of {size} bytes"
        assert type(chunk) is bytes, f"raw sockets read bytes, got {type(chunk).__name__}"
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def test_tcp_echo(echo_servers: EchoServers) -> None:
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}") as conn:
        assert conn.write("GET / HTTP/1.1\r\n\r\n") == 18
        assert read_exactly(conn, 18) == b"GET / HTTP/1.1\r\n\r\n"
        conn.write(b"\xff\x00")
        assert read_exactly(conn, 2) == b"\xff\x00"


def test_ascii_udp_datagram_is_bytes_so_struct_unpack_works(echo_servers: EchoServers) -> None:
    """An NTP-style binary reply that happens to be ASCII used to come back as str."""
    import struct

    with Dial(f"udp://127.0.0.1:{echo_servers.udp}") as conn:
        reply = struct.pack("!4sI", b"NTPx", 0x41424344)  # every byte is printable ASCII
        assert reply.decode("ascii") == "NTPxABCD"
        conn.write(reply)
        message = conn.read(3000)
        assert type(message) is bytes
        assert struct.unpack("!4sI", message) == (b"NTPx", 0x41424344)


def test_tcp_text_arrives_as_bytes(echo_servers: EchoServers) -> None:
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}") as conn:
        conn.write("plain ascii text")
        assert read_exactly(conn, 16) == b"plain ascii text"  # checks every chunk's type


def test_tcp_peer_close_gives_empty_string_then_write_zero(echo_servers: EchoServers) -> None:
    conn = Dial(f"tcp://127.0.0.1:{echo_servers.tcp}")
    conn.write("bye\n")
    assert conn.read(3000) == ""
    assert conn.write("more") == 0
    conn.close()


def test_tls_echo_verified(echo_servers: EchoServers, trust_test_ca: str) -> None:
    with Dial(f"tls://127.0.0.1:{echo_servers.tls}") as conn:
        conn.write("over tls")
        assert read_exactly(conn, 8) == b"over tls"


def test_tls_untrusted_fails_unless_verify_false(echo_servers: EchoServers, monkeypatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert Dial(f"tls://127.0.0.1:{echo_servers.tls}", timeout=3) is None
    assert "not trusted" in last_error()
    with Dial(f"tls://127.0.0.1:{echo_servers.tls}|verify=false") as conn:
        conn.write("insecure ok")
        assert read_exactly(conn, 11) == b"insecure ok"


def test_udp_one_datagram_per_read(echo_servers: EchoServers) -> None:
    with Dial(f"udp://127.0.0.1:{echo_servers.udp}") as conn:
        conn.write("first")
        conn.write("second")
        assert [conn.read(3000), conn.read(3000)] == [b"first", b"second"]


def test_unix_echo(echo_servers: EchoServers) -> None:
    with Dial(f"unix://{echo_servers.unix}") as conn:
        conn.write("over unix")
        assert read_exactly(conn, 9) == b"over unix"


def test_tcp_through_socks5_proxy(echo_servers: EchoServers, socks_proxy: Socks) -> None:
    with Dial(f"tcp://127.0.0.1:{echo_servers.tcp}|proxy={socks_proxy.url()}") as conn:
        conn.write("via proxy")
        assert read_exactly(conn, 9) == b"via proxy"


def test_tls_through_authenticated_proxy(
    echo_servers: EchoServers, socks_proxy_auth: Socks, trust_test_ca: str
) -> None:
    with Dial(f"tls://127.0.0.1:{echo_servers.tls}|proxy={socks_proxy_auth.url()}") as conn:
        conn.write("tls via proxy")
        assert read_exactly(conn, 13) == b"tls via proxy"


def test_stats_count_traffic(echo_servers: EchoServers) -> None:
    with Dial(f"udp://127.0.0.1:{echo_servers.udp}") as conn:
        for i in range(5):
            conn.write(f"d{i}")
        assert wait_until(lambda: conn.stats().messages_in == 5)
        stats = conn.stats()
        assert (stats.messages_out, stats.bytes_out, stats.buffered) == (5, 10, 5)


def test_fmz_scripts_read_text_from_raw_sockets(echo_servers: EchoServers) -> None:
    """FMZ hands scripts strings from tcp/udp (`Log(buf)`, `buf == ""`): the shim decodes."""
    from dial import fmz, wait

    conn = fmz.Dial(f"tcp://127.0.0.1:{echo_servers.tcp}")
    with conn:
        conn.write(b"caf\xc3\xa9 \xff")
        assert wait([conn], 3000) == [conn]  # still a connection dial.wait() accepts
        assert read_text(conn, "café \ufffd") == "café \ufffd"
    assert conn.read(-1) == ""  # closed: FMZ's empty string
    with fmz.Dial(f"udp://127.0.0.1:{echo_servers.udp}") as udp:
        udp.write("datagram")
        assert udp.read(3000) == "datagram"


def read_text(conn, wanted: str) -> str:
    text = ""
    while len(text) < len(wanted):
        chunk = conn.read(3000)
        assert isinstance(chunk, str) and chunk, f"got {chunk!r} after {text!r}"
        text += chunk
    return text


def test_every_sender_waiting_for_room_is_released() -> None:
    """Regression: each waiting sender made a future of its own and the second orphaned the
    first, so the session's one drain task could wait forever (writes then vanished)."""
    import asyncio

    from dial.transports.socket import StreamProtocol

    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport, protocol = await loop.create_connection(StreamProtocol, "127.0.0.1", port)
        done: list[str] = []

        async def sender(name: str) -> None:
            await protocol.drain()
            done.append(name)

        protocol.pause_writing()  # the send buffer is full
        first = asyncio.ensure_future(sender("drain task"))
        second = asyncio.ensure_future(sender("heartbeat"))
        await asyncio.sleep(0.01)
        assert done == []
        protocol.resume_writing()
        await asyncio.wait_for(asyncio.gather(first, second), 2)
        transport.close()
        server.close()
        return done

    assert sorted(asyncio.run(scenario())) == ["drain task", "heartbeat"]
