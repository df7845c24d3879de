"""Errors of the node agent's runtime. Every one derives from :class:`AgentError` and names
its cause in its message; ``tiermesh agent run`` prints it and exits non-zero."""

from __future__ import annotations

__all__ = ["AgentError", "ControlPlaneUnreachable", "JoinFailed", "PortInUse", "StartFailed"]


class AgentError(Exception):
    """Root of the agent runtime's errors."""


class PortInUse(AgentError):
    """A port the node needs is held by another process; nothing was started on it."""

    def __init__(self, what: str, address: str) -> None:
        self.what = what
        self.address = address
        super().__init__(f"{what} port {address} is already in use")


class ControlPlaneUnreachable(AgentError):
    """No control-plane address answered (``attempts`` lists each address and its error)."""

    def __init__(self, what: str, attempts: list[str]) -> None:
        self.what = what
        self.attempts = attempts
        super().__init__(f"control plane unreachable for {what}: " + "; ".join(attempts))


class JoinFailed(AgentError):
    """The node has no usable SVID and could not get one (no token, refused token…)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"cannot join the mesh: {reason}")


class StartFailed(AgentError):
    """A part of the node (Envoy, the model server, a local server) did not start."""

    def __init__(self, part: str, reason: str) -> None:
        self.part = part
        self.reason = reason
        super().__init__(f"{part} failed to start: {reason}")
