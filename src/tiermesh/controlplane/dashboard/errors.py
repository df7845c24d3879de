"""Why the dashboard refused to start. Every error names what to fix."""

from __future__ import annotations

__all__ = ["DashboardError", "DashboardNeedsAuth", "TokenFileError"]


class DashboardError(Exception):
    """Root of the dashboard's errors."""


class DashboardNeedsAuth(DashboardError):
    """The dashboard was asked to listen beyond loopback without a token."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"the dashboard on {address} would be reachable from other hosts without"
            " authentication: bind it to 127.0.0.1, or give --dashboard-token-file"
        )


class TokenFileError(DashboardError):
    """The dashboard's token file cannot be used."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"dashboard token file {path}: {problem}")
