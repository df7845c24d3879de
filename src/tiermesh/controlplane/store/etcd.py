"""The `Store` on a real etcd v3 server, through aetcd (asyncio gRPC).

aetcd is the only gRPC etcd client allowed in a tiermesh process: two etcd client libraries
in one process crash on duplicate protobuf symbols (DEPENDENCIES.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, NoReturn, Self

import aetcd
import aetcd.rpc
import grpc
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
    StoreError,
    StoreRequestFailed,
    StoreUnavailable,
    UnknownApiKey,
    WatchCompacted,
)
from tiermesh.controlplane.store.keys import ROOT, KeyLayout, prefix_range_end
from tiermesh.controlplane.store.models import (
    ApiKeyRecord,
    Bundle,
    Entry,
    EventKind,
    JsonScalar,
    NodeLease,
    NodeRecord,
    Snapshot,
    Usage,
    WatchEvent,
)

__all__ = ["DEFAULT_TIMEOUT_S", "EtcdStore"]

DEFAULT_TIMEOUT_S: Final = 5.0
_UNAVAILABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_CANCEL_TIMEOUT_S: Final = 1.0


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.removeprefix("http://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"etcd endpoint must be 'host:port', got {endpoint!r}")
    return host, int(port)


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
    """A `Store` on one etcd endpoint (``"127.0.0.1:2379"``).

    Owns one gRPC channel, opened by ``async with`` (or `connect`) and closed by `aclose`;
    bound to the event loop that opened it. Every call has a deadline of ``timeout_s``; a
    refused connection, an expired deadline or a broken stream raise `StoreUnavailable`
    naming the endpoint. ``max_request_bytes`` and ``max_txn_ops`` must not exceed the
    server's ``--max-request-bytes`` and ``--max-txn-ops``; bundle pushes over them are
    refused before anything is sent.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        root: str = ROOT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        max_cas_attempts: int = 100,
    ) -> None:
        host, port = _split_endpoint(endpoint)
        self.endpoint = f"{host}:{port}"
        self.layout = KeyLayout(root)
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops
        self._max_cas_attempts = max_cas_attempts
        self._client: Any = aetcd.Client(host=host, port=port, timeout=timeout_s)
        self._tx: Any = self._client.transactions
        self._closed = False

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the channel and check that the server answers; raises `StoreUnavailable`."""
        with self._translate("connect"):
            await self._client.connect()
            await self._client.get(self.layout.bundle_meta.encode())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(aetcd.ClientError, grpc.RpcError, TimeoutError):
            await self._client.close()

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision`` on the whole server (all roots).

        An operations tool, not part of `Store`: watches that start or lag before it get
        `WatchCompacted`.
        """
        with self._translate("compact"):
            await self._client.compact(revision, physical=True)

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self, operation: str) -> Iterator[None]:
        """Map aetcd / gRPC failures of ``operation`` to `StoreError` subclasses."""
        if self._closed:
            raise StoreUnavailable(self.endpoint, "store is closed")
        try:
            yield
        except StoreError:
            raise
        except (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError) as exc:
            raise StoreUnavailable(self.endpoint, str(exc) or type(exc).__name__) from exc
        except aetcd.ClientError as exc:
            raise StoreRequestFailed(operation, str(exc) or type(exc).__name__) from exc
        except grpc.aio.AioRpcError as exc:
            self._raise_rpc(operation, exc)
        except TimeoutError as exc:
            raise StoreUnavailable(self.endpoint, f"{operation} timed out") from exc

    def _raise_rpc(self, operation: str, exc: grpc.aio.AioRpcError) -> NoReturn:
        detail = f"{exc.code().name}: {exc.details()}"
        if exc.code() in _UNAVAILABLE_CODES:
            raise StoreUnavailable(self.endpoint, detail) from exc
        raise StoreRequestFailed(operation, detail) from exc

    def _entry(self, kv: Any) -> Entry:
        return Entry(
            self.layout.relative(kv.key.decode()),
            bytes(kv.value),
            int(kv.create_revision),
            int(kv.mod_revision),
            int(kv.lease),
        )

    async def _txn(self, compare: list[Any], success: list[Any], failure: list[Any]) -> Any:
        return await self._client.transaction(compare=compare, success=success, failure=failure)

    # -- policy bundle -----------------------------------------------------------------------

    async def get_bundle(self) -> Bundle:
        with self._translate("get_bundle"):
            found = await self._client.get_prefix(self.layout.bundle_prefix.encode())
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
        with self._translate("push_bundle"):
            found = await self._client.get_prefix(self.layout.bundle_prefix.encode())
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
        with self._translate("push_bundle"):
            ok, responses = await self._txn([guard], success, [tx.get(meta_key.encode())])
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
        with self._translate("register_node"):
            lease = await self._client.lease(ttl_s)
        lease_id = int(lease.id)
        try:
            with self._translate("register_node"):
                await self._client.put(key, value, lease=lease_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.revoke_lease(lease_id)
            raise
        return NodeLease(node_id, lease_id, int(lease.ttl))

    async def update_node(self, lease: NodeLease, registration: bytes | BaseModel) -> int:
        key = self.layout.node(lease.node_id).encode()
        value = registration_bytes(registration)
        with self._translate("update_node"):
            ok, responses = await self._txn(
                [_LeaseIs(key, lease.lease_id)],
                [self._tx.put(key, value, lease=lease.lease_id)],
                [],
            )
        if not ok:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        return int(responses[0].response_put.header.revision)

    async def refresh_lease(self, lease: NodeLease) -> int:
        with self._translate("refresh_lease"):
            reply = await self._client.refresh_lease(lease.lease_id)
        if reply is None or int(reply.TTL) <= 0:
            raise LeaseExpired(lease.lease_id, lease.node_id)
        return int(reply.TTL)

    async def revoke_lease(self, lease: NodeLease) -> None:
        try:
            with self._translate("revoke_lease"):
                await self._client.revoke_lease(lease.lease_id)
        except StoreRequestFailed as exc:
            if "lease not found" not in exc.detail:
                raise

    async def list_nodes(self) -> tuple[NodeRecord, ...]:
        prefix = self.layout.nodes_prefix
        with self._translate("list_nodes"):
            found = await self._client.get_prefix(prefix.encode())
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
        with self._translate("add_usage"):
            current = await self._client.get(key)
        for _ in range(self._max_cas_attempts):
            if current is None:
                before = Usage(tenant)
                guard = tx.version(key) == 0
            else:
                before = decode_usage(tenant, bytes(current.value), int(current.mod_revision))
                guard = tx.mod(key) == int(current.mod_revision)
            new_tokens, new_cost = before.tokens + tokens, before.cost_micro + cost_micro
            with self._translate("add_usage"):
                ok, responses = await self._txn(
                    [guard], [tx.put(key, encode_usage(new_tokens, new_cost))], [tx.get(key)]
                )
            if ok:
                revision = int(responses[0].response_put.header.revision)
                return Usage(tenant, new_tokens, new_cost, revision)
            rows = responses[0]
            current = rows[0][1] if rows else None
        raise ContentionExhausted(self.layout.usage(tenant, month), self._max_cas_attempts)

    async def get_usage(self, tenant: str, *, month: str) -> Usage:
        key = self.layout.usage(tenant, month).encode()
        with self._translate("get_usage"):
            current = await self._client.get(key)
        if current is None:
            return Usage(tenant)
        return decode_usage(tenant, bytes(current.value), int(current.mod_revision))

    async def adopt_legacy_usage(self, *, month: str) -> tuple[Usage, ...]:
        self.layout.usage_month_prefix(month)  # a malformed month fails before anything
        with self._translate("adopt_legacy_usage"):
            found = await self._client.get_prefix(self.layout.usage_prefix.encode())
        adopted: list[Usage] = []
        for kv in found:
            key = bytes(kv.key).decode()
            tenant = self.layout.legacy_usage_tenant(key)
            if tenant is not None and (usage := await self._adopt(tenant, key, month)):
                adopted.append(usage)
        return tuple(sorted(adopted, key=lambda usage: usage.tenant))

    async def _adopt(self, tenant: str, legacy: str, month: str) -> Usage | None:
        """Move one old counter into ``month``'s (one transaction, both keys guarded)."""
        old_key, key = legacy.encode(), self.layout.usage(tenant, month).encode()
        tx = self._tx
        for _ in range(self._max_cas_attempts):
            with self._translate("adopt_legacy_usage"):
                old, current = await self._client.get(old_key), await self._client.get(key)
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
            ]
            tokens, cost = before.tokens + moved.tokens, before.cost_micro + moved.cost_micro
            with self._translate("adopt_legacy_usage"):
                ok, responses = await self._txn(
                    guards, [tx.put(key, encode_usage(tokens, cost)), tx.delete(old_key)], []
                )
            if ok:
                revision = int(responses[0].response_put.header.revision)
                return Usage(tenant, tokens, cost, revision)
        raise ContentionExhausted(self.layout.usage(tenant, month), self._max_cas_attempts)

    # -- tenant API keys ---------------------------------------------------------------------

    async def create_api_key(self, record: ApiKeyRecord) -> ApiKeyRecord:
        full = self.layout.api_key(record.key_id)
        key = full.encode()
        tx = self._tx
        with self._translate("create_api_key"):
            ok, responses = await self._txn(
                [tx.version(key) == 0], [tx.put(key, encode_api_key(record))], []
            )
        if not ok:
            raise KeyExists(self.layout.relative(full))
        revision = int(responses[0].response_put.header.revision)
        return dataclasses.replace(record, mod_revision=revision)

    async def list_api_keys(self) -> tuple[ApiKeyRecord, ...]:
        prefix = self.layout.api_keys_prefix
        with self._translate("list_api_keys"):
            found = await self._client.get_prefix(prefix.encode())
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
        with self._translate("revoke_api_key"):
            current = await self._client.get(key)
        for _ in range(self._max_cas_attempts):
            if current is None:
                raise UnknownApiKey(key_id)
            record = decode_api_key(key_id, bytes(current.value), int(current.mod_revision))
            if record.revoked:
                return record
            record = dataclasses.replace(record, revoked_at=revoked_at)
            with self._translate("revoke_api_key"):
                ok, responses = await self._txn(
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

    # -- small generic keys ------------------------------------------------------------------

    async def get(self, key: str) -> Entry | None:
        full = self.layout.generic(key).encode()
        with self._translate("get"):
            found = await self._client.get(full)
        return None if found is None else self._entry(found)

    async def put(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key).encode()
        with self._translate("put"):
            result = await self._client.put(full, bytes(value))
        return int(result.header.revision)

    async def put_if_absent(self, key: str, value: bytes) -> int:
        full = self.layout.generic(key).encode()
        tx = self._tx
        with self._translate("put_if_absent"):
            ok, responses = await self._txn([tx.version(full) == 0], [tx.put(full, value)], [])
        if not ok:
            raise KeyExists(key)
        return int(responses[0].response_put.header.revision)

    async def delete(self, key: str) -> bool:
        full = self.layout.generic(key).encode()
        with self._translate("delete"):
            result = await self._client.delete(full)
        return result is not None

    async def delete_if_value(self, key: str, expected: bytes) -> bool:
        full = self.layout.generic(key).encode()
        tx = self._tx
        with self._translate("delete_if_value"):
            ok, responses = await self._txn(
                [tx.value(full) == bytes(expected)], [tx.delete(full)], []
            )
        return bool(ok) and int(responses[0].response_delete_range.deleted) == 1

    async def read_prefix(self, prefix: str) -> Snapshot:
        full = self.layout.prefix(prefix).encode()
        with self._translate("read_prefix"):
            found = await self._client.get_prefix(full)
        return Snapshot(int(found.header.revision), tuple(self._entry(kv) for kv in found))

    def watch(self, prefix: str, *, after_revision: int) -> _EtcdWatch:
        return _EtcdWatch(self, self.layout.prefix(prefix), after_revision)


class _EtcdWatch:
    """`WatchStream` over one etcd watch on the store's shared watch stream."""

    def __init__(self, store: EtcdStore, full_prefix: str, after_revision: int) -> None:
        self._store = store
        self._prefix = full_prefix.encode()
        self._after = after_revision
        self._watch: Any = None
        self._events: AsyncIterator[Any] | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        if self._watch is not None or self._closed:
            raise RuntimeError("a watch stream can be entered once")
        try:
            with self._store._translate("watch"):
                self._watch = await self._store._client.watch(
                    self._prefix,
                    range_end=prefix_range_end(self._prefix),
                    start_revision=self._after + 1,
                )
        except StoreRequestFailed as exc:
            self._raise_compacted(exc.__cause__)
            raise
        self._events = aiter(self._watch)
        return self

    def _raise_compacted(self, cause: BaseException | None) -> None:
        if isinstance(cause, aetcd.RevisionCompactedError):
            self._closed = True
            raise WatchCompacted(self._after, int(cause.compacted_revision)) from cause

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._closed or self._store._closed:
            self._closed = True
            raise StopAsyncIteration
        if self._events is None:
            raise RuntimeError("enter the watch stream (async with) before iterating it")
        try:
            with self._store._translate("watch"):
                event = await anext(self._events)
        except StopAsyncIteration:
            self._closed = True
            raise
        except StoreRequestFailed as exc:
            await self.aclose()
            self._raise_compacted(exc.__cause__)
            raise
        except StoreError:
            await self.aclose()
            raise
        kind = EventKind.PUT if event.kind == "PUT" else EventKind.DELETE
        key = self._store.layout.relative(event.kv.key.decode())
        value = bytes(event.kv.value) if kind is EventKind.PUT else b""
        return WatchEvent(kind, key, value, int(event.kv.mod_revision))

    async def aclose(self) -> None:
        if self._closed and self._watch is None:
            return
        self._closed = True
        watch, self._watch = self._watch, None
        events, self._events = self._events, None
        if watch is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), _CANCEL_TIMEOUT_S)
        if events is not None and hasattr(events, "aclose"):
            with contextlib.suppress(Exception):
                await events.aclose()
