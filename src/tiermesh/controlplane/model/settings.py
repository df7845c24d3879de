"""Per-node settings the routing plan does not hold."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeSettings"]


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """Where a node's Envoy listens for its apps, and what it trusts upstream.

    ``trust_bundle_pem`` is the SPIFFE trust bundle (PEM CA certificates) that upstream
    clusters with a ``spiffe_id`` validate their peer against; the secrets generator
    serves it as an SDS secret. A plan with such a backend and no bundle does not compile
    (the cluster would reference a secret the snapshot lacks).
    """

    app_port: int
    """TCP port of the app listener."""
    app_address: str = "127.0.0.1"
    """Address of the app listener; loopback, since apps run on the node."""
    connect_timeout_ms: int = 1000
    """Upstream TCP (and TLS) connect timeout of every backend cluster."""
    trust_bundle_pem: str | None = None
    """PEM trust bundle for SPIFFE peers; required when a planned backend has a SPIFFE ID."""

    def __post_init__(self) -> None:
        if not 0 < self.app_port < 65536:
            raise ValueError(f"app_port {self.app_port} is not a TCP port")
        if self.connect_timeout_ms <= 0:
            raise ValueError("connect_timeout_ms must be positive")
