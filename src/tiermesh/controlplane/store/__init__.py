"""Everything the control plane keeps in etcd, behind the `Store` protocol.

`EtcdStore` talks to a real etcd; `MemoryStore` is a faithful in-memory fake for tests.
Key layout: `tiermesh.controlplane.store.keys`. Errors: `tiermesh.controlplane.store.errors`.
"""

from __future__ import annotations

from tiermesh.controlplane.store.bundle import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    bundle_digest,
)
from tiermesh.controlplane.store.errors import (
    BundleConflict,
    BundleCorrupt,
    BundleTooLarge,
    BundleTooManyFiles,
    ContentionExhausted,
    InvalidKey,
    KeyExists,
    LeaseExpired,
    NotLeader,
    StoreError,
    StoreRequestFailed,
    StoreUnavailable,
    UnknownApiKey,
    WatchCompacted,
)
from tiermesh.controlplane.store.etcd import EtcdStore
from tiermesh.controlplane.store.keys import API_KEYS_PREFIX, ROOT, KeyLayout
from tiermesh.controlplane.store.leases import keep_alive
from tiermesh.controlplane.store.memory import ManualClock, MemoryStore
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
from tiermesh.controlplane.store.protocol import Store, WatchStream

__all__ = [
    "API_KEYS_PREFIX",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_TXN_OPS",
    "ROOT",
    "ApiKeyRecord",
    "Bundle",
    "BundleConflict",
    "BundleCorrupt",
    "BundleTooLarge",
    "BundleTooManyFiles",
    "ContentionExhausted",
    "Entry",
    "EtcdStore",
    "EventKind",
    "Fence",
    "InvalidKey",
    "JsonScalar",
    "KeyExists",
    "KeyLayout",
    "LeaseExpired",
    "ManualClock",
    "MemoryStore",
    "NodeLease",
    "NodeRecord",
    "NotLeader",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreRequestFailed",
    "StoreUnavailable",
    "UnknownApiKey",
    "Usage",
    "WatchCompacted",
    "WatchEvent",
    "WatchStream",
    "bundle_digest",
    "keep_alive",
]
