"""Errors of the node's metrics. Every exception derives from :class:`MetricsError`."""

from __future__ import annotations

__all__ = ["MetricsError", "MetricsUnavailable"]


class MetricsError(Exception):
    """Root of the node metrics' errors."""


class MetricsUnavailable(MetricsError):
    """The ``/metrics`` server could not listen where it was told."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"cannot serve metrics on {address}: {reason}")
