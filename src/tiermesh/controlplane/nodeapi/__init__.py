"""The node API: agents join the mesh and renew their SVIDs over gRPC (TLS / mTLS).

Contracts: :mod:`tiermesh.controlplane.api.join`. gRPC status codes are assigned here and
nowhere else (:func:`status_for`).
"""

from __future__ import annotations

from tiermesh.controlplane.nodeapi.errors import (
    NodeApiError,
    PeerNotAuthenticated,
    UndecodableRequest,
    status_for,
)
from tiermesh.controlplane.nodeapi.server import (
    NodeApiServer,
    NodeIdentityService,
    start_node_api,
)

__all__ = [
    "NodeApiError",
    "NodeApiServer",
    "NodeIdentityService",
    "PeerNotAuthenticated",
    "UndecodableRequest",
    "start_node_api",
    "status_for",
]
