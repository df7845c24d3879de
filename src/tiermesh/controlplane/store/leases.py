"""Keeping a node's lease alive for as long as its session lasts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tiermesh.controlplane.store.errors import StoreUnavailable
from tiermesh.controlplane.store.models import NodeLease
from tiermesh.controlplane.store.protocol import Store

__all__ = ["keep_alive"]


async def keep_alive(
    store: Store,
    lease: NodeLease,
    *,
    interval_s: float | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> NoReturn:
    """Refresh ``lease`` every ``interval_s`` (default: a third of its TTL) until cancelled.

    Run it as a task owned by the node's session and cancel it when the session ends (then
    revoke the lease). It never returns: it raises `LeaseExpired` once the lease is lost (the
    node must register again), and re-raises `StoreUnavailable` once refreshes have failed for
    a whole TTL, by which time the lease has expired anyway; shorter outages are ridden out.
    ``sleep`` is injectable so tests can drive it with `ManualClock.sleep`.
    """
    interval = interval_s if interval_s is not None else lease.ttl_s / 3
    if interval <= 0 or interval >= lease.ttl_s:
        raise ValueError(f"interval_s must be in (0, {lease.ttl_s}), got {interval}")
    allowed_failures = math.ceil(lease.ttl_s / interval)
    failures = 0
    while True:
        await sleep(interval)
        try:
            await store.refresh_lease(lease)
        except StoreUnavailable:
            failures += 1
            if failures >= allowed_failures:
                raise
        else:
            failures = 0
