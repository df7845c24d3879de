"""What the verifier reports: one :class:`Finding` per broken invariant and place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["Finding", "FindingKind"]

FindingKind: TypeAlias = Literal[
    "restricted-egress",
    "residency",
    "mirror",
    "unverifiable",
    "unknown-endpoint",
    "mislabelled",
    "missing",
    "peer-identity",
    "no-authz",
    "node-service",
    "unsigned-model",
]
"""- ``restricted-egress``: restricted traffic can reach a backend not cleared for it.
- ``residency``: a tenant's route can reach a backend outside the tenant's residency.
- ``mirror``: restricted traffic is mirrored (a copy leaves, whatever the target).
- ``unverifiable``: a shape the verifier does not model (the verifier is closed-world;
  see :mod:`.inventory`): a target unknown before the request (``cluster_header``, a
  cluster specifier plugin), an unknown cluster type, listener filter, network filter,
  route action or endpoint kind, a per-endpoint transport, a cluster no route reaches
  that is no node-local service, an internal listener no cluster sends to.
- ``unknown-endpoint``: an endpoint address is no catalog backend's.
- ``unsigned-model``: traffic of a sensitivity in the catalog's
  ``defaults.require_signed_models`` can reach a backend that names no ``signers``.
- ``mislabelled``: cluster metadata names another backend/tier than its endpoints are.
- ``missing``: a referenced listener route config, cluster or assignment does not exist.
- ``peer-identity``: restricted traffic can reach a backend with a SPIFFE ID (on another
  node) through a cluster whose TLS does not pin the peer's URI SAN to that ID, or a
  backend off the node's loopback address that has no SPIFFE ID to pin.
- ``no-authz``: a listener forwards requests that the node's ext_authz server may not
  have inspected (no ext_authz first, one that fails open or skips the body, or a route
  that turns it off); see :mod:`.http_filters`.
- ``node-service``: a node-local service cluster (ext_authz, usage log, cascade handler,
  the node's model server) has an endpoint off the node (not a loopback IP address or a
  Unix socket), or leads on to another cluster.
"""


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One broken invariant. ``route`` and ``cluster`` name where (empty when not apt)."""

    kind: FindingKind
    route: str
    cluster: str
    message: str

    def __str__(self) -> str:
        return self.message
