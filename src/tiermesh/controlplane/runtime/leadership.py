"""Which replica does the control plane's once-only work: leader election on an etcd lease.

Every replica serves xDS, the node API, SDS/SVID signing and the audit collector
(active-active). Work that must happen once runs only on the leader, and every store
write it makes is fenced (`Store.put_fenced`, ``adopt_legacy_usage(fence=)``): the write's
own etcd transaction compares the leader key's create revision and value, so a deposed
leader — paused, partitioned, or slow to notice an expired lease — is refused by etcd.

The once-only work today (`ControlPlane` wires it):

- folding usage counters from before monthly budgets into the current month
  (``adopt_legacy_usage``), on each election;
- recording the evaluated plans in the control plane's audit chain (`PlanRecorder`):
  each batch first advances ``leader/plans`` with a fenced write and is recorded only if
  etcd took it.

Not leader work, and why: creating the shared CA is already a create-if-absent race that
exactly one replica wins (`EtcdCaStore`); join tokens are consumed with delete-if-value;
usage reports are added by compare-and-swap wherever they arrive.

Task safety: one event loop. `Leadership` owns one background task (`start` / `aclose`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from tiermesh.controlplane.store import (
    Fence,
    LeaseExpired,
    NotLeader,
    Store,
    StoreError,
    StoreUnavailable,
)
from tiermesh.tasks import cancel_and_wait

__all__ = ["LEADER_KEY", "Leadership", "replica_holder"]

log = logging.getLogger("tiermesh.controlplane.leader")

LEADER_KEY: Final = "leader/controlplane"
"""Generic store key the replicas campaign on; its value names the holder."""

OnElected = Callable[[Fence], Awaitable[None]]


def replica_holder(name: str | None = None) -> bytes:
    """A holder value unique to this process: ``<name or host:pid>/<random>``."""
    base = name or f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}/{secrets.token_hex(4)}".encode()


class Leadership:
    """Campaigns for :data:`LEADER_KEY` for as long as it runs.

    A follower reads the key every ``retry_s`` and campaigns when it is gone. A leader
    refreshes its lease every ``ttl_s / 3`` and steps down when a refresh says the lease
    is gone or when no refresh has succeeded for ``2/3`` of the TTL (etcd may expire it
    soon; the fence would refuse its writes anyway). `fence` is the current fence only
    while this replica believes it leads; that belief is also bounded by the monotonic
    clock, so a process resumed after a long pause (SIGSTOP) does not act on a stale term
    before its next refresh.
    ``on_elected`` runs (as a task, cancelled on step-down) at the start of each term.
    """

    def __init__(
        self,
        store: Store,
        *,
        holder: bytes,
        ttl_s: int = 5,
        retry_s: float = 1.0,
        on_elected: OnElected | None = None,
        key: str = LEADER_KEY,
    ) -> None:
        if ttl_s < 2:
            raise ValueError(f"the leader lease needs ttl_s >= 2, got {ttl_s}")
        self._store = store
        self.holder = holder
        self._ttl_s = ttl_s
        self._retry_s = retry_s
        self._on_elected = on_elected
        self._key = key
        self._fence: Fence | None = None
        self._renewed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._term_work: asyncio.Task[None] | None = None
        self.current_holder: str | None = None
        """The holder this replica last saw on the key (None: nobody, or not read yet)."""
        self.terms = 0
        """How many times this replica was elected."""

    @property
    def fence(self) -> Fence | None:
        """The fence of this replica's term, or None when it does not (surely) lead."""
        if self._fence is None:
            return None
        if time.monotonic() - self._renewed_at >= self._ttl_s * 2 / 3:
            return None
        return self._fence

    @property
    def is_leader(self) -> bool:
        return self.fence is not None

    def document(self) -> dict[str, Any]:
        """The status document's ``leadership`` part."""
        fence = self.fence
        return {
            "leader": fence is not None,
            "holder": self.holder.decode(),
            "current_leader": self.current_holder,
            "term": None if fence is None else fence.token,
            "terms": self.terms,
        }

    async def start(self) -> None:
        """Start campaigning in the background (returns at once)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leadership")

    async def aclose(self) -> None:
        """Stop campaigning; a leader resigns (revokes its lease, so a successor need not
        wait for the TTL). Idempotent; never raises for an unreachable store."""
        task, self._task = self._task, None
        fence = self._fence  # before the task's own step-down forgets it
        await cancel_and_wait([task])
        await self._step_down("stopping")
        if fence is not None:
            with contextlib.suppress(StoreError):
                await self._store.revoke_lease(fence.lease)

    async def _run(self) -> None:
        while True:
            fence = None
            try:
                # A read first: campaigning grants (and revokes) a lease, a raft write.
                if not await self._observe():
                    fence = await self._store.campaign(self._key, self.holder, self._ttl_s)
            except StoreError as exc:
                log.warning("campaign for %s failed: %s", self._key, exc)
            if fence is None:
                await asyncio.sleep(self._retry_s)
                continue
            await self._lead(fence)

    async def _observe(self) -> bool:
        """Read who holds the key (`current_holder`); True if someone does."""
        entry = await self._store.get(self._key)
        self.current_holder = None if entry is None else entry.value.decode()
        return entry is not None

    async def _lead(self, fence: Fence) -> None:
        self._fence, self._renewed_at = fence, time.monotonic()
        self.current_holder = fence.holder.decode()
        self.terms += 1
        log.info("this replica leads (term %d)", fence.token)
        if self._on_elected is not None:
            self._term_work = asyncio.create_task(self._elected(fence), name="leader-term")
        try:
            while True:
                await asyncio.sleep(self._ttl_s / 3)
                try:
                    await self._store.refresh_lease(fence.lease)
                except LeaseExpired:
                    return await self._step_down("its lease expired")
                except StoreUnavailable as exc:
                    if self.fence is None:
                        return await self._step_down(f"the store is unreachable ({exc})")
                    continue
                self._renewed_at = time.monotonic()
        finally:
            if self._fence is fence:
                await self._step_down("leadership ended")

    async def _elected(self, fence: Fence) -> None:
        assert self._on_elected is not None
        try:
            await self._on_elected(fence)
        except NotLeader:
            log.warning("term %d ended before its start-of-term work", fence.token)
        except StoreError as exc:
            log.warning("start-of-term work failed: %s", exc)

    async def _step_down(self, why: str) -> None:
        if self._fence is not None:
            log.warning("this replica no longer leads: %s", why)
        self._fence = None
        work, self._term_work = self._term_work, None
        if work is not None and not work.done():
            await cancel_and_wait([work])
