"""Where everything lives in the key space, and which names are allowed.

Layout under a root (``/tiermesh/v1/`` in production; tests use a unique root each)::

    <root>bundle/meta            JSON: bundle revision, sha256, file list, provenance
    <root>bundle/files/<path>    one Rego module or data document per key
    <root>nodes/<node-id>        node registration JSON, bound to the node's lease
    <root>usage/<YYYY-MM>/<tenant>  JSON: {"tokens": int, "cost_micro": int}, one counter
                                 per tenant and UTC calendar month; past months are kept
                                 (for audit) and never written again by the typed API
    <root>apikeys/<key-id>       JSON: tenant, sha256 of the key, created_at, revoked_at
    <root><anything else>        small keys owned by other components (join tokens, CA)

Callers of the generic key API pass keys relative to the root; the four namespaces above
are reserved for the typed API so their invariants (one-transaction bundles, lease-bound
registrations, CAS counters, create-once keys that are only ever revoked) cannot be
bypassed.
"""

from __future__ import annotations

import re
from typing import Final

from tiermesh.controlplane.store.errors import InvalidKey

__all__ = ["API_KEYS_PREFIX", "RESERVED_NAMESPACES", "ROOT", "KeyLayout", "prefix_range_end"]

ROOT: Final = "/tiermesh/v1/"
API_KEYS_PREFIX: Final = "apikeys/"
"""Relative prefix of the tenant API key records (read and watch it with ``read_prefix`` /
``watch``; write only through the typed methods)."""
RESERVED_NAMESPACES: Final = ("bundle/", "nodes/", "usage/", API_KEYS_PREFIX)
_MAX_NAME = 253
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_MAX_KEY = 1024


def prefix_range_end(prefix: bytes) -> bytes:
    """Return the exclusive end of the key range holding every key that starts with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def _check_name(kind: str, name: str) -> str:
    if not name:
        raise InvalidKey(name, f"{kind} must not be empty")
    if len(name) > _MAX_NAME:
        raise InvalidKey(name, f"{kind} is longer than {_MAX_NAME} characters")
    if "/" in name or not name.isprintable() or name in {".", ".."}:
        raise InvalidKey(name, f"{kind} must be printable and contain no '/'")
    return name


def _check_path(kind: str, path: str) -> str:
    if not path or len(path) > _MAX_KEY:
        raise InvalidKey(path, f"{kind} must be 1..{_MAX_KEY} characters")
    if not path.isprintable():
        raise InvalidKey(path, f"{kind} must be printable")
    parts = path.split("/")
    if path.startswith("/") or any(part in {"", ".", ".."} for part in parts):
        raise InvalidKey(path, f"{kind} must be relative with no empty, '.' or '..' segments")
    return path


class KeyLayout:
    """Maps tiermesh's names to full etcd keys under one root. Immutable; safe to share."""

    __slots__ = (
        "api_keys_prefix",
        "bundle_files_prefix",
        "bundle_meta",
        "bundle_prefix",
        "nodes_prefix",
        "root",
    )

    def __init__(self, root: str = ROOT) -> None:
        if not (root.startswith("/") and root.endswith("/")) or "//" in root:
            raise InvalidKey(root, "root must start and end with '/' and have no empty segment")
        self.root = root
        self.bundle_prefix = f"{root}bundle/"
        self.bundle_meta = f"{root}bundle/meta"
        self.bundle_files_prefix = f"{root}bundle/files/"
        self.nodes_prefix = f"{root}nodes/"
        self.api_keys_prefix = f"{root}{API_KEYS_PREFIX}"

    def __repr__(self) -> str:
        return f"KeyLayout({self.root!r})"

    def bundle_file(self, path: str) -> str:
        """Key of one bundle file; ``path`` is relative, e.g. ``policies/routing/main.rego``."""
        return self.bundle_files_prefix + _check_path("bundle path", path)

    def node(self, node_id: str) -> str:
        """Key of one node's registration."""
        return self.nodes_prefix + _check_name("node id", node_id)

    def usage(self, tenant: str, month: str) -> str:
        """Key of one tenant's usage counters of ``month`` (``YYYY-MM``)."""
        return self.usage_month_prefix(month) + _check_name("tenant", tenant)

    @property
    def usage_prefix(self) -> str:
        """Full prefix of every usage counter, of every month."""
        return f"{self.root}usage/"

    def legacy_usage_tenant(self, key: str) -> str | None:
        """The tenant of a counter kept before usage was per month (full key
        ``<root>usage/<tenant>``), or None for any other key."""
        rest = key.removeprefix(self.usage_prefix)
        if rest == key or "/" in rest:
            return None
        try:
            return _check_name("tenant", rest)
        except InvalidKey:
            return None

    def usage_month_prefix(self, month: str) -> str:
        """Full prefix of every tenant's counters of ``month`` (``YYYY-MM``)."""
        if not isinstance(month, str) or not _MONTH.fullmatch(month):
            raise InvalidKey(str(month), "usage month must be YYYY-MM")
        return f"{self.root}usage/{month}/"

    def api_key(self, key_id: str) -> str:
        """Key of one tenant API key record."""
        return self.api_keys_prefix + _check_name("key id", key_id)

    def generic(self, key: str) -> str:
        """Full key for a generic (non-reserved) relative key such as ``tokens/join/abc``.

        Raises `InvalidKey` for malformed keys and keys in a reserved namespace.
        """
        _check_path("key", key)
        if any(key.startswith(ns) for ns in RESERVED_NAMESPACES):
            raise InvalidKey(key, f"namespaces {', '.join(RESERVED_NAMESPACES)} are reserved")
        return self.root + key

    def prefix(self, prefix: str) -> str:
        """Full key prefix for reading or watching; ``""`` means everything under the root."""
        if prefix.startswith("/") or not prefix.isprintable():
            raise InvalidKey(prefix, "prefix must be relative to the root and printable")
        return self.root + prefix

    def relative(self, full_key: str) -> str:
        """Strip the root from a full key read back from the store."""
        if not full_key.startswith(self.root):
            raise InvalidKey(full_key, f"key is not under root {self.root!r}")
        return full_key[len(self.root) :]
