"""The control-plane process: every part wired together (``tiermesh controlplane run``).

- :class:`ControlPlane` — one replica, started and stopped as a unit.
- :class:`ControlPlaneConfig` / :class:`HostPort` — its settings.
- :func:`status_document` — the JSON behind the admin server's ``/status``.
- Errors: :class:`ControlPlaneError` and its subclasses, each naming what to fix.
"""

from __future__ import annotations

from tiermesh.controlplane.runtime.admin import AdminServer, start_admin
from tiermesh.controlplane.runtime.config import ControlPlaneConfig, HostPort
from tiermesh.controlplane.runtime.errors import (
    ControlPlaneError,
    DashboardRefused,
    DataDirError,
    EtcdUnreachable,
    PortInUse,
)
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.runtime.plane import ControlPlane
from tiermesh.controlplane.runtime.status import STATUS_VERSION, node_spiffe_id, status_document

__all__ = [
    "STATUS_VERSION",
    "AdminServer",
    "ControlPlane",
    "ControlPlaneConfig",
    "ControlPlaneError",
    "DashboardRefused",
    "DataDirError",
    "EtcdUnreachable",
    "HostPort",
    "NodeDirectory",
    "PortInUse",
    "node_spiffe_id",
    "start_admin",
    "status_document",
]
