"""The verifier: invariants checked on compiled Envoy resources before they are served.

- :func:`verify_snapshot` — every :class:`Finding` of a snapshot against the catalog.
- :func:`compile_and_verify` — compile a node's snapshot and raise
  :class:`VerificationError` instead of returning a snapshot that breaks an invariant.

The invariants are listed in :mod:`.checks`.
"""

from __future__ import annotations

from tiermesh.controlplane.verify.checks import cleared_for_restricted, verify_snapshot
from tiermesh.controlplane.verify.errors import VerificationError, VerifyError
from tiermesh.controlplane.verify.findings import Finding, FindingKind
from tiermesh.controlplane.verify.gate import compile_and_verify

__all__ = [
    "Finding",
    "FindingKind",
    "VerificationError",
    "VerifyError",
    "cleared_for_restricted",
    "compile_and_verify",
    "verify_snapshot",
]
