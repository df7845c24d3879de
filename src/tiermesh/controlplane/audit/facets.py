"""The columns a record is indexed by, read from its input and result.

The rule (first match wins; absent → NULL):

- **tenant**: ``input.tenant``, ``input.request.tenant``, then the
  ``x-tiermesh-tenant`` entry of ``input.headers`` or ``input.request.headers``;
- **tier**: ``result.tier``, then ``result.route.tier``;
- **outcome**: ``result.outcome`` (a string); else ``"allow"`` / ``"deny"`` from a boolean
  ``result.allow``; else ``"plan"`` for a plan record; else ``"undefined"`` when the result
  is null; else NULL.

Pure functions, thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiermesh.controlplane.api.decision import DecisionRecord

__all__ = ["Facets", "facets"]

_TENANT_HEADER = "x-tiermesh-tenant"


@dataclass(frozen=True, slots=True)
class Facets:
    """What a record is searched by besides node, time and decision id."""

    tenant: str | None
    tier: str | None
    outcome: str | None


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first_str(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


def facets(record: DecisionRecord) -> Facets:
    """The tenant, tier and outcome of ``record`` by the module's rule."""
    data, result = record.input, record.result
    tenant = _first_str(
        _get(data, "tenant"),
        _get(data, "request", "tenant"),
        _get(data, "headers", _TENANT_HEADER),
        _get(data, "request", "headers", _TENANT_HEADER),
    )
    tier = _first_str(_get(result, "tier"), _get(result, "route", "tier"))
    outcome = _first_str(_get(result, "outcome"))
    if outcome is None:
        allow = _get(result, "allow")
        if isinstance(allow, bool):
            outcome = "allow" if allow else "deny"
        elif record.kind == "plan":
            outcome = "plan"
        elif result is None:
            outcome = "undefined"
    return Facets(tenant, tier, outcome)
