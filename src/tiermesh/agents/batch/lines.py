"""Reading a batch's input file and deciding each line like a request.

:func:`parse_lines` checks the OpenAI batch input shape: one JSON object per line with a
unique ``custom_id`` (string), ``method`` ``POST``, a ``url`` equal to the batch's
endpoint (one of :data:`~tiermesh.controlplane.api.batch.BATCH_ENDPOINTS`) and a ``body``
object. Any problem is an :class:`InvalidBatchInput` naming the line (1-based, as editors
count). Blank lines are skipped.

A :class:`LineDecider` gives one line its routing decision. :class:`AuthorizerDecider`
asks the node's :class:`~tiermesh.agents.authz.Authorizer`, so a line gets exactly what a
request gets — the floor computed in code over the line's own bytes (personal data,
inspectability, the declared label), the request policy, a durable signed record in the
decision log — decided as the tenant that submitted the batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Protocol

from tiermesh.agents.authz import Authorizer, CheckInput
from tiermesh.agents.batch.errors import InvalidBatchInput
from tiermesh.controlplane.api import MATCH_HEADERS
from tiermesh.controlplane.api.batch import BATCH_ENDPOINTS

__all__ = [
    "MAX_LINES",
    "AuthorizerDecider",
    "BatchLine",
    "LineDecider",
    "LineDecision",
    "parse_lines",
]

MAX_LINES: Final = 50_000
"""Lines one batch may hold (the OpenAI Batch API's limit)."""


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch: its position, id, path, body and raw bytes (inspected)."""

    line: int
    custom_id: str
    url: str
    body: dict[str, Any]
    raw: bytes


@dataclass(frozen=True, slots=True)
class LineDecision:
    """A line's audited verdict: allowed or not, the label it routes with, why, and the
    decision record's id."""

    allowed: bool
    sensitivity: str
    reason: str
    decision_id: str


class LineDecider(Protocol):
    """Decides one line for ``tenant`` with the caller's declared label (None: none
    declared, which the floor treats as restricted). Returns once the decision is durable;
    raises when it could not be recorded (the line must not run)."""

    async def decide(self, line: BatchLine, tenant: str, declared: str | None) -> LineDecision: ...


def _field(obj: dict[str, Any], name: str, where: str) -> Any:
    if name not in obj:
        raise InvalidBatchInput(where, f"missing {name!r}")
    return obj[name]


def parse_lines(content: bytes, endpoint: str) -> list[BatchLine]:
    """The lines of a JSONL batch input (see the module docstring)."""
    if endpoint not in BATCH_ENDPOINTS:
        raise InvalidBatchInput("endpoint", f"must be one of {', '.join(BATCH_ENDPOINTS)}")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBatchInput("file", f"not UTF-8 (byte {exc.start})") from exc
    lines: list[BatchLine] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        line = _parse_line(raw, f"line {number}", len(lines), endpoint, seen)
        lines.append(line)
        if len(lines) > MAX_LINES:
            raise InvalidBatchInput("file", f"more than {MAX_LINES} lines")
    if not lines:
        raise InvalidBatchInput("file", "holds no request")
    return lines


def _parse_line(raw: str, where: str, index: int, endpoint: str, seen: set[str]) -> BatchLine:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidBatchInput(where, f"not JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise InvalidBatchInput(where, "not a JSON object")
    custom_id = _field(obj, "custom_id", where)
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= 256:
        raise InvalidBatchInput(where, "custom_id must be a string of 1 to 256 characters")
    if custom_id in seen:
        raise InvalidBatchInput(where, f"custom_id {custom_id!r} is not unique")
    seen.add(custom_id)
    if _field(obj, "method", where) != "POST":
        raise InvalidBatchInput(where, "method must be 'POST'")
    if _field(obj, "url", where) != endpoint:
        raise InvalidBatchInput(where, f"url must be the batch's endpoint {endpoint!r}")
    body = _field(obj, "body", where)
    if not isinstance(body, dict):
        raise InvalidBatchInput(where, "body must be a JSON object")
    return BatchLine(index, custom_id, endpoint, body, raw.encode())


class AuthorizerDecider:
    """:class:`LineDecider` on the node's authorizer (see the module docstring). The line's
    whole JSON text is what is inspected (its ``custom_id`` travels with the result, so it
    is inspected too). Runs on the authorizer's event loop."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    @property
    def authorizer(self) -> Authorizer:
        return self._authorizer

    async def decide(self, line: BatchLine, tenant: str, declared: str | None) -> LineDecision:
        headers = {"content-type": "application/json", "content-length": str(len(line.raw))}
        if declared is not None:
            headers[MATCH_HEADERS["sensitivity"]] = declared
        verdict = await self._authorizer.decide(
            CheckInput(method="POST", path=line.url, headers=headers, body=line.raw),
            tenant=tenant,
        )
        return LineDecision(
            allowed=verdict.allowed,
            sensitivity=str(verdict.decision.get("sensitivity", "restricted")),
            reason=str(verdict.decision.get("reason", "")),
            decision_id=str(verdict.decision_id),
        )
