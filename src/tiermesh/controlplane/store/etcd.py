"""The `Store` on a real etcd v3 cluster (one member or several), through aetcd (asyncio gRPC).

aetcd is the only gRPC etcd client allowed in a tiermesh process: two etcd client libraries
in one process crash on duplicate protobuf symbols (DEPENDENCIES.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Self, TypeVar

import aetcd
import aetcd.client
import aetcd.rpc
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
    BundleConflict,
    ContentionExhausted,
    KeyExists,
    LeaseExpired,
    NotLeader,
    StoreRequestFailed,
    UnknownApiKey,
)
from tiermesh.controlplane.store.etcd_watch import DEFAULT_PROBE_INTERVAL_S, EtcdWatch
from tiermesh.controlplane.store.failover import MemberPool, Retry, parse_endpoints
from tiermesh.controlplane.store.keys import ROOT, KeyLayout
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
)

__all__ = ["DEFAULT_TIMEOUT_S", "EtcdStore"]

DEFAULT_TIMEOUT_S: Final = 5.0

T = TypeVar("T")


class _LeaseIs:
    """Transaction compare "key is bound to lease": aetcd's compare classes lack LEASE."""

    def __init__(self, key: bytes, lease_id: int) -> None:
        self._key = key
        self._lease_id = lease_id

    def build_message(self) -> Any:
        return aetcd.rpc.Compare(
            key=self._key,
            target=aetcd.rpc.Compare.LEASE,
            result=aetcd.rpc.Compare.EQUAL,
            lease=self._lease_id,
        )


