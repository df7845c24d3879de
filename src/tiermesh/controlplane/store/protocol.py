"""The `Store` protocol: everything tiermesh keeps in etcd, behind one narrow interface.

Implementations: `tiermesh.controlplane.store.etcd.EtcdStore` (real etcd through aetcd) and
`tiermesh.controlplane.store.memory.MemoryStore` (a faithful in-memory fake). One contract test
suite runs against both.

Shared contracts:

- Task safety: every method may be called concurrently from many tasks of the event loop the
  store was opened on. Not thread-safe; never share a store across event loops.
- Keys: generic keys and watch prefixes are relative to the store's root; ``bundle/``,
  ``nodes/``, ``usage/`` and ``apikeys/`` are written only through the typed methods
  (`InvalidKey`).
- Revisions: one store-wide counter that grows by one per write transaction, as in etcd.
- Errors: every method may raise `StoreUnavailable` (the store cannot be reached; a write may or
  may not have happened) and `InvalidKey`; other errors are listed per method. All are
  `StoreError` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Protocol, Self

from pydantic import BaseModel

from tiermesh.controlplane.store.models import (
    ApiKeyRecord,
    Bundle,
    Entry,
    Fence,
    JsonScalar,
    NodeLease,
    NodeRecord,
    Snapshot,
    Usage,
    WatchEvent,
)

__all__ = ["Store", "WatchStream"]


class WatchStream(Protocol):
    """Changes under a prefix, in revision order, from just after a given revision.

    Use as ``async with store.watch(prefix, after_revision=r) as events: async for e in
    events``. Entering starts the watch (raises `StoreUnavailable`, or `WatchCompacted` when
    the history after ``r`` is gone); leaving, `aclose`, or cancelling the consuming task ends it
    and frees its resources. Iterating raises `StoreUnavailable` if the connection breaks and
    `WatchCompacted` if the store compacts past it; the stream is then closed. One consumer
    task per stream.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    async def aclose(self) -> None:
        """End the watch. Idempotent; never raises for a broken connection."""
        ...


