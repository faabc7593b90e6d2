"""The address grammar: `|` and `||`, every option, payloads with `=`, `&` and `|`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dial.address import Address, parse, redact
from dial.errors import AddressError


def test_target_and_options_split_on_first_bar() -> None:
    address = parse("wss://ws.okx.com:8443/ws/v5/public|compress=gzip_raw&mode=recv&reconnect=true")
    assert (address.scheme, address.target) == ("wss", "ws.okx.com:8443/ws/v5/public")
    assert address.options.compress == "gzip_raw"
    assert address.options.mode == "recv"
    assert address.options.reconnect is True
    assert address.options.interval == 1000


def test_double_bar_separator_allows_bars_in_values() -> None:
    address = parse('wss://h/ws||payload={"a":"x|y"}&interval=250')
    assert address.options.payload == '{"a":"x|y"}'
    assert address.options.interval == 250


def test_single_bar_also_allows_bars_in_payload() -> None:
    assert parse("ws://h/|payload=a|b|c").options.payload == "a|b|c"


def test_payload_keeps_equals_and_ampersands_until_next_known_option() -> None:
    payload = '{"method":"SUBSCRIBE","signature":["a2V5==","instruction=subscribe&window=5000"]}'
    address = parse(f"wss://h/ws|reconnect=true&payload={payload}&interval=500")
    assert address.options.payload == payload
    assert address.options.interval == 500


def test_payload_at_the_end_takes_everything() -> None:
    address = parse("ws://h/|payload=a=1&b=2&c")
    assert address.options.payload == "a=1&b=2&c"


@pytest.mark.parametrize(
    ("option", "field", "value"),
    [
        ("compress=gzip", "compress", "gzip"),
        ("compress=deflate", "compress", "deflate"),
        ("compress=zlib", "compress", "zlib"),
        ("mode=dual", "mode", "dual"),
        ("mode=send", "mode", "send"),
        ("reconnect=false", "reconnect", False),
        ("interval=10000", "interval", 10000),
        ("proxy=socks5://u:p@127.0.0.1:1080", "proxy", "socks5://u:p@127.0.0.1:1080"),
        ("enableCompression=true", "enable_compression", True),
        ("verify=false", "verify", False),
    ],
)
def test_every_option(option: str, field: str, value: object) -> None:
    assert getattr(parse(f"wss://h/|{option}").options, field) == value


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("localhost:80", "no scheme"),
        ("ws://", "no target"),
        ("ws://h/|bogus=1", "unknown option 'bogus'"),
        ("ws://h/|reconnect", "not name=value"),
        ("ws://h/|compress=gzip&&reconnect=true", "two '&' in a row"),
        ("ws://h/|reconnect=maybe", "expected true or false"),
        ("ws://h/|interval=-5", "milliseconds"),
        ("ws://h/|interval=abc", "milliseconds"),
        ("ws://h/|compress=brotli", "expected one of gzip"),
        ("ws://h/|mode=both", "expected one of recv"),
        ("ws://h/|proxy=http//x", "proxy"),
        ("ws://h/|proxy=socks5://host", "proxy"),
        ("ws://h/|interval=1&interval=2", "given twice"),
        ("ws://h/|payload=", "payload is empty"),
    ],
)
def test_malformed_addresses_raise_specific_errors(address: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse(address)


def test_non_string_address() -> None:
    with pytest.raises(AddressError, match="must be a string"):
        parse(12.5)


def test_redact_masks_passwords_everywhere() -> None:
    text = redact("mysql://root:hunter2@tcp(h:3306)/db|proxy=socks5://u:pw2@h:1080")
    assert "hunter2" not in text and "pw2" not in text
    assert "root:***@" in text and "u:***@" in text
    assert "hunter3" not in redact("postgres://user=a password=hunter3 host=h")


def test_redact_leaves_at_signs_in_paths_alone() -> None:
    assert redact("ws://127.0.0.1:8765/ws/!ticker@arr") == "ws://127.0.0.1:8765/ws/!ticker@arr"
    assert "p@h" not in redact("wss://u:p@h:1/ws/a@b")  # over-masking beats leaking


def test_redact_passwords_with_slashes_at_signs_spaces_tokens_and_json() -> None:
    cases = {
        "postgres://nobody:Xy/Secret9@127.0.0.1/db": "Secret9",
        "mysql://root:p@ss@tcp(h:3306)/db": "ss@tcp",
        "postgres://user=a password = 'a b' host=h": "a b",
        "nats://TOKEN123@127.0.0.1:4222?topic=t": "TOKEN123",
        'wss://h/ws|payload={"args":[{"apiKey":"k1","passphrase":"pp9","sign":"sg7"}]}': "pp9",
        "ws://h/|proxy=socks5://user:pw/x@127.0.0.1:1080": "pw/x",
    }
    for text, secret in cases.items():
        assert secret not in redact(text), text


def test_repr_of_address_hides_password() -> None:
    assert "hunter2" not in repr(parse("amqp://guest:hunter2@127.0.0.1:5672/?queue=q"))


@settings(max_examples=1500, deadline=None)
@given(st.text())
def test_any_string_gives_an_address_or_a_clean_error(text: str) -> None:
    try:
        result = parse(text)
    except AddressError as exc:
        assert str(exc)
    else:
        assert isinstance(result, Address)


option_names = st.sampled_from(
    ["compress", "mode", "reconnect", "interval", "payload", "proxy", "enableCompression", "x"]
)


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(["ws://h/", "wss://h:1/p", "tcp://h:1", "zz://q"]),
    st.sampled_from(["|", "||"]),
    st.lists(st.tuples(option_names, st.text(alphabet="=&|ab01gzipdual:/@", max_size=12))),
)
def test_option_strings_never_escape_as_other_exceptions(
    target: str, bar: str, pairs: list[tuple[str, str]]
) -> None:
    text = target + bar + "&".join(f"{name}={value}" for name, value in pairs)
    try:
        parse(text)
    except AddressError:
        pass
