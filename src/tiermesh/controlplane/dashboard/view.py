"""The dashboard's document: what a person sees, as JSON, built from the control plane's
status document and its audit database.

:func:`dashboard_document` is pure. Its JSON (version ``v1``) is what ``/api/dashboard``
serves (under ``"view"``) and ``tiermesh top`` shows::

    {"version": "v1", "generated_at": iso, "trust_domain": str,
     "policy": {"revision": int, "sha256": str | null, "provenance": {…}},
     "nodes": [{"id", "tier", "region", "health", "spiffe_id", "svid", "connected",
                "xds": [{"type", "sent", "acked", "nacks", "state"}],
                "answers": int, "fallback": int}],
     "traffic": {…the status document's ``traffic`` section…},
     "tenants": [{"name", "spent_usd", "budget_usd", "used_pct", "exhausted"}],
     "decisions": [{"time", "node", "kind", "tenant", "sensitivity", "tier", "outcome",
                    "reason", "decision_id"}],
     "audit": {"ok": bool | null, "checked": int, "chains": int, "problems": [str],
               "records": int, "verified_at": iso | null}}

xDS ``state`` per type: ``ACK`` (the version sent is acknowledged), ``NACK`` (the newest
answer to it was a rejection), ``pending`` (sent, no answer yet) or ``-`` (nothing sent).
``svid``: ``verified`` when the node is registered (the node API accepts a registration
only over mTLS with the node's own SVID) and its xDS stream is up (ADS also demands it),
``registered`` without a stream, ``none`` otherwise; ``svid_expires_at`` is the notAfter
of the SVID this replica last issued the node (ISO-8601, null when another replica or an
earlier run issued it). Decision fields are the audit
record's masked facets (the decision log holds no prompt text and masks values that could
carry personal data), cut to :data:`MAX_FIELD_CHARS`; they are still attacker-influenced
text and every renderer must escape them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tiermesh.controlplane.audit import StoredRecord, facets

__all__ = [
    "DASHBOARD_VERSION",
    "MAX_FIELD_CHARS",
    "AuditSummary",
    "dashboard_document",
    "decision_row",
]

DASHBOARD_VERSION: Final = "v1"
MAX_FIELD_CHARS: Final = 160
_XDS_ORDER: Final = ("clusters", "endpoints", "listeners", "routes", "secrets")


@dataclass(frozen=True, slots=True)
class AuditSummary:
    """What the audit database shows the dashboard: the newest records (oldest first) and
    the outcome of the last full verification (``ok`` None: not verified yet)."""

    records: Sequence[StoredRecord] = ()
    total: int = 0
    ok: bool | None = None
    checked: int = 0
    chains: int = 0
    problems: Sequence[str] = field(default_factory=tuple)
    verified_at: dt.datetime | None = None


def _cut(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_FIELD_CHARS else text[: MAX_FIELD_CHARS - 1] + "…"


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def decision_row(stored: StoredRecord) -> dict[str, Any]:
    """One record as the dashboard lists it (module doc)."""
    record = stored.record
    found = facets(record)
    result = record.result
    node = record.node_spiffe_id.rsplit("/", 1)[-1]
    return {
        "time": record.timestamp.astimezone(dt.UTC).strftime("%H:%M:%S"),
        "node": _cut(node),
        "kind": record.kind,
        "tenant": _cut(found.tenant),
        "sensitivity": _cut(_get(result, "sensitivity")),
        "tier": _cut(found.tier),
        "outcome": _cut(found.outcome),
        "reason": _cut(_get(result, "reason")),
        "decision_id": str(record.decision_id),
    }


def _xds_state(entry: Mapping[str, Any]) -> str:
    sent, acked = entry.get("sent"), entry.get("acked")
    nack = entry.get("last_nack")
    if not sent:
        return "-"
    if nack is not None and nack.get("version") == sent:
        return "NACK"
    return "ACK" if acked == sent else "pending"


def _node(entry: Mapping[str, Any], traffic: Mapping[str, Any]) -> dict[str, Any]:
    registration = entry.get("registration") or {}
    xds = entry.get("xds") or {}
    connected = bool(xds.get("connected"))
    types = xds.get("types") or {}
    rows = [
        {
            "type": short,
            "sent": types[short].get("sent") or "",
            "acked": types[short].get("acked") or "",
            "nacks": int(types[short].get("nacks") or 0),
            "state": _xds_state(types[short]),
        }
        for short in sorted(types, key=lambda s: (_XDS_ORDER.index(s) if s in _XDS_ORDER else 9, s))
    ]
    if entry.get("registered") and connected:
        svid = "verified"
    elif entry.get("registered"):
        svid = "registered"
    else:
        svid = "none"
    answered = traffic.get(entry["id"]) or {}
    return {
        "id": entry["id"],
        "tier": registration.get("tier"),
        "region": registration.get("region"),
        "health": entry.get("health", "unknown"),
        "spiffe_id": entry.get("spiffe_id"),
        "svid": svid,
        "svid_expires_at": entry.get("svid_expires_at"),
        "connected": connected,
        "xds": rows,
        "answers": int(answered.get("answers") or 0),
        "fallback": int(answered.get("fallback") or 0),
    }


def _tenant(entry: Mapping[str, Any]) -> dict[str, Any]:
    spent, budget = float(entry.get("spent_usd") or 0.0), entry.get("budget_usd")
    return {
        "name": entry["name"],
        "spent_usd": spent,
        "budget_usd": budget,
        "used_pct": None if not budget else round(100.0 * spent / float(budget), 1),
        "exhausted": bool(entry.get("exhausted")),
    }


def _empty_traffic() -> dict[str, Any]:
    zero = {
        "answers": 0,
        "by_tier": {},
        "first_choice": 0,
        "fallback": 0,
        "fallback_rate": None,
        "fallback_reasons": {},
        "refused": {},
        "refused_total": 0,
    }
    return {"total": zero, "recent": zero, "nodes": {}, "minutes": [], "recent_minutes": 5}


def dashboard_document(
    status: Mapping[str, Any],
    audit: AuditSummary,
    *,
    now: dt.datetime,
    decisions: int = 20,
) -> dict[str, Any]:
    """The dashboard's document (module doc) from a status document and the audit summary;
    the newest ``decisions`` request records are listed, newest first."""
    traffic = status.get("traffic") or _empty_traffic()
    bundle = status.get("bundle") or {}
    requests = [r for r in audit.records if r.record.kind == "request"][-decisions:]
    return {
        "version": DASHBOARD_VERSION,
        "generated_at": now.astimezone(dt.UTC).isoformat(),
        "trust_domain": status.get("trust_domain"),
        "policy": {
            "revision": bundle.get("revision"),
            "sha256": bundle.get("sha256"),
            "provenance": dict(bundle.get("provenance") or {}),
        },
        "nodes": [_node(n, traffic.get("nodes") or {}) for n in status.get("nodes") or []],
        "traffic": traffic,
        "tenants": [_tenant(t) for t in status.get("tenants") or []],
        "decisions": [decision_row(r) for r in reversed(requests)],
        "audit": {
            "ok": audit.ok,
            "checked": audit.checked,
            "chains": audit.chains,
            "problems": [_cut(p) for p in audit.problems],
            "records": audit.total,
            "verified_at": None if audit.verified_at is None else audit.verified_at.isoformat(),
        },
    }
