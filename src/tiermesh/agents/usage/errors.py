"""Errors of the usage accounting. Every exception derives from :class:`UsageError`."""

from __future__ import annotations

__all__ = ["LedgerWriteFailed", "UsageError"]


class UsageError(Exception):
    """Root of the usage accounting's errors."""


class LedgerWriteFailed(UsageError):
    """The budget file could not be written; the in-memory totals are kept."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot write the budget file {path}: {reason}")
