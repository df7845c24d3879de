"""Compile and verify in one step: the only way a control plane should get a snapshot."""

from __future__ import annotations

from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel
from tiermesh.controlplane.verify.checks import verify_snapshot
from tiermesh.controlplane.verify.errors import VerificationError
from tiermesh.xds import Snapshot

__all__ = ["compile_and_verify"]


def compile_and_verify(model: MeshModel, node_id: str, catalog: Catalog) -> Snapshot:
    """The verified snapshot of ``node_id``.

    Raises :class:`VerificationError` (with every finding) when the compiled resources
    break an invariant: the caller then refuses the bundle and keeps its last good
    snapshot. Errors of :func:`~tiermesh.controlplane.generators.compile_snapshot`
    propagate unchanged.
    """
    snapshot = compile_snapshot(model, node_id)
    findings = verify_snapshot(snapshot, catalog)
    if findings:
        raise VerificationError(node_id, findings)
    return snapshot
