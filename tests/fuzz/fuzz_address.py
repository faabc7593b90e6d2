"""Fuzz target 1: the address parser (`dial.address.parse`, `split_host_port`, `redact`).

Properties:
- any str -> an `Address` with sane fields, or `AddressError` with a non-empty reason; never any
  other exception (the same for `split_host_port` on every target `parse` accepts);
- `redact` never raises, is idempotent, and never lets through a password written in a URL's
  userinfo (`scheme://user:PASSWORD@host`), alone or inside a longer text (a log line, a
  `proxy=` option) -- nor a secret field of a JSON payload;
- round trips: every valid option value comes back as written, and `payload=` text comes back
  unchanged (whatever `&`, `=` or `|` it holds), in any option order and with `|` or `||`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from hypothesis import assume
from hypothesis import strategies as st

from dial.address import (
    BACKOFF_KINDS,
    COMPRESS_CODECS,
    COMPRESS_MODES,
    MAX_SECONDS,
    OPTION_PARSERS,
    Address,
    Options,
    parse,
    redact,
    split_host_port,
)
from dial.errors import AddressError
from tests.fuzz.budget import prop

SCHEMES = ["ws", "wss", "tcp", "tls", "udp", "unix", "mqtt", "nats", "amqp", "kafka", "mysql"]
SCHEMES += ["postgres", "sqlite3", "clickhouse", "socks5", "http", "redis", "WS", "x+y.z-1"]
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")

# ---- checks (also used by the atheris harness and the regression tests) ----


def check_parse(text: str) -> Address | None:
    try:
        address = parse(text)
    except AddressError as exc:
        assert str(exc).strip(), f"AddressError without a reason: {text!r}"
        return None
    assert isinstance(address, Address)
    assert _SCHEME.fullmatch(address.scheme), address.scheme
    assert address.target and "|" not in address.target, address.target
    assert address.url == f"{address.scheme}://{address.target}"
    check_options(address.options)
    assert isinstance(repr(address), str)
    try:  # every transport validates its target this way: the same contract
        host, port = split_host_port(address.target, address.scheme, 80)
    except AddressError as exc:
        assert str(exc).strip()
    else:
        assert host and 0 < port <= 65535, (host, port)
    return address


def check_options(options: Options) -> None:
    assert options.compress in (None, *COMPRESS_CODECS)
    assert options.mode in COMPRESS_MODES
    assert options.backoff in BACKOFF_KINDS
    assert isinstance(options.interval, int) and 0 < options.interval <= 86_400_000
    assert isinstance(options.backoff_max, int) and 0 < options.backoff_max <= 86_400_000
    for seconds in (options.ping, options.pong, options.idle):
        assert seconds is None or (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS)
    for text in (options.payload, options.proxy, options.ping_text, options.pong_text):
        assert text is None or (isinstance(text, str) and text)
    assert options.given <= set(OPTION_PARSERS)


def check_redact(text: str) -> str:
    once = redact(text)
    assert isinstance(once, str)
    assert redact(once) == once, f"redact not idempotent: {text!r}"
    return once


def check_password_hidden(text: str, password: str) -> None:
    """`password` (written in `text` as URL userinfo) must not survive `redact(text)`."""
    shown = check_redact(text)
    if password in text.replace(f":{password}@", ":@") or not password.strip("*"):
        return  # the same characters occur elsewhere in the text (or in the *** mask)
    assert password not in shown, f"password shown: redact({text!r}) = {shown!r}"


# ---- strategies ----

_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCT = st.sampled_from(["%20", "%40", "%3A", "%2F", "%7C", "%25", "%E2%82%AC"])
# RFC 3986 userinfo: unreserved / pct-encoded / sub-delims / ":" -- plus a raw "@", which
# urlsplit (and every URL library dialkit hands the address to) reads as part of the userinfo.
_user_char = st.one_of(st.sampled_from(_UNRESERVED + _SUB_DELIMS), _PCT)
_password_char = st.one_of(st.sampled_from(_UNRESERVED + _SUB_DELIMS + ":@"), _PCT)
users = st.lists(_user_char, max_size=8).map("".join)
passwords = st.lists(_password_char, min_size=1, max_size=12).map("".join)
hosts = st.sampled_from(
    ["127.0.0.1", "h", "host.example", "[::1]", "tcp(h:3306)", "xn--bcher-kva.example"]
)
ports = st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}"))
paths = st.sampled_from(["", "/", "/ws", "/db?x=1&y=2", "/ws/!ticker@arr", "/?queue=q", "/a:1@b"])
prefixes = st.sampled_from(["", "Dial('", "connect to ", "ws://h/|proxy=", "x\n", "two: "])
suffixes = st.sampled_from(["", "'", "|compress=gzip", "||payload=a|b", " failed: refused", "\n"])


@st.composite
def userinfo_urls(draw: st.DrawFn) -> tuple[str, str]:
    scheme = draw(st.sampled_from(SCHEMES))
    user, password = draw(users), draw(passwords)
    url = f"{scheme}://{user}:{password}@{draw(hosts)}{draw(ports)}{draw(paths)}"
    assume(urlsplit(url).password == password)  # what every URL library reads as the password
    return f"{draw(prefixes)}{url}{draw(suffixes)}", password


def _value_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                *COMPRESS_CODECS,
                *COMPRESS_MODES,
                *BACKOFF_KINDS,
                "true",
                "FALSE",
                "Yes",
                "0",
                "1",
                "10",
                "0.5",
                "1e400",
                "nan",
                "-inf",
                "1_000",
                "²",
                "١٢",
                "9" * 5000,
                "socks5://u:p@127.0.0.1:1080",
                "socks5://[::1",
                "socks5://[zz]:1",
                "http://h:99999",
                "socks5://h:-1",
                "",
                "a=b",
                "|",
                "&",
            ]
        ),
        st.text(max_size=12),
    )


@st.composite
def address_like(draw: st.DrawFn) -> str:
    """Text shaped like an address, so the fuzzer reaches the option parsers."""
    scheme = draw(st.sampled_from([*SCHEMES, "", "1x", "ws:", "ws:/"]))
    target = draw(st.one_of(st.sampled_from(["h:1", "u:p@h:80/p", "[::1]:9", "", " "]), st.text()))
    names = st.one_of(st.sampled_from([*OPTION_PARSERS, "x", "", "payload"]), st.text(max_size=6))
    options = draw(st.lists(st.tuples(names, _value_text()), max_size=5))
    rendered = "&".join(f"{name}={value}" for name, value in options)
    separator = draw(st.sampled_from(["|", "||", "|||", ""]))
    space = draw(st.sampled_from(["", " ", "\n", "\t "]))
    return f"{space}{scheme}://{target}{separator}{rendered}{space}"


_KNOWN_OPTION = re.compile("&(?:" + "|".join(map(re.escape, OPTION_PARSERS)) + ")=")
payload_texts = st.text(st.characters(blacklist_characters="\x00"), min_size=1).filter(
    lambda text: not _KNOWN_OPTION.search(text)
)


@st.composite
def valid_options(draw: st.DrawFn) -> dict[str, str]:
    """Option name -> its value as written, valid together (the `_REQUIRES` rules hold)."""
    seconds = st.floats(min_value=1e-3, max_value=MAX_SECONDS).map(repr)
    booleans = st.sampled_from(["true", "false", "True", "1", "0", "yes", "no", "ON", "off"])
    chosen: dict[str, Any] = {
        "compress": st.sampled_from(COMPRESS_CODECS),
        "mode": st.sampled_from(COMPRESS_MODES),
        "reconnect": booleans,
        "interval": st.integers(1, 86_400_000).map(str),
        "enableCompression": booleans,
        "verify": booleans,
        "ping": seconds,
        "idle": seconds,
        "proxy": st.sampled_from(["socks5://127.0.0.1:1080", "socks5h://u:p%40@h:9050"]),
    }
    text_values = st.text(st.characters(blacklist_characters="\x00&"), min_size=1)
    chosen["pingText"] = text_values.filter(lambda t: t.strip() == t)
    chosen["pongText"] = text_values.filter(lambda t: t.strip() == t)
    options = {name: draw(values) for name, values in chosen.items() if draw(st.booleans())}
    if "ping" in options and draw(st.booleans()):
        options["pong"] = draw(seconds)
    if "ping" not in options:
        options.pop("pingText", None)
    if "pingText" not in options:
        options.pop("pongText", None)
    if draw(st.booleans()):
        options["backoff"] = "exp"
        if draw(st.booleans()):
            options["backoffMax"] = str(draw(st.integers(1, 86_400_000)))
    return options


def _expected(name: str, written: str) -> object:
    if name in ("reconnect", "enableCompression", "verify"):
        return written.lower() in ("true", "1", "yes", "on")
    if name in ("interval", "backoffMax"):
        return int(written)
    if name in ("ping", "pong", "idle"):
        return float(written)
    return written


# ---- properties ----


@prop(text=st.one_of(st.text(), address_like(), st.binary().map(lambda b: b.decode("latin-1"))))
def address_parse_any_text(text: str) -> None:
    check_parse(text)


@prop(case=userinfo_urls())
def redact_hides_url_password(case: tuple[str, str]) -> None:
    check_password_hidden(*case)


@prop(
    secret=st.text(min_size=3),
    key=st.sampled_from(["passphrase", "secret_key", "apiKey", "sign", "password", "token"]),
)
def redact_hides_json_secret(secret: str, key: str) -> None:
    payload = json.dumps({"op": "login", "args": [{key: secret, "x": 1}]})
    shown = check_redact(f"wss://h/ws|payload={payload}")
    try:  # still JSON, with the whole value masked
        masked = json.loads(shown.split("|payload=", 1)[1])
    except ValueError:
        raise AssertionError(f"secret partly shown: {payload} -> {shown}") from None
    assert masked["args"][0][key] == "***", f"secret shown: {payload} -> {shown}"


@prop(text=st.one_of(st.text(), address_like()))
def redact_any_text(text: str) -> None:
    check_redact(text)


@prop(
    options=valid_options(),
    order=st.randoms(use_true_random=False),
    separator=st.sampled_from(["|", "||"]),
    target=st.sampled_from(["h:1/p", "u:p@[::1]:9/ws?x=1&y=2", "127.0.0.1:8080"]),
)
def options_round_trip(options: dict[str, str], order: Any, separator: str, target: str) -> None:
    items = list(options.items())
    order.shuffle(items)
    rendered = "&".join(f"{name}={value}" for name, value in items)
    address = parse(f"wss://{target}{separator}{rendered}" if items else f"wss://{target}")
    assert address.target == target
    assert address.options.given == set(options)
    for name, written in options.items():
        field_name = OPTION_PARSERS[name][0]
        assert getattr(address.options, field_name) == _expected(name, written), name


@prop(
    payload=payload_texts,
    options=valid_options(),
    position=st.integers(0, 20),
    separator=st.sampled_from(["|", "||"]),
)
def payload_round_trip(payload: str, options: dict[str, str], position: int, separator: str):
    items = [f"{name}={value}" for name, value in options.items()]
    position = min(position, len(items))
    items.insert(position, f"payload={payload}")
    expected = payload  # written last, it keeps its trailing whitespace too
    address = parse(f"ws://h:1/p{separator}{'&'.join(items)}")
    assert address.options.payload == expected, (payload, items)


PROPERTIES = [
    address_parse_any_text,
    redact_hides_url_password,
    redact_hides_json_secret,
    redact_any_text,
    options_round_trip,
    payload_round_trip,
]
