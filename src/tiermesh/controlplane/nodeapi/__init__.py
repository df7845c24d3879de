"""The node API: agents join the mesh, renew their SVIDs and register over gRPC (TLS / mTLS).

Contracts: :mod:`tiermesh.controlplane.api.join` and :mod:`tiermesh.controlplane.api.registry`.
gRPC status codes are assigned here and nowhere else (:func:`status_for`).
"""

from __future__ import annotations

from tiermesh.controlplane.nodeapi.errors import (
    ClaimRefused,
    NodeApiError,
    PeerNotAuthenticated,
    SessionLost,
    SessionProtocolError,
    UndecodableRequest,
    status_for,
)
from tiermesh.controlplane.nodeapi.registry import NodeRegistryService
from tiermesh.controlplane.nodeapi.server import (
    NodeApiServer,
    NodeIdentityService,
    start_node_api,
)

__all__ = [
    "ClaimRefused",
    "NodeApiError",
    "NodeApiServer",
    "NodeIdentityService",
    "NodeRegistryService",
    "PeerNotAuthenticated",
    "SessionLost",
    "SessionProtocolError",
    "UndecodableRequest",
    "start_node_api",
    "status_for",
]
