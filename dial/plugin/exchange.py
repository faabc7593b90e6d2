"""The `Exchange` base class: one coroutine per FMZ protocol `method`, plus a signed HTTP helper.

An adapter subclasses `Exchange`, sets `name`/`api_base`, overrides the methods its exchange
supports and (for private endpoints) `sign()`. Everything it does not override answers
`{"error": "not supported"}`: the framework never invents data.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from dial.plugin.masking import mask_headers, mask_params

__all__ = [
    "Call",
    "Exchange",
    "NotSupported",
    "PluginError",
    "Reply",
    "Symbol",
    "UpstreamError",
]

log = logging.getLogger("dial.plugin")

_MISSING: Any = object()
_SIDES = ("buy", "sell")
_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")

#: Bounds of a numeric param (`limit`, `since`, `price`...): a longer text, more digits before the
#: point or more decimal places is refused with an error rather than converted.
MAX_NUMBER_CHARS = 50
MAX_DIGITS = 18
MAX_PLACES = 20


class PluginError(Exception):
    """A failure whose message goes to the strategy as `{"error": message}`."""


class NotSupported(PluginError):
    """The exchange (or this adapter) has no such operation."""

    def __init__(self, message: str = "not supported") -> None:
        super().__init__(message)


class UpstreamError(PluginError):
    """The exchange could not be reached, timed out, or answered with an error."""


class Reply(NamedTuple):
    """What a method returns: `data` in FMZ's shape and `raw`, the exchange's own answer."""

    data: Any
    raw: Any = None


@dataclass(frozen=True, slots=True)
class Symbol:
    """An FMZ trading pair such as `ETH_USDT` (FMZ sends any case; we keep upper case)."""

    base: str
    quote: str

    @classmethod
    def parse(cls, text: Any) -> Symbol:
        parts = str(text).strip().upper().split("_") if isinstance(text, str) else []
        if len(parts) != 2 or not all(parts):
            raise PluginError(f"invalid symbol {text!r}: expected BASE_QUOTE such as ETH_USDT")
        return cls(parts[0], parts[1])

    def join(self, separator: str) -> str:
        """The pair in an exchange's spelling: `symbol.join("-")` -> `ETH-USDT`."""
        return f"{self.base}{separator}{self.quote}"

    def __str__(self) -> str:
        return f"{self.base}_{self.quote}"


