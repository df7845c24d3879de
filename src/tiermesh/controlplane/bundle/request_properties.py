"""Properties every request policy must hold, proven on generated inputs.

The bundle's own Rego tests say what its author expects; these say what tiermesh
promises, whatever the author expects. For every input of a generated matrix (declared
label x body findings and inspectability x findings in the query and headers x tenant x
budget x task — :func:`property_inputs`), ``data.tiermesh.request.decision`` must be:

- **defined and well formed** — ``{allow, sensitivity, budget_exhausted, reason,
  headers}`` with a known label;
- **restricted on findings** — personal data in the body, path, query or headers, a
  truncated, binary, not-UTF-8 or uninspectable body ⇒ ``restricted``;
- **never below the declared label** — and a missing or unknown label ⇒ ``restricted``;
- **routed as decided** — ``headers`` carries ``x-tiermesh-sensitivity`` equal to the
  decision's ``sensitivity``.

The node's ext_authz server enforces the same floor in code whatever the policy answers;
this check refuses, at ``tiermesh policy check`` and push, a policy that would rely on it,
with a message naming the property and one input that breaks it. A bundle without a
request policy (no ``request/`` module) is not checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tiermesh.controlplane.api import MATCH_HEADERS, Catalog
from tiermesh.controlplane.api.request_policy import (
    REQUEST_DECISION_PATH,
    SENSITIVITY_LEVELS,
    is_request_decision,
)
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.rego import UNDEFINED, PolicyEngine, PolicyError

__all__ = ["property_inputs", "request_property_findings"]

_SENSITIVITY: Final = MATCH_HEADERS["sensitivity"]
_CLEAN_PAYLOAD: Final = {
    "sha256": "sha256:" + "0" * 64,
    "received_bytes": 80,
    "inspected_bytes": 80,
    "truncated": False,
    "encoding": "utf-8",
    "json": True,
}
_BODIES: Final[Mapping[str, tuple[dict[str, Any], list[dict[str, Any]]]]] = {
    "a clean body": (_CLEAN_PAYLOAD, []),
    "an email in the body": (
        _CLEAN_PAYLOAD,
        [{"kind": "email", "count": 1, "spans": [[10, 30]]}],
    ),
    "a card number and an SSN in the body": (
        _CLEAN_PAYLOAD,
        [
            {"kind": "payment_card", "count": 1, "spans": [[0, 19]]},
            {"kind": "us_ssn", "count": 1, "spans": [[25, 36]]},
        ],
    ),
    "a truncated body": ({**_CLEAN_PAYLOAD, "truncated": True, "json": False}, []),
    "a binary body": ({**_CLEAN_PAYLOAD, "encoding": "binary", "json": False}, []),
    "a body that is not UTF-8": ({**_CLEAN_PAYLOAD, "encoding": "invalid_utf8", "json": False}, []),
    "an uninspectable body": (
        {
            **_CLEAN_PAYLOAD,
            "json": False,
            "uninspectable": "body looks like JSON but does not parse",
        },
        [],
    ),
}
_REQUEST_FINDINGS: Final[Mapping[str, list[dict[str, Any]]]] = {
    "": [],
    ", an email in the query": [{"kind": "email", "count": 1, "where": "query"}],
    ", a phone number in a header": [{"kind": "phone", "count": 1, "where": "header x-note"}],
}


@dataclass(frozen=True, slots=True)
class _Case:
    """One generated input and what tiermesh requires of its decision."""

    description: str
    document: dict[str, Any]
    declared: str | None
    floor_restricted: bool


def property_inputs(catalog: Catalog | None) -> Iterator[_Case]:
    """The generated inputs (see the module docstring); tenants and tasks from ``catalog``."""
    tenants: Sequence[str | None] = [None]
    tasks: Sequence[str | None] = [None]
    if catalog is not None:
        tenants = [catalog.tenants[0].name, None] if catalog.tenants else [None]
        tasks = [None, catalog.tasks[0].name]
    declared_labels: Sequence[str | None] = [*SENSITIVITY_LEVELS, None, "PUBLIC"]
    for declared, body, found, tenant, exhausted, task in itertools.product(
        declared_labels, _BODIES, _REQUEST_FINDINGS, tenants, (False, True), tasks
    ):
        payload, findings = _BODIES[body]
        headers: dict[str, str] = {}
        if declared is not None:
            headers["sensitivity"] = declared
        if task is not None:
            headers["task"] = task
        document: dict[str, Any] = {
            "version": "v1",
            "headers": headers,
            "request": {"method": "POST", "path": "/v1/chat/completions"},
            "payload": payload,
            "findings": findings,
            "token_estimate": 20,
            "budget": {"known": True, "exhausted": exhausted, "spent_usd": 1, "limit_usd": 10},
        }
        if _REQUEST_FINDINGS[found]:
            document["request_findings"] = _REQUEST_FINDINGS[found]
        if tenant is not None:
            document["tenant"] = tenant
        label = "no label" if declared is None else f"label {declared!r}"
        yield _Case(
            description=f"{label}, {body}{found}, tenant {tenant or '(none)'}, "
            f"budget {'spent' if exhausted else 'left'}, task {task or '(none)'}",
            document=document,
            declared=declared,
            floor_restricted=body != "a clean body" or bool(_REQUEST_FINDINGS[found]),
        )


def _malformed(value: object) -> str | None:
    if value is UNDEFINED:
        return "the decision is undefined"
    if not is_request_decision(value):
        return "the decision is not {allow, sensitivity, budget_exhausted, reason, headers}"
    return None


def _broken(case: _Case, decision: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(property, what the policy answered) for each property ``decision`` breaks."""
    level = decision["sensitivity"]
    if case.floor_restricted and level != "restricted":
        yield (
            "personal data or an uninspectable body must make a request restricted",
            f"sensitivity {level!r}",
        )
    rank = SENSITIVITY_LEVELS.index
    if case.declared in SENSITIVITY_LEVELS and rank(level) < rank(case.declared):
        yield "a request's declared label must never be lowered", f"sensitivity {level!r}"
    if case.declared not in SENSITIVITY_LEVELS and level != "restricted":
        yield "a missing or unknown label must make a request restricted", f"sensitivity {level!r}"
    routed = {k.lower(): v for k, v in decision["headers"].items()}.get(_SENSITIVITY)
    if decision["allow"] and routed != level:
        yield (
            f"headers must carry {_SENSITIVITY} equal to the decision's sensitivity",
            f"sensitivity {level!r}, header {routed!r}",
        )


