"""Why a control plane could not start. Every error names the thing an operator must fix."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ControlPlaneError",
    "DashboardRefused",
    "DataDirError",
    "EtcdUnreachable",
    "PortInUse",
]


class ControlPlaneError(Exception):
    """Root of the control plane runtime's errors; nothing was left running."""


class EtcdUnreachable(ControlPlaneError):
    """None of the configured etcd endpoints answered."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        self.endpoints = tuple(endpoints)
        self.detail = detail
        super().__init__(f"cannot reach etcd at {', '.join(self.endpoints)}: {detail}")


class PortInUse(ControlPlaneError):
    """A listen address cannot be bound (taken by another process, or not local)."""

    def __init__(self, what: str, address: str, detail: str) -> None:
        self.what = what
        self.address = address
        self.detail = detail
        super().__init__(f"cannot listen for {what} on {address}: {detail}")


class DataDirError(ControlPlaneError):
    """The data directory or a file in it cannot be used."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"data directory problem at {path}: {detail}")


class DashboardRefused(ControlPlaneError):
    """The dashboard's settings are unsafe or unusable (e.g. beyond loopback without a
    token); the message says what to change."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)
