"""Stopping background tasks: cancel them, then wait until each has ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["RECANCEL_AFTER_S", "cancel_and_wait"]

log = logging.getLogger("tiermesh.tasks")

RECANCEL_AFTER_S: Final = 2.0
"""How long a cancelled task may take to end before it is cancelled again."""


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any] | None], *, recancel_after_s: float = RECANCEL_AFTER_S
) -> None:
    """Cancel every task of ``tasks`` (None entries skipped), then wait for each in order
    until it has ended. A task's cancellation is swallowed; an exception a task raised
    instead propagates (the tasks after it are left cancelled but not awaited).

    A task still running ``recancel_after_s`` after its cancellation is cancelled again (and
    again after as long), with a warning: on Python 3.11 ``asyncio.wait_for`` drops a
    cancellation that arrives as the awaited call completes (the etcd client waits that
    way while it opens a watch), and the task then carries on as if never cancelled.
    Cancelling the caller stops the wait, not the cancellation of ``tasks``.
    """
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        while not task.done():
            await asyncio.wait({task}, timeout=recancel_after_s)
            if not task.done():
                log.warning(
                    "task %s still runs %.1f s after it was cancelled; cancelling it again",
                    task.get_name(), recancel_after_s,
                )  # fmt: skip
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
