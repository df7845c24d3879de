"""An in-memory `Store` that behaves like etcd, for tests of the code around the store.

It keeps etcd's semantics where callers can observe them: one revision per write
transaction, watch history replayed from any revision still held, leases that delete their
keys on expiry (in one revision), the same request limits. Time is a `ManualClock`: leases
expire only when a test advances it. Every method yields to the event loop once before it
acts, so races between tasks show up as they would against a real server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from pydantic import BaseModel

from tiermesh.controlplane.store.bundle import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    BundleMeta,
    assemble_bundle,
    plan_push,
    prepare_push,
)
from tiermesh.controlplane.store.codec import (
    check_increments,
    decode_api_key,
    decode_usage,
    encode_api_key,
    encode_usage,
    registration_bytes,
)
from tiermesh.controlplane.store.errors import (
    KeyExists,
    LeaseExpired,
    NotLeader,
    StoreRequestFailed,
    StoreUnavailable,
    UnknownApiKey,
    WatchCompacted,
)
from tiermesh.controlplane.store.keys import ROOT, KeyLayout
from tiermesh.controlplane.store.models import (
    ApiKeyRecord,
    Bundle,
    Entry,
    EventKind,
    Fence,
    JsonScalar,
    NodeLease,
    NodeRecord,
    Snapshot,
    Usage,
    WatchEvent,
)

__all__ = ["MEMORY_ENDPOINT", "ManualClock", "MemoryStore"]

MEMORY_ENDPOINT = "memory"
"""The endpoint `StoreUnavailable` names for a `MemoryStore`."""


class ManualClock:
    """Monotonic seconds that move only when `advance` is called. Not thread-safe."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward and let subscribers (stores expiring leases) react at once."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``; a drop-in `asyncio.sleep`."""
        deadline = self._now + seconds
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        woken = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if self._now >= deadline and not woken.done():
                woken.set_result(None)

        self._listeners.append(wake)
        try:
            await woken
        finally:
            self._listeners.remove(wake)


@dataclass(slots=True)
class _Value:
    value: bytes
    create_revision: int
    mod_revision: int
    lease_id: int


@dataclass(slots=True)
class _Lease:
    node_id: str
    ttl_s: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Change:
    kind: EventKind
    key: str  # full key
    value: bytes
    revision: int


class MemoryStore:
    """A `Store` held in this process. Task-safe on one event loop, like `EtcdStore`.

    Beyond the protocol: `compact` drops watch history like etcd's compaction, and
    `set_unavailable` simulates losing the server (calls and open watches then raise
    `StoreUnavailable` naming `MEMORY_ENDPOINT`).
    """

    def __init__(
        self,
        *,
        root: str = ROOT,
        clock: ManualClock | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
    ) -> None:
        self.layout = KeyLayout(root)
        self.clock = clock if clock is not None else ManualClock()
        self.clock.subscribe(self._expire_leases)
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self._data: dict[str, _Value] = {}
        self._revision = 1  # etcd starts an empty store at revision 1
        self._history: list[_Change] = []
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x694D_0000_0001)
        self._watches: set[_MemoryWatch] = set()
        self._unavailable = False
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- simulation controls ---------------------------------------------------------------

    def set_unavailable(self, unavailable: bool = True) -> None:
        """Simulate losing (or regaining) the server; open watches fail at once."""
        self._unavailable = unavailable
        if unavailable:
            for watch in list(self._watches):
                watch.fail(StoreUnavailable(MEMORY_ENDPOINT, "simulated outage"))

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision``; watches starting earlier get `WatchCompacted`."""
        await self._enter()
        self._compacted = max(self._compacted, min(revision, self._revision))
        self._history = [c for c in self._history if c.revision >= self._compacted]

    @property
    def revision(self) -> int:
        """The current store revision."""
        return self._revision

    # -- internals -------------------------------------------------------------------------

    async def _enter(self) -> None:
        await asyncio.sleep(0)
        self._check_available()
        self._expire_leases()

    def _check_available(self) -> None:
        if self._closed:
            raise StoreUnavailable(MEMORY_ENDPOINT, "store is closed")
        if self._unavailable:
            raise StoreUnavailable(MEMORY_ENDPOINT, "simulated outage")

    def _expire_leases(self) -> None:
        now = self.clock.now()
        for lease_id in [i for i, lease in self._leases.items() if lease.expires_at <= now]:
            self._drop_lease(lease_id)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            self._apply(puts=(), deletes=sorted(lease.keys))

    def _apply(self, *, puts: Sequence[tuple[str, bytes, int]], deletes: Sequence[str]) -> int:
        """Apply one transaction; returns its revision (unchanged if it changed nothing)."""
        deletes = [key for key in deletes if key in self._data]
        if not puts and not deletes:
            return self._revision
        self._revision += 1
        revision = self._revision
        changes: list[_Change] = []
        for key in deletes:
            old = self._data.pop(key)
            if old.lease_id in self._leases:
                self._leases[old.lease_id].keys.discard(key)
            changes.append(_Change(EventKind.DELETE, key, b"", revision))
        for key, value, lease_id in puts:
            old_value = self._data.get(key)
            if old_value is not None and old_value.lease_id in self._leases:
                self._leases[old_value.lease_id].keys.discard(key)
            created = old_value.create_revision if old_value is not None else revision
            self._data[key] = _Value(value, created, revision, lease_id)
            if lease_id:
                self._leases[lease_id].keys.add(key)
            changes.append(_Change(EventKind.PUT, key, value, revision))
        self._history.extend(changes)
        for watch in list(self._watches):
            watch.deliver(changes)
        return revision

    def _entry(self, key: str) -> Entry | None:
        value = self._data.get(key)
        if value is None:
            return None
        return Entry(
            self.layout.relative(key),
            value.value,
            value.create_revision,
            value.mod_revision,
            value.lease_id,
        )

    def _range(self, prefix: str) -> list[tuple[str, _Value]]:
        return sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))

    # -- policy bundle -----------------------------------------------------------------------

    async def get_bundle(self) -> Bundle:
        await self._enter()
        meta = self._data.get(self.layout.bundle_meta)
        files = {k: v.value for k, v in self._range(self.layout.bundle_files_prefix)}
        return assemble_bundle(self.layout, meta.value if meta else None, files, self._revision)

    async def push_bundle(
        self,
        files: Mapping[str, bytes],
        *,
        expected_revision: int,
        provenance: Mapping[str, JsonScalar] | None = None,
    ) -> Bundle:
        prepared = prepare_push(
            self.layout,
            files,
            expected_revision=expected_revision,
            provenance=provenance or {},
            max_request_bytes=self._max_request_bytes,
            max_txn_ops=self._max_txn_ops,
        )
        await self._enter()
        meta = self._data.get(self.layout.bundle_meta)
        plan = plan_push(
            self.layout,
            prepared,
            current=BundleMeta.decode(meta.value) if meta else None,
            stored_file_keys=[k for k, _ in self._range(self.layout.bundle_files_prefix)],
            max_request_bytes=self._max_request_bytes,
            max_txn_ops=self._max_txn_ops,
        )
        puts = [(k, v, 0) for k, v in plan.puts]
        puts.append((self.layout.bundle_meta, plan.meta_value, 0))
        revision = self._apply(puts=puts, deletes=plan.deletes)
        return Bundle(plan.meta.revision, plan.meta.sha256, files, plan.meta.provenance, revision)

    # -- node registrations ------------------------------------------------------------------

    async def register_node(
        self, node_id: str, registration: bytes | BaseModel, ttl_s: int
    ) -> NodeLease:
        key = self.layout.node(node_id)
        value = registration_bytes(registration)
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        await self._enter()
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(node_id, ttl_s, self.clock.now() + ttl_s)
        self._apply(puts=[(key, value, lease_id)], deletes=())
        return NodeLease(node_id, lease_id, ttl_s)

    async def update_node(self, lease: NodeLease, registration: bytes | BaseModel) -> int:
        key = self.layout.node(lease.node_id)
        value = registration_bytes(registration)
        await self._enter()
        current = self._data.get(key)
        if current is None or current.lease_id != lease.lease_id:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        return self._apply(puts=[(key, value, lease.lease_id)], deletes=())

    async def refresh_lease(self, lease: NodeLease) -> int:
        await self._enter()
        held = self._leases.get(lease.lease_id)
        if held is None:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        held.expires_at = self.clock.now() + held.ttl_s
        return held.ttl_s

    async def revoke_lease(self, lease: NodeLease) -> None:
        await self._enter()
        self._drop_lease(lease.lease_id)

    async def list_nodes(self) -> tuple[NodeRecord, ...]:
        await self._enter()
        prefix = self.layout.nodes_prefix
        return tuple(
            NodeRecord(key.removeprefix(prefix), v.value, v.lease_id, v.mod_revision)
            for key, v in self._range(prefix)
        )

    # -- usage counters ----------------------------------------------------------------------

    async def add_usage(
        self, tenant: str, *, month: str, tokens: int = 0, cost_micro: int = 0
    ) -> Usage:
        key = self.layout.usage(tenant, month)
        check_increments(tokens, cost_micro)
        await self._enter()
        current = self._data.get(key)
        before = decode_usage(tenant, current.value if current else None, 0)
        new_tokens, new_cost = before.tokens + tokens, before.cost_micro + cost_micro
        revision = self._apply(puts=[(key, encode_usage(new_tokens, new_cost), 0)], deletes=())
        return Usage(tenant, new_tokens, new_cost, revision)

    async def get_usage(self, tenant: str, *, month: str) -> Usage:
        key = self.layout.usage(tenant, month)
        await self._enter()
        current = self._data.get(key)
        if current is None:
            return Usage(tenant)
        return decode_usage(tenant, current.value, current.mod_revision)

    async def adopt_legacy_usage(
        self, *, month: str, fence: Fence | None = None
    ) -> tuple[Usage, ...]:
        self.layout.usage_month_prefix(month)  # a malformed month fails before anything
        await self._enter()
        adopted: list[Usage] = []
        for key, value in self._range(self.layout.usage_prefix):
            tenant = self.layout.legacy_usage_tenant(key)
            if tenant is None:
                continue
            try:
                old = decode_usage(tenant, value.value, value.mod_revision)
            except StoreRequestFailed:
                continue
            self._check_fence(fence)
            target = self.layout.usage(tenant, month)
            current = self._data.get(target)
            before = decode_usage(tenant, current.value if current else None, 0)
            tokens, cost = before.tokens + old.tokens, before.cost_micro + old.cost_micro
            revision = self._apply(puts=[(target, encode_usage(tokens, cost), 0)], deletes=[key])
            adopted.append(Usage(tenant, tokens, cost, revision))
        return tuple(adopted)

    # -- tenant API keys ---------------------------------------------------------------------

    async def create_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        key = self.layout.api_key(record.key_id)
        await self._enter()
        if key in self._data:
            raise KeyExists(self.layout.relative(key))
        revision = self._apply(puts=[(key, encode_api_key(record), 0)], deletes=())
        return replace(record, mod_revision=revision)

    async def list_api_keys(self) -> tuple[ApiKeyRecord, ...]:
        await self._enter()
        prefix = self.layout.api_keys_prefix
        return tuple(
            decode_api_key(key.removeprefix(prefix), v.value, v.mod_revision)
            for key, v in self._range(prefix)
        )

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        key = self.layout.api_key(key_id)
        await self._enter()
        current = self._data.get(key)
        if current is None:
            raise UnknownApiKey(key_id)
        record = decode_api_key(key_id, current.value, current.mod_revision)
        if record.revoked:
            return record
        record = replace(record, revoked_at=revoked_at)
        revision = self._apply(puts=[(key, encode_api_key(record), 0)], deletes=())
        return replace(record, mod_revision=revision)

    # -- leadership --------------------------------------------------------------------------

    def _check_fence(self, fence: Fence | None) -> None:
        if fence is None:
            return
        held = self._data.get(self.layout.generic(fence.key))
        if held is None or held.create_revision != fence.token or held.value != fence.holder:
            raise NotLeader(fence.key, fence.holder, fence.token)

    async def campaign(self, key: str, holder: bytes, ttl_s: int) -> Fence | None:
        full = self.layout.generic(key)
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        await self._enter()
        if full in self._data:
            return None
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(key, ttl_s, self.clock.now() + ttl_s)
        token = self._apply(puts=[(full, bytes(holder), lease_id)], deletes=())
        return Fence(key, bytes(holder), token, NodeLease(key, lease_id, ttl_s))

    async def put_fenced(self, fence: Fence, key: str, value: bytes) -> int:
        full = self.layout.generic(key)
        await self._enter()
        self._check_fence(fence)
        return self._apply(puts=[(full, bytes(value), 0)], deletes=())

    # -- small generic keys ------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        full = self.layout.generic(key)
        await self._enter()
        return self._entry(full)

    async def put(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key)
        await self._enter()
        return self._apply(puts=[(full, bytes(value), 0)], deletes=())

    async def put_if_absent(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key)
        await self._enter()
        if full in self._data:
            raise KeyExists(key)
        return self._apply(puts=[(full, bytes(value), 0)], deletes=())

    async def delete(self, key: str) -> bool:
        full = self.layout.generic(key)
        await self._enter()
        existed = full in self._data
        self._apply(puts=(), deletes=[full])
        return existed

    async def delete_if_value(self, key: str, expected: bytes) -> bool:
        full = self.layout.generic(key)
        await self._enter()
        current = self._data.get(full)
        if current is None or current.value != expected:
            return False
        self._apply(puts=(), deletes=[full])
        return True

    async def read_prefix(self, prefix: str) -> Snapshot:
        full = self.layout.prefix(prefix)
        await self._enter()
        entries = tuple(e for k, _ in self._range(full) if (e := self._entry(k)) is not None)
        return Snapshot(self._revision, entries)

    def watch(self, prefix: str, *, after_revision: int) -> _MemoryWatch:
        return _MemoryWatch(self, self.layout.prefix(prefix), after_revision)

    # -- lifetime ----------------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        for watch in list(self._watches):
            await watch.aclose()


