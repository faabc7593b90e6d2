"""The asyncio HTTP server the FMZ docker POSTs to: `POST /<name>` for every registered exchange.

Every answer is JSON: `{"data", "raw"}` or `{"error"}`. A malformed request (even one aiohttp
itself rejects, such as an oversized header), an unknown method or a failing exchange never
produces a 500, plain text or a traceback, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from dial.plugin.exchange import Call, Exchange
from dial.plugin.masking import fingerprint, mask_params

__all__ = ["PluginServer", "parse_listen"]

log = logging.getLogger("dial.plugin")

MAX_BODY = 1 << 20
#: aiohttp's default 8190-byte limit refuses some legitimate proxies' headers; longer ones still
#: get a JSON answer (from `_JsonErrors`), not aiohttp's plain-text 400.
MAX_HEADER_LINE = 64 << 10
MAX_DEPTH = 32  # nesting of the request body; the protocol needs 3
_REQUIRED = ("access_key", "method", "params")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate (from a "\\ud800" escape): keep it escaped
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json")


class _JsonErrors(web.RequestHandler):
    """aiohttp's connection handler, answering what it rejects itself (an oversized header line,
    a malformed request, a handler crash) with our JSON `{"error"}` instead of plain text."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # too late for an answer: aiohttp drops the connection
            return super().handle_error(request, status, exc, message)
        if status == 500:
            log.error("internal error handling a request", exc_info=exc)
            error = f"internal error ({type(exc).__name__}); see the plugin's log"
        else:
            error = _protocol_error(status, exc)
            log.warning("bad HTTP request from %s: %s", request.remote, error)
        response = _json({"error": error})
        response.force_close()
        return response


def _protocol_error(status: int, exc: BaseException | None) -> str:
    """A reason that never echoes the request: aiohttp's own message quotes the offending line."""
    if isinstance(exc, LineTooLong):
        return f"request line or header too long (at most {MAX_HEADER_LINE} bytes)"
    if status == 504:
        return "request timed out"
    return f"malformed HTTP request ({type(exc).__name__ if exc else status})"


class _Server(web.Server):
    """`web.Server` whose connections use `_JsonErrors` and whose requests carry our body limit."""

    def __init__(self, handler: Any, **handler_args: Any) -> None:
        super().__init__(handler, request_factory=self._request, **handler_args)
        self.event_loop = asyncio.get_running_loop()
        self.handler_args = handler_args

    def __call__(self) -> web.RequestHandler:
        return _JsonErrors(self, loop=self.event_loop, **self.handler_args)

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        return web.BaseRequest(
            message, payload, protocol, writer, task, self.event_loop, client_max_size=MAX_BODY
        )


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
        self._runner: web.ServerRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        for exchange in self.exchanges.values():
            await exchange.open()
        server = _Server(
            self._handle,
            access_log=None,
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        if self.port == 0:  # report the port the OS picked
            listener = site._server
            self.port = listener.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        started = time.perf_counter()
        name = request.path[1:]
        exchange = self.exchanges.get(name.lower())
        if exchange is None:
            known = ", ".join(f"/{e.name}" for e in self.exchanges.values())
            return _json({"error": f"no exchange at /{name}; this plugin serves {known}"}, 404)
        if request.method != "POST":
            return _json({"error": f"use POST /{exchange.name} (got {request.method})"}, 405)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": f"request body too large (at most {MAX_BODY} bytes)"})
        call, error = _parse_call(body, request.headers.get("Http-Method"))
        if call is None:
            log.warning("%s: bad request: %s", exchange.name, error)
            return _json({"error": error})
        reply = await exchange.dispatch(call)
        if log.isEnabledFor(logging.INFO):
            _log_call(exchange, call, reply, started)
        return _json(reply)


def _parse_call(body: bytes, http_method: str | None) -> tuple[Call | None, str]:
    try:
        request = json.loads(body)
    except UnicodeDecodeError as exc:
        return None, f"request body is not UTF-8: byte {exc.object[exc.start]:#04x} at {exc.start}"
    except ValueError as exc:
        return None, f"request body is not valid JSON: {exc}"
    except RecursionError:
        return None, f"request body is nested too deeply (at most {MAX_DEPTH} levels)"
    if not isinstance(request, dict):
        return None, "request body must be a JSON object"
    if _too_deep(body, request):
        return None, f"request body is nested too deeply (at most {MAX_DEPTH} levels)"
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
    if _CONTROL.search(access_key) or _CONTROL.search(secret_key):  # they go into HTTP headers
        return None, "fields 'access_key' and 'secret_key' must not contain control characters"
    try:
        json.dumps(request, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return None, "request body holds an unpaired surrogate escape (\\ud800-\\udfff)"
    call = Call(
        method=method,
        params=params,
        access_key=access_key,
        secret_key=secret_key,
        nonce=request.get("nonce"),
        http_method=http_method,
    )
    return call, ""


def _too_deep(body: bytes, value: Any) -> bool:
    """More than MAX_DEPTH levels of nesting? json.loads accepts ~1000, which would overflow the
    stack later (logging the params, re-encoding them for the exchange). Walks containers only,
    level by level, and not at all when the body has too few brackets to nest that deep."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def _log_call(exchange: Exchange, call: Call, reply: dict[str, Any], started: float) -> None:
    elapsed = (time.perf_counter() - started) * 1000
    outcome = f"error: {reply['error']}" if "error" in reply else "ok"
    log.info(
        "%s %s key=%s params=%s -> %s (%.1f ms)",
        exchange.name,
        call.method,
        fingerprint(call.access_key),
        json.dumps(mask_params(call.params), ensure_ascii=False),
        outcome,
        elapsed,
    )
