"""The node agent's runtime: what ``tiermesh agent run`` does.

:class:`NodeAgent` joins (or reuses a saved SVID), keeps the SVID rotated, serves the
Workload API and SDS on unix sockets, writes its Envoy's bootstrap, supervises Envoy and the
local model server, and holds the registry session with load reports. Every error derives
from :class:`AgentError` (model-server problems are the ``tiermesh.agents.models`` errors).
"""

from __future__ import annotations

from tiermesh.agents.runtime.agent import NodeAgent
from tiermesh.agents.runtime.envoy import CONTROL_PLANE_SECRET, agent_bootstrap
from tiermesh.agents.runtime.errors import (
    AgentError,
    ControlPlaneUnreachable,
    JoinFailed,
    PortInUse,
    StartFailed,
)
from tiermesh.agents.runtime.session import RegistrySession

__all__ = [
    "CONTROL_PLANE_SECRET",
    "AgentError",
    "ControlPlaneUnreachable",
    "JoinFailed",
    "NodeAgent",
    "PortInUse",
    "RegistrySession",
    "StartFailed",
    "agent_bootstrap",
]