_END = None


class _MemoryWatch:
    """`WatchStream` over a `MemoryStore`."""

    def __init__(self, store: MemoryStore, full_prefix: str, after_revision: int) -> None:
        self._store = store
        self._prefix = full_prefix
        self._after = after_revision
        self._queue: asyncio.Queue[WatchEvent | StoreUnavailable | WatchCompacted | None] = (
            asyncio.Queue()
        )
        self._started = False
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._store._enter()
        if self._started:
            raise RuntimeError("a watch stream can be entered once")
        first_kept = self._store._compacted
        if first_kept and self._after + 1 < first_kept:
            raise WatchCompacted(self._after, first_kept)
        self._started = True
        self.deliver([c for c in self._store._history if c.revision > self._after])
        self._store._watches.add(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def deliver(self, changes: list[_Change]) -> None:
        for change in changes:
            if change.revision > self._after and change.key.startswith(self._prefix):
                key = self._store.layout.relative(change.key)
                self._queue.put_nowait(WatchEvent(change.kind, key, change.value, change.revision))

    def fail(self, error: StoreUnavailable | WatchCompacted) -> None:
        self._store._watches.discard(self)
        self._queue.put_nowait(error)

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        if not self._started:
            raise RuntimeError("enter the watch stream (async with) before iterating it")
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END or self._closed:
            self._closed = True
            raise StopAsyncIteration
        if isinstance(item, WatchEvent):
            return item
        self._closed = True
        raise item

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._store._watches.discard(self)
            self._queue.put_nowait(_END)
