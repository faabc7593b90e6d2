"""Fuzz target 3: the WebSocket receive path against a hostile server.

A real asyncio server on 127.0.0.1 (`hostile_ws.HostileServer`) completes a valid handshake and
then sends a generated script: valid messages (text, invalid UTF-8 text, binary, gzip/raw/zlib
compressed binary, fragmented with pings between the fragments, permessage-deflate when
negotiated), followed by hostile frames (reserved opcodes, RSV bits, masked frames, fragmented or
oversized control frames, orphan continuations, broken close frames, huge or lying length
headers, compressed garbage, compression bombs, raw garbage), cut into TCP chunks at random
points, and ends by FIN, EOF, a close frame, a reset, or by holding the line open.

`Dial(ws://127.0.0.1:PORT/|compress=...)`, on each WebSocket engine (websockets, and picows
when installed), must:
- never raise out of Dial/read/close, and never hang (every call returns within its timeout);
- deliver every valid message sent before the first hostile frame, in order and with the right
  type (text frame -> str, inflated binary -> str, other binary -> bytes), and nothing else
  when the script is all valid;
- record a reason when the link went down, and never one that reveals an internal bug caught by
  the receive safety net (`receive failed: KeyError ...`), a refused bomb excepted;
- free everything on close(): the server sees the socket closed, the thread and
  file-descriptor counts return to their baseline, and asyncio logs no error (such as
  "Future exception was never retrieved").
"""

from __future__ import annotations

import atexit
import gc
import importlib.util
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, field

from hypothesis import strategies as st

from dial import Dial, last_error
from dial.codecs import MAX_DECODED_BYTES
from tests.fuzz.budget import prop
from tests.fuzz.fuzz_codecs import bomb, reference
from tests.fuzz.hostile_ws import ENDINGS, HostileServer, Script, deflate_message, frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
CLOSE_LIMIT = 4.0  # seconds close() may take (the client waits 1 s for the closing handshake)
CASE_LIMIT = 10.0
LOSSY_ENDINGS = ("reset",)  # an RST may discard what the client had not read yet

# Both engines when picows (the `fast` extra) is installed; no engine= means the preferred one.
ENGINES: list[str | None] = [None, "websockets"]
if importlib.util.find_spec("picows") is not None:
    ENGINES.append("picows")

# ---- the server and the baselines, created on first use ----

_server: HostileServer | None = None
_baseline: dict[str, int] = {}


