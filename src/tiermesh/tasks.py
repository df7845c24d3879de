"""Stopping background tasks: cancel them, then wait until each has ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel every task of ``tasks`` (None entries skipped), then await each in order
    until it has ended. A task's cancellation is swallowed; an exception a task raised
    instead propagates (the tasks after it are left cancelled but not awaited)."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
