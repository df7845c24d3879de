"""Immutable values the `Store` returns. Plain frozen dataclasses, safe to share across tasks."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias, TypeVar

__all__ = [
    "ApiKeyRecord",
    "Bundle",
    "Entry",
    "EventKind",
    "Fence",
    "JsonScalar",
    "NodeLease",
    "NodeRecord",
    "Snapshot",
    "Usage",
    "WatchEvent",
]

JsonScalar: TypeAlias = str | int | float | bool | None

_K = TypeVar("_K")
_V = TypeVar("_V")


def _frozen(mapping: Mapping[_K, _V]) -> Mapping[_K, _V]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as read from the store. ``key`` is relative to the store's root."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease_id: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key under a prefix, read atomically at ``revision``.

    Watch from ``revision`` (``after_revision=snapshot.revision``) to see every later change
    and none that the snapshot already holds.
    """

    revision: int
    entries: tuple[Entry, ...]

    def get(self, key: str) -> Entry | None:
        """The entry with relative ``key``, or None."""
        return next((entry for entry in self.entries if entry.key == key), None)


class EventKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. ``value`` is empty for deletes; ``revision`` is the change's store revision.

    Several events can share a revision when one transaction changed several keys.
    """

    kind: EventKind
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """One complete policy bundle, read atomically.

    ``revision`` is the bundle revision (0: nothing pushed yet), bumped by one per push;
    ``etcd_revision`` is the store revision the bundle was read (or written) at, the point to
    watch from. ``files`` maps relative paths to content: ``*.rego`` are Rego modules, the rest
    data documents. ``sha256`` is `tiermesh.controlplane.store.bundle.bundle_digest` of
    ``files``.
    """

    revision: int
    sha256: str
    files: Mapping[str, bytes]
    provenance: Mapping[str, JsonScalar]
    etcd_revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", _frozen(self.files))
        object.__setattr__(self, "provenance", _frozen(self.provenance))

    @property
    def rego_modules(self) -> Mapping[str, str]:
        """Rego sources by path (every ``*.rego`` file), decoded as UTF-8."""
        return {p: v.decode() for p, v in sorted(self.files.items()) if p.endswith(".rego")}

    @property
    def data_documents(self) -> Mapping[str, bytes]:
        """Every file that is not a Rego module, by path."""
        return {p: v for p, v in sorted(self.files.items()) if not p.endswith(".rego")}


@dataclass(frozen=True, slots=True)
class NodeLease:
    """Handle to the lease a node's registration is bound to.

    The registration disappears ``ttl_s`` seconds after the last refresh, or at revoke.
    """

    node_id: str
    lease_id: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class Fence:
    """A held leadership (`Store.campaign`): proof that ``holder`` created ``key``.

    ``token`` is the leader key's create revision: it grows with every election, so no
    two terms share it. Fenced writes (`Store.put_fenced`, ``adopt_legacy_usage(fence=)``)
    compare both the key's create revision and its value in the same etcd transaction as
    the write, so a deposed holder's write is refused by the store itself. ``lease`` keeps
    the key alive: refresh it with `Store.refresh_lease`, give it up with
    `Store.revoke_lease` (the key goes with it).
    """

    key: str
    holder: bytes
    token: int
    lease: NodeLease


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One live node registration. ``registration`` is the JSON the node registered."""

    node_id: str
    registration: bytes
    lease_id: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Usage:
    """A tenant's cumulative spend. ``revision`` is the counter's last change (0: never)."""

    tenant: str
    tokens: int = 0
    cost_micro: int = 0
    revision: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """One tenant API key as stored: its digest, never the key.

    ``sha256`` is `tiermesh.controlplane.api.key_digest` of the key; ``created_at`` and
    ``revoked_at`` are ISO 8601 UTC timestamps (``revoked_at`` None: live);
    ``mod_revision`` is the record's last change.
    """

    key_id: str
    tenant: str
    sha256: str
    created_at: str
    revoked_at: str | None = None
    mod_revision: int = field(default=0, compare=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None
