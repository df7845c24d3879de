"""Replaying recorded decisions under a candidate policy: what would change.

:func:`replay` evaluates each record's ``path`` (as ``data.<path with / as .>``) with its
stored (masked) ``input`` through ``evaluate`` and compares the new result with what the
policy answered then (a request record's ``result.policy_answer``; else its ``result``
without the keys the server added) as JSON values (equal values, whatever the key order,
are unchanged). Records of
kind ``plan`` (:mod:`~tiermesh.controlplane.audit.plans`) compare the candidate plan's
:func:`~tiermesh.controlplane.audit.plans.plan_digest` with the recorded ``plan_sha256``
(so a record that kept only the digest replays too); they are counted under the tenant
``(plans)``, changes shown as ``{plan_sha256, summary}`` and without a cost. A policy that
needs input the masking removed will see it missing — that is part of what replay shows.
A request record whose ``policy_answer`` is null (refused for its credential, 401, before
the policy was asked) has nothing to compare and is counted as skipped.

**Cost rule.** A change gets a cost delta only when all of this is known:

- the token estimate: the first integer among ``input.token_estimate``,
  ``input.request.token_estimate`` and ``input.tokens.estimate``;
- the catalog (``data/catalog.yaml`` of the candidate bundle);
- the price of both results, per 1k *input* tokens (output tokens are unknown when a
  request is decided): ``result.backend`` names a catalog backend → its
  ``cost_per_1k_tokens.input``; else ``result.tier`` → the cheapest
  ``cost_per_1k_tokens.input`` of the catalog's backends in that tier (a lower bound); else
  a result that routes nowhere (``allow`` false, or no backend and no tier) costs 0.

cost = token estimate / 1000 * price; delta = new cost - old cost (positive: dearer).
A tier or backend the catalog does not know leaves the delta unknown (``None``).

Pure apart from ``evaluate``; thread-safety is that of ``evaluate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.api.decision import DecisionRecord
from tiermesh.controlplane.audit.facets import facets
from tiermesh.controlplane.audit.plans import plan_summary, replay_digest

__all__ = [
    "Evaluate",
    "ReplayChange",
    "ReplayReport",
    "TenantSummary",
    "decision_cost",
    "input_price",
    "rego_path",
    "replay",
    "token_estimate",
]

Evaluate = Callable[[str, Any], Any]
"""``evaluate(rego_path, input)`` → the JSON result, ``None`` when undefined."""

_NO_TENANT = "(none)"
_PLANS = "(plans)"


def rego_path(path: str) -> str:
    """``tiermesh/request/decision`` → ``data.tiermesh.request.decision``."""
    return "data." + path.strip("/").replace("/", ".")


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def token_estimate(data: Any) -> int | None:
    """The recorded input's token estimate by the module's rule, or None."""
    for value in (
        _get(data, "token_estimate"),
        _get(data, "request", "token_estimate"),
        _get(data, "tokens", "estimate"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def input_price(result: Any, catalog: Catalog) -> float | None:
    """USD per 1k input tokens of what ``result`` routes to, by the module's rule."""
    backend = _get(result, "backend")
    if isinstance(backend, str):
        found = next((b for b in catalog.backends if b.name == backend), None)
        return None if found is None else found.cost_per_1k_tokens.input
    if _get(result, "allow") is False:
        return 0.0
    tier = _get(result, "tier")
    if isinstance(tier, str):
        prices = [b.cost_per_1k_tokens.input for b in catalog.backends if b.tier == tier]
        return min(prices) if prices else None
    return 0.0


def decision_cost(result: Any, tokens: int | None, catalog: Catalog | None) -> float | None:
    """Cost of ``result`` for ``tokens`` input tokens, or None when it cannot be known."""
    if tokens is None or catalog is None:
        return None
    price = input_price(result, catalog)
    return None if price is None else tokens / 1000 * price


