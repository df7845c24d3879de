"""Errors raised by the xDS library. Every exception derives from :class:`XdsError`.

Exceptions carry structured fields and format their own message; gRPC status codes are
assigned only at the server edge (``server.py``).
"""

from __future__ import annotations

__all__ = [
    "InconsistentSnapshotError",
    "InvalidRequestError",
    "NodeNotAuthorizedError",
    "UnknownTypeUrlError",
    "XdsError",
]


class XdsError(Exception):
    """Root of the xDS library's errors."""


class InconsistentSnapshotError(XdsError):
    """A snapshot references a resource it does not contain.

    ``missing`` holds one ``(referrer_kind, referrer_name, referenced_kind, referenced_name)``
    tuple per dangling reference.
    """

    def __init__(self, missing: list[tuple[str, str, str, str]]) -> None:
        self.missing = missing
        parts = [
            f"{kind} {name!r} references {ref_kind} {ref_name!r}, which the snapshot lacks"
            for kind, name, ref_kind, ref_name in missing
        ]
        super().__init__("inconsistent snapshot: " + "; ".join(parts))


class UnknownTypeUrlError(XdsError):
    """A request named a type URL this server does not serve."""

    def __init__(self, type_url: str, supported: tuple[str, ...]) -> None:
        self.type_url = type_url
        self.supported = supported
        super().__init__(
            f"unknown type URL {type_url!r}; this server serves: {', '.join(supported)}"
        )


class InvalidRequestError(XdsError):
    """A discovery request is malformed (undecodable bytes, no node on the first message…)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NodeNotAuthorizedError(XdsError):
    """The node a stream claims to be is not the node its credentials prove."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(f"node {node_id!r} refused: {reason}")
