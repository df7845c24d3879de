"""Pure bundle logic shared by every `Store`: digest, metadata encoding, push planning.

A push is planned here and applied by the store as one transaction guarded by the metadata
key, so every implementation refuses the same pushes for the same reasons, before writing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tiermesh.controlplane.store.errors import (
    BundleConflict,
    BundleCorrupt,
    BundleTooLarge,
    BundleTooManyFiles,
)
from tiermesh.controlplane.store.keys import KeyLayout
from tiermesh.controlplane.store.models import Bundle, JsonScalar

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_TXN_OPS",
    "BundleMeta",
    "PushPlan",
    "assemble_bundle",
    "bundle_digest",
    "plan_push",
    "prepare_push",
]

DEFAULT_MAX_REQUEST_BYTES: Final = 1_572_864
"""etcd's default ``--max-request-bytes`` (1.5 MiB)."""
DEFAULT_MAX_TXN_OPS: Final = 128
"""etcd's default ``--max-txn-ops``."""
_META_FORMAT: Final = 1
# Upper bound of protobuf framing per operation in a TxnRequest (tags, lengths, lease).
_OP_OVERHEAD: Final = 32


def bundle_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) over the files in path order, each as length-prefixed path and content.

    Independent of insertion order; a rename or a moved byte changes it.
    """
    digest = hashlib.sha256()
    for path in sorted(files):
        encoded = path.encode()
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
        digest.update(len(files[path]).to_bytes(8, "big"))
        digest.update(files[path])
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class BundleMeta:
    """The value of the bundle metadata key."""

    revision: int
    sha256: str
    paths: tuple[str, ...]
    provenance: Mapping[str, JsonScalar]

    def encode(self) -> bytes:
        doc = {
            "format": _META_FORMAT,
            "revision": self.revision,
            "sha256": self.sha256,
            "files": list(self.paths),
            "provenance": dict(self.provenance),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> BundleMeta:
        """Parse a stored metadata value; raises `BundleCorrupt` if it is not one."""
        try:
            doc: Any = json.loads(raw)
            if doc["format"] != _META_FORMAT:
                raise BundleCorrupt(f"unknown metadata format {doc['format']!r}")
            return cls(
                revision=int(doc["revision"]),
                sha256=str(doc["sha256"]),
                paths=tuple(str(p) for p in doc["files"]),
                provenance=dict(doc["provenance"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleCorrupt(f"unreadable metadata: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PushPlan:
    """What one bundle push writes: ``deletes`` and ``puts`` then the metadata, atomically."""

    meta: BundleMeta
    meta_value: bytes
    puts: tuple[tuple[str, bytes], ...]
    deletes: tuple[str, ...]


def _request_bytes(layout: KeyLayout, plan: PushPlan) -> int:
    # The metadata key appears three times: compare, put, and the read on failure.
    size = len(layout.bundle_meta) * 3 + len(plan.meta_value) + 3 * _OP_OVERHEAD
    size += sum(len(key) + len(value) + _OP_OVERHEAD for key, value in plan.puts)
    size += sum(len(key) + _OP_OVERHEAD for key in plan.deletes)
    return size


def _check_limits(
    layout: KeyLayout, plan: PushPlan, max_request_bytes: int, max_txn_ops: int
) -> None:
    request_bytes = _request_bytes(layout, plan)
    if request_bytes > max_request_bytes:
        largest_key, largest = max(plan.puts, key=lambda kv: len(kv[1]), default=("", b""))
        largest_path = largest_key.removeprefix(layout.bundle_files_prefix)
        raise BundleTooLarge(request_bytes, max_request_bytes, largest_path, len(largest))
    operations = len(plan.puts) + len(plan.deletes) + 1
    if operations > max_txn_ops:
        raise BundleTooManyFiles(operations, max_txn_ops)


def prepare_push(
    layout: KeyLayout,
    files: Mapping[str, bytes],
    *,
    expected_revision: int,
    provenance: Mapping[str, JsonScalar],
    max_request_bytes: int,
    max_txn_ops: int,
) -> PushPlan:
    """Validate a push without looking at the store; the plan has no deletes yet.

    Raises `InvalidKey` for bad paths, `BundleTooLarge` / `BundleTooManyFiles` when even the
    writes alone exceed the limits, ValueError for a negative revision or provenance that is
    not JSON.
    """
    if expected_revision < 0:
        raise ValueError(f"expected_revision must be >= 0, got {expected_revision}")
    puts = tuple((layout.bundle_file(path), bytes(files[path])) for path in sorted(files))
    meta = BundleMeta(
        revision=expected_revision + 1,
        sha256=bundle_digest(files),
        paths=tuple(sorted(files)),
        provenance=dict(provenance),
    )
    try:
        meta_value = meta.encode()
    except TypeError as exc:
        raise ValueError(f"provenance must hold JSON scalars: {exc}") from exc
    plan = PushPlan(meta=meta, meta_value=meta_value, puts=puts, deletes=())
    _check_limits(layout, plan, max_request_bytes, max_txn_ops)
    return plan


def plan_push(
    layout: KeyLayout,
    prepared: PushPlan,
    *,
    current: BundleMeta | None,
    stored_file_keys: Iterable[str],
    max_request_bytes: int,
    max_txn_ops: int,
) -> PushPlan:
    """Complete a prepared push against the stored state read at one revision.

    Raises `BundleConflict` if the stored bundle revision is not the expected one, and the
    limit errors if the deletes of files no longer present push the request over a limit.
    """
    actual = current.revision if current is not None else 0
    expected = prepared.meta.revision - 1
    if actual != expected:
        raise BundleConflict(expected, actual)
    keep = {key for key, _ in prepared.puts}
    deletes = tuple(sorted(key for key in stored_file_keys if key not in keep))
    plan = PushPlan(prepared.meta, prepared.meta_value, prepared.puts, deletes)
    _check_limits(layout, plan, max_request_bytes, max_txn_ops)
    return plan


def assemble_bundle(
    layout: KeyLayout, meta_value: bytes | None, files_by_key: Mapping[str, bytes], revision: int
) -> Bundle:
    """Build the `Bundle` from one atomic read of the bundle prefix.

    Raises `BundleCorrupt` if the files disagree with the metadata's file list or digest.
    """
    if meta_value is None:
        if files_by_key:
            raise BundleCorrupt(f"{len(files_by_key)} bundle files stored without metadata")
        return Bundle(0, bundle_digest({}), {}, {}, revision)
    meta = BundleMeta.decode(meta_value)
    files = {key.removeprefix(layout.bundle_files_prefix): v for key, v in files_by_key.items()}
    if tuple(sorted(files)) != meta.paths:
        raise BundleCorrupt(f"stored files {sorted(files)} differ from metadata {meta.paths}")
    if bundle_digest(files) != meta.sha256:
        raise BundleCorrupt(f"stored files do not hash to the recorded sha256 {meta.sha256}")
    return Bundle(meta.revision, meta.sha256, files, meta.provenance, revision)
