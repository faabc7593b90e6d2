"""What a database backend offers: every hook `dial.databases` may call, declared here with
its default, so a backend overrides what its driver can do and nothing is looked up by name.

A backend knows its driver and nothing else: where statements run, reconnects, transactions
lost with a link, handles and timeouts live in `dial.databases.shared`.
"""

from __future__ import annotations

import functools
import select
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..address import Address
from ..errors import AddressError
from .sql import Result, changed_rows

__all__ = ["DatabaseBackend", "input_probe", "socket_has_input"]


class DatabaseBackend(ABC):
    """One database driver behind `exec(sql, *params)`.

    `connect`, `execute`, `execute_many` and `close` run on the connection's private event
    loop (see `dial.databases.shared`); the `*_blocking` forms in the caller's thread; the
    three checks (`alive`, `pending_input`, `in_transaction`) between statements, from any
    thread, under the connection's lock. `execute` gets the user's SQL with `?` placeholders
    and their values: bind them with `dial.databases.sql.bind`, which refuses a wrong count
    or type.
    """

    #: True when `execute_blocking` works: a statement without a timeout then runs right in
    #: the caller's thread, with no event loop at all (sqlite3, the ClickHouse clients).
    runs_blocking: ClassVar[bool] = False

    def __init__(self, address: Address) -> None:
        self.address = address
        #: The Dial timeout in seconds, set before the first `connect()`: a backend whose
        #: driver connects in a blocking thread bounds that connect with it.
        self.dial_timeout: float | None = None
        if address.options.given:  # `|` options are stream options: none applies here
            raise AddressError(
                f"option {', '.join(sorted(address.options.given))} is not supported for "
                f"{address.scheme}://"
            )

    @abstractmethod
    async def connect(self) -> None:
        """Open the driver connection; raise `ConnectError` with the reason on failure."""

    @abstractmethod
    async def execute(self, sql: str, params: tuple[Any, ...]) -> Result:
        """Run one statement; raise `DatabaseError` (or `ArgumentError`) with the reason."""

    @abstractmethod
    async def close(self) -> None:
        """Close the driver connection, idempotently; reconnects call `connect()` after it."""

    def abort(self) -> None:  # noqa: B027 - optional: close() alone also works
        """Drop the driver connection at once, without a goodbye to the server: the link is
        known to be dead (a statement was abandoned on it), so waiting for an answer would
        only delay the reconnect. `close()` follows."""

    async def execute_many(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """Run one statement once per row (rows checked by `sql.parameter_rows`: at least
        one, all of one length); the rows affected in all, refusing a statement that returns
        rows (`sql.changed_rows`). This default runs `execute` row by row and is not atomic:
        a backend overrides it with its driver's batch path."""
        total = 0
        for row in rows:
            total += changed_rows(await self.execute(sql, tuple(row)))
        return total

    def execute_many_blocking(self, sql: str, rows: list[Sequence[Any]]) -> int:
        """`execute_many`, synchronously, in the caller's thread (only when `runs_blocking`)."""
        total = 0
        for row in rows:
            total += changed_rows(self.execute_blocking(sql, tuple(row)))
        return total

    def execute_blocking(self, sql: str, params: tuple[Any, ...]) -> Result:
        """`execute`, synchronously, in the caller's thread (only when `runs_blocking`)."""
        raise NotImplementedError(f"{self.address.scheme}:// has no blocking execute")

    def alive(self) -> bool:
        """False once the link is known to be gone: the next statement reconnects first."""
        return True

    def pending_input(self) -> bool:
        """True when bytes (a server's goodbye, an EOF) arrived while no statement ran: the
        loop is not running then, so the driver is let read them before `alive()` is asked."""
        return False

    def in_transaction(self) -> bool:
        """True while a BEGIN is open on the link: losing the link then loses the
        transaction, which must be reported rather than silently reconnected over."""
        return False


def socket_has_input(sock: socket.socket | None) -> bool:
    """True when `sock` has unread bytes or an EOF waiting (one poll, no blocking): the
    usual way to implement `pending_input`."""
    if sock is None or sock.fileno() < 0:
        return False
    try:
        return bool(select.select((sock,), (), (), 0)[0])
    except (OSError, ValueError):
        return False


def input_probe(sock: socket.socket | None) -> Callable[[], bool]:
    """`socket_has_input` for one socket, asked before every statement, at a third of the
    cost: a poll object registered once (no fd of its own to close). After the socket is
    closed it may report events (or POLLNVAL) for whatever reuses its number: harmless, the
    caller then only looks at the link once more (`alive()`) and finds it gone."""
    if sock is None or sock.fileno() < 0 or not hasattr(select, "poll"):
        return functools.partial(socket_has_input, sock)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)  # EOF and resets are reported too
    poll = poller.poll
    return lambda: bool(poll(0))
