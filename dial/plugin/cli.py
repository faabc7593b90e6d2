"""`dial plugin okx ...` runs the OKX plugin; `dial plugin call URL METHOD k=v...` talks to any
plugin exactly as the FMZ docker does. `register()` plugs these into the `dial` command; `main()` is
`python -m dial.plugin`. Failures print one `error: ...` line and exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any

__all__ = ["main", "register"]

OKX_API_BASE = "https://www.okx.com"
LOG_LEVELS = ("debug", "info", "warning", "error")


def register(subparsers: Any) -> None:
    """Add the `plugin` sub-command (with `okx` and `call`) to the `dial` command's parser."""
    parser = subparsers.add_parser(
        "plugin",
        help="FMZ custom-protocol plugin: run the OKX adapter, or call a plugin by hand",
        description="FMZ custom-protocol plugin server and client.",
    )
    _add_commands(parser)
    parser.set_defaults(func=lambda args: _usage(parser))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dial.plugin",
        description="FMZ custom-protocol plugin server and client.",
    )
    _add_commands(parser)
    parser.set_defaults(func=lambda args: _usage(parser))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(title="commands", metavar="{okx,call}")

    okx = commands.add_parser(
        "okx",
        help="serve the OKX v5 spot adapter at POST /OKX",
        description="Serve the OKX v5 spot adapter for the FMZ docker (POST /<name>).",
    )
    okx.add_argument("--listen", default="127.0.0.1:6666", help="HOST:PORT (127.0.0.1:6666)")
    okx.add_argument("--api-base", default=OKX_API_BASE, help=f"OKX REST base ({OKX_API_BASE})")
    okx.add_argument("--name", default="OKX", help="URL path the docker posts to (OKX)")
    okx.add_argument("--timeout", type=float, default=10.0, help="upstream timeout, s (10)")
    okx.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="(info)")
    okx.set_defaults(func=run_okx)

    call = commands.add_parser(
        "call",
        help="POST one request to a plugin as the FMZ docker would",
        description="POST one request to a plugin as the FMZ docker would and print the answer. "
        "Parameters are key=value (sent as strings, as the docker does) or key:=JSON.",
        epilog="example: python -m dial.plugin call http://127.0.0.1:6666/OKX ticker "
        "symbol=ETH_USDT",
    )
    call.add_argument("url", help="plugin URL, e.g. http://127.0.0.1:6666/OKX")
    call.add_argument("method", help="ticker, depth, ..., or __api_/api/v5/... for exchange.IO")
    call.add_argument("params", nargs="*", metavar="key=value", help="request params")
    call.add_argument(
        "--access-key",
        default=os.environ.get("DIAL_PLUGIN_ACCESS_KEY", ""),
        help="(env DIAL_PLUGIN_ACCESS_KEY)",
    )
    call.add_argument(
        "--secret-key",
        default=os.environ.get("DIAL_PLUGIN_SECRET_KEY", ""),
        help="e.g. secret,passphrase[,simulate] for OKX (env DIAL_PLUGIN_SECRET_KEY)",
    )
    call.add_argument(
        "--http-method", help="Http-Method header (default GET for __api_ methods, else none)"
    )
    call.add_argument("--timeout", type=float, default=30.0, help="seconds (30)")
    call.set_defaults(func=run_call)


# ---- dial plugin okx ----


def run_okx(args: argparse.Namespace) -> int:
    from dial.errors import MissingDependency
    from dial.plugin import require_aiohttp
    from dial.plugin.server import parse_listen

    try:
        require_aiohttp()
        host, port = parse_listen(args.listen)
    except (MissingDependency, ValueError) as exc:
        return _fail(str(exc), 2)
    if not args.api_base.startswith(("http://", "https://")):
        return _fail(f"--api-base must be an http(s):// URL, got {args.api_base!r}", 2)
    if args.timeout <= 0:
        return _fail("--timeout must be positive", 2)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(_serve_okx(args, host, port))


async def _serve_okx(args: argparse.Namespace, host: str, port: int) -> int:
    from dial.plugin.okx import Okx
    from dial.plugin.server import PluginServer

    exchange = Okx(args.api_base, name=args.name, timeout=args.timeout)
    server = PluginServer([exchange], host, port)
    try:
        await server.start()
    except OSError as exc:
        return _fail(f"cannot listen on {args.listen}: {exc.strerror or exc}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"serving {server.url}/{exchange.name} -> {exchange.api_base}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0


# ---- dial plugin call ----


def parse_params(items: list[str]) -> dict[str, Any]:
    """`k=v` -> string value (the docker sends strings); `k:=JSON` -> that JSON value."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise ValueError(f"bad parameter {item!r}: expected key=value or key:=JSON")
        if key.endswith(":"):
            try:
                params[key[:-1]] = json.loads(value)
            except ValueError:
                raise ValueError(f"bad parameter {item!r}: {value!r} is not JSON") from None
        else:
            params[key] = value
    return params


def run_call(args: argparse.Namespace) -> int:
    if not args.url.startswith(("http://", "https://")):
        return _fail(f"URL must start with http:// or https://, got {args.url!r}", 2)
    try:
        params = parse_params(args.params)
    except ValueError as exc:
        return _fail(str(exc), 2)
    body = {
        "access_key": args.access_key,
        "secret_key": args.secret_key,
        "nonce": time.time_ns(),
        "method": args.method,
        "params": params,
    }
    headers = {"Content-Type": "application/json"}
    http_method = args.http_method or ("GET" if args.method.startswith("__api_") else None)
    if http_method:
        headers["Http-Method"] = http_method.upper()
    request = urllib.request.Request(
        args.url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:  # our server answers 404/405 with a JSON error
        status, text = exc.code, exc.read().decode("utf-8", "replace")
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        return _fail(f"cannot reach {args.url}: {reason}")
    except TimeoutError:
        return _fail(f"no answer from {args.url} within {args.timeout:g}s")
    except OSError as exc:
        return _fail(f"{args.url}: {exc.strerror or exc}")
    try:
        answer = json.loads(text)
    except ValueError:
        snippet = " ".join(text.split())[:200] or "(empty)"
        return _fail(f"{args.url} answered HTTP {status} with non-JSON: {snippet}")
    print(json.dumps(answer, indent=2, ensure_ascii=False))
    return 1 if not isinstance(answer, dict) or "error" in answer else 0
