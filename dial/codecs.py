"""Per-message payload codecs for `compress=` (applied by the WebSocket transport).

`gzip` is RFC 1952 (Huobi), `gzip_raw` raw DEFLATE, RFC 1951 (OKX), `deflate`/`zlib` the
zlib-wrapped RFC 1950 stream HTTP calls deflate. Decoding is lenient on purpose: a frame that
is not compressed (OKX's plain `pong`, a text frame) passes through untouched, and `decode`
says so by returning None, because what read() returns depends on it (see `dial.buffer`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["Codec", "get_codec"]

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "gzip_raw": -zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_WBITS["zlib"] = _WBITS["deflate"]


class Codec:
    """Compress/decompress whole messages with one zlib container format."""

    __slots__ = ("decode", "encode", "name")

    def __init__(self, name: str) -> None:
        wbits = _WBITS[name]
        self.name = name
        self.decode: Callable[[bytes], bytes | None] = _decoder(wbits)
        self.encode: Callable[[bytes], bytes] = _encoder(wbits)


MAX_DECODED_BYTES = 32 * 1024 * 1024  # a "compression bomb" larger than this is refused


class MessageTooLarge(ValueError):
    pass


def _decoder(wbits: int) -> Callable[[bytes], bytes | None]:
    decompressobj, error = zlib.decompressobj, zlib.error
    multi_member = wbits > zlib.MAX_WBITS  # gzip

    def decode(data: bytes) -> bytes | None:
        """The inflated message, or None when `data` is not one whole compressed stream.

        gzip may hold several members (RFC 1952 §2.2): all are inflated, in order; bytes
        after the last whole member that are not one are ignored, as gzip(1) does."""
        decoded, whole = b"", False  # whole: at least one member inflated to its end
        while True:
            decompressor = decompressobj(wbits)
            try:
                part = decompressor.decompress(data, MAX_DECODED_BYTES + 1 - len(decoded))
            except error:
                return decoded if whole else None
            if len(decoded) + len(part) > MAX_DECODED_BYTES:  # tail misses raw DEFLATE at +1
                raise MessageTooLarge(f"message inflates to more than {MAX_DECODED_BYTES} bytes")
            if not decompressor.eof:  # cut short: the first member is no stream, later junk
                return decoded if whole else None
            decoded, whole = decoded + part, True
            data = decompressor.unused_data
            if not multi_member or not data:
                return decoded

    return decode


def _encoder(wbits: int) -> Callable[[bytes], bytes]:
    def encode(data: bytes) -> bytes:
        compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
        return compressor.compress(data) + compressor.flush()

    return encode


def get_codec(name: str | None) -> Codec | None:
    return None if name is None else Codec(name)
