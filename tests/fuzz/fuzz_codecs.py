"""Fuzz target 2: the per-message codecs (`dial.codecs`: gzip, gzip_raw, deflate, zlib).

The contract (dial/codecs.py): `decode(data)` returns the inflated message, or None when `data`
is not one whole compressed stream (the frame then passes through untouched), and raises
`MessageTooLarge` -- never another exception -- when the message would inflate past
`MAX_DECODED_BYTES` (32 MiB), without ever holding much more than that in memory.

Properties: round trip `decode(encode(x)) == x`; arbitrary bytes and mutated valid streams give
bytes/None/MessageTooLarge and agree with an independent zlib reference; a truncated stream is
None; concatenated members and trailing bytes never crash; compression bombs of any size past
the cap raise `MessageTooLarge`, with memory bounded, and a message of exactly the cap inflates.
"""

from __future__ import annotations

import functools
import tracemalloc
import zlib

from hypothesis import strategies as st

from dial.codecs import MAX_DECODED_BYTES, MessageTooLarge, get_codec
from tests.fuzz.budget import prop

CODECS = ("gzip", "gzip_raw", "deflate", "zlib")
_WBITS = {"gzip": 31, "gzip_raw": -15, "deflate": 15, "zlib": 15}
MEMORY_LIMIT = 3 * MAX_DECODED_BYTES  # peak Python allocations while refusing a bomb

# ---- checks ----


def reference(name: str, data: bytes) -> bytes | str | None:
    """What the contract says `decode` returns, computed with plain zlib (no size limit is
    needed: callers only pass data whose output is known to be small). gzip: every whole
    member in turn (RFC 1952), what follows the last one ignored; others: one stream."""
    out, rest, members = b"", data, 0
    while rest or not members:
        inflater = zlib.decompressobj(_WBITS[name])
        try:
            part = inflater.decompress(rest, MAX_DECODED_BYTES + 1)
        except zlib.error:
            break
        if len(out) + len(part) > MAX_DECODED_BYTES:
            return "too large"
        if not inflater.eof:
            break
        out, rest, members = out + part, inflater.unused_data, members + 1
        if name != "gzip":
            break
    return out if members else None


def check_decode(name: str, data: bytes) -> bytes | None:
    """Any input: bytes, None or MessageTooLarge, and the same answer as the reference."""
    codec = get_codec(name)
    assert codec is not None
    expected = reference(name, data)
    try:
        result = codec.decode(data)
    except MessageTooLarge as exc:
        assert str(exc), "MessageTooLarge without a reason"
        assert expected == "too large", f"{name}: refused {len(data)} bytes inflating to less"
        return None
    assert result is None or isinstance(result, bytes), type(result)
    assert expected != "too large", f"{name}: not refused: a message over the cap ({result!r:.40})"
    assert result == expected, f"{name}: decode gave {result!r:.80}, zlib says {expected!r:.80}"
    return result


def check_round_trip(name: str, message: bytes) -> None:
    codec = get_codec(name)
    assert codec is not None
    encoded = codec.encode(message)
    assert codec.decode(encoded) == message
    for cut in {0, 1, len(encoded) // 2, len(encoded) - 1}:
        if 0 <= cut < len(encoded):
            assert check_decode(name, encoded[:cut]) is None, f"{name}: truncated at {cut}"


@functools.lru_cache(maxsize=32)
def bomb(name: str, size: int) -> bytes:
    """`size` zero bytes, compressed (about 1000:1) in chunks so building it stays cheap."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, _WBITS[name])
    chunk, parts, left = bytes(1 << 20), [], size
    while left:
        parts.append(compressor.compress(chunk[: min(left, len(chunk))]))
        left -= min(left, len(chunk))
    parts.append(compressor.flush())
    return b"".join(parts)


def check_bomb(name: str, size: int, mutation: str = "") -> None:
    """A stream inflating to `size` bytes: refused past the cap, inflated up to it; the
    refusal allocates a bounded amount of memory whatever the size."""
    data = bomb(name, size)
    if mutation == "trailing":
        data += b"\x00garbage"
    elif mutation == "truncated":
        data = data[:-9]
    codec = get_codec(name)
    assert codec is not None
    tracemalloc.start()
    try:
        try:
            result = codec.decode(data)
        except MessageTooLarge:
            result = "refused"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{name}: decoding a {size}-byte bomb allocated {peak} bytes"
    expected = reference(name, data)
    if expected == "too large":
        # A cut stream is not one whole stream, so passing it through (None) is allowed too.
        allowed = ("refused", None) if mutation == "truncated" else ("refused",)
        assert result in allowed, f"{name}: a bomb was not refused ({size} bytes, {mutation})"
    elif expected is None:
        assert result is None, f"{name}: a broken stream inflated ({size} bytes, {mutation})"
    else:
        assert result == expected, f"{name}: {size} bytes ({mutation}) did not inflate"


# ---- strategies ----

codec_names = st.sampled_from(CODECS)
messages = st.one_of(
    st.binary(max_size=4096),
    st.text(max_size=1024).map(str.encode),
    st.integers(0, 200_000).map(lambda n: b"{" * 8 + b"a" * n),
)


@st.composite
def mutated_streams(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid stream, then a few flipped/inserted/deleted bytes, cuts and concatenations."""
    name = draw(codec_names)
    codec = get_codec(name)
    assert codec is not None
    data = bytearray(codec.encode(draw(messages)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "append", "concat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "cut":
            del data[at:]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=32))
        elif kind == "concat":
            data += codec.encode(draw(messages))
    return name, bytes(data)


_HEADERS = [b"\x1f\x8b\x08", b"\x1f\x8b\x08\x1f", b"\x78\x9c", b"\x78\x01", b"\x78\xda", b""]

# ---- properties ----


@prop(name=codec_names, message=messages)
def codec_round_trip(name: str, message: bytes) -> None:
    check_round_trip(name, message)


@prop(
    name=codec_names,
    data=st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.sampled_from(_HEADERS), st.binary(max_size=512)).map(b"".join),
    ),
)
def codec_decode_arbitrary_bytes(name: str, data: bytes) -> None:
    check_decode(name, data)


@prop(case=mutated_streams())
def codec_decode_mutated_stream(case: tuple[str, bytes]) -> None:
    check_decode(*case)


@prop(
    name=codec_names,
    first=messages,
    second=messages,
    junk=st.binary(max_size=16),
)
def codec_concatenated_members(name: str, first: bytes, second: bytes, junk: bytes) -> None:
    """Two whole streams back to back (RFC 1952 allows several gzip members) or one stream and
    trailing junk: never a crash; the first message is never silently mixed with the junk."""
    codec = get_codec(name)
    assert codec is not None
    for data in (codec.encode(first) + codec.encode(second), codec.encode(first) + junk):
        result = check_decode(name, data)
        assert result is None or result in (first, first + second), result


@prop(
    name=codec_names,
    size=st.one_of(
        st.sampled_from([MAX_DECODED_BYTES - 1, MAX_DECODED_BYTES, MAX_DECODED_BYTES + 1]),
        st.sampled_from([MAX_DECODED_BYTES + 4096, 2 * MAX_DECODED_BYTES, 8 * MAX_DECODED_BYTES]),
    ),
    mutation=st.sampled_from(["", "", "trailing", "truncated"]),
)
def codec_decompression_bomb(name: str, size: int, mutation: str) -> None:
    check_bomb(name, size, mutation)


PROPERTIES = [
    codec_round_trip,
    codec_decode_arbitrary_bytes,
    codec_decode_mutated_stream,
    codec_concatenated_members,
    codec_decompression_bomb,
]
