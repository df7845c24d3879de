"""The control plane's read-only web dashboard (``tiermesh controlplane run --dashboard``).

- :func:`start_dashboard` / :class:`DashboardServer`: the HTTP server (page, JSON, assets).
- :func:`dashboard_document`: the document it shows, from the status document and the
  audit database (:class:`AuditWatcher` reads the latter off the event loop).
- :mod:`.render`: the server-rendered, escaped HTML.
- Errors: :class:`DashboardError` and its subclasses.
"""

from __future__ import annotations

from tiermesh.controlplane.dashboard.audit_view import AuditWatcher
from tiermesh.controlplane.dashboard.auth import (
    MIN_TOKEN_CHARS,
    authorized,
    check_bind,
    is_loopback,
    read_token_file,
)
from tiermesh.controlplane.dashboard.errors import (
    DashboardError,
    DashboardNeedsAuth,
    TokenFileError,
)
from tiermesh.controlplane.dashboard.server import DashboardServer, start_dashboard
from tiermesh.controlplane.dashboard.view import (
    DASHBOARD_VERSION,
    AuditSummary,
    dashboard_document,
    decision_row,
)

__all__ = [
    "DASHBOARD_VERSION",
    "MIN_TOKEN_CHARS",
    "AuditSummary",
    "AuditWatcher",
    "DashboardError",
    "DashboardNeedsAuth",
    "DashboardServer",
    "TokenFileError",
    "authorized",
    "check_bind",
    "dashboard_document",
    "decision_row",
    "is_loopback",
    "read_token_file",
    "start_dashboard",
]
