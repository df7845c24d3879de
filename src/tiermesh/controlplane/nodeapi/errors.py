"""Errors of the node API, and the one place where errors become gRPC status codes.

:func:`status_for` maps the node API's own errors and those it lets through from the
identity and store packages to a status code and a message safe to send to the caller.
Unexpected errors map to INTERNAL, and store outages to UNAVAILABLE, with generic
messages (the detail goes to the log only).
"""

from __future__ import annotations

import grpc

from tiermesh.controlplane.identity.errors import (
    CaExpiredError,
    CsrIdentityMismatchError,
    CsrRejectedError,
    CsrRequestsCaError,
    IdentityError,
    SvidVerificationError,
)
from tiermesh.controlplane.identity.tokens import JoinTokenError
from tiermesh.controlplane.store.errors import StoreUnavailable

__all__ = [
    "NodeApiError",
    "PeerNotAuthenticated",
    "UndecodableRequest",
    "status_for",
]


class NodeApiError(Exception):
    """Root of the node API's own errors."""


class UndecodableRequest(NodeApiError):
    """The request bytes are not the method's JSON message."""

    def __init__(self, method: str, detail: str) -> None:
        self.method = method
        self.detail = detail
        super().__init__(f"undecodable {method} request: {detail}")


class PeerNotAuthenticated(NodeApiError):
    """The connection carries no verified node SVID (wrong port, no client certificate, or
    a certificate that is not a node SVID of this trust domain)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"not authenticated as a node: {reason}")


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UndecodableRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (PeerNotAuthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (JoinTokenError, grpc.StatusCode.UNAUTHENTICATED),
    (SvidVerificationError, grpc.StatusCode.UNAUTHENTICATED),
    (CsrIdentityMismatchError, grpc.StatusCode.PERMISSION_DENIED),
    (CsrRequestsCaError, grpc.StatusCode.PERMISSION_DENIED),
    (CsrRejectedError, grpc.StatusCode.INVALID_ARGUMENT),
    (CaExpiredError, grpc.StatusCode.FAILED_PRECONDITION),
    (IdentityError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)

# Messages that would tell a node about the control plane's internals are replaced.
_PRIVATE: tuple[tuple[type[Exception], str], ...] = (
    (StoreUnavailable, "the control plane cannot reach its store; retry later"),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and caller-visible message for ``exc`` (first match in order)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            message = next((text for kind, text in _PRIVATE if isinstance(exc, kind)), str(exc))
            return code, message
    return grpc.StatusCode.INTERNAL, "internal error"
