"""Coverage-guided byte fuzzing of the pure parsers with atheris (libFuzzer for Python).

`python -m tests.fuzz.atheris_main TARGET [libFuzzer flags]`, TARGET one of address, codecs,
plugin; `python -m tests.fuzz` runs it with the budget from the environment. The same checks as
the hypothesis properties run on each input; a failure is printed once per distinct signature
(`NEW FAILURE ...` with the input) and the run goes on, so one known defect cannot hide others.
"""

from __future__ import annotations

import os
import sys
import traceback

import atheris

with atheris.instrument_imports(include=["dial"]):
    import dial.address
    import dial.codecs
    import dial.plugin.server

from tests.fuzz.budget import signature
from tests.fuzz.fuzz_address import check_parse, check_redact
from tests.fuzz.fuzz_codecs import CODECS, check_decode
from tests.fuzz.fuzz_plugin import check_parse_call

_seen: set[str] = set()


def address(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")  # dictionary tokens stay readable
    check_parse(text)
    check_redact(text)


def codecs(data: bytes) -> None:
    if data:
        check_decode(CODECS[data[0] % len(CODECS)], data[1:])


def plugin(data: bytes) -> None:
    header = None if not data or data[0] < 128 else data[1:9].decode("latin-1")
    check_parse_call(data, header)


TARGETS = {"address": address, "codecs": codecs, "plugin": plugin}

# Tokens libFuzzer splices into inputs (-dict=), and a seed corpus: a byte fuzzer does not
# guess "interval=" by itself.
TOKENS = {
    "address": [
        *(f"{name}=" for name in dial.address.OPTION_PARSERS),
        *dial.address.COMPRESS_CODECS,
        *dial.address.COMPRESS_MODES,
        "ws://", "wss://", "tcp://", "mysql://", "socks5://", "nats://", "|", "||", "&", "@",
        ":", "[", "]", "//", "password=", '"passphrase":"', "true", "exp", "1e400", "\u00b2",
    ],
    "codecs": [b"\x1f\x8b\x08\x00", b"\x78\x9c", b"\x00\x00\xff\xff", b"\x01\x00\x00\xff\xff"],
    "plugin": [
        '"access_key":', '"secret_key":', '"method":', '"params":', '"nonce":', '"ticker"',
        '"symbol":', '"limit":', '"__api_/', "\\ud800", "1e999999", "[", "{", "}", "]",
    ],
}  # fmt: skip
SEEDS = {
    "address": [
        b"wss://u:p@h:443/ws|compress=gzip&mode=dual&reconnect=true&interval=500&payload=x=1&y",
        b"ws://h||ping=10&pong=5&pingText=p&pongText=q&idle=30&backoff=exp&backoffMax=9",
        b"tcp://h:1|proxy=socks5://u:pw@127.0.0.1:1080&verify=false&enableCompression=true",
    ],
    "codecs": [b"\x00" + dial.codecs.get_codec("gzip").encode(b"hello")],  # type: ignore[union-attr]
    "plugin": [
        b'{"access_key":"k","secret_key":"s","method":"ticker","params":{"symbol":"A_B"}}',
        b'{"access_key":"k","method":"__api_/x","params":{"a":[1,{"b":null}]},"nonce":1}',
    ],
}


def _escape(token: str | bytes) -> str:
    """A libFuzzer dictionary entry: printable ASCII as is, any other byte as \\xHH."""
    data = token if isinstance(token, bytes) else token.encode("utf-8", "surrogatepass")
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in data)


def prepare(name: str, directory: str) -> list[str]:
    """Write the dictionary and the seed corpus; returns the libFuzzer arguments for them."""
    corpus = os.path.join(directory, f"{name}-corpus")
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(SEEDS[name]):
        with open(os.path.join(corpus, f"seed-{i}"), "wb") as file:
            file.write(seed)
    dictionary = os.path.join(directory, f"{name}.dict")
    with open(dictionary, "w") as file:
        file.writelines(f'"{_escape(token)}"\n' for token in TOKENS[name])
    return [f"-dict={dictionary}", corpus]


def main() -> None:
    name = sys.argv[1]
    check = TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            check(data)
        except Exception as exc:
            sig = signature(exc)
            if sig not in _seen:
                _seen.add(sig)
                print(f"NEW FAILURE {name}: {sig}: input {data!r:.500}", flush=True)
                traceback.print_exc()

    flags = [arg for arg in sys.argv[2:] if arg.startswith("-")]
    directory = next((a.split("=", 1)[1] for a in flags if a.startswith("-artifact_prefix=")), "")
    extra = prepare(name, os.path.dirname(directory) or ".") if directory else []
    atheris.Setup([sys.argv[0], *flags, *extra], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
