"""Not serving stale snapshots after this process was frozen.

A replica that was stopped (SIGSTOP, a paused VM, a host that hung) and resumes holds the
snapshots of before the freeze; pushes made meanwhile reach it through its etcd watch a
moment later. An Envoy that connects in that moment (its own replica just died, say)
would be served the old routes: a configuration rollback, possibly of a fix. The Envoys
this replica had are gone (their keepalive left it), so nothing is lost by holding back.

:class:`FreezeGuard` ticks on the event loop every ``tick_s``. :meth:`serving` answers
False from the moment the last tick is older than ``frozen_s`` (so a stream opened by the
first callbacks after the resume, before the ticker has run, is already held), and while
the full reconcile that the ticker starts on noticing the gap runs; then ``on_release``
lets every stream catch up. Plug :meth:`serving` into the snapshot cache. A loop blocked
longer than ``frozen_s`` by work of its own counts as frozen too: it costs one reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from tiermesh.tasks import cancel_and_wait

__all__ = ["FROZEN_S", "FreezeGuard"]

log = logging.getLogger("tiermesh.controlplane")

FROZEN_S: Final = 2.0
"""A tick this late means the process did not run: longer than a loaded loop's stalls
(a reconcile's evaluation runs on a worker thread), shorter than the ~3 s an Envoy takes
to leave a frozen replica."""


class FreezeGuard:
    """See the module docstring. ``resettle`` reconciles everything from the store and
    returns when done (its errors are logged; serving resumes regardless, as with any
    failed reconcile the last snapshots stay). ``start`` once, ``aclose`` to stop; call
    from the event loop."""

    def __init__(
        self,
        *,
        resettle: Callable[[], Awaitable[Any]],
        on_release: Callable[[], None],
        tick_s: float = 0.25,
        frozen_s: float = FROZEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tick_s <= 0 or frozen_s <= tick_s:
            raise ValueError(f"need 0 < tick_s < frozen_s, got {tick_s} and {frozen_s}")
        self._resettle = resettle
        self._on_release = on_release
        self._tick_s = tick_s
        self._frozen_s = frozen_s
        self._clock = clock
        self._last_tick = clock()
        self._catching_up: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.freezes = 0
        """How many freezes were noticed."""

    def serving(self) -> bool:
        """Whether snapshots may be handed out now (module doc); True until started."""
        if self._ticker is None:
            return True
        if self._catching_up is not None:
            return False
        return self._clock() - self._last_tick <= self._frozen_s

    def document(self) -> dict[str, Any]:
        """For the status document."""
        return {"serving": self.serving(), "freezes": self.freezes}

    async def start(self) -> None:
        if self._ticker is not None:
            raise RuntimeError("already started")
        self._last_tick = self._clock()
        self._ticker = asyncio.create_task(self._run(), name="freeze-guard")

    async def aclose(self) -> None:
        ticker, self._ticker = self._ticker, None
        catching_up, self._catching_up = self._catching_up, None
        await cancel_and_wait([ticker, catching_up])

    def tick(self) -> None:
        """One tick (the ticker's step; tests call it directly)."""
        now = self._clock()
        gap = now - self._last_tick
        self._last_tick = now
        if gap > self._frozen_s and self._catching_up is None:
            self.freezes += 1
            log.warning(
                "this process did not run for %.1f s; serving no snapshot until a full"
                " reconcile has caught up with the store",
                gap,
            )
            self._catching_up = asyncio.create_task(self._catch_up(), name="after-freeze")

    async def _catch_up(self) -> None:
        try:
            await self._resettle()
        except Exception:
            log.exception("the reconcile after a freeze failed; serving the last snapshots")
        finally:
            self._catching_up = None
            self._on_release()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.tick()
