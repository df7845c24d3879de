"""The sensitivity floor: what a request's own bytes force, computed in code, not in Rego.

A request's effective sensitivity is the highest of

- the **floor** (:func:`sensitivity_floor`): ``restricted`` when the detectors find
  personal data in the body, the URL path, the query string or an inspected header; when
  the body was not fully inspected (truncated), is not readable the way any upstream could
  read it (binary, invalid UTF-8, malformed or too-deep JSON: ``uninspectable``), or is
  content-encoded; when the caller's ``x-tiermesh-sensitivity`` is missing or not a known
  label. Otherwise the caller's declared label;
- the request policy's answer.

So a policy can raise the label, never lower it, and a mistaken ``request.rego`` cannot
send personal data to a cloud tier (:func:`effective_level`).

:func:`inspect_request` runs the detectors over what, besides the body, reaches an
upstream: the path, the query and every header value except the ones a node never
forwards or that carry credentials (:data:`DEFAULT_UNINSPECTED_HEADERS`, configurable),
each as sent and in the forms an escape-decoding reader could see
(:func:`~.normalize.decoded_forms`: percent-encoding up to three rounds, backslash
escapes, HTML references). Findings name where they were found,
never the text. Pure; thread-safe.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from tiermesh.agents.authz.body import InspectedBody
from tiermesh.agents.authz.detectors import DetectorRegistry, default_registry
from tiermesh.agents.authz.normalize import decoded_forms, detection_text, hidden_forms
from tiermesh.controlplane.api import Sensitivity
from tiermesh.controlplane.api.request_policy import SENSITIVITY_LEVELS

__all__ = [
    "DEFAULT_UNINSPECTED_HEADERS",
    "LEVELS",
    "Floor",
    "Level",
    "RequestFinding",
    "effective_level",
    "inspect_request",
    "sensitivity_floor",
]

Level: TypeAlias = Sensitivity
LEVELS: Final = SENSITIVITY_LEVELS
"""Sensitivity labels, lowest first."""
_RANK: Final[dict[str, int]] = {level: rank for rank, level in enumerate(LEVELS)}

DEFAULT_UNINSPECTED_HEADERS: Final = frozenset(
    {
        "content-length",
        "x-request-id",
        "x-forwarded-proto",
        "x-tiermesh-decision-id",
        "x-envoy-auth-partial-body",
    }
)
"""Headers whose values are not scanned: values Envoy or the client library set in fixed
shapes. Credentials are scanned like any header unless they are a tenant key, which is
taken off the request before it is inspected or forwarded: a header a client fills is
forwarded upstream unless something removes it. Pseudo-headers other
than ``:authority`` are not scanned (``:path`` is, as path and query); ``x-envoy-*``
headers are, since Envoy forwards a client's own upstream."""

_DEFAULT_REGISTRY: Final = default_registry()
_PLAIN_NAME: Final = re.compile(r":?[a-z0-9-]{1,64}")


@dataclass(frozen=True, slots=True)
class RequestFinding:
    """Personal data of one kind found outside the body: where and how often, never what."""

    kind: str
    count: int
    where: str
    """``path``, ``query`` or ``header <name>``."""

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "count": self.count, "where": self.where}


@dataclass(frozen=True, slots=True)
class Floor:
    """The lowest sensitivity the request may be routed with, and why."""

    level: Level
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"sensitivity": self.level, "reasons": list(self.reasons)}


def _with_decoded_forms(text: str) -> str:
    """``text`` and what an escape-decoding reader could see in it, one per line."""
    return "\n".join([text, *decoded_forms(text), *hidden_forms(text)])


def inspect_request(
    path: str,
    headers: Mapping[str, str],
    *,
    registry: DetectorRegistry | None = None,
    uninspected: Collection[str] = DEFAULT_UNINSPECTED_HEADERS,
) -> tuple[RequestFinding, ...]:
    """Findings in ``path`` (with its query) and in ``headers`` (lowercase names)."""
    detectors = registry or _DEFAULT_REGISTRY
    raw_path, _, query = path.partition("?")
    places: list[tuple[str, str]] = [
        ("path", _with_decoded_forms(raw_path)),
        ("query", _with_decoded_forms(query)),
    ]
    for name in sorted(headers):
        if (name.startswith(":") and name != ":authority") or name in uninspected:
            continue
        # the name too: a header's name is forwarded as well as its value; a name that is
        # no plain token is not repeated where findings are recorded
        label = name if _PLAIN_NAME.fullmatch(name) else "[masked]"
        places.append((f"header {label}", _with_decoded_forms(f"{name}: {headers[name]}")))
    places = [(where, text) for where, text in places if text]
    each = detectors.detect_each([detection_text(text) for _, text in places])
    return tuple(
        RequestFinding(finding.kind, finding.count, where)
        for (where, _), findings in zip(places, each, strict=True)
        for finding in findings
    )


def _kinds(kinds: Sequence[str]) -> str:
    return ", ".join(sorted(set(kinds)))


def sensitivity_floor(
    declared: str | None,
    body: InspectedBody,
    request_findings: Sequence[RequestFinding] = (),
    *,
    content_encoding: str | None = None,
) -> Floor:
    """The floor of a request whose caller declared ``declared`` (see the module docstring)."""
    reasons: list[str] = []
    if body.findings:
        reasons.append(f"body contains {_kinds([f.kind for f in body.findings])}")
    places = sorted({f.where for f in request_findings})
    for where in places:
        kinds = [f.kind for f in request_findings if f.where == where]
        reasons.append(f"{where} contains {_kinds(kinds)}")
    if body.truncated:
        reasons.append("body not fully inspected")
    if body.uninspectable:
        reasons.append(body.uninspectable)
    elif body.encoding in ("binary", "invalid_utf8"):
        reasons.append("body is not plain text")
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity"):
        reasons.append("body is content-encoded: not inspectable")
    if reasons:
        return Floor("restricted", tuple(reasons))
    for level in LEVELS:
        if declared == level:
            return Floor(level, ())
    if declared is None:
        return Floor("restricted", ("x-tiermesh-sensitivity missing",))
    return Floor("restricted", ("x-tiermesh-sensitivity is not a known label",))


def effective_level(floor: Floor, policy_level: str) -> Level:
    """The higher of ``floor`` and the policy's label (an unknown label is restricted)."""
    policy_rank = _RANK.get(policy_level, _RANK["restricted"])
    return LEVELS[max(_RANK[floor.level], policy_rank)]