class EtcdStore:
    """A `Store` on an etcd cluster: one endpoint (``"127.0.0.1:2379"``) or several (a
    sequence, or a comma list ``"h:p,h:p,h:p"``), all members of the same cluster.

    Owns one gRPC channel per member, opened by ``async with`` (or `connect`) and closed by
    `aclose`; bound to the event loop that opened it. Calls go to one member at a time
    (`endpoint` names it); when it fails a call, the store moves on to the next member and
    repeats the call there when that is safe: reads, watches and lease calls always, writes
    only when the request provably never reached the cluster (`failover` explains why).
    Every call has a deadline of ``timeout_s`` over all its tries, one try at most
    ``attempt_timeout_s`` (default: ``timeout_s`` for one endpoint, half of it for several,
    so a frozen member leaves time for another). When no member serves a call, or a write's
    outcome is unknown, it raises `StoreUnavailable` naming every endpoint. Watches follow
    the members too (`EtcdWatch`; ``watch_probe_s`` is how long a silent watch waits before
    checking its member).
    ``max_request_bytes`` and ``max_txn_ops`` must not exceed the server's
    ``--max-request-bytes`` and ``--max-txn-ops``; bundle pushes over them are refused before
    anything is sent.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        root: str = ROOT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempt_timeout_s: float | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        max_cas_attempts: int = 100,
        watch_probe_s: float = DEFAULT_PROBE_INTERVAL_S,
    ) -> None:
        parsed = parse_endpoints(endpoints)
        if attempt_timeout_s is None:
            attempt_timeout_s = timeout_s if len(parsed) == 1 else timeout_s / 2
        self.layout = KeyLayout(root)
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self._max_cas_attempts = max_cas_attempts
        self._watch_probe_s = watch_probe_s
        self._pool = MemberPool(parsed, timeout_s=timeout_s, attempt_timeout_s=attempt_timeout_s)
        self._tx: Any = aetcd.client.Transactions()

    @property
    def endpoint(self) -> str:
        """The member calls go to now."""
        return self._pool.endpoint

    @property
    def endpoints(self) -> tuple[str, ...]:
        """Every member this store may use, in the order given."""
        return self._pool.endpoints

    @property
    def _closed(self) -> bool:
        return self._pool.closed

    @property
    def _client(self) -> Any:
        """The current member's aetcd client (for tests that write around the typed API)."""
        return self._pool.client(self._pool.current)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Check that a member answers (trying each); raises `StoreUnavailable`."""
        await self._read("connect", lambda c: c.get(self.layout.bundle_meta.encode()))

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision`` on the whole cluster (all roots).

        An operations tool, not part of `Store`: watches that start or lag before it get
        `WatchCompacted`.
        """
        await self._write("compact", lambda c: c.compact(revision, physical=True))

    # -- internals -------------------------------------------------------------------------

    async def _read(self, operation: str, attempt: Callable[[Any], Awaitable[T]]) -> T:
        """A call that may be repeated on another member whatever happened."""
        return await self._pool.call(operation, attempt, retry=Retry.ALWAYS)

    async def _write(self, operation: str, attempt: Callable[[Any], Awaitable[T]]) -> T:
        """A call that is repeated on another member only if it never reached the cluster."""
        return await self._pool.call(operation, attempt, retry=Retry.IF_UNSENT)

    def _entry(self, kv: Any) -> Entry:
        return Entry(
            self.layout.relative(kv.key.decode()),
            bytes(kv.value),
            int(kv.create_revision),
            int(kv.mod_revision),
            int(kv.lease),
        )

    async def _txn(
        self,
        operation: str,
        compare: list[Any],
        success: list[Any],
        failure: list[Any],
        *,
        retry: Retry = Retry.IF_UNSENT,
    ) -> Any:
        return await self._pool.call(
            operation,
            lambda c: c.transaction(compare=compare, success=success, failure=failure),
            retry=retry,
        )

    # -- policy bundle -----------------------------------------------------------------------

    async def get_bundle(self) -> Bundle:
        found = await self._read(
            "get_bundle", lambda c: c.get_prefix(self.layout.bundle_prefix.encode())
        )
        meta: bytes | None = None
        files: dict[str, bytes] = {}
        for kv in found:
            key = kv.key.decode()
            if key == self.layout.bundle_meta:
                meta = bytes(kv.value)
            elif key.startswith(self.layout.bundle_files_prefix):
                files[key] = bytes(kv.value)
        return assemble_bundle(self.layout, meta, files, int(found.header.revision))

    async def push_bundle(
        self,
        files: Mapping[str, bytes],
        *,
        expected_revision: int,
        provenance: Mapping[str, JsonScalar] | None = None,
    ) -> Bundle:
        limits = {"max_request_bytes": self._max_request_bytes, "max_txn_ops": self._max_txn_ops}
        prepared = prepare_push(
            self.layout,
            files,
            expected_revision=expected_revision,
            provenance=provenance or {},
            **limits,
        )
        meta_key = self.layout.bundle_meta
        found = await self._read(
            "push_bundle", lambda c: c.get_prefix(self.layout.bundle_prefix.encode())
        )
        meta_kv: Any = None
        stored: list[str] = []
        for kv in found:
            key = kv.key.decode()
            if key == meta_key:
                meta_kv = kv
            elif key.startswith(self.layout.bundle_files_prefix):
                stored.append(key)
        current = BundleMeta.decode(bytes(meta_kv.value)) if meta_kv is not None else None
        plan = plan_push(self.layout, prepared, current=current, stored_file_keys=stored, **limits)

        tx = self._tx
        if meta_kv is None:
            guard = tx.version(meta_key.encode()) == 0
        else:
            guard = tx.mod(meta_key.encode()) == int(meta_kv.mod_revision)
        success = [tx.delete(key.encode()) for key in plan.deletes]
        success += [tx.put(key.encode(), value) for key, value in plan.puts]
        success.append(tx.put(meta_key.encode(), plan.meta_value))
        ok, responses = await self._txn(
            "push_bundle", [guard], success, [tx.get(meta_key.encode())]
        )
        if not ok:
            rows = responses[0]
            actual = BundleMeta.decode(bytes(rows[0][0])).revision if rows else 0
            raise BundleConflict(expected_revision, actual)
        revision = int(responses[-1].response_put.header.revision)
        return Bundle(plan.meta.revision, plan.meta.sha256, files, plan.meta.provenance, revision)

    # -- node registrations ------------------------------------------------------------------

    async def register_node(
        self, node_id: str, registration: bytes | BaseModel, ttl_s: int
    ) -> NodeLease:
        key = self.layout.node(node_id).encode()
        value = registration_bytes(registration)
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        lease = await self._read("register_node", lambda c: c.lease(ttl_s))
        lease_id = int(lease.id)
        try:
            # Repeatable: the node's own key, set to the same value under the same lease.
            await self._pool.call(
                "register_node",
                lambda c: c.put(key, value, lease=lease_id),
                retry=Retry.ALWAYS,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._read("register_node", lambda c: c.revoke_lease(lease_id))
            raise
        return NodeLease(node_id, lease_id, int(lease.ttl))

    async def update_node(self, lease: NodeLease, registration: bytes | BaseModel) -> int:
        key = self.layout.node(lease.node_id).encode()
        value = registration_bytes(registration)
        ok, responses = await self._txn(
            "update_node",
            [_LeaseIs(key, lease.lease_id)],
            [self._tx.put(key, value, lease=lease.lease_id)],
            [],
            retry=Retry.ALWAYS,  # the same value again under the same lease: repeatable
        )
        if not ok:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        return int(responses[0].response_put.header.revision)

    async def refresh_lease(self, lease: NodeLease) -> int:
        reply = await self._read("refresh_lease", lambda c: c.refresh_lease(lease.lease_id))
        if reply is None or int(reply.TTL) <= 0:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        return int(reply.TTL)

    async def revoke_lease(self, lease: NodeLease) -> None:
        try:
            await self._read("revoke_lease", lambda c: c.revoke_lease(lease.lease_id))
        except StoreRequestFailed as exc:
            if "lease not found" not in exc.detail:
                raise

    async def list_nodes(self) -> tuple[NodeRecord, ...]:
        prefix = self.layout.nodes_prefix
        found = await self._read("list_nodes", lambda c: c.get_prefix(prefix.encode()))
        return tuple(
            NodeRecord(
                kv.key.decode().removeprefix(prefix),
                bytes(kv.value),
                int(kv.lease),
                int(kv.mod_revision),
            )
            for kv in found
        )

    # -- usage counters ----------------------------------------------------------------------

    async def add_usage(
        self, tenant: str, *, month: str, tokens: int = 0, cost_micro: int = 0
    ) -> Usage:
        key = self.layout.usage(tenant, month).encode()
        check_increments(tokens, cost_micro)
        tx = self._tx
        current = await self._read("add_usage", lambda c: c.get(key))
        for _ in range(self._max_cas_attempts):
            if current is None:
                before = Usage(tenant)
                guard = tx.version(key) == 0
            else:
                before = decode_usage(tenant, bytes(current.value), int(current.mod_revision))
                guard = tx.mod(key) == int(current.mod_revision)
            new_tokens, new_cost = before.tokens + tokens, before.cost_micro + cost_micro
            ok, responses = await self._txn(
                "add_usage",
                [guard],
                [tx.put(key, encode_usage(new_tokens, new_cost))],
                [tx.get(key)],
            )
            if ok:
                revision = int(responses[0].response_put.header.revision)
                return Usage(tenant, new_tokens, new_cost, revision)
            rows = responses[0]
            current = rows[0][1] if rows else None
        raise ContentionExhausted(self.layout.usage(tenant, month), self._max_cas_attempts)

    async def get_usage(self, tenant: str, *, month: str) -> Usage:
        key = self.layout.usage(tenant, month).encode()
        current = await self._read("get_usage", lambda c: c.get(key))
        if current is None:
            return Usage(tenant)
        return decode_usage(tenant, bytes(current.value), int(current.mod_revision))

    async def adopt_legacy_usage(
        self, *, month: str, fence: Fence | None = None
    ) -> tuple[Usage, ...]:
        self.layout.usage_month_prefix(month)  # a malformed month fails before anything
        found = await self._read(
            "adopt_legacy_usage", lambda c: c.get_prefix(self.layout.usage_prefix.encode())
        )
        adopted: list[Usage] = []
        for kv in found:
            key = bytes(kv.key).decode()
            tenant = self.layout.legacy_usage_tenant(key)
            if tenant is not None and (usage := await self._adopt(tenant, key, month, fence)):
                adopted.append(usage)
        return tuple(sorted(adopted, key=lambda usage: usage.tenant))

    async def _adopt(
        self, tenant: str, legacy: str, month: str, fence: Fence | None
    ) -> Usage | None:
        """Move one old counter into ``month``'s (one transaction, both keys guarded)."""
        old_key, key = legacy.encode(), self.layout.usage(tenant, month).encode()
        tx = self._tx
        for _ in range(self._max_cas_attempts):
            old = await self._read("adopt_legacy_usage", lambda c: c.get(old_key))
            current = await self._read("adopt_legacy_usage", lambda c: c.get(key))
            if old is None:
                return None  # another caller moved it
            try:
                moved = decode_usage(tenant, bytes(old.value), int(old.mod_revision))
            except StoreRequestFailed:
                return None  # left in place, as documented
            before = (
                Usage(tenant)
                if current is None
                else decode_usage(tenant, bytes(current.value), int(current.mod_revision))
            )
            guards = [
                tx.mod(old_key) == int(old.mod_revision),
                tx.version(key) == 0
                if current is None
                else tx.mod(key) == int(current.mod_revision),
                *self._fence_guards(fence),
            ]
            tokens, cost = before.tokens + moved.tokens, before.cost_micro + moved.cost_micro
            ok, responses = await self._txn(
                "adopt_legacy_usage",
                guards,
                [tx.put(key, encode_usage(tokens, cost)), tx.delete(old_key)],
                [],
            )
            if ok:
                revision = int(responses[0].response_put.header.revision)
                return Usage(tenant, tokens, cost, revision)
            await self._check_fence(fence)
        raise ContentionExhausted(self.layout.usage(tenant, month), self._max_cas_attempts)

    # -- tenant API keys ---------------------------------------------------------------------

    async def create_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        full = self.layout.api_key(record.key_id)
        key = full.encode()
        tx = self._tx
        ok, responses = await self._txn(
            "create_api_key", [tx.version(key) == 0], [tx.put(key, encode_api_key(record))], []
        )
        if not ok:
            raise KeyExists(self.layout.relative(full))
        revision = int(responses[0].response_put.header.revision)
        return dataclasses.replace(record, mod_revision=revision)

    async def list_api_keys(self) -> tuple[ApiKeyRecord, ...]:
        prefix = self.layout.api_keys_prefix
        found = await self._read("list_api_keys", lambda c: c.get_prefix(prefix.encode()))
        return tuple(
            decode_api_key(
                kv.key.decode().removeprefix(prefix), bytes(kv.value), int(kv.mod_revision)
            )
            for kv in found
        )

    async def revoke_api_key(self, key_id: str, revoked_at: str) -> ApiKeyRecord:
        full = self.layout.api_key(key_id)
        key = full.encode()
        tx = self._tx
        current = await self._read("revoke_api_key", lambda c: c.get(key))
        for _ in range(self._max_cas_attempts):
            if current is None:
                raise UnknownApiKey(key_id)
            record = decode_api_key(key_id, bytes(current.value), int(current.mod_revision))
            if record.revoked:
                return record
            record = dataclasses.replace(record, revoked_at=revoked_at)
            ok, responses = await self._txn(
                "revoke_api_key",
                [tx.mod(key) == int(current.mod_revision)],
                [tx.put(key, encode_api_key(record))],
                [tx.get(key)],
            )
            if ok:
                revision = int(responses[0].response_put.header.revision)
                return dataclasses.replace(record, mod_revision=revision)
            rows = responses[0]
            current = rows[0][1] if rows else None
        raise ContentionExhausted(full, self._max_cas_attempts)

    # -- leadership --------------------------------------------------------------------------

    def _fence_guards(self, fence: Fence | None) -> list[Any]:
        if fence is None:
            return []
        full = self.layout.generic(fence.key).encode()
        tx = self._tx
        return [tx.create(full) == fence.token, tx.value(full) == fence.holder]

    async def _check_fence(self, fence: Fence | None) -> None:
        """After a refused transaction: raise `NotLeader` if the fence is what failed."""
        if fence is None:
            return
        entry = await self.get(fence.key)
        if entry is None or entry.create_revision != fence.token or entry.value != fence.holder:
            raise NotLeader(fence.key, fence.holder, fence.token)

    async def campaign(self, key: str, holder: bytes, ttl_s: int) -> Fence | None:
        full = self.layout.generic(key).encode()
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        granted = await self._read("campaign", lambda c: c.lease(ttl_s))
        lease_id = int(granted.id)
        tx = self._tx
        try:
            ok, responses = await self._txn(
                "campaign",
                [tx.version(full) == 0],
                [tx.put(full, bytes(holder), lease=lease_id)],
                [],
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._read("campaign", lambda c: c.revoke_lease(lease_id))
            raise
        if not ok:
            with contextlib.suppress(Exception):
                await self._read("campaign", lambda c: c.revoke_lease(lease_id))
            return None
        token = int(responses[0].response_put.header.revision)
        return Fence(key, bytes(holder), token, NodeLease(key, lease_id, int(granted.ttl)))

    async def put_fenced(self, fence: Fence, key: str, value: bytes) -> int:
        full = self.layout.generic(key).encode()
        ok, responses = await self._txn(
            "put_fenced", self._fence_guards(fence), [self._tx.put(full, bytes(value))], []
        )
        if not ok:
            raise NotLeader(fence.key, fence.holder, fence.token)
        return int(responses[0].response_put.header.revision)

    # -- small generic keys ------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        full = self.layout.generic(key).encode()
        found = await self._read("get", lambda c: c.get(full))
        return None if found is None else self._entry(found)

    async def put(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key).encode()
        result = await self._write("put", lambda c: c.put(full, bytes(value)))
        return int(result.header.revision)

    async def put_if_absent(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key).encode()
        tx = self._tx
        ok, responses = await self._txn(
            "put_if_absent", [tx.version(full) == 0], [tx.put(full, value)], []
        )
        if not ok:
            raise KeyExists(key)
        return int(responses[0].response_put.header.revision)

    async def delete(self, key: str) -> bool:
        full = self.layout.generic(key).encode()
        result = await self._write("delete", lambda c: c.delete(full))
        return result is not None

    async def delete_if_value(self, key: str, expected: bytes) -> bool:
        full = self.layout.generic(key).encode()
        tx = self._tx
        ok, responses = await self._txn(
            "delete_if_value", [tx.value(full) == bytes(expected)], [tx.delete(full)], []
        )
        return bool(ok) and int(responses[0].response_delete_range.deleted) == 1

    async def read_prefix(self, prefix: str) -> Snapshot:
        full = self.layout.prefix(prefix).encode()
        found = await self._read("read_prefix", lambda c: c.get_prefix(full))
        return Snapshot(int(found.header.revision), tuple(self._entry(kv) for kv in found))

    def watch(self, prefix: str, *, after_revision: int) -> EtcdWatch:
        return EtcdWatch(
            self._pool,
            self.layout,
            self.layout.prefix(prefix),
            after_revision,
            probe_interval_s=self._watch_probe_s,
        )
