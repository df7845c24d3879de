"""Whether this replica still reaches etcd, and the one thing it does when it stops.

A replica cut off from etcd (a partition between it and every member, while its nodes
still reach it) keeps answering its Envoys: their keepalive PINGs are ACKed, so they stay,
and are served the snapshots of before the cut while the pushes made meanwhile reach only
the nodes of replicas that see etcd. :class:`EtcdReach` reads one key every
``interval_s`` (a linearizable read: it needs a member with a raft leader); once no read
has succeeded for ``cut_off_s`` it calls ``on_cut_off(detail)`` once, and ``on_back()``
when a read succeeds again. The control plane's ``on_cut_off`` ends its open ADS streams,
so its Envoys reconnect, and Envoy's round robin over the replicas takes them to the next
one. New streams are still served (the last snapshots are better than none when etcd is
gone for every replica, e.g. for an Envoy that restarts during the outage).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from tiermesh.tasks import cancel_and_wait

__all__ = ["CUT_OFF_S", "EtcdReach"]

log = logging.getLogger("tiermesh.controlplane")

CUT_OFF_S: Final = 3.0
"""No read answered for this long: the replica counts as cut off. An etcd leader election
(about 1 s) stays well inside it; a partition is acted on within ~4 s, so the push made
when it began is served to the moved Envoys within the 5 s a killed replica costs."""


class EtcdReach:
    """Reads ``read()`` every ``interval_s`` (each read bounded by the interval) and tells
    when this replica is cut off from etcd and when it is back. Callbacks run on the loop
    and must not raise (a failure is logged). ``start`` once, ``aclose`` to stop."""

    def __init__(
        self,
        read: Callable[[], Awaitable[object]],
        *,
        on_cut_off: Callable[[str], Awaitable[None]],
        on_back: Callable[[], Awaitable[None]],
        interval_s: float = 1.0,
        cut_off_s: float = CUT_OFF_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0 or cut_off_s < interval_s:
            raise ValueError(f"need 0 < interval_s <= cut_off_s, got {interval_s} and {cut_off_s}")
        self._read = read
        self._on_cut_off = on_cut_off
        self._on_back = on_back
        self._interval_s = interval_s
        self._cut_off_s = cut_off_s
        self._clock = clock
        self._last_ok = clock()
        self._problem: str | None = None
        self.cut_off = False
        """Whether no read has answered for ``cut_off_s`` (until one does)."""
        self.cut_offs = 0
        """How many times this replica was cut off."""
        self._task: asyncio.Task[None] | None = None

    def document(self) -> dict[str, Any]:
        """For the status document: reachable, seconds since the last answer, last problem."""
        return {
            "reachable": not self.cut_off,
            "last_answer_s_ago": round(self._clock() - self._last_ok, 1),
            "problem": self._problem,
            "cut_offs": self.cut_offs,
        }

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("already started")
        self._last_ok = self._clock()
        self._task = asyncio.create_task(self._run(), name="etcd-reach")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def check(self) -> None:
        """One read and what follows from it (the loop's step; tests call it directly)."""
        try:
            async with asyncio.timeout(self._interval_s):
                await self._read()
        except Exception as exc:  # noqa: BLE001 - any failure to read counts as no answer
            self._problem = str(exc) or type(exc).__name__
            silent = self._clock() - self._last_ok
            if not self.cut_off and silent >= self._cut_off_s:
                self.cut_off = True
                self.cut_offs += 1
                detail = f"no answer from etcd for {silent:.1f} s ({self._problem})"
                log.warning("cut off from etcd: %s; ending this replica's ADS streams", detail)
                await self._call(self._on_cut_off(detail))
            return
        self._last_ok = self._clock()
        self._problem = None
        if self.cut_off:
            self.cut_off = False
            log.info("etcd answers again")
            await self._call(self._on_back())

    async def _call(self, step: Awaitable[None]) -> None:
        try:
            await step
        except Exception:
            log.exception("reacting to etcd reachability failed")

    async def _run(self) -> None:
        while True:
            started = self._clock()
            await self.check()
            await asyncio.sleep(max(0.0, self._interval_s - (self._clock() - started)))
