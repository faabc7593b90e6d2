"""Decoding compressed exchange frames: stdlib zlib versus zlib-ng and ISA-L (isal).

A Huobi-like feed - small JSON messages, each gzip-compressed on its own (trade details,
klines, 20-level depth, and a 150-level depth snapshot now and then) - and the same messages
as raw DEFLATE (OKX's `compress=gzip_raw`), decoded the way `dial.codecs` decodes one frame:
a fresh decompressor per message, output bounded, end of stream checked. Each library is
timed in turns within each round, best round kept; the speed-up over stdlib zlib is printed.
The rule (issue 13): an alternative is used when installed only if it is >= 1.5x faster.

    python benchmarks/codecs.py [--messages 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import time
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

LIBRARIES = {"zlib": "zlib", "zlib-ng": "zlib_ng.zlib_ng", "isal": "isal.isal_zlib"}
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "gzip_raw": -zlib.MAX_WBITS}
LIMIT = 32 * 1024 * 1024  # dial.codecs.MAX_DECODED_BYTES


def huobi_messages(count: int, seed: int = 13) -> list[bytes]:
    """JSON as HTX (Huobi) pushes it, in the proportions of a busy subscription set."""
    rng = random.Random(seed)
    ts = 1_732_900_000_000

    def depth(levels: int) -> dict[str, Any]:
        mid = 65_000 + rng.random() * 100
        side = [[round(mid - i * 0.01, 2), round(rng.random() * 3, 4)] for i in range(levels)]
        return {
            "bids": side,
            "asks": [[p + 0.5, q] for p, q in side],
            "version": rng.getrandbits(40),
            "ts": ts,
        }

    messages = []
    for i in range(count):
        ts += rng.randint(1, 40)
        kind = i % 10
        if kind < 5:
            tick: Any = {
                "id": rng.getrandbits(40),
                "ts": ts,
                "data": [
                    {
                        "id": rng.getrandbits(64),
                        "ts": ts,
                        "tradeId": rng.getrandbits(36),
                        "amount": round(rng.random(), 6),
                        "price": round(65_000 + rng.random() * 100, 2),
                        "direction": rng.choice(("buy", "sell")),
                    }
                    for _ in range(rng.randint(1, 3))
                ],
            }
            channel = "market.btcusdt.trade.detail"
        elif kind < 7:
            price = 65_000 + rng.random() * 100
            tick = {
                "id": ts // 60_000 * 60,
                "open": price,
                "close": price + 1,
                "low": price - 2,
                "high": price + 3,
                "amount": rng.random() * 50,
                "vol": rng.random() * 3e6,
                "count": rng.randint(1, 5000),
            }
            channel = "market.btcusdt.kline.1min"
        elif kind < 9:
            tick = depth(20)
            channel = "market.btcusdt.depth.step0"
        else:
            tick = depth(150) if i % 50 == 9 else depth(20)
            channel = "market.btcusdt.mbp.150"
        messages.append(
            json.dumps({"ch": channel, "ts": ts, "tick": tick}, separators=(",", ":")).encode()
        )
    return messages


def compress(messages: list[bytes], wbits: int) -> list[bytes]:
    frames = []
    for message in messages:
        compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
        frames.append(compressor.compress(message) + compressor.flush())
    return frames


def decoder(module: ModuleType, wbits: int) -> Callable[[bytes], bytes | None]:
    """`dial.codecs`' per-frame decode, on `module` (zlib's API)."""
    decompressobj, error = module.decompressobj, module.error

    def decode(data: bytes) -> bytes | None:
        decompressor = decompressobj(wbits)
        try:
            decoded: bytes = decompressor.decompress(data, LIMIT)
        except error:
            return None
        return decoded if decompressor.eof else None

    return decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    modules: dict[str, ModuleType] = {}
    for name, module_name in LIBRARIES.items():
        try:
            modules[name] = importlib.import_module(module_name)
        except ImportError:
            print(f"{name}: not installed (pip install {name})")
    messages = huobi_messages(args.messages)
    plain = sum(map(len, messages))
    print(
        f"{len(messages):,} Huobi-like JSON messages, {plain / len(messages):.0f} bytes on average"
    )
    for codec, wbits in WBITS.items():
        frames = compress(messages, wbits)
        wire = sum(map(len, frames))
        decoders = {name: decoder(module, wbits) for name, module in modules.items()}
        for name, decode in decoders.items():  # same output, and warm
            assert [decode(frame) for frame in frames[:200]] == messages[:200], name
        best = dict.fromkeys(decoders, float("inf"))
        for _ in range(args.rounds):
            for name, decode in decoders.items():
                start = time.perf_counter()
                for frame in frames:
                    decode(frame)
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"\ncompress={codec}: {wire / len(frames):.0f} bytes per frame on the wire")
        print(f"{'library':<10}{'msg/s':>12}{'MB/s out':>10}{'x zlib':>8}")
        for name, seconds in best.items():
            rate = len(frames) / seconds
            speedup = best["zlib"] / seconds
            print(f"{name:<10}{rate:12,.0f}{plain / seconds / 1e6:10.1f}{speedup:8.2f}")
    print("\n(rule: use an alternative when installed only if >= 1.5x zlib)")


if __name__ == "__main__":
    main()