def request_property_findings(
    engine: PolicyEngine, files: Mapping[str, bytes], catalog: Catalog | None
) -> list[Finding]:
    """One finding per property the loaded request policy breaks (the first input that
    breaks it as the example); empty when every property holds or there is no request
    policy in ``files``. ``engine`` holds the bundle."""
    modules = sorted(p for p in files if p.startswith("request/") and p.endswith(".rego"))
    policy = [p for p in modules if not p.endswith("_test.rego")]
    if not policy:
        return []
    where = policy[0]
    seen: dict[str, Finding] = {}
    for case in property_inputs(catalog):
        try:
            value = engine.evaluate(REQUEST_DECISION_PATH, case.document)
        except PolicyError as exc:
            broken = [("the decision must evaluate for every input", f"error: {exc}")]
        else:
            problem = _malformed(value)
            if problem is not None:
                broken = [("the decision must be defined and well formed", problem)]
            else:
                broken = list(_broken(case, value))  # type: ignore[arg-type]
        for rule, answer in broken:
            if rule not in seen:
                message = (
                    f"request policy property broken: {rule}; for {case.description} "
                    f"{REQUEST_DECISION_PATH} answered {answer}"
                )
                seen[rule] = Finding(Stage.PROPERTY, message, where)
    return list(seen.values())
