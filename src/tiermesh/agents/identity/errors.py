"""Errors of the agent's identity package. Every exception derives from
:class:`AgentIdentityError`.

Exceptions carry structured fields and format their own message. gRPC status codes are
assigned only where a server answers a call (``workload_api``), never here.
"""

from __future__ import annotations

__all__ = [
    "AgentIdentityError",
    "NoSvidError",
    "SocketPathError",
    "SpiffeIdChangedError",
    "SpireSourceError",
    "SvidRejectedError",
]


class AgentIdentityError(Exception):
    """Root of the agent identity package's errors."""


class SvidRejectedError(AgentIdentityError):
    """An SVID (chain, key, bundle) offered to the agent does not check out; it was not
    adopted and the previous identity, if any, stays in use."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"SVID rejected: {reason}")


class SpiffeIdChangedError(SvidRejectedError):
    """A renewal returned an SVID for a different SPIFFE ID than the one the node holds."""

    def __init__(self, current: str, offered: str) -> None:
        self.current = current
        self.offered = offered
        super().__init__(f"renewal changed the SPIFFE ID from {current!r} to {offered!r}")


class NoSvidError(AgentIdentityError):
    """The agent holds no SVID yet (it has not joined, or the first renewal has not finished)."""

    def __init__(self) -> None:
        super().__init__("the agent holds no SVID yet")


class SocketPathError(AgentIdentityError):
    """A unix socket path cannot be used (too long, or a non-socket file is in the way)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot serve on unix socket {path!r}: {reason}")


class SpireSourceError(AgentIdentityError):
    """A SPIRE agent's Workload API could not supply an SVID."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"no SVID from the Workload API at {endpoint!r}: {reason}")
