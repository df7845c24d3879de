"""What one reconcile did, and the error a refused one exposes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tiermesh.controlplane.bundle import Finding
from tiermesh.controlplane.store import JsonScalar

__all__ = ["ReconcileError", "ReconcileResult"]


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """One reconcile. Immutable.

    ``bundle_revision``/``bundle_sha256`` name the bundle it evaluated (0 and "" when the
    store could not be read). ``published`` lists nodes whose snapshot changed, ``removed``
    nodes whose snapshot was dropped (registration gone), ``skipped`` nodes whose
    registration could not be read. ``started_at`` is on the reconciler's clock;
    ``duration_s`` is wall time from reading the store to the last ``set_snapshot``.
    """

    number: int
    ok: bool
    bundle_revision: int
    bundle_sha256: str
    etcd_revision: int
    nodes: tuple[str, ...]
    published: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()
    started_at: float = 0.0
    duration_s: float = 0.0
    events: int = 0
    """Store events coalesced into this reconcile (0 for the first and forced ones)."""
    store_failed: bool = False
    """The store could not be read; the reconciler retries after ``retry_s``."""
    provenance: Mapping[str, JsonScalar] = field(default_factory=dict)
    """Where the evaluated bundle came from (git commit, author, dirty flag…), as pushed."""
    unhealthy: tuple[str, ...] = ()
    """Registered nodes whose latest load report says unhealthy, sorted: the backends
    they host were compiled with ``UNHEALTHY`` endpoints."""


class ReconcileError(Exception):
    """Why the last reconcile was refused; the previous snapshots kept serving.

    ``findings`` name the file/line, node, route and cluster where known;
    ``bundle_revision`` is the bundle that was refused (0 if the store was unreadable).
    """

    def __init__(self, bundle_revision: int, findings: tuple[Finding, ...]) -> None:
        self.bundle_revision = bundle_revision
        self.findings = findings
        lines = "\n".join(f"  {finding}" for finding in findings)
        super().__init__(f"bundle revision {bundle_revision} refused:\n{lines}")
