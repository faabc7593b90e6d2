"""A hostile WebSocket server for the fuzzers: a real asyncio TCP server on 127.0.0.1 that
completes a valid handshake, then sends whatever bytes the current `Script` holds (valid frames,
broken frames, garbage), in chunks, and ends the connection the way the script says.

`frame()` builds any frame, valid or not: every opcode, RSV bits, a mask the client must reject,
a declared length that differs from the payload, and non-minimal length encodings.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import zlib
from dataclasses import dataclass, field

from websockets.utils import accept_key

ENDINGS = ("close", "eof", "close_frame", "hold", "hold_silent", "reset")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
    length: int | None = None,
    form: str = "",
) -> bytes:
    """One frame as a server would send it. `length` overrides the declared payload length;
    `form` forces the 16-bit ("16") or 64-bit ("64") length encoding even when not needed."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    mask_bit = 0x80 if masked else 0
    if form == "64" or declared > 0xFFFF:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", declared & 0xFFFF_FFFF_FFFF_FFFF)
    elif form == "16" or declared > 125:
        head += bytes([mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([mask_bit | declared])
    if masked:
        key = b"\x01\x02\x03\x04"
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def deflate_message(data: bytes) -> bytes:
    """A permessage-deflate payload (RFC 7692): raw DEFLATE, sync-flushed, tail removed."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4] if out.endswith(b"\x00\x00\xff\xff") else out


@dataclass
class Script:
    """What the server does with the next client."""

    chunks: list[tuple[bytes, int]] = field(default_factory=list)  # (bytes, delay ms after)
    ending: str = "close"
    with_handshake: bool = False  # send the first chunk in the same write as the 101
    deflate: bool = False  # accept permessage-deflate when the client offers it
    hold_seconds: float = 10.0


class HostileServer:
    """One listening socket on a private loop thread; `script` is used for the next client."""

    def __init__(self) -> None:
        self.script = Script()
        self.active = 0  # connections whose handler has not finished
        self.served = 0
        self.errors: list[str] = []  # unexpected failures of the server itself
        self._idle = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-ws", daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def wait_idle(self, seconds: float) -> bool:
        """True once every accepted connection has been closed on the server side."""
        with self._idle:
            return self._idle.wait_for(lambda: self.active == 0, seconds)

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._idle:
            self.active += 1
            self.served += 1
        script = self.script
        try:
            await asyncio.wait_for(self._run(script, reader, writer), script.hold_seconds + 10)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away first: its right
        except Exception as exc:  # a bug in the fuzz server: reported by the fuzzer
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.transport.abort()
            with self._idle:
                self.active -= 1
                self._idle.notify_all()

    async def _run(
        self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        headers = {}
        for line in request.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(headers['sec-websocket-key'])}\r\n"
        )
        if script.deflate and "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            response += "Sec-WebSocket-Extensions: permessage-deflate\r\n"
        head = (response + "\r\n").encode()
        chunks = list(script.chunks)
        if script.with_handshake and chunks:
            (first, delay), chunks = chunks[0], chunks[1:]
            chunks.insert(0, (head + first, delay))
        else:
            writer.write(head)
        for data, delay_ms in chunks:
            writer.write(data)
            await writer.drain()
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
        await self._end(script, reader, writer)

    async def _end(
        self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        ending = script.ending
        if ending == "close":  # FIN, then read what the client still says (no RST: no loss)
            writer.write_eof()
            deadline = asyncio.get_running_loop().time() + 3
            while (await _read_client_frame(reader, deadline))[0] is not None:
                pass
            writer.close()
            return
        if ending == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if ending == "eof":
            writer.write_eof()
        elif ending == "close_frame":
            writer.write(frame(0x8, struct.pack("!H", 1000) + b"bye"))
        answer = ending != "hold_silent"
        deadline = asyncio.get_running_loop().time() + script.hold_seconds
        while asyncio.get_running_loop().time() < deadline:
            opcode, payload = await _read_client_frame(reader, deadline)
            if opcode is None:  # EOF or timeout
                return
            if opcode == 0x8 and answer and ending != "eof" and not writer.is_closing():
                writer.write(frame(0x8, payload[:2]))
                await writer.drain()
                writer.close()
                return


async def _read_client_frame(
    reader: asyncio.StreamReader, deadline: float
) -> tuple[int | None, bytes]:
    """One masked client frame, or (None, b"") at EOF or when `deadline` passes."""
    timeout = deadline - asyncio.get_running_loop().time()
    try:
        head = await asyncio.wait_for(reader.readexactly(2), max(0.0, timeout))
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        key = await reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
        data = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        return None, b""
    return head[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))
