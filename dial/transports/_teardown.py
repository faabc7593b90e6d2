"""Closing a link to the end, even when whoever awaits the close is cancelled.

A transport's `close()` is cancelled when the user closes a connection while the session is
still closing a dead link (its reconnect task is cancelled). A library teardown cut in half
leaves a client half-closed: a socket open, tasks pending, an object whose `__del__` later
schedules its own close on whatever loop collects it. So a transport first detaches the link
from itself (synchronously, so a new `connect()` never sees it) and hands the teardown to
`run_to_end`: the teardown runs as a task of its own, bounded in time by its own timeouts,
that a cancelled caller cannot cut short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["CANCELLED_CLOSE_GRACE", "run_to_end"]

#: Seconds a cancelled `close()` still waits for its teardown before it lets the cancellation
#: through (the teardown then finishes on the loop by itself).
CANCELLED_CLOSE_GRACE = 1.0

_running: set[asyncio.Task[None]] = set()  # teardowns whose caller stopped waiting


async def run_to_end(
    teardown: Coroutine[Any, Any, None],
    hurry: Callable[[], None] | None = None,
    grace: float = CANCELLED_CLOSE_GRACE,
) -> None:
    """Await `teardown` as a task of its own. If the caller is cancelled meanwhile, call
    `hurry()` (e.g. drop the sockets, so nothing waits for the peer any more), wait up to
    `grace` s more for the teardown, then re-raise the cancellation; the task still runs to
    its end (it is kept referenced until then, and its outcome is retrieved)."""
    task = asyncio.ensure_future(teardown)
    _running.add(task)
    task.add_done_callback(_finished)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            if hurry is not None:
                try:
                    hurry()
                except Exception:  # best effort: the teardown is bounded in time anyway
                    pass
            await asyncio.wait({task}, timeout=grace)
        raise


def unfinished() -> int:
    """How many teardowns still run whose caller stopped waiting (for tests)."""
    return len(_running)


def _finished(task: asyncio.Task[None]) -> None:
    _running.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a teardown's failure belongs to the closed link