@dataclass(slots=True)
class Call:
    """One request from the FMZ docker: keys, method, params and the `Http-Method` header.

    The keys (and `cache`, which holds parsed credentials) are left out of the repr."""

    method: str
    params: dict[str, Any]
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    nonce: Any = None
    http_method: str | None = None
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def scrub(self, text: str) -> str:
        """`text` with this call's credentials replaced by ***: the access key, the secret key and
        its first two comma-separated parts (OKX's secret and passphrase; not a `simulate` flag)."""
        parts = {self.access_key, self.secret_key, *self.secret_key.split(",")[:2]}
        for secret in sorted((p.strip() for p in parts), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def get(self, name: str, default: Any = _MISSING) -> Any:
        value = self.params.get(name)
        if value is None or value == "":
            if default is _MISSING:
                raise PluginError(f"missing params.{name}")
            return default
        return value

    def symbol(self, name: str = "symbol") -> Symbol:
        return Symbol.parse(self.get(name))

    def integer(self, name: str, default: Any = _MISSING) -> int:
        value = self.get(name, default)
        number = parse_number(name, value, "an integer")
        if number != number.to_integral_value():  # cheap: parse_number bounds the exponent
            raise PluginError(f"params.{name} must be an integer, got {_shown(value)}")
        return int(number)

    def decimal(self, name: str) -> Decimal:
        return parse_number(name, self.get(name), "a number")


def parse_number(name: str, value: Any, kind: str = "a number") -> Decimal:
    """`params.<name>` as a Decimal, refusing anything whose conversion could stall the loop.

    `Decimal("1e700000")` is instant but turning it into an int takes seconds with the GIL held,
    so the text length, the digits before the point and the decimal places are all bounded."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PluginError(f"params.{name} must be {kind}, got {_shown(value)}")
    if isinstance(value, int) and value.bit_length() > 64:  # repr() of a huge int is slow too
        raise _out_of_range(name, "a huge integer")
    text = value.strip() if isinstance(value, str) else repr(value)
    if len(text) > MAX_NUMBER_CHARS:
        raise PluginError(
            f"params.{name} is too long for a number: {len(text)} characters "
            f"(at most {MAX_NUMBER_CHARS})"
        )
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise PluginError(f"params.{name} must be {kind}, got {_shown(value)}") from None
    if not number.is_finite():
        raise PluginError(f"params.{name} must be a finite number, got {_shown(value)}")
    if number.is_zero():
        return Decimal(0)
    if number.adjusted() >= MAX_DIGITS:
        raise _out_of_range(name, _shown(value))
    if _places(number) > MAX_PLACES:
        raise PluginError(
            f"params.{name} has too many decimal places, got {_shown(value)} (at most {MAX_PLACES})"
        )
    return number


def _out_of_range(name: str, shown: str) -> PluginError:
    return PluginError(
        f"params.{name} is out of range, got {shown} "
        f"(at most {MAX_DIGITS} digits before the decimal point)"
    )


def _places(number: Decimal) -> int:
    """Decimal places ignoring trailing zeros: `1.2500` has 2."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    significant = "".join(map(str, digits)).rstrip("0")
    return max(0, -(exponent + len(digits) - len(significant)))


def _shown(value: Any) -> str:
    """A param value for an error message: its repr, cut short (it may be a megabyte)."""
    if isinstance(value, (list, dict)):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


Handler = Callable[["Exchange", Call], Awaitable[Any]]


class Exchange:
    """Base class of an adapter. Override the coroutines below; each returns a `Reply`
    (or bare data) in FMZ's field names, or raises `PluginError` with a message for the user."""

    name: ClassVar[str] = "exchange"
    api_base: str = ""
    timeout: float = 10.0
    max_connections: int = 100

    def __init__(
        self, api_base: str | None = None, *, name: str | None = None, timeout: float | None = None
    ) -> None:
        if api_base is not None:
            self.api_base = api_base
        self.api_base = self.api_base.rstrip("/")
        if name is not None:
            self.name = name  # type: ignore[misc]
        if timeout is not None:
            self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} /{self.name} -> {self.api_base}>"

    # ---- lifecycle: one pooled ClientSession per exchange, opened on the server's loop ----

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "dialkit-plugin", "Accept": "application/json"},
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the FMZ protocol methods (override what the exchange supports) ----

    async def ticker(self, call: Call, symbol: Symbol) -> Any:
        raise NotSupported

    async def depth(self, call: Call, symbol: Symbol, limit: int) -> Any:
        raise NotSupported

    async def trades(self, call: Call, symbol: Symbol) -> Any:
        raise NotSupported

    async def records(self, call: Call, symbol: Symbol, period: int, limit: int) -> Any:
        """`period` in minutes; rows `[time_seconds, open, high, low, close, volume]`."""
        raise NotSupported

    async def accounts(self, call: Call) -> Any:
        raise NotSupported

    async def assets(self, call: Call) -> Any:
        raise NotSupported

    async def trade(
        self, call: Call, symbol: Symbol, side: str, price: Decimal, amount: Decimal
    ) -> Any:
        """`price == -1` is FMZ's market order."""
        raise NotSupported

    async def orders(self, call: Call, symbol: Symbol) -> Any:
        raise NotSupported

    async def order(self, call: Call, order_id: str, symbol: Symbol | None) -> Any:
        raise NotSupported

    async def historyorders(self, call: Call, symbol: Symbol, since: int, limit: int) -> Any:
        raise NotSupported

    async def cancel(self, call: Call, order_id: str, symbol: Symbol | None) -> Any:
        raise NotSupported

    async def api(self, call: Call, http_method: str, path: str, params: dict[str, Any]) -> Any:
        """`exchange.IO("api", METHOD, path, query)`: method `__api_<path>`."""
        raise NotSupported

    # ---- dispatch ----

    async def dispatch(self, call: Call) -> dict[str, Any]:
        """Run one call; always returns `{"data", "raw"}` or `{"error"}`, never raises."""
        try:
            handler = _HANDLERS.get(call.method)
            if handler is not None:
                result = await handler(self, call)
            elif call.method.startswith("__api_"):
                result = await _api(self, call)
            else:
                raise PluginError(f"unknown method {call.method!r}")
        except PluginError as exc:
            return {"error": call.scrub(str(exc) or type(exc).__name__)}
        except (KeyError, IndexError, TypeError, ValueError, ArithmeticError) as exc:
            log.debug("%s %s: cannot read answer", self.name, call.method, exc_info=True)
            return {
                "error": call.scrub(
                    f"{self.name} {call.method}: unexpected answer from the exchange "
                    f"({type(exc).__name__}: {exc})"
                )
            }
        except Exception as exc:  # a bug in an adapter must not take the server down
            log.exception("%s %s: unexpected failure", self.name, call.method)
            error = f"internal error in {self.name} adapter: {type(exc).__name__}: {exc}"
            return {"error": call.scrub(error)}
        if isinstance(result, Reply):
            return {"data": result.data, "raw": result.raw}
        return {"data": result, "raw": None}

    # ---- HTTP to the exchange ----

    def headers(self, call: Call | None) -> dict[str, str]:
        """Extra headers on every request (e.g. OKX's simulated-trading flag)."""
        return {}

    def sign(self, call: Call, method: str, request_path: str, body: str) -> dict[str, str]:
        """Headers authenticating a private request; `request_path` includes the query."""
        raise NotSupported("this adapter has no signed requests")

    def check(self, status: int, payload: Any) -> Any:
        """Turn an exchange-level error into `UpstreamError`; returns the payload otherwise."""
        if status >= 400:
            raise UpstreamError(f"{self.name}: HTTP {status}: {_short(json.dumps(payload))}")
        return payload

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        call: Call | None = None,
        signed: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one request and return the JSON answer after `check()`.

        Every failure becomes an `UpstreamError` with a one-line reason: unreachable, timeout,
        not JSON (an HTML error page from a proxy), or the exchange's own error."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        method = method.upper()
        query_string = urlencode({k: v for k, v in (query or {}).items() if v is not None})
        request_path = f"{path}?{query_string}" if query_string else path
        body_text = "" if body is None else json.dumps(body, separators=(",", ":"))
        headers = {**self.headers(call), **(headers or {})}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            if call is None:
                raise PluginError("a signed request needs the caller's keys")
            headers.update(self.sign(call, method, request_path, body_text))
        url = URL(self.api_base + request_path, encoded=True)  # send exactly what was signed
        if log.isEnabledFor(logging.DEBUG):
            shown = urlencode(mask_params(query)) if query else ""
            log.debug(
                "%s -> %s %s%s %s %s",
                self.name,
                method,
                self.api_base + path,
                f"?{shown}" if shown else "",
                mask_headers(headers),
                json.dumps(mask_params(body)) if isinstance(body, dict) else body_text,
            )
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method, url, data=body_text or None, headers=headers
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
                content_type = response.content_type
        except asyncio.TimeoutError:
            raise UpstreamError(f"{self.name}: {what} timed out after {self.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(f"{self.name}: {_cannot_connect(exc)}") from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise UpstreamError(f"{self.name}: {what} failed: {reason}") from None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s %s", self.name, status, _short(text, 500))
        try:
            payload = json.loads(text)
        except ValueError:
            raise UpstreamError(
                f"{self.name}: {what} returned HTTP {status} with non-JSON {content_type} body: "
                f"{_short(_SPACES.sub(' ', _TAGS.sub(' ', text)).strip()) or '(empty)'}"
            ) from None
        return self.check(status, payload)


