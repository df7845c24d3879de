"""Errors of the verifier: one root, :class:`VerifyError`."""

from __future__ import annotations

from collections.abc import Sequence

from tiermesh.controlplane.verify.findings import Finding

__all__ = ["VerificationError", "VerifyError"]


class VerifyError(Exception):
    """Root of every error the verifier raises on purpose."""


class VerificationError(VerifyError):
    """The compiled snapshot of ``node_id`` breaks an invariant; ``findings`` say which.

    The caller refuses the bundle and keeps serving the last good snapshot.
    """

    def __init__(self, node_id: str, findings: Sequence[Finding]) -> None:
        self.node_id = node_id
        self.findings = tuple(findings)
        shown = "\n  ".join(f.message for f in self.findings[:20])
        more = len(self.findings) - 20
        tail = f"\n  … and {more} more" if more > 0 else ""
        super().__init__(
            f"snapshot for node {node_id!r} fails verification "
            f"({len(self.findings)} findings):\n  {shown}{tail}"
        )