class Store(Protocol):
    """Durable state of the control plane. See the module docstring for shared contracts."""

    # -- policy bundle ------------------------------------------------------------------

    async def get_bundle(self) -> Bundle:
        """The current bundle, read atomically; revision 0 and no files if none was pushed.

        Raises `BundleCorrupt` if the stored files disagree with their metadata.
        """
        ...

    async def push_bundle(
        self,
        files: Mapping[str, bytes],
        *,
        expected_revision: int,
        provenance: Mapping[str, JsonScalar] | None = None,
    ) -> Bundle:
        """Replace the whole bundle in one transaction if it is still at ``expected_revision``.

        ``files`` maps relative paths (``policies/x.rego``, ``data/y.json``) to content; stored
        files not in ``files`` are deleted in the same transaction. The new bundle revision is
        ``expected_revision + 1``; the returned bundle carries the write's store revision.

        Raises `BundleConflict` (the store holds another revision), `BundleTooLarge` and
        `BundleTooManyFiles` (over the store's request limits, checked before anything is
        written). On any error nothing stored has changed, except that after
        `StoreUnavailable` the push may have been applied: re-read to know.
        """
        ...

    # -- node registrations ---------------------------------------------------------------

    async def register_node(
        self, node_id: str, registration: bytes | BaseModel, ttl_s: int
    ) -> NodeLease:
        """Write a node's registration (JSON bytes or a model) bound to a new lease.

        Replaces any registration of the same node (a reconnecting node supersedes its stale
        session; the old lease no longer owns the key). The caller owns the returned lease:
        it must refresh it more often than every ``ttl_s`` seconds (etcd's minimum is about
        one second) and revoke it when the session ends. Raises ValueError for ``ttl_s < 1`` or
        bytes that are not JSON.
        """
        ...

    async def update_node(self, lease: NodeLease, registration: bytes | BaseModel) -> int:
        """Rewrite a live registration under its existing lease; returns the store revision.

        Raises `LeaseExpired` if the lease is gone or no longer owns the node's key (nothing
        is written then: an expired node must register again).
        """
        ...

    async def refresh_lease(self, lease: NodeLease) -> int:
        """Reset the lease's time to live to its full TTL; returns the TTL in seconds.

        Raises `LeaseExpired` if the lease has already expired or was revoked.
        """
        ...

    async def revoke_lease(self, lease: NodeLease) -> None:
        """End the lease now, deleting the keys bound to it. Idempotent."""
        ...

    async def list_nodes(self) -> tuple[NodeRecord, ...]:
        """Every live registration, by node id, read atomically."""
        ...

    # -- usage counters -------------------------------------------------------------------

    async def add_usage(
        self, tenant: str, *, month: str, tokens: int = 0, cost_micro: int = 0
    ) -> Usage:
        """Atomically add to a tenant's counters of ``month`` (``YYYY-MM``, a UTC calendar
        month: each month's counters start at zero); returns them after this addition.

        The caller names the month (the one the spend happened in), so spend reported after
        a boundary is still charged to its own month. Past months' counters are kept.

        Concurrent additions from any number of tasks or processes all count exactly once.
        Raises ValueError for negative amounts, `InvalidKey` for a malformed month or
        tenant, `ContentionExhausted` if the compare-and-swap loop keeps losing (nothing of
        this call was written then).
        """
        ...

    async def get_usage(self, tenant: str, *, month: str) -> Usage:
        """A tenant's counters of ``month`` (``YYYY-MM``); zeros with revision 0 if nothing
        was added in that month."""
        ...

    async def adopt_legacy_usage(
        self, *, month: str, fence: Fence | None = None
    ) -> tuple[Usage, ...]:
        """Fold counters kept before usage was per month (``usage/<tenant>``, no month)
        into ``month``'s, deleting each old key in the same transaction as the addition;
        returns the month counters it changed, sorted by tenant.

        Each tenant's move is atomic (both keys compare-and-swapped), so a crash or a
        concurrent caller neither loses nor double-counts spend, and a second call finds
        nothing to move. An old counter whose value does not parse is left in place (and
        not returned). With ``fence``, every move also compares the leader key (see
        :meth:`put_fenced`) and `NotLeader` stops the fold at the first refused move (the
        moves before it stay done). Raises `InvalidKey` for a malformed month,
        `ContentionExhausted` as :meth:`add_usage`.
        """
        ...

    # -- tenant API keys ------------------------------------------------------------------

    async def create_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        """Store a new key record (``apikeys/<key_id>``); returns it with its revision.

        Raises `KeyExists` (nothing written) if a record with that id exists, `InvalidKey`
        for an id that cannot be a key name.
        """
        ...

    async def list_api_keys(self) -> tuple[ApiKeyRecord, ...]:
        """Every key record, revoked ones included, by id, read atomically."""
        ...

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        """Mark a key revoked at ``revoked_at`` (compare-and-swap on the record); returns
        the record after. Idempotent: an already revoked key keeps its first ``revoked_at``
        and nothing is written. Records are never deleted, so a node can tell a revoked key
        from an unknown one.

        Raises `UnknownApiKey` (nothing written) if no record has ``key_id``,
        `ContentionExhausted` if concurrent writers keep winning.
        """
        ...

    # -- leadership -----------------------------------------------------------------------

    async def campaign(self, key: str, holder: bytes, ttl_s: int) -> Fence | None:
        """Become the holder of generic ``key`` if nobody holds it: create it with value
        ``holder``, bound to a new lease of ``ttl_s`` seconds, in one transaction.

        Returns the `Fence` (the caller owns its lease: refresh it more often than every
        ``ttl_s``, revoke it to resign), or None when the key exists (the new lease is
        revoked again). Raises ValueError for ``ttl_s < 1``, `InvalidKey`; after
        `StoreUnavailable` the lease was revoked (best effort) and nothing is held.
        """
        ...

    async def put_fenced(self, fence: Fence, key: str, value: bytes) -> int:
        """Write generic ``key`` only while ``fence`` still holds: the leader key's create
        revision is ``fence.token`` and its value ``fence.holder``, checked by the store in
        the write's own transaction. Returns the store revision.

        Raises `NotLeader` (nothing written) when the fence no longer holds.
        """
        ...

    # -- small generic keys ---------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        """The entry at relative ``key``, or None."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Write ``value`` at ``key`` unconditionally; returns the store revision."""
        ...

    async def put_if_absent(self, key: str, value: bytes) -> int:
        """Create ``key`` only if it does not exist; returns the store revision.

        Raises `KeyExists` (nothing written) if it exists. Exactly one of any number of
        concurrent callers succeeds.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        ...

    async def delete_if_value(self, key: str, expected: bytes) -> bool:
        """Delete ``key`` only if it holds exactly ``expected``; True if this call deleted it.

        Exactly one of any number of concurrent callers gets True: use it to consume one-time
        tokens.
        """
        ...

    async def read_prefix(self, prefix: str) -> Snapshot:
        """Every key under relative ``prefix`` (``""`` = all), read atomically, by key."""
        ...

    def watch(self, prefix: str, *, after_revision: int) -> WatchStream:
        """Changes under relative ``prefix`` with revisions greater than ``after_revision``.

        No I/O happens until the stream is entered. See `WatchStream`.
        """
        ...

    # -- lifetime -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release connections. Open watch streams end; leases are left to expire. Idempotent."""
        ...