def _cannot_connect(exc: aiohttp.ClientConnectorError) -> str:
    """`cannot resolve host 'www.okx.com'` rather than getaddrinfo's `Unknown error -2`."""
    error, where = exc.os_error, f"{exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(error, socket.gaierror):
        return f"cannot resolve host {exc.host!r}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed: {error}"
    if isinstance(error, ConnectionRefusedError) or error.errno == errno.ECONNREFUSED:
        return f"cannot connect to {where}: connection refused"
    reason = error.strerror or str(error) or type(error).__name__
    return f"cannot connect to {where}: {reason}"


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _optional_symbol(call: Call) -> Symbol | None:
    return call.symbol() if call.params.get("symbol") else None


def _side(call: Call) -> str:
    side = str(call.get("type")).lower()
    if side not in _SIDES:
        raise PluginError(f"params.type must be 'buy' or 'sell', got {call.params['type']!r}")
    return side


async def _api(exchange: Exchange, call: Call) -> Any:
    path = call.method[len("__api_") :]
    if not path.startswith("/") or path.startswith("//"):
        raise PluginError(f"invalid API path {path!r}: expected /path such as /api/v5/...")
    if not call.http_method:
        raise PluginError("missing Http-Method header for an exchange.IO api call")
    http_method = call.http_method.upper()
    if http_method not in ("GET", "POST", "PUT", "DELETE"):
        raise PluginError(f"unsupported Http-Method {call.http_method!r}")
    return await exchange.api(call, http_method, path, call.params)


_HANDLERS: dict[str, Handler] = {
    "ticker": lambda ex, c: ex.ticker(c, c.symbol()),
    "depth": lambda ex, c: ex.depth(c, c.symbol(), c.integer("limit", 0)),
    "trades": lambda ex, c: ex.trades(c, c.symbol()),
    "records": lambda ex, c: ex.records(
        c, c.symbol(), c.integer("period", 60), c.integer("limit", 0)
    ),
    "accounts": lambda ex, c: ex.accounts(c),
    "assets": lambda ex, c: ex.assets(c),
    "trade": lambda ex, c: ex.trade(
        c, c.symbol(), _side(c), c.decimal("price"), c.decimal("amount")
    ),
    "orders": lambda ex, c: ex.orders(c, c.symbol()),
    "order": lambda ex, c: ex.order(c, str(c.get("id")), _optional_symbol(c)),
    "historyorders": lambda ex, c: ex.historyorders(
        c, c.symbol(), c.integer("since", 0), c.integer("limit", 0)
    ),
    "cancel": lambda ex, c: ex.cancel(c, str(c.get("id")), _optional_symbol(c)),
}
