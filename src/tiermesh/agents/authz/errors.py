"""Errors of the authz server. Every exception derives from :class:`AuthzError`.

gRPC status codes are assigned only in :mod:`.server`; a request whose decision could not
be recorded is never answered OK (Envoy then fails closed with ``status_on_error``).
"""

from __future__ import annotations

__all__ = ["AuthzError", "BudgetUnavailable", "DecisionNotRecorded", "PolicyRejected"]


class AuthzError(Exception):
    """Root of the authz server's errors."""


class BudgetUnavailable(AuthzError):
    """A :class:`~tiermesh.agents.authz.budget.BudgetSource` cannot answer right now."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"budget source {source} unavailable: {reason}")


class DecisionNotRecorded(AuthzError):
    """The decision sink failed, so the request must not be answered."""

    def __init__(self, decision_id: str, reason: str) -> None:
        self.decision_id = decision_id
        self.reason = reason
        super().__init__(f"decision {decision_id} could not be recorded: {reason}")


class PolicyRejected(AuthzError):
    """A request policy did not load, or loaded but failed the probe decision; the one
    serving before it keeps serving."""

    def __init__(self, reason: str, *, revision: str | None = None) -> None:
        self.reason = reason
        self.revision = revision
        what = f"request policy {revision}" if revision else "request policy"
        super().__init__(f"{what} rejected: {reason}")
