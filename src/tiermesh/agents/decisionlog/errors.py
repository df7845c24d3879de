"""Errors of the decision log. Every exception derives from :class:`DecisionLogError`.

Exceptions carry structured fields and format their own message.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DecisionLogClosed",
    "DecisionLogError",
    "DecisionLogFailed",
    "MaskingError",
    "ShipFailed",
    "SignatureInvalid",
    "SpoolCorruptedError",
]


class DecisionLogError(Exception):
    """Root of the decision log's errors."""


class SpoolCorruptedError(DecisionLogError):
    """A spool segment holds a line that is not the next record of the chain: unparseable
    JSON, a record that fails its contract, a wrong ``hash``, a broken ``prev_hash`` link or
    a gap in ``seq``. ``line`` is 1-based; ``quarantined_to`` is set once the segment was
    moved aside by :class:`~tiermesh.agents.decisionlog.DecisionLog` recovery."""

    def __init__(
        self, segment: Path, line: int, reason: str, *, quarantined_to: Path | None = None
    ) -> None:
        self.segment = segment
        self.line = line
        self.reason = reason
        self.quarantined_to = quarantined_to
        where = f"spool segment {segment} line {line}: {reason}"
        if quarantined_to is not None:
            where += f" (segment quarantined to {quarantined_to})"
        super().__init__(where)


class DecisionLogFailed(DecisionLogError):
    """A write or fsync of the spool failed. The log refuses every later append, because
    what is on disk may now lag the chain in memory; restart it to recover from disk."""

    def __init__(self, directory: Path, reason: str) -> None:
        self.directory = directory
        self.reason = reason
        super().__init__(f"decision log {directory} failed: {reason}")


class DecisionLogClosed(DecisionLogError):
    """The log was closed (or never started); nothing more can be appended."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        super().__init__(f"decision log {directory} is not open")


class MaskingError(DecisionLogError):
    """A masking rule is malformed (not a ``/``-separated path, unknown action)."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"masking rule {rule!r}: {reason}")


class SignatureInvalid(DecisionLogError):
    """A record's signature or signer does not verify. ``reason`` says which check failed."""

    def __init__(self, decision_id: str, reason: str) -> None:
        self.decision_id = decision_id
        self.reason = reason
        super().__init__(f"record {decision_id}: {reason}")


class ShipFailed(DecisionLogError):
    """The control plane did not acknowledge a batch (unreachable, or it refused it)."""

    def __init__(self, reason: str, *, retryable: bool = True, code: str | None = None) -> None:
        self.reason = reason
        self.retryable = retryable
        self.code = code
        """The gRPC status code's name, when the collector answered with one."""
        super().__init__(f"shipping failed: {reason}")
