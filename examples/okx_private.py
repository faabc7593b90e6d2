"""OKX v5 private channels: log in with an HMAC-SHA256 signature, then stream `orders` and
`positions` from wss://ws.okx.com:8443/ws/v5/private (checked against OKX's documentation of
August 2026).

OKX rejects a login whose timestamp is more than 30 s old, so the login cannot ride in the
static `payload` option. Instead `Dial(address, on_connect=login)` runs `login(link)` after
every (re)connect: it signs a FRESH timestamp, waits for OKX's answer and subscribes, and a
refused login fails that connect attempt (reported on stderr, never silently). With
`reconnect=true` the connection comes back by itself after a drop and logs in again.

Keys come from --api-key/--secret-key/--passphrase or OKX_API_KEY / OKX_SECRET_KEY /
OKX_PASSPHRASE (the simulator accepts demo-key / demo-secret / demo-passphrase).

    python examples/okx_private.py --url ws://127.0.0.1:8765/ws/v5/private --count 3
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://ws.okx.com:8443/ws/v5/private"
CHANNELS = ("orders", "positions")
LOGIN_WAIT = 5.0  # seconds to wait for OKX's answer to a login
PING_AFTER = 20.0  # seconds of silence before a "ping" (OKX closes a link idle for 30 s)
HEADER = f"{'time':<8} {'channel':<9} {'instrument':<15} {'side':<5} {'details'}"


class LoginFailed(Exception):
    pass


def login_message(api_key: str, secret_key: str, passphrase: str) -> str:
    """OKX's login: sign = base64(HMAC-SHA256(secret, timestamp + "GET/users/self/verify")),
    with the timestamp in seconds, taken now."""
    timestamp = f"{time.time():.3f}"
    mac = hmac.new(secret_key.encode(), f"{timestamp}GET/users/self/verify".encode(), "sha256")
    sign = base64.b64encode(mac.digest()).decode()
    args = {"apiKey": api_key, "passphrase": passphrase, "timestamp": timestamp, "sign": sign}
    return json.dumps({"op": "login", "args": [args]})


def subscribe_message(channels: Sequence[str]) -> str:
    return json.dumps(
        {"op": "subscribe", "args": [{"channel": c, "instType": "ANY"} for c in channels]}
    )


class Account:
    """Keys, and the `on_connect` hook that logs in with them on every (re)connect."""

    def __init__(self, keys: tuple[str, str, str], channels: Sequence[str]) -> None:
        self.keys = keys
        self.channels = channels
        self.failure: str | None = None  # why the last login was refused
        self.logins = 0

    def login(self, link: Any) -> None:
        """Send a freshly signed login, wait for OKX's answer, subscribe. Raises LoginFailed
        (failing this connect attempt) when OKX refuses or does not answer."""
        link.send(login_message(*self.keys))
        deadline = time.monotonic() + LOGIN_WAIT
        while True:
            try:
                answer = link.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._refused(f"no answer to login within {LOGIN_WAIT:g} s")
            event = _decode(answer)
            if event.get("event") == "login" and event.get("code") == "0":
                break
            if event.get("event") == "error":
                self._refused(f"OKX error {event.get('code')}: {event.get('msg')}")
        self.logins += 1
        self.failure = None
        print(f"logged in (connId {event.get('connId')}), login #{self.logins}", file=sys.stderr)
        link.send(subscribe_message(self.channels))

    def _refused(self, reason: str) -> None:
        self.failure = reason
        print(f"login failed: {reason}", file=sys.stderr, flush=True)
        raise LoginFailed(reason)


def _decode(message: str | bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(message)
    except ValueError:  # "pong"
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _clock(ts: str) -> str:
    return time.strftime("%H:%M:%S", time.localtime(int(ts) / 1000))


def rows(message: str | bytes) -> list[str]:
    """Printable lines of an `orders` or `positions` push; events go to stderr."""
    push = _decode(message)
    if push.get("event") in ("error", "notice"):
        print(f"OKX {push['event']} {push.get('code')}: {push.get('msg')}", file=sys.stderr)
    channel = push.get("arg", {}).get("channel")
    if "data" not in push or channel not in CHANNELS:
        return []
    if channel == "orders":
        return [
            f"{_clock(o['uTime']):<8} {'orders':<9} {o['instId']:<15} {o['side']:<5} "
            f"{o['state']} sz={o['sz']} px={o['px']} filled={o['accFillSz']}"
            for o in push["data"]
        ]
    return [
        f"{_clock(p['uTime']):<8} {'positions':<9} {p['instId']:<15} {p['posSide']:<5} "
        f"pos={p['pos']} avgPx={p['avgPx']} markPx={p['markPx']} upl={p['upl']}"
        for p in push["data"]
    ]


def _channels(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or any(item not in CHANNELS for item in items):
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(CHANNELS)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: OKX)")
    parser.add_argument("--count", type=int, help="stop after N orders/positions updates")
    parser.add_argument("--channels", type=_channels, default=list(CHANNELS),
                        help="comma list of orders, positions (default both)")  # fmt: skip
    parser.add_argument("--api-key", default=os.environ.get("OKX_API_KEY", "demo-key"))
    parser.add_argument("--secret-key", default=os.environ.get("OKX_SECRET_KEY", "demo-secret"))
    parser.add_argument("--passphrase", default=os.environ.get("OKX_PASSPHRASE", "demo-passphrase"))
    parser.add_argument(
        "--ping-after",
        type=float,
        default=PING_AFTER,
        help=f"send 'ping' after this many quiet seconds (default {PING_AFTER:g}; OKX: < 30)",
    )
    args = parser.parse_args(argv)

    account = Account((args.api_key, args.secret_key, args.passphrase), args.channels)
    ws = Dial(f"{args.url}|reconnect=true", on_connect=account.login)
    if not ws:
        if account.failure is None:  # a refused login was already reported by the hook
            print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    updates, drops, down, last_heard = 0, 0, False, time.monotonic()
    try:
        while args.count is None or updates < args.count:
            message = ws.read(1000)
            if message == "":  # dropped: reconnect=true dials again, and `login` runs again
                if not down:
                    down, drops = True, drops + 1
                    print(f"disconnected; reconnecting (#{drops})", file=sys.stderr)
                time.sleep(0.1)
                last_heard = time.monotonic()
                continue
            if message is None:
                if time.monotonic() - last_heard > args.ping_after:
                    ws.write("ping")
                    last_heard = time.monotonic()
                continue
            down, last_heard = False, time.monotonic()
            lines = rows(message)
            for line in lines:
                print(line, flush=True)
            updates += bool(lines)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