class _AsyncioErrors(logging.Handler):
    """Collects what asyncio logs at ERROR: 'Future exception was never retrieved' and the like
    mean an engine left an exception nobody looked at (one log line and traceback per case)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().replace("\n", " ")[:300])


_asyncio_errors = _AsyncioErrors()


def server() -> HostileServer:
    global _server
    if _server is None:
        _server = HostileServer()
        atexit.register(_server.stop)
        logging.getLogger("asyncio").addHandler(_asyncio_errors)
        run_case(Case(Script(chunks=[(frame(TEXT, b"warm-up"), 0)]), "", ["warm-up"], True))
        _baseline["threads"] = threading.active_count()
        _baseline["fds"] = _fd_count()
    return _server


def shutdown() -> None:
    """Stop the hostile server (the smoke test calls this; the campaign relies on atexit)."""
    global _server
    if _server is not None:
        atexit.unregister(_server.stop)
        _server.stop()
        _server = None
        _baseline.clear()
        logging.getLogger("asyncio").removeHandler(_asyncio_errors)


def _fd_count() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: skip the descriptor check
        return 0


# ---- one case ----


@dataclass
class Case:
    script: Script
    options: str  # the address options after "|"
    expected: list[str | bytes]  # what read() must return first, in order
    all_valid: bool  # nothing hostile: exactly `expected`, then the ending
    fatal: bool = False  # the first hostile frame is a protocol violation: the link must drop
    notes: list[str] = field(default_factory=list)  # what each item was, for the report

    def __repr__(self) -> str:
        chunks = [f"{len(data)}B+{delay}ms" for data, delay in self.script.chunks]
        return (
            f"Case(options={self.options!r}, ending={self.script.ending!r}, fatal={self.fatal}, "
            f"items={self.notes}, "
            f"chunks={chunks}, with_handshake={self.script.with_handshake}, "
            f"bytes={b''.join(d for d, _ in self.script.chunks)!r:.600})"
        )


def run_case(case: Case) -> None:
    """Play one script against Dial and check every property listed in the module doc."""
    srv = _server if _server is not None else server()
    srv.script = case.script
    srv.errors.clear()
    _asyncio_errors.messages.clear()
    started = time.monotonic()
    address = srv.url + (f"|{case.options}" if case.options else "")
    conn = Dial(address, timeout=5)
    assert conn is not None, f"Dial failed: {last_error()}"
    got: list[str | bytes] = []
    idle = 0
    try:
        while time.monotonic() - started < CASE_LIMIT:
            before = time.monotonic()
            message = conn.read(100)
            assert time.monotonic() - before < 2.0, "read(100) blocked for more than 2 s"
            if message is None:
                idle += 1
                if not case.fatal and len(got) >= len(case.expected) and idle >= 2:
                    break  # the server holds the line and has nothing more to say
                continue
            idle = 0
            # "" is also what an empty text message reads as: it means "down" only once the
            # link is down and nothing is left in the buffer.
            if message == "" and not conn.connected and conn.stats().buffered == 0:
                break
            assert isinstance(message, (str, bytes)), f"read() type: {type(message)}"
            got.append(message)
        reason = conn.stats().last_error if not conn.connected else None
        down_after = time.monotonic() - started
    finally:
        before = time.monotonic()
        conn.close()
        closing = time.monotonic() - before
    assert closing < CLOSE_LIMIT, f"close() hang: took {closing:.1f} s"
    before = time.monotonic()
    conn.read(100)  # after close: returns at once (a message still buffered, or "")
    assert time.monotonic() - before < 0.5, "read() after close() waited"

    n = len(case.expected)
    if case.script.ending in LOSSY_ENDINGS:
        assert got[:n] == case.expected[: len(got[:n])], f"wrong messages: {got[:n]!r:.300}"
    else:
        assert len(got) >= n, f"missing messages: got {len(got)} of {n}: {got!r:.300}"
        assert got[:n] == case.expected, f"wrong messages: {_diff(got, case.expected)}"
        if case.all_valid:
            assert len(got) == n, f"extra messages: {got[n:]!r:.300}"
    if case.fatal and case.script.ending in ("hold", "hold_silent"):
        # The server holds the line for hold_seconds: only the client can have dropped it.
        assert reason is not None, "link still up after a protocol violation"
        assert down_after < case.script.hold_seconds - 0.5, (
            f"link still up after a protocol violation: dropped by the server ({reason})"
        )
    if reason is not None:
        assert isinstance(reason, str) and reason.strip(), "link down without a reason"
        if "receive failed" in reason:
            assert "MessageTooLarge" in reason, f"internal error on receive: {reason}"
    assert srv.wait_idle(5), "server still sees the connection open after close()"
    assert not srv.errors, f"fuzz server error: {srv.errors}"
    gc.collect()  # an unretrieved future's exception is logged when the future is collected
    assert not _asyncio_errors.messages, f"asyncio error log: {_asyncio_errors.messages[0]}"
    if _baseline:
        _settle(lambda: threading.active_count() <= _baseline["threads"], "thread leak")
        _settle(lambda: _fd_count() <= _baseline["fds"], "file descriptor leak")


def _settle(condition, what: str, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            names = sorted(t.name for t in threading.enumerate())
            raise AssertionError(f"{what}: threads={names}, fds={_fd_count()} vs {_baseline}")
        time.sleep(0.02)


def _diff(got: list, expected: list) -> str:
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return f"message {i}: got {a!r:.120} expected {b!r:.120}"
    return f"{got!r:.200} vs {expected!r:.200}"


# ---- strategies ----

CODEC_OPTIONS = st.sampled_from(["gzip", "gzip", "gzip", "gzip_raw", "zlib", "deflate", None])
MODES = st.sampled_from(["recv", "recv", "dual", "send"])
payload_sizes = st.one_of(st.integers(0, 200), st.integers(0, 4096), st.just(70_000))


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    size = draw(payload_sizes)
    if size > 4096:
        return bytes(draw(st.integers(0, 255)) for _ in range(3)) * (size // 3)
    return draw(st.binary(min_size=size, max_size=size))


def _compress(kind: str, data: bytes) -> bytes:
    from dial.codecs import get_codec

    codec = get_codec(kind)
    assert codec is not None
    return codec.encode(data)


@dataclass
class Context:
    codec: str | None
    decodes: bool  # the codec applies to received frames (mode recv or dual)
    deflate: bool  # permessage-deflate negotiated


def _binary_expectation(ctx: Context, data: bytes) -> str | bytes | None:
    """What read() returns for a binary message; None: the link must drop (a bomb)."""
    if ctx.codec is None or not ctx.decodes:
        return data
    inflated = reference(ctx.codec, data)
    if inflated == "too large":
        return None
    if isinstance(inflated, bytes):
        return inflated.decode("utf-8", "surrogateescape")
    return data


@st.composite
def valid_item(draw: st.DrawFn, ctx: Context) -> tuple[bytes, list, str]:
    """A valid message (or control frame): its bytes, the messages it yields, a note."""
    kind = draw(st.sampled_from(["text", "text", "binary", "compressed", "ping", "pong"]))
    if kind in ("ping", "pong"):
        data = draw(st.binary(max_size=125))
        return frame(PING if kind == "ping" else PONG, data), [], f"{kind}({len(data)})"
    if kind == "text":
        data = draw(st.one_of(st.text(min_size=1).map(str.encode), payloads()))
        expected: str | bytes = data.decode("utf-8", "surrogateescape")
        opcode = TEXT
    else:
        opcode = BINARY
        if kind == "compressed":
            how = draw(st.sampled_from(["gzip", "gzip_raw", "zlib"]))
            data = _compress(how, draw(st.one_of(st.text(min_size=1).map(str.encode), payloads())))
            kind = f"binary/{how}"
        else:
            data = draw(payloads())
        expectation = _binary_expectation(ctx, data)
        if expectation is None:
            kind, expected = "bomb", ""
        else:
            expected = expectation
    if expected == "":  # read() cannot tell an empty text message from "disconnected"
        data, expected = b"x", "x" if opcode == TEXT else _binary_expectation(ctx, b"x")
    deflated = ctx.deflate and draw(st.booleans())
    wire = deflate_message(data) if deflated else data
    parts = draw(st.integers(1, 4)) if len(wire) > 1 else 1
    cuts = (
        sorted(draw(st.lists(st.integers(1, len(wire) - 1), max_size=parts - 1)))
        if parts > 1
        else []
    )
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    out = b""
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        rsv = 4 if deflated and i == 0 else 0
        out += frame(opcode if i == 0 else CONT, piece, fin=last, rsv=rsv)
        if not last and draw(st.booleans()):
            out += frame(draw(st.sampled_from([PING, PONG])), draw(st.binary(max_size=16)))
    note = f"{kind}({len(data)}B, {len(pieces)} frames{', deflated' if deflated else ''})"
    return out, [expected], note


@st.composite
def hostile_item(draw: st.DrawFn, ctx: Context) -> tuple[bytes, str, bool]:
    """Hostile bytes, a note, and whether they are a violation the client must drop for."""
    kind = draw(
        st.sampled_from(
            [
                "reserved_opcode",
                "rsv_bits",
                "masked",
                "long_control",
                "fragmented_control",
                "orphan_continuation",
                "data_during_fragments",
                "close_short",
                "close_bad_code",
                "close_bad_utf8",
                "close_valid",
                "huge_length",
                "lying_length",
                "non_minimal_length",
                "invalid_utf8_close_reason_fragment",
                "compressed_garbage",
                "bomb",
                "deflate_garbage",
                "deflate_bomb",
                "garbage",
                "http",
            ]
        )
    )
    data = draw(st.binary(max_size=64))
    if kind == "reserved_opcode":
        out = frame(draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])), data)
    elif kind == "rsv_bits":
        out = frame(draw(st.sampled_from([TEXT, BINARY, PING])), data, rsv=draw(st.integers(1, 7)))
    elif kind == "masked":
        out = frame(draw(st.sampled_from([TEXT, BINARY, CLOSE])), data, masked=True)
    elif kind == "long_control":
        out = frame(draw(st.sampled_from([PING, PONG, CLOSE])), bytes(draw(st.integers(126, 300))))
    elif kind == "fragmented_control":
        out = frame(PING, data, fin=False) + frame(CONT, data)
    elif kind == "orphan_continuation":
        out = frame(CONT, data, fin=draw(st.booleans()))
    elif kind == "data_during_fragments":
        out = frame(TEXT, b"a", fin=False) + frame(draw(st.sampled_from([TEXT, BINARY])), data)
    elif kind == "close_short":
        out = frame(CLOSE, b"\x03")
    elif kind == "close_bad_code":
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535]))
        out = frame(CLOSE, struct.pack("!H", code))
    elif kind == "close_bad_utf8":
        out = frame(CLOSE, struct.pack("!H", 1000) + b"\xff\xfe\xc3")
    elif kind == "close_valid":
        code = draw(st.sampled_from([1000, 1001, 1002, 1008, 1011, 3000, 4999]))
        out = frame(CLOSE, struct.pack("!H", code) + draw(st.text(max_size=40)).encode()[:123])
    elif kind == "huge_length":
        length = draw(st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**32, MAX_DECODED_BYTES + 1]))
        out = frame(draw(st.sampled_from([TEXT, BINARY, CONT])), data, length=length, form="64")
    elif kind == "lying_length":  # declares more than it sends, then the ending decides
        out = frame(draw(st.sampled_from([TEXT, BINARY])), data, length=len(data) + 1000)
    elif kind == "non_minimal_length":
        out = frame(TEXT, b"nm", form=draw(st.sampled_from(["16", "64"])))
    elif kind == "invalid_utf8_close_reason_fragment":
        out = frame(TEXT, b"\xe2\x82", fin=False) + frame(CONT, b"\xac\xff", fin=True)
    elif kind == "compressed_garbage":
        magic = draw(st.sampled_from([b"\x1f\x8b\x08\x00", b"\x78\x9c", b""]))
        out = frame(BINARY, magic + data)
    elif kind == "bomb":
        name = ctx.codec or "gzip"
        out = frame(BINARY, bomb(name, draw(st.sampled_from([MAX_DECODED_BYTES + 1, 40 << 20]))))
    elif kind == "deflate_garbage":
        out = frame(draw(st.sampled_from([TEXT, BINARY])), data, rsv=4)
    elif kind == "deflate_bomb":
        out = frame(BINARY, bomb("gzip_raw", 40 << 20), rsv=4)
    elif kind == "garbage":
        out = draw(st.binary(min_size=1, max_size=256))
    else:
        out = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    return (
        out,
        kind,
        kind in _FATAL
        or (kind == "rsv_bits" and _rsv_fatal(out, ctx))
        or (kind == "bomb" and ctx.decodes),
    )


_FATAL = {
    "reserved_opcode",
    "masked",
    "long_control",
    "fragmented_control",
    "orphan_continuation",
    "data_during_fragments",
    "close_short",
    "close_bad_code",
    "close_bad_utf8",
    "close_valid",
    "huge_length",
    "deflate_bomb",
}


def _rsv_fatal(out: bytes, ctx: Context) -> bool:
    rsv, opcode = out[0] >> 4 & 7, out[0] & 0x0F
    return not ctx.deflate or rsv & 3 != 0 or opcode >= 8


@st.composite
def cases(draw: st.DrawFn) -> Case:
    codec, mode = draw(CODEC_OPTIONS), draw(MODES)
    engine = draw(st.sampled_from(ENGINES))
    negotiate = engine != "picows" and draw(st.sampled_from([False, False, False, True]))
    options = [f"engine={engine}"] if engine else []
    if codec is not None:
        options.append(f"compress={codec}")
        if mode != "recv" or draw(st.booleans()):
            options.append(f"mode={mode}")
    if negotiate:
        options.append("enableCompression=true")
    ctx = Context(codec, codec is not None and mode in ("recv", "dual"), negotiate)
    blob, expected, notes = b"", [], []
    dropped = False
    for _ in range(draw(st.integers(0, 8))):
        data, messages, note = draw(valid_item(ctx))
        blob += data
        notes.append(note)
        if note.startswith("bomb"):
            dropped = True  # a refused bomb ends the link: nothing after it is expected
            break
        expected += messages
    hostile = draw(st.lists(hostile_item(ctx), max_size=3)) if not dropped else []
    for data, note, _ in hostile:
        blob += data
        notes.append(f"HOSTILE {note}")
    if hostile and draw(st.booleans()):  # valid frames after the hostile ones: unknown fate
        data, _, note = draw(valid_item(ctx))
        blob += data
        notes.append(f"after: {note}")
    ending = draw(st.sampled_from([*ENDINGS, "close", "close", "close_frame", "eof"]))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(blob) - 1)), max_size=5))))
    pieces = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True) if blob[a:b]]
    delays = st.sampled_from([0, 0, 0, 1, 5, 20])
    script = Script(
        chunks=[(piece, draw(delays)) for piece in pieces],
        ending=ending,
        with_handshake=draw(st.booleans()),
        deflate=negotiate,
        hold_seconds=3.0,
    )
    fatal = dropped or bool(hostile and hostile[0][2])
    all_valid = not hostile and not dropped
    return Case(script, "&".join(options), expected, all_valid, fatal=fatal, notes=notes)


# ---- properties ----


@prop(case=cases())
def websocket_hostile_server(case: Case) -> None:
    server()
    try:
        run_case(case)
    except AssertionError as exc:  # hypothesis may fail to replay a timing-dependent case
        raise AssertionError(f"{exc}\n    in {case!r}") from exc


PROPERTIES = [websocket_hostile_server]