@dataclass(frozen=True, slots=True)
class ReplayChange:
    """One decision the candidate policy decides differently."""

    decision_id: str
    tenant: str
    path: str
    old_result: Any
    new_result: Any
    cost_delta: float | None


@dataclass(slots=True)
class TenantSummary:
    """Per tenant: decisions replayed, how many changed, the summed known cost delta."""

    tenant: str
    replayed: int = 0
    changed: int = 0
    cost_delta: float = 0.0
    unknown_cost: int = 0
    """Changed decisions whose cost delta is unknown (not in ``cost_delta``)."""


@dataclass(slots=True)
class ReplayReport:
    """The outcome of :func:`replay`."""

    replayed: int = 0
    skipped: int = 0
    changes: list[ReplayChange] = field(default_factory=list)
    tenants: dict[str, TenantSummary] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(decision_id, message) of records the candidate policy failed to evaluate."""


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def replay(
    records: Iterable[DecisionRecord], evaluate: Evaluate, catalog: Catalog | None = None
) -> ReplayReport:
    """Re-decide every record with ``evaluate`` (see the module docstring)."""
    report = ReplayReport()
    for record in records:
        if record.kind == "plan":
            _replay_plan(record, evaluate, report)
            continue
        if record.kind == "model_verification":  # decided by signatures, not by policy
            report.skipped += 1
            continue
        if isinstance(record.result, dict) and record.result.get("policy_answer", {}) is None:
            report.skipped += 1
            continue
        tenant = facets(record).tenant or _NO_TENANT
        summary = report.tenants.setdefault(tenant, TenantSummary(tenant))
        try:
            new = evaluate(rego_path(record.path), record.input)
        except Exception as exc:  # noqa: BLE001 - any engine's error is reported per record
            report.errors.append((str(record.decision_id), str(exc)))
            continue
        report.replayed += 1
        summary.replayed += 1
        if _same(new, _policy_answer(record.result)):
            continue
        tokens = token_estimate(record.input)
        old_cost = decision_cost(record.result, tokens, catalog)
        new_cost = decision_cost(new, tokens, catalog)
        delta = None if old_cost is None or new_cost is None else new_cost - old_cost
        report.changes.append(
            ReplayChange(str(record.decision_id), tenant, record.path, record.result, new, delta)
        )
        summary.changed += 1
        if delta is None:
            summary.unknown_cost += 1
        else:
            summary.cost_delta += delta
    return report


_SERVER_KEYS = frozenset({"outcome", "status", "floor", "policy_answer"})
"""Keys a node's ext_authz server adds to a request record's result around the policy's
answer."""


def _policy_answer(result: Any) -> Any:
    """What the policy itself answered, as a candidate's result is compared with: a
    request record's ``policy_answer`` (its result carries the server's floor applied), or
    the result without the keys the server added (records written before the floor)."""
    if not isinstance(result, dict):
        return result
    if "policy_answer" in result:
        return result["policy_answer"]
    return {k: v for k, v in result.items() if k not in _SERVER_KEYS}


def _replay_plan(record: DecisionRecord, evaluate: Evaluate, report: ReplayReport) -> None:
    recorded = record.result if isinstance(record.result, dict) else {}
    if "plan_sha256" not in recorded:
        report.skipped += 1
        return
    summary = report.tenants.setdefault(_PLANS, TenantSummary(_PLANS))
    try:
        new = evaluate(rego_path(record.path), record.input)
    except Exception as exc:  # noqa: BLE001 - any engine's error is reported per record
        report.errors.append((str(record.decision_id), str(exc)))
        return
    report.replayed += 1
    summary.replayed += 1
    digest = replay_digest(new)
    if digest == recorded["plan_sha256"]:
        return
    old = {"plan_sha256": recorded["plan_sha256"], "summary": recorded.get("summary")}
    candidate = {"plan_sha256": digest, "summary": plan_summary(new)}
    report.changes.append(
        ReplayChange(str(record.decision_id), _PLANS, record.path, old, candidate, None)
    )
    summary.changed += 1
    summary.unknown_cost += 1
