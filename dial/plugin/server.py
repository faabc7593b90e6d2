"""The asyncio HTTP server the FMZ docker POSTs to: `POST /<name>` for every registered exchange.

Every answer is JSON: `{"data", "raw"}` or `{"error"}`. A malformed request, an unknown method
or a failing exchange never produces a 500 or a traceback, and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from dial.plugin.exchange import Call, Exchange
from dial.plugin.masking import mask, mask_params

__all__ = ["PluginServer", "parse_listen"]

log = logging.getLogger("dial.plugin")

MAX_BODY = 1 << 20
_REQUIRED = ("access_key", "method", "params")


def parse_listen(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`127.0.0.1:6666`, `[::1]:6666`, `:6666` or `6666` -> (host, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = "", text.strip()
    host = host.strip("[]") or default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: expected HOST:PORT")
    return host, int(port_text)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json")


class PluginServer:
    """Serve one or more exchanges; `async with PluginServer([Okx()], "127.0.0.1", 6666):`."""

    def __init__(self, exchanges: Iterable[Exchange], host: str = "127.0.0.1", port: int = 6666):
        self.exchanges: dict[str, Exchange] = {}
        for exchange in exchanges:
            key = exchange.name.lower()
            if key in self.exchanges:
                raise ValueError(f"two exchanges registered as /{exchange.name}")
            self.exchanges[key] = exchange
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_BODY, handler_args={"max_field_size": 8190})
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        for exchange in self.exchanges.values():
            await exchange.open()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        if self.port == 0:  # report the port the OS picked
            server = site._server
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        names = ", ".join(f"{self.url}/{e.name}" for e in self.exchanges.values())
        log.info("plugin serving %s", names)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for exchange in self.exchanges.values():
            await exchange.close()

    async def __aenter__(self) -> PluginServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- request handling ----

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["tail"]
        exchange = self.exchanges.get(name.lower())
        if exchange is None:
            known = ", ".join(f"/{e.name}" for e in self.exchanges.values())
            return _json({"error": f"no exchange at /{name}; this plugin serves {known}"}, 404)
        if request.method != "POST":
            return _json({"error": f"use POST /{exchange.name} (got {request.method})"}, 405)
        try:
            body = await request.read()
        except web.HTTPException as exc:  # body over MAX_BODY
            return _json({"error": f"request rejected: {exc.reason}"}, 200)
        call, error = _parse_call(body, request.headers.get("Http-Method"))
        if call is None:
            log.warning("%s: bad request: %s", exchange.name, error)
            return _json({"error": error})
        try:
            reply = await exchange.dispatch(call)
        except Exception as exc:  # dispatch never raises, but stay safe
            log.exception("%s %s failed", exchange.name, call.method)
            reply = {"error": f"internal error: {type(exc).__name__}: {exc}"}
        if log.isEnabledFor(logging.INFO):
            _log_call(exchange, call, reply, started)
        return _json(reply)


def _parse_call(body: bytes, http_method: str | None) -> tuple[Call | None, str]:
    try:
        request = json.loads(body)
    except ValueError as exc:
        return None, f"request body is not valid JSON: {exc}"
    if not isinstance(request, dict):
        return None, "request body must be a JSON object"
    missing = [key for key in _REQUIRED if key not in request]
    if missing:
        return None, f"missing required field(s): {', '.join(missing)}"
    method, params = request["method"], request["params"]
    access_key, secret_key = request["access_key"], request.get("secret_key", "")
    if not isinstance(method, str) or not method:
        return None, "field 'method' must be a non-empty string"
    if not isinstance(params, dict):
        return None, "field 'params' must be a JSON object"
    if not isinstance(access_key, str) or not isinstance(secret_key, str):
        return None, "fields 'access_key' and 'secret_key' must be strings"
    call = Call(
        method=method,
        params=params,
        access_key=access_key,
        secret_key=secret_key,
        nonce=request.get("nonce"),
        http_method=http_method,
    )
    return call, ""


def _log_call(exchange: Exchange, call: Call, reply: dict[str, Any], started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    outcome = f"error: {reply['error']}" if "error" in reply else "ok"
    log.info(
        "%s %s key=%s params=%s -> %s (%.1f ms)",
        exchange.name,
        call.method,
        mask(call.access_key),
        json.dumps(mask_params(call.params), ensure_ascii=False),
        outcome,
        elapsed,
    )
