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
    "ClaimRefused",
    "NoRequestPolicy",
    "NodeApiError",
    "PeerNotAuthenticated",
    "RequestPolicyTooLarge",
    "SessionLost",
    "SessionProtocolError",
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


class SessionProtocolError(NodeApiError):
    """A registry session broke the message order (no registration first, none in time)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"registry session refused: {reason}")


class ClaimRefused(NodeApiError):
    """A node claimed something its SVID does not cover: another node id, or an endpoint
    that belongs to another node."""

    def __init__(self, spiffe_id: str, claim: str) -> None:
        self.spiffe_id = spiffe_id
        self.claim = claim
        super().__init__(f"{spiffe_id} may not claim {claim}")


class SessionLost(NodeApiError):
    """The control plane could no longer keep the node's registration (its lease expired or
    was superseded); the node must reconnect and register again."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"registration of node {node_id!r} lost: {reason}; register again")


class NoRequestPolicy(NodeApiError):
    """There is no request policy to give: no bundle is served yet, or the served bundle
    has no ``request/*.rego``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"no request policy: {reason}")


class RequestPolicyTooLarge(NodeApiError):
    """The served bundle's request policy is over the contract's bounds."""

    def __init__(self, bundle_revision: int, detail: str) -> None:
        self.bundle_revision = bundle_revision
        self.detail = detail
        super().__init__(f"the request policy of bundle revision {bundle_revision} is {detail}")


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UndecodableRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (PeerNotAuthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (SessionProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (ClaimRefused, grpc.StatusCode.PERMISSION_DENIED),
    (SessionLost, grpc.StatusCode.UNAVAILABLE),
    (NoRequestPolicy, grpc.StatusCode.NOT_FOUND),
    (RequestPolicyTooLarge, grpc.StatusCode.FAILED_PRECONDITION),
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
