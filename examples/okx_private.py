"""OKX v5 private channel: log in with an HMAC-SHA256 signature, then stream `positions`.

A login is only valid for 30 seconds, so it cannot ride in `payload`; instead this example
notices a drop (`read()` returns "") and dials again, logging in afresh, as FMZ's OKX example
does. Keys come from --api-key/--secret-key/--passphrase or OKX_API_KEY / OKX_SECRET_KEY /
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
from typing import Any

from dial import Dial, last_error

DEFAULT_URL = "wss://ws.okx.com:8443/ws/v5/private"
LOGIN_WAIT_MS = 5000
PING_AFTER = 20.0
HEADER = (
    f"{'time':<8} {'instrument':<16} {'side':<5} {'size':>8} {'avg':>12} {'mark':>12} {'upl':>12}"
)


class LoginFailed(Exception):
    pass


def login_message(api_key: str, secret_key: str, passphrase: str) -> str:
    timestamp = f"{time.time():.3f}"
    mac = hmac.new(secret_key.encode(), f"{timestamp}GET/users/self/verify".encode(), "sha256")
    sign = base64.b64encode(mac.digest()).decode()
    args = {"apiKey": api_key, "passphrase": passphrase, "timestamp": timestamp, "sign": sign}
    return json.dumps({"op": "login", "args": [args]})


SUBSCRIBE = json.dumps({"op": "subscribe", "args": [{"channel": "positions", "instType": "ANY"}]})


def connect(url: str, keys: tuple[str, str, str]) -> Any:
    """Dial, log in, wait for the answer, subscribe. Raises LoginFailed; None if unreachable."""
    ws = Dial(url)
    if not ws:
        return None
    ws.write(login_message(*keys))
    deadline = time.monotonic() + LOGIN_WAIT_MS / 1000
    while time.monotonic() < deadline:
        answer = ws.read(200)
        if not answer or answer == "pong":
            if answer == "" and not ws.connected:
                break
            continue
        event = json.loads(answer)
        if event.get("event") == "login" and event.get("code") == "0":
            ws.write(SUBSCRIBE)
            return ws
        if event.get("event") == "error":
            ws.close()
            raise LoginFailed(f"OKX error {event.get('code')}: {event.get('msg')}")
    ws.close()
    raise LoginFailed("no answer to login")


def rows(message: str) -> list[str]:
    try:
        push = json.loads(message)
    except ValueError:
        return []
    if push.get("event") == "error":
        print(f"OKX error {push.get('code')}: {push.get('msg')}", file=sys.stderr)
    if push.get("arg", {}).get("channel") != "positions" or "data" not in push:
        return []
    out = []
    for pos in push["data"]:
        clock = time.strftime("%H:%M:%S", time.localtime(int(pos["uTime"]) / 1000))
        out.append(
            f"{clock:<8} {pos['instId']:<16} {pos['posSide']:<5} {float(pos['pos']):>8g} "
            f"{float(pos['avgPx']):>12.6g} {float(pos['markPx']):>12.6g} {float(pos['upl']):>12.4f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="stream address (default: OKX)")
    parser.add_argument("--count", type=int, help="stop after N position updates")
    parser.add_argument("--api-key", default=os.environ.get("OKX_API_KEY", "demo-key"))
    parser.add_argument("--secret-key", default=os.environ.get("OKX_SECRET_KEY", "demo-secret"))
    parser.add_argument("--passphrase", default=os.environ.get("OKX_PASSPHRASE", "demo-passphrase"))
    args = parser.parse_args(argv)
    keys = (args.api_key, args.secret_key, args.passphrase)

    try:
        ws = connect(args.url, keys)
    except LoginFailed as exc:
        print(f"login failed: {exc}", file=sys.stderr)
        return 1
    if ws is None:
        print(f"cannot connect: {last_error()}", file=sys.stderr)
        return 1
    print(HEADER)
    updates, last_heard, redials = 0, time.monotonic(), 0
    try:
        while args.count is None or updates < args.count:
            message = ws.read(1000)
            if message == "" and not ws.connected:  # dropped: dial again and log in again
                ws.close()
                time.sleep(1)
                redials += 1
                print(f"disconnected; reconnecting (#{redials})", file=sys.stderr)
                try:
                    ws = connect(args.url, keys) or ws
                except LoginFailed as exc:
                    print(f"login failed: {exc}", file=sys.stderr)
                continue
            if message:
                last_heard = time.monotonic()
                lines = rows(message)
                for line in lines:
                    print(line, flush=True)
                updates += bool(lines)
            elif time.monotonic() - last_heard > PING_AFTER:
                ws.write("ping")
                last_heard = time.monotonic()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    finally:
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
