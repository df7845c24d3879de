"""Errors raised by every `Store` implementation.

One root, `StoreError`; each subclass takes structured arguments, keeps them as attributes
and formats its own message. Callers branch on the class and read the attributes; they never
parse messages. gRPC status codes are assigned at the server edge, not here.
"""

from __future__ import annotations

__all__ = [
    "BundleConflict",
    "BundleCorrupt",
    "BundleTooLarge",
    "BundleTooManyFiles",
    "ContentionExhausted",
    "InvalidKey",
    "KeyExists",
    "LeaseExpired",
    "NotLeader",
    "StoreError",
    "StoreRequestFailed",
    "StoreUnavailable",
    "UnknownApiKey",
    "WatchCompacted",
]


class StoreError(Exception):
    """Root of every error a `Store` raises on purpose."""


class StoreUnavailable(StoreError):
    """The backing store could not be reached (refused, timed out, or the stream broke).

    Nothing can be assumed about a write that raised this: it may or may not have been
    applied. Reads and compare-and-swap writes are safe to retry.
    """

    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        self.detail = detail
        super().__init__(f"etcd at {endpoint} is unavailable: {detail}")


class StoreRequestFailed(StoreError):
    """The store answered but refused a request for a reason no other error names."""

    def __init__(self, operation: str, detail: str) -> None:
        self.operation = operation
        self.detail = detail
        super().__init__(f"store request {operation!r} failed: {detail}")


class BundleConflict(StoreError):
    """A bundle push expected one bundle revision while the store holds another.

    Nothing was written. The pusher should re-read the bundle, rebase and push again.
    """

    def __init__(self, expected_revision: int, actual_revision: int) -> None:
        self.expected_revision = expected_revision
        self.actual_revision = actual_revision
        super().__init__(
            f"bundle push expected bundle revision {expected_revision} but the store holds "
            f"revision {actual_revision}; re-read the bundle and push again"
        )


class BundleTooLarge(StoreError):
    """A bundle push would exceed the store's request size limit. Nothing was written."""

    def __init__(
        self, request_bytes: int, limit_bytes: int, largest_path: str, largest_bytes: int
    ) -> None:
        self.request_bytes = request_bytes
        self.limit_bytes = limit_bytes
        self.largest_path = largest_path
        self.largest_bytes = largest_bytes
        super().__init__(
            f"bundle needs a {request_bytes}-byte write but the store accepts at most "
            f"{limit_bytes} bytes per request; largest file {largest_path!r} is "
            f"{largest_bytes} bytes"
        )


class BundleTooManyFiles(StoreError):
    """A bundle push needs more operations in one transaction than the store allows.

    Nothing was written. Raise etcd's ``--max-txn-ops`` (and the store's ``max_txn_ops``) or
    ship fewer files.
    """

    def __init__(self, operations: int, limit: int) -> None:
        self.operations = operations
        self.limit = limit
        super().__init__(
            f"bundle push needs {operations} operations in one transaction but the store "
            f"allows {limit} (etcd --max-txn-ops)"
        )


class BundleCorrupt(StoreError):
    """The stored bundle does not match its own metadata (digest or file list)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"stored bundle is corrupt: {detail}")


class KeyExists(StoreError):
    """A create-only write found the key already present. Nothing was written."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"key {key!r} already exists")


class InvalidKey(StoreError, ValueError):
    """A key, node id, tenant or bundle path is malformed or in a reserved namespace."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid key {key!r}: {reason}")


class LeaseExpired(StoreError):
    """A lease is gone (expired or revoked); keys bound to it have been deleted."""

    def __init__(self, lease_id: int, node_id: str) -> None:
        self.lease_id = lease_id
        self.node_id = node_id
        super().__init__(
            f"lease {lease_id:#x} of node {node_id!r} has expired or was revoked; "
            "register the node again"
        )


class NotLeader(StoreError):
    """A fenced write was refused: ``key`` is no longer the one ``holder`` created at
    revision ``token`` (its lease expired, it was revoked, or another holder won since).
    Nothing of the write was stored."""

    def __init__(self, key: str, holder: bytes, token: int) -> None:
        self.key = key
        self.holder = holder
        self.token = token
        super().__init__(
            f"not the leader: {key!r} is no longer held by {holder.decode(errors='replace')!r}"
            f" at revision {token}; the write was refused"
        )


class WatchCompacted(StoreError):
    """A watch asked for history the store has already compacted away.

    The watcher must read a fresh snapshot and watch again from its revision.
    """

    def __init__(self, after_revision: int, compacted_revision: int) -> None:
        self.after_revision = after_revision
        self.compacted_revision = compacted_revision
        super().__init__(
            f"cannot watch from after revision {after_revision}: history before revision "
            f"{compacted_revision} was compacted; read a new snapshot and watch from it"
        )


class ContentionExhausted(StoreError):
    """A compare-and-swap loop lost the race too many times in a row. Nothing was written."""

    def __init__(self, key: str, attempts: int) -> None:
        self.key = key
        self.attempts = attempts
        super().__init__(f"gave up updating {key!r} after {attempts} conflicting attempts")


class UnknownApiKey(StoreError):
    """No tenant API key record has this id; nothing was written."""

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no API key with id {key_id!r}")
