"""`nats://[user[:pwd]@]host[:4222]?topic=SUBJECT[&queue=GROUP]`

nats-py with its own reconnect turned off: a broken link is reported to the session once,
and `connect()` builds a new client and subscribes again. Publishing only appends to nats-py's
pending buffer (flushed by its flusher task), so `send` costs no round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from ..address import Address, split_host_port
from ..buffer import Message, text_message
from ..errors import AddressError, ConnectError
from ._query import os_reason, parse_target
from ._teardown import run_to_end
from .base import Receiver, StreamTransport

__all__ = ["NatsTransport"]

# The library logs tracebacks for connection failures that Dial already reports as one
# reason; keep them out of a program that configured no logging (configured handlers
# still receive them).
logging.getLogger("nats").addHandler(logging.NullHandler())

QUERY = frozenset({"topic", "queue"})
DEFAULT_PORT = 4222
CONNECT_TIMEOUT = 5  # seconds nats-py allows for one TCP connect + INFO/CONNECT exchange
CLOSE_TIMEOUT = 3.0


class NatsTransport(StreamTransport):
    """Subscribes to subject `topic` (optionally in queue group `queue`) and publishes to it."""

    def __init__(self, address: Address) -> None:
        super().__init__(address)
        target = parse_target("nats", address.target, QUERY)
        shown = f"nats://{target.authority}"
        if target.path:
            raise AddressError(
                f"{shown}: unexpected path {target.path!r}; give the subject as ?topic=NAME"
            )
        self.host, self.port = split_host_port(target.authority, "nats", DEFAULT_PORT)
        subject = target.query.get("topic")
        if not subject:
            raise AddressError(f"{shown}: missing topic, e.g. nats://{target.authority}?topic=S")
        if any(ch.isspace() for ch in subject):
            raise AddressError(f"{shown}: topic {subject!r} contains whitespace")
        self.subject = subject
        self.queue = target.query.get("queue", "")
        self.user, self.password = target.user, target.password
        self._client: Any = None
        self._receiver: Receiver | None = None

    def _credentials(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        if self.password is None:  # nats://TOKEN@host, the NATS URL convention
            return {"token": self.user}
        return {"user": self.user, "password": self.password}

    async def connect(self, receiver: Receiver) -> None:
        await self.close()
        where = f"nats://{self.host}:{self.port}"
        errors: list[BaseException] = []
        live = {"up": False}

        async def on_error(exc: BaseException) -> None:
            errors.append(exc)

        async def on_gone() -> None:
            if live["up"] and self._receiver is receiver:
                live["up"] = False
                cause = errors[-1] if errors else None
                why = describe(cause) if cause is not None else "connection closed"
                receiver.lost(f"nats connection lost: {why}")

        deliver = receiver.deliver

        async def on_message(msg: Any) -> None:
            deliver(text_message(msg.data))

        client = NatsClient()
        try:
            await client.connect(
                servers=[f"nats://{self.host}:{self.port}"],
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                # a heartbeat bounds a connect attempt; nats-py's own timeout must not outlast it
                # (annotated int, but only ever handed to asyncio.wait_for)
                connect_timeout=self.attempt_limit(CONNECT_TIMEOUT),  # type: ignore[arg-type]
                error_cb=on_error,
                disconnected_cb=on_gone,
                closed_cb=on_gone,
                name="dialkit",
                **self._credentials(),
            )
        except BaseException as exc:
            # nats-py leaves the socket of a failed first connect open (it closes it only to
            # reconnect): a connect into a blackhole would leak one per attempt.
            await _close_client(client)
            if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
                raise
            cause: BaseException = exc
            if isinstance(exc, nats.errors.NoServersError) and errors:
                cause = errors[-1]
            raise ConnectError(f"{where}: {describe(cause)}") from None
        self._client = client
        self._receiver = receiver
        try:
            await client.subscribe(self.subject, queue=self.queue, cb=on_message)
            await client.flush(timeout=CONNECT_TIMEOUT)  # the server has the SUB before we go
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            raise ConnectError(
                f"{where}: subscribe to {self.subject!r} failed: {describe(exc)}"
            ) from None
        if client.last_error is not None:  # e.g. a permissions violation on SUB
            error = client.last_error
            await self.close()
            raise ConnectError(f"{where}: subscribe to {self.subject!r} refused: {describe(error)}")
        live["up"] = True

    async def send(self, data: Message) -> None:
        client = self._client
        if client is None or not client.is_connected:
            raise ConnectionError("nats link is down")
        await client.publish(self.subject, data.encode() if isinstance(data, str) else data)

    async def close(self) -> None:
        client, self._client = self._client, None
        self._receiver = None
        if client is not None:
            await _close_client(client)

    def describe(self) -> str:
        return f"topic={self.subject}" + (f" queue={self.queue}" if self.queue else "")


async def _close_client(client: Any) -> None:
    """Close a nats-py client within CLOSE_TIMEOUT, to the end even if the caller is
    cancelled meanwhile."""
    if not client.is_closed:
        await run_to_end(_quietly(client.close(), CLOSE_TIMEOUT))


async def _quietly(step: Awaitable[None], seconds: float) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except Exception:  # closing a broken link may fail: nothing else to do
        pass


def describe(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization failed (wrong user, password or token)"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server reachable"
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError):
        return os_reason(exc)
    text = str(exc).strip() or exc.__class__.__name__
    if "authorization violation" in text.lower():
        return "authorization failed (wrong user, password or token)"
    return text.removeprefix("nats: ")
