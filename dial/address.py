"""Parse an FMZ-style address into (scheme, target, options). No I/O happens here.

Grammar::

    scheme://target[|name=value&name=value...]
    scheme://target[||name=value&name=value...]

The target never contains ``|``, so the *first* ``|`` ends it; a second ``|`` right after it is
part of the separator. Either form therefore accepts option values that contain ``|``.

Values are taken literally (no percent-decoding). The one value that may contain ``&`` and
``=`` is ``payload``: it runs up to the next ``&<known option>=`` or to the end of the string,
so a JSON or query-string payload needs no escaping. Put ``payload`` last when in doubt.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from urllib.parse import urlsplit

from .errors import AddressError

__all__ = ["Address", "Options", "deliver_start_time", "parse", "redact", "split_host_port"]

COMPRESS_CODECS = ("gzip", "gzip_raw", "deflate", "zlib")
COMPRESS_MODES = ("recv", "send", "dual")
PROXY_SCHEMES = ("socks5", "socks5h", "socks4", "http")
BACKOFF_KINDS = ("fixed", "exp")
ACK_MODES = ("auto", "manual")  # ack=: who acknowledges received broker messages
DELIVER_POLICIES = ("all", "new", "last", "last_per_subject")  # deliver=, besides seq:/time:
WS_ENGINES = ("websockets", "picows")  # engine=: which library speaks WebSocket (ws://, wss://)
MAX_SECONDS = 86_400.0
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Options:
    """Everything after the ``|``. Field names are the Python spelling of the option names."""

    compress: str | None = None
    mode: str = "recv"
    reconnect: bool = False
    interval: int = 1000  # milliseconds between reconnect attempts
    payload: str | None = None
    proxy: str | None = None
    enable_compression: bool = False  # permessage-deflate
    verify: bool = True  # TLS certificate verification
    ping: float | None = None  # seconds between heartbeats
    pong: float | None = None  # seconds a heartbeat may wait for its answer (default: ping)
    ping_text: str | None = None  # send this text instead of a WebSocket ping frame
    pong_text: str = "pong"  # the text answer to ping_text (swallowed, never read())
    idle: float | None = None  # seconds without a data message before the link is stale
    backoff: str = "fixed"  # "exp": capped exponential reconnect delay with jitter
    backoff_max: int = 30_000  # milliseconds, the cap of backoff=exp
    engine: str | None = None  # ws/wss: "websockets" or "picows"; None: chosen by dial.registry
    confirm: bool = False  # brokers: write() succeeds only once the broker accepted the message
    meta: bool = False  # read_message(): every message arrives with its Envelope
    ack: str = "auto"  # brokers: "manual" acknowledges only what conn.ack() is given
    stream: str | None = None  # nats: read and write through this JetStream stream
    durable: str | None = None  # nats with stream: the durable consumer that keeps the position
    deliver: str | None = None  # nats with stream: where a new consumer starts (DeliverPolicy)
    given: frozenset[str] = field(default=frozenset(), compare=False)  # names the user set


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise AddressError(f"option {name}={value!r}: expected true or false")


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        if value not in choices:
            raise AddressError(f"option {name}={value!r}: expected one of {', '.join(choices)}")
        return value

    return parse


def _parse_interval(name: str, value: str) -> int:
    # isascii: str.isdigit() also accepts "²", which int() refuses; at most 12 digits: int()
    # refuses more than 4300, and no valid value needs more than 8 (leading zeros aside).
    if (
        not (value.isascii() and value.isdigit())
        or len(value) > 12
        or not 0 < int(value) <= 86_400_000
    ):
        raise AddressError(f"option {name}={value!r}: expected milliseconds as a whole number > 0")
    return int(value)


def _parse_seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds <= MAX_SECONDS):  # also rejects nan and inf
        raise AddressError(f"option {name}={value!r}: expected seconds > 0, e.g. {name}=10")
    return seconds


def _parse_text(name: str, value: str) -> str:
    if value == "":
        raise AddressError(f"option {name} is empty")
    return value


def _parse_payload(name: str, value: str) -> str:
    if value == "":
        raise AddressError("option payload is empty")
    return value


def _parse_jetstream_name(name: str, value: str) -> str:
    """A JetStream stream or consumer name: the server forbids these characters."""
    if value == "" or any(ch.isspace() or ch in ".*>/\\" for ch in value):
        raise AddressError(
            f"option {name}={value!r}: expected a JetStream name (no spaces or . * > / \\)"
        )
    return value


def _parse_deliver(name: str, value: str) -> str:
    """JetStream's DeliverPolicy: all, new, last, last_per_subject, or a start given as
    seq:N (by_start_sequence) or time:RFC3339 (by_start_time)."""
    kind, colon, start = value.partition(":")
    if not colon and kind in DELIVER_POLICIES:
        return value
    if kind == "seq" and start.isascii() and start.isdigit() and len(start) <= 19 and int(start):
        return value
    if kind == "time" and deliver_start_time(start) is not None:
        return value
    raise AddressError(
        f"option {name}={value!r}: expected {', '.join(DELIVER_POLICIES)}, seq:N (N >= 1) "
        "or time:YYYY-MM-DDTHH:MM:SSZ"
    )


def deliver_start_time(text: str) -> datetime | None:
    """`deliver=time:...` as an aware datetime (UTC when no offset is given), or None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _parse_proxy(name: str, value: str) -> str:
    try:
        parts = urlsplit(value)
    except ValueError:  # "socks5://[::1" (unbalanced) or "socks5://[zz]:1" (not an IP address)
        raise AddressError(
            "option proxy: expected socks5://HOST:PORT (optionally USER:PASSWORD@ before HOST)"
        ) from None
    if parts.scheme.lower() not in PROXY_SCHEMES:
        raise AddressError(
            "option proxy: expected socks5://HOST:PORT (optionally USER:PASSWORD@ before HOST), "
            "got scheme "
            f"{parts.scheme or '(none)'!r}"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise AddressError(
            "option proxy: expected socks5://HOST:PORT (optionally USER:PASSWORD@ before HOST)"
        )
    return value


# option name in the address -> (field name, value parser)
OPTION_PARSERS = {
    "compress": ("compress", _parse_choice(COMPRESS_CODECS)),
    "mode": ("mode", _parse_choice(COMPRESS_MODES)),
    "reconnect": ("reconnect", _parse_bool),
    "interval": ("interval", _parse_interval),
    "payload": ("payload", _parse_payload),
    "proxy": ("proxy", _parse_proxy),
    "enableCompression": ("enable_compression", _parse_bool),
    "verify": ("verify", _parse_bool),
    "ping": ("ping", _parse_seconds),
    "pong": ("pong", _parse_seconds),
    "pingText": ("ping_text", _parse_text),
    "pongText": ("pong_text", _parse_text),
    "idle": ("idle", _parse_seconds),
    "backoff": ("backoff", _parse_choice(BACKOFF_KINDS)),
    "backoffMax": ("backoff_max", _parse_interval),
    "engine": ("engine", _parse_choice(WS_ENGINES)),
    "confirm": ("confirm", _parse_bool),
    "meta": ("meta", _parse_bool),
    "ack": ("ack", _parse_choice(ACK_MODES)),
    "stream": ("stream", _parse_jetstream_name),
    "durable": ("durable", _parse_jetstream_name),
    "deliver": ("deliver", _parse_deliver),
}
# option -> the option it only makes sense with
_REQUIRES = {
    "pong": "ping",
    "pingText": "ping",
    "pongText": "pingText",
    "backoffMax": "backoff",
    "durable": "stream",
    "deliver": "stream",
}
_OPTION_FIELDS = {f.name for f in fields(Options)}
_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Address:
    scheme: str  # lower-cased, e.g. "wss"
    target: str  # everything between "://" and the option separator
    options: Options

    @property
    def url(self) -> str:
        """The address without options, as the scheme's library expects it."""
        return f"{self.scheme}://{self.target}"

    def __repr__(self) -> str:
        return f"Address({redact(self.url)!r})"


def parse(address: object) -> Address:
    """Split an address into scheme, target and validated options, or raise `AddressError`."""
    if not isinstance(address, str):
        raise AddressError(f"address must be a string, got {type(address).__name__}")
    if "\x00" in address:
        raise AddressError("address contains a NUL character")
    stripped = address.lstrip()
    if not stripped.strip():
        raise AddressError("address is empty")
    target_part, bar, option_part = stripped.partition("|")
    if not bar:
        target_part = target_part.rstrip()
    if bar and option_part.startswith("|"):
        option_part = option_part[1:]
    match = _SCHEME.match(target_part)
    if not match:
        raise AddressError(
            f"address {redact(target_part)!r} has no scheme: expected scheme://target, "
            "e.g. wss://host/path"
        )
    scheme = match.group(1).lower()
    target = target_part[match.end() :]
    if not target:
        raise AddressError(f"address {scheme}:// has no target")
    return Address(scheme, target, _parse_options_keeping_payload_end(option_part))


def _parse_options_keeping_payload_end(text: str) -> Options:
    """Trailing whitespace belongs to a payload written last (`payload=PING\r\n`); after any
    other option it is forgiven, as around the whole address."""
    try:
        return parse_options(text)
    except AddressError:
        if text == text.rstrip():
            raise
        return parse_options(text.rstrip())


def parse_options(text: str) -> Options:
    values: dict[str, object] = {}
    given: set[str] = set()
    pos, end = 0, len(text)
    while pos < end:
        match = _NAME.match(text, pos)
        if not match:
            bad = text[pos:].split("&", 1)[0]
            if not bad:
                raise AddressError(
                    f"empty option at position {pos} of the options (two '&' in a row?)"
                )
            raise AddressError(f"option {bad!r} is not name=value")
        name = match.group(1)
        if name not in OPTION_PARSERS:
            raise AddressError(
                f"unknown option {name!r}; known options: {', '.join(OPTION_PARSERS)}"
            )
        if name in given:
            raise AddressError(f"option {name!r} given twice")
        start = match.end()
        stop = _payload_end(text, start) if name == "payload" else text.find("&", start)
        stop = end if stop < 0 else stop
        field_name, parse_value = OPTION_PARSERS[name]
        values[field_name] = parse_value(name, text[start:stop])
        given.add(name)
        pos = stop + 1
    for name, needed in _REQUIRES.items():
        if name in given and needed not in given:
            raise AddressError(f"option {name} needs {needed}= as well")
    if "backoffMax" in given and values.get("backoff") != "exp":
        raise AddressError("option backoffMax only applies to backoff=exp")
    if values.get("ack") == "manual":
        values["meta"] = True  # conn.ack() takes the envelopes read_message() returned
    return Options(**values, given=frozenset(given))  # type: ignore[arg-type]


def _payload_end(text: str, start: int) -> int:
    pattern = re.compile("&(?:" + "|".join(map(re.escape, OPTION_PARSERS)) + ")=")
    match = pattern.search(text, start)
    return match.start() if match else -1


def split_host_port(target: str, scheme: str, default_port: int | None = None) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) from the start of a target, validated."""
    authority = target.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    try:
        parts = urlsplit(f"//{authority}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise AddressError(f"{scheme}://{redact(target)}: bad host or port ({exc})") from None
    if not host:
        raise AddressError(f"{scheme}://{redact(target)}: missing host")
    if port is None:
        if default_port is None:
            raise AddressError(f"{scheme}://{redact(target)}: missing port (expected host:port)")
        port = default_port
    if port == 0:
        raise AddressError(f"{scheme}://{redact(target)}: port 0 is not dialable")
    return host, port


# `//user:password@`: everything up to the last "@" before whitespace or "|" is masked, so a
# password containing "/" or "@" does not leak (a URL path with "@" after a port is left alone).
_USERINFO = re.compile(r"(//[^:/@\s|]*:)(?!\d+(?:[/?#|]|$))[^\s|]*@")
_NATS_TOKEN = re.compile(r"(nats://)[^:/@\s|]+@", re.IGNORECASE)  # nats://TOKEN@host
_SECRET_WORDS = r"password|passwd|pwd|pass|secret|secret_key|passphrase|token|sasl_password"
_SECRET_PARAM = re.compile(
    rf"((?:{_SECRET_WORDS})\s*=\s*)('(?:[^'\\]|\\.)*'[^&\s|;]*|[^&\s|;]*)", re.IGNORECASE
)
_SECRET_JSON = re.compile(
    rf"(\"(?:{_SECRET_WORDS}|sign|signature|apiKey|api_key)\"\s*:\s*\")(?:[^\"\\]|\\.)*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Mask credentials: URL passwords (`//user:***@`), NATS tokens, `password=` style
    parameters and the secret fields of JSON payloads."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _NATS_TOKEN.sub(r"\1***@", text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    return _SECRET_JSON.sub(r"\1***", text)
