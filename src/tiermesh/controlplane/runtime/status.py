"""The read-only status document ``tiermesh status`` shows, built from live state.

:func:`status_document` is a pure function of what it is given (call it on the event loop
that owns the ADS status registry). The document is JSON (version ``v1``)::

    {"version": "v1", "trust_domain": …, "addresses": {"ads": …, "node_api": …, "join": …,
     "admin": …},
     "bundle": {"revision": int, "sha256": str, "provenance": {…}},
     "reconcile": {"count": int, "ok": bool | null, "last_error": str | null,
                   "nodes": [...], "skipped": [...]},
     "nodes": [{"id", "spiffe_id", "registered": bool, "registration": {…} | null,
                "health": "healthy" | "unhealthy" | "unknown", "load": {…} | null,
                "svid_expires_at": ISO-8601 | null,
                "inference_url": "http://127.0.0.1:<app_port>" | null,
                "xds": {"connected": bool, "streams": int, "mode": str | null,
                        "types": {"listeners": {"sent": str, "acked": str, "nacks": int,
                                                 "last_nack": {…} | null}, …}},
                "snapshot": {"version": str, "routes": int, "clusters": int, …} | null}],
     "tenants": [{"name": str, "spent_usd": float, "budget_usd": float | null,
                  "exhausted": bool}]}

A registration's ``cascade_token`` (a secret) shows as ``"<redacted>"``.
Nodes are the union of registrations, nodes with xDS state, and nodes with a snapshot.
Tenants are those of the served catalog plus any with a usage counter: ``spent_usd`` is the
mesh-wide counter (every node's reported spend) as the reconciler last saw it,
``budget_usd`` the catalog's ``monthly_budget_usd`` (null: not in the catalog), and
``exhausted`` whether ``spent_usd >= budget_usd`` (what the budget policy routes on).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.route.v3 import route_pb2

from tiermesh.controlplane.api import RegisteredNode
from tiermesh.controlplane.reconciler import Reconciler
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import NodeStatus, Snapshot, SnapshotCache, typeurls

__all__ = ["STATUS_VERSION", "node_spiffe_id", "status_document"]

STATUS_VERSION = "v1"

_SHORT = {
    typeurls.LISTENER: "listeners",
    typeurls.ROUTE: "routes",
    typeurls.CLUSTER: "clusters",
    typeurls.ENDPOINT: "endpoints",
    typeurls.SECRET: "secrets",
}


def node_spiffe_id(trust_domain: str, node_id: str) -> str:
    """``spiffe://<td>/node/<node-id>``."""
    return f"spiffe://{trust_domain}/node/{node_id}"


def _route_count(snapshot: Snapshot) -> int:
    count = 0
    for name in snapshot.ordered_names(typeurls.ROUTE):
        config = snapshot.resource(typeurls.ROUTE, name)
        assert isinstance(config, route_pb2.RouteConfiguration)
        count += sum(len(host_routes(host)) for host in config.virtual_hosts)
    return count


def _snapshot_summary(snapshot: Snapshot | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    summary: dict[str, Any] = {"version": snapshot.version, "routes": _route_count(snapshot)}
    summary["route_configs"] = len(snapshot.names(typeurls.ROUTE))
    for type_url, short in _SHORT.items():
        if type_url != typeurls.ROUTE:
            summary[short] = len(snapshot.names(type_url))
    return summary


def _xds(status: NodeStatus | None) -> dict[str, Any]:
    if status is None:
        return {"connected": False, "streams": 0, "mode": None, "types": {}}
    types: dict[str, Any] = {}
    for type_url, state in sorted(status.types.items()):
        nack = state.last_nack
        types[_SHORT.get(type_url, type_url)] = {
            "sent": state.sent_version,
            "acked": state.acked_version,
            "nacks": state.nack_count,
            "last_nack": None
            if nack is None
            else {
                "version": nack.version,
                "message": nack.message,
                "code": nack.code,
                "at": nack.at,
            },
        }
    return {
        "connected": status.connected,
        "streams": status.streams,
        "mode": status.mode,
        "types": types,
    }


def _health(document: RegisteredNode | None) -> str:
    if document is None or document.load is None:
        return "unknown"
    return "healthy" if document.load.healthy else "unhealthy"


_REDACTED = "<redacted>"
"""What status shows in place of a registration's ``cascade_token``."""


def _registration(document: RegisteredNode) -> dict[str, Any]:
    """The registration as status shows it: no load, the cascade token redacted."""
    registration = document.model_dump(mode="json", exclude={"load", "load_at"})
    if registration.get("cascade_token") is not None:
        registration["cascade_token"] = _REDACTED
    return registration


def status_document(
    *,
    trust_domain: str,
    addresses: Mapping[str, str],
    registrations: Mapping[str, RegisteredNode | None],
    xds: Sequence[NodeStatus],
    cache: SnapshotCache,
    reconciler: Reconciler,
    svid_expiry: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The status document (module doc) of one control-plane replica, JSON-ready.
    ``svid_expiry``: node -> notAfter (POSIX seconds) of the SVID this replica last issued
    it (``svid_expires_at``; null for a node not in it)."""
    expiry = svid_expiry or {}
    by_id = {status.node_id: status for status in xds}
    node_ids = sorted(set(registrations) | set(by_id) | set(cache.keys()))
    nodes = []
    for node_id in node_ids:
        document = registrations.get(node_id)
        nodes.append(
            {
                "id": node_id,
                "spiffe_id": document.spiffe_id
                if document is not None
                else node_spiffe_id(trust_domain, node_id),
                "registered": node_id in registrations,
                "registration": None if document is None else _registration(document),
                "health": _health(document),
                "load": None
                if document is None or document.load is None
                else {
                    **document.load.model_dump(mode="json", exclude={"version"}),
                    "at": document.load_at.isoformat() if document.load_at else None,
                },
                "svid_expires_at": None
                if node_id not in expiry
                else dt.datetime.fromtimestamp(expiry[node_id], dt.UTC).isoformat(),
                "inference_url": None
                if document is None
                else f"http://127.0.0.1:{document.app_port}",
                "xds": _xds(by_id.get(node_id)),
                "snapshot": _snapshot_summary(cache.stored(node_id)),
            }
        )
    last = reconciler.last_result
    return {
        "version": STATUS_VERSION,
        "trust_domain": trust_domain,
        "addresses": dict(addresses),
        "bundle": {
            "revision": reconciler.bundle_revision,
            "sha256": reconciler.bundle_sha256,
            "provenance": dict(reconciler.provenance),
        },
        "reconcile": {
            "count": reconciler.reconcile_count,
            "ok": None if last is None else last.ok,
            "last_error": None if reconciler.last_error is None else str(reconciler.last_error),
            "nodes": [] if last is None else list(last.nodes),
            "skipped": [] if last is None else list(last.skipped),
        },
        "nodes": nodes,
        "tenants": _tenants(reconciler),
    }


def _tenants(reconciler: Reconciler) -> list[dict[str, Any]]:
    budgets, spend = reconciler.budgets, reconciler.tenant_spend
    rows = []
    for name in sorted(set(budgets) | set(spend)):
        spent, budget = spend.get(name, 0.0), budgets.get(name)
        rows.append(
            {
                "name": name,
                "spent_usd": spent,
                "budget_usd": budget,
                "exhausted": budget is not None and spent >= budget,
            }
        )
    return rows
