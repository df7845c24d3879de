"""Errors of the audit collector, and the one place where they become gRPC status codes.

Every exception derives from :class:`AuditError`; :func:`status_for` maps them (and
anything unexpected, as INTERNAL with a generic message) at the server edge.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AuditError",
    "AuditStoreError",
    "ForeignRecord",
    "NodeNotAuthenticated",
    "PlanBodyMismatch",
    "RecordRejected",
    "UndecodableShipment",
    "status_for",
]


class AuditError(Exception):
    """Root of the audit package's errors."""


class UndecodableShipment(AuditError):
    """The request bytes are not a ``ShipRequest``."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"undecodable Ship request: {detail}")


class NodeNotAuthenticated(AuditError):
    """The connection carries no verified client SVID."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not authenticated as a node: {reason}")


class ForeignRecord(AuditError):
    """A node shipped a record that names another node's SPIFFE ID."""

    def __init__(self, peer: str, claimed: str, decision_id: str) -> None:
        self.peer = peer
        self.claimed = claimed
        self.decision_id = decision_id
        super().__init__(f"peer {peer!r} may not ship record {decision_id} of {claimed[:200]!r}")


class RecordRejected(AuditError):
    """A shipped record does not verify (hash, signature, signer chain)."""

    def __init__(self, decision_id: str, reason: str) -> None:
        self.decision_id = decision_id
        self.reason = reason
        super().__init__(f"record {decision_id} rejected: {reason}")


class AuditStoreError(AuditError):
    """The audit database cannot be read or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"audit database {path}: {reason}")


class PlanBodyMismatch(AuditError):
    """A plan put back together from a record and a stored body is not the plan the
    record's ``plan_sha256`` names: the stored body was altered."""

    def __init__(self, body_sha256: str, plan_sha256: str) -> None:
        self.body_sha256 = body_sha256
        self.plan_sha256 = plan_sha256
        super().__init__(
            f"plan body {body_sha256} does not give the recorded plan {plan_sha256}:"
            " the stored body was altered"
        )


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UndecodableShipment, grpc.StatusCode.INVALID_ARGUMENT),
    (NodeNotAuthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (ForeignRecord, grpc.StatusCode.PERMISSION_DENIED),
    (RecordRejected, grpc.StatusCode.INVALID_ARGUMENT),
    (AuditStoreError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-visible message for ``exc``. Database problems are
    reported without their detail (it goes to the log only)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            if isinstance(exc, AuditStoreError):
                return code, "the audit collector cannot store records now; retry later"
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error"
