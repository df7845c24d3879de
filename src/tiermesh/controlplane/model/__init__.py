"""The immutable mesh model the generators compile Envoy resources from.

- :class:`MeshModel` — every node's evaluated :class:`~tiermesh.controlplane.api.Plan`
  and :class:`NodeSettings`, with the clusters they imply (:class:`NodeModel`), and
  the backends whose node reports unhealthy (:func:`backends_hosted_by`).
- :func:`plan_callers` / :func:`admitted_peers` — whose plans call a node over mTLS, and
  so whom its inbound listener admits.
- :mod:`~tiermesh.controlplane.model.names` — the Envoy resource names derived from it.
"""

from __future__ import annotations

from tiermesh.controlplane.model import names
from tiermesh.controlplane.model.callers import admitted_peers, plan_callers, plan_probe_paths
from tiermesh.controlplane.model.errors import ModelError, PlanMismatch, UnknownNode
from tiermesh.controlplane.model.mesh import (
    Chain,
    MeshModel,
    NodeModel,
    Upstream,
    backends_hosted_by,
)
from tiermesh.controlplane.model.settings import (
    AuthzSettings,
    BatchSettings,
    CascadeSettings,
    MeshTlsSettings,
    NodeSettings,
    UsageSettings,
)

__all__ = [
    "AuthzSettings",
    "BatchSettings",
    "CascadeSettings",
    "Chain",
    "MeshModel",
    "MeshTlsSettings",
    "ModelError",
    "NodeModel",
    "NodeSettings",
    "PlanMismatch",
    "UnknownNode",
    "Upstream",
    "UsageSettings",
    "admitted_peers",
    "backends_hosted_by",
    "names",
    "plan_callers",
    "plan_probe_paths",
]
