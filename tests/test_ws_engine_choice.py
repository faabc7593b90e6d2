"""Which WebSocket engine serves a ws:// or wss:// address (`engine=`, and the automatic
choice in `dial.registry`), and the reasons given when the wanted one cannot."""

from __future__ import annotations

import sys

import pytest

import dial
from dial import Dial, last_error
from dial.connection import session_of
from dial.errors import AddressError, MissingDependency
from tests.conftest import WsServer

picows = pytest.importorskip("dial.transports.picows_engine", reason="[fast] extra missing")


def engine_of(conn) -> str:
    return session_of(conn).transport.engine


@pytest.fixture
def without_picows(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the [fast] extra were not installed (and nothing remembered about it)."""
    monkeypatch.setitem(sys.modules, "picows", None)
    monkeypatch.delitem(sys.modules, "dial.transports.picows_engine")
    monkeypatch.setattr(dial.registry, "_missing_engines", {})


def test_picows_is_used_automatically_when_installed(ws_server: WsServer) -> None:
    with Dial(ws_server.url) as conn:
        assert engine_of(conn) == "picows"


def test_engine_option_forces_either_engine(ws_server: WsServer) -> None:
    for engine in ("websockets", "picows"):
        with Dial(f"{ws_server.url}|engine={engine}&reconnect=true") as conn:
            assert engine_of(conn) == engine
            conn.write("echo:same")
            assert conn.read(3000) == "same"


def test_permessage_deflate_falls_back_to_websockets(ws_server: WsServer) -> None:
    with Dial(f"{ws_server.url}|enableCompression=true") as conn:
        assert engine_of(conn) == "websockets"
    with Dial(f"{ws_server.url}|enableCompression=false") as conn:
        assert engine_of(conn) == "picows"


def test_picows_with_permessage_deflate_is_refused_with_a_reason() -> None:
    with pytest.raises(AddressError, match="engine=picows has no permessage-deflate"):
        Dial("ws://127.0.0.1:1/|engine=picows&enableCompression=true", raise_errors=True)


def test_a_bad_engine_name_is_an_address_error() -> None:
    assert Dial("ws://127.0.0.1:1/|engine=fast") is None
    assert "option engine='fast': expected one of websockets, picows" in last_error()


def test_engine_is_only_an_option_of_websocket_addresses() -> None:
    assert Dial("tcp://127.0.0.1:1|engine=picows") is None
    assert "option engine is not supported for tcp://" in last_error()


def test_picows_asked_for_but_missing_names_the_fast_extra(without_picows: None) -> None:
    with pytest.raises(MissingDependency) as caught:
        Dial("ws://127.0.0.1:1/|engine=picows", raise_errors=True)
    assert "'picows'" in str(caught.value) and "[fast] extra" in str(caught.value)


def test_without_picows_the_reference_engine_serves(
    ws_server: WsServer, without_picows: None
) -> None:
    with Dial(ws_server.url) as conn:
        assert engine_of(conn) == "websockets"
        conn.write("echo:still works")
        assert conn.read(3000) == "still works"


def test_an_unsupported_picows_release_is_not_used() -> None:
    with pytest.raises(ImportError, match=r"picows>=2\.3,<3"):
        picows._check_version("3.1.0")
    with pytest.raises(ImportError, match="not supported"):
        picows._check_version("2.2.9")
    picows._check_version("2.3.1")
