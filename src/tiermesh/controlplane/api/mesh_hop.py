"""How a node's ext_authz server tells a request from another node apart from an app's.

The compiler puts :data:`MESH_HOP_CONTEXT` into the ``context_extensions`` of the
ext_authz check on the node-to-node inbound mTLS listener (its virtual host's
``ExtAuthzPerRoute``), and nowhere else. Context extensions are Envoy configuration: a
client cannot set, change or remove them, so a check that carries them came in over the
mesh listener, whose TLS handshake admitted only the SPIFFE IDs the control plane named;
Envoy then fills the check's ``attributes.source.principal`` with the verified client
certificate's URI SAN (the calling node's SPIFFE ID). A check without them came in over
the app listener (or the node's own re-entries), and nothing a client sends makes it a
mesh hop.

What a mesh hop changes in the decision (see ``tiermesh.agents.authz.decide``): the caller
is the peer node, the tenant is the ``x-tiermesh-tenant`` the sending node's own ext_authz
set (it authenticated the app), and no tenant key is asked for; the privacy floor, the
request policy and the durable decision record are as on any request. A peer's health
check on an exact probe path (:data:`MESH_PROBE_CONTEXT`) is the one request decided
without the policy.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MESH_HOP",
    "MESH_HOP_CONTEXT",
    "MESH_HOP_KEY",
    "MESH_PROBE",
    "MESH_PROBE_CONTEXT",
    "MESH_PROBE_KEY",
]

MESH_HOP_KEY: Final = "tiermesh_hop"
"""The ``context_extensions`` key naming the hop a check is for."""
MESH_HOP: Final = "mesh"
"""Its value on the node-to-node inbound mTLS listener."""
MESH_HOP_CONTEXT: Final = {MESH_HOP_KEY: MESH_HOP}
"""The ``context_extensions`` of every check on the mesh listener (read-only by
convention: copy it before changing anything)."""
MESH_PROBE_KEY: Final = "tiermesh_probe"
"""The ``context_extensions`` key marking a check as a peer's active health check."""
MESH_PROBE: Final = "health"
"""Its value on the mesh listener's probe routes."""
MESH_PROBE_CONTEXT: Final = {MESH_HOP_KEY: MESH_HOP, MESH_PROBE_KEY: MESH_PROBE}
"""The ``context_extensions`` of checks on the mesh listener's probe routes: a ``GET`` of
exactly a health-check path that a caller's plan checks this node's backend on. Envoy's
health checker sends no tenant, so the request policy would refuse every probe and the
callers would count the node down; such a check is decided in code instead (allowed when
it is a ``GET`` without body or query, denied otherwise) and recorded as a probe."""
