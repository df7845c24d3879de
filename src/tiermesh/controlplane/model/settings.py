"""Per-node settings the routing plan does not hold."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "AuthzSettings",
    "BatchSettings",
    "CascadeSettings",
    "MeshTlsSettings",
    "NodeSettings",
    "UsageSettings",
]


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    """The node agent's ext_authz server (``envoy.service.auth.v3.Authorization``, gRPC).

    When a node has one, its app listener runs Envoy's ext_authz filter before routing:
    the server sees headers and up to ``max_body_bytes`` of the body (a longer body is sent
    cut, marked partial) and sets the routing headers the compiled routes match on. The
    filter fails closed: an unreachable, slow or failing server answers 503 and no
    upstream is contacted.
    """

    port: int = 0
    """TCP port of the authz server (plaintext gRPC; it runs on the node); 0 with
    ``socket``."""
    host: str = "127.0.0.1"
    """IP address of the authz server; loopback, since it runs beside Envoy."""
    socket: str | None = None
    """Absolute path of the authz server's Unix socket, or None: ``host:port``. Set, the
    cluster's one endpoint is this socket (Envoy ``Address.pipe``) and ``port`` is 0."""
    max_body_bytes: int = 64 * 1024
    """Bytes of a request body Envoy buffers and sends with each check."""
    timeout_ms: int = 500
    """Deadline of one check; past it the request fails closed."""

    def __post_init__(self) -> None:
        _check_address("authz", self.port, self.socket)
        if self.max_body_bytes < 0:
            raise ValueError("authz max_body_bytes must be >= 0")
        if self.timeout_ms <= 0:
            raise ValueError("authz timeout_ms must be positive")


@dataclass(frozen=True, slots=True)
class UsageSettings:
    """The node agent's access-log server (``envoy.service.accesslog.v3.AccessLogService``,
    gRPC), which accounts tokens and spend per tenant.

    When a node has one, its app listener reads ``usage`` from each answer's body into
    dynamic metadata (``tiermesh.usage``) and sends one access-log entry per request to
    this server. Accounting is best effort: an unreachable server loses entries, it never
    fails a request.
    """

    port: int = 0
    """TCP port of the access-log server (plaintext gRPC; it runs on the node); 0 with
    ``socket``."""
    host: str = "127.0.0.1"
    """IP address of the access-log server; loopback, since it runs beside Envoy."""
    socket: str | None = None
    """Absolute path of the access-log server's Unix socket, or None (as
    :attr:`AuthzSettings.socket`)."""
    flush_interval_ms: int = 200
    """How long Envoy may hold finished entries before it sends them."""
    scan_bytes: int = 512
    """Bytes of one body chunk's tail carried into the next when searching for ``usage``,
    so a ``usage`` object cut between two chunks is still found. The filter never buffers
    more than one chunk plus this."""

    def __post_init__(self) -> None:
        _check_address("usage", self.port, self.socket)
        if self.flush_interval_ms <= 0:
            raise ValueError("usage flush_interval_ms must be positive")
        if not 64 <= self.scan_bytes <= 65536:
            raise ValueError("usage scan_bytes must be within 64..65536")


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
    authz: AuthzSettings | None = None
    """The node's ext_authz server; None compiles no request-time policy filter."""
    usage: UsageSettings | None = None
    """The node's access-log server; None compiles no usage filter and no access log."""
    credentials: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )
    """API keys by the name a backend's ``credential.secret`` gives, as the operator
    stored them. Served to the node as SDS generic secrets; never part of a plan, and
    left out of ``repr`` so that logging settings cannot leak them."""
    cascade: CascadeSettings | None = None
    """The node's confidence cascade handler; None compiles routes of ``cascade`` tasks
    as plain failover chains."""
    batch: BatchSettings | None = None
    """The node's batch service; None compiles no ``/v1/files`` or ``/v1/batches`` route
    (those paths are then outside the API surface: 404)."""
    mesh: MeshTlsSettings | None = None
    """Node-to-node mTLS (certificates from the agent's local SDS): an inbound listener
    in front of the node's model server, and client certificates on clusters to other
    nodes. None keeps upstream TLS with the ADS-served trust bundle, and no inbound."""

    def __post_init__(self) -> None:
        if not 0 < self.app_port < 65536:
            raise ValueError(f"app_port {self.app_port} is not a TCP port")
        if self.connect_timeout_ms <= 0:
            raise ValueError("connect_timeout_ms must be positive")
        object.__setattr__(self, "credentials", MappingProxyType(dict(self.credentials)))


@dataclass(frozen=True, slots=True)
class CascadeSettings:
    """The node agent's confidence cascade handler (HTTP/1.1, plaintext, on the node).

    When a node has one, every route of a plan route with ``cascade`` (and a chain of two
    or more steps) sends its requests to this handler instead of the chain; the handler
    asks the chain's steps in order back through the app listener (per-step routes) and
    answers with the first confident answer, or the last step's.
    """

    port: int = 0
    """TCP port of the handler; 0 with ``socket``."""
    host: str = "127.0.0.1"
    """IP address of the handler; loopback, since it runs beside Envoy."""
    socket: str | None = None
    """Absolute path of the handler's Unix socket, or None (as
    :attr:`AuthzSettings.socket`)."""

    def __post_init__(self) -> None:
        _check_address("cascade", self.port, self.socket)


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """The node agent's batch service (HTTP/1.1, plaintext) on a Unix socket of mode 0600:
    the app listener sends :data:`~tiermesh.controlplane.api.surface.BATCH_API` requests
    there, after ext_authz (see :mod:`tiermesh.controlplane.generators.batch`)."""

    socket: str
    """Absolute path of the service's Unix socket."""

    def __post_init__(self) -> None:
        _check_address("batch", 0, self.socket)


@dataclass(frozen=True, slots=True)
class MeshTlsSettings:
    """Node-to-node mTLS of one node (see :mod:`tiermesh.controlplane.generators.mesh_tls`).

    The certificates come from the node agent's local SDS server, reached through the
    bootstrap's static cluster ``sds_cluster``; the secret names are those it serves.
    """

    inbound_port: int
    """TCP port of the inbound mTLS listener other nodes call."""
    model_port: int
    """TCP port of the node's model server (plain HTTP, on the node)."""
    trust_domain: str
    """SPIFFE trust domain; peers are ``spiffe://<trust_domain>/node/<id>``."""
    local_backends: tuple[str, ...] = ()
    """Catalog names of the backends this node serves behind the inbound listener."""
    allowed_peers: tuple[str, ...] = ()
    """SPIFFE IDs that may call the inbound listener, matched exactly against the client
    certificate's URI SAN; empty: no node may, and no inbound listener is compiled."""
    probe_paths: tuple[str, ...] = ()
    """Health-check paths the callers' plans check this node's backends on (``GET``, no
    query): each gets a probe route on the inbound listener whose check is decided as a
    probe (:data:`~tiermesh.controlplane.api.MESH_PROBE_CONTEXT`)."""
    inbound_address: str = "0.0.0.0"
    """Address of the inbound listener (the control plane sets the node's registered
    ``mesh_host``)."""
    model_host: str = "127.0.0.1"
    """IP address of the model server; loopback, since it runs beside Envoy."""
    sds_cluster: str = "tiermesh_sds"
    """The bootstrap's static cluster to the agent's local SDS server."""
    svid_secret: str = "tiermesh_svid"  # noqa: S105 - a secret name
    """Local SDS secret holding the node's SVID and key."""
    bundle_secret: str = "tiermesh_trust_bundle"  # noqa: S105 - a secret name
    """Local SDS secret holding the trust bundle."""

    def __post_init__(self) -> None:
        for what, port in (("inbound", self.inbound_port), ("model", self.model_port)):
            if not 0 < port < 65536:
                raise ValueError(f"mesh {what} port {port} is not a TCP port")
        if not self.trust_domain or "/" in self.trust_domain:
            raise ValueError(f"mesh trust domain {self.trust_domain!r} is not a trust domain")
        # Checked in C (map), not peer by peer in Python: the registry's candidates are
        # every other node of the fleet, and each node's settings hold them all.
        prefix = f"spiffe://{self.trust_domain}/"
        if not all(map(str.startswith, self.allowed_peers, itertools.repeat(prefix))):
            peer = next(p for p in self.allowed_peers if not p.startswith(prefix))
            raise ValueError(f"allowed peer {peer!r} is outside {self.trust_domain}")
        object.__setattr__(self, "local_backends", tuple(sorted(self.local_backends)))
        object.__setattr__(self, "allowed_peers", tuple(sorted(self.allowed_peers)))
        for path in self.probe_paths:
            if not path.startswith("/") or "?" in path or "#" in path:
                raise ValueError(f"mesh probe path {path!r} is not an absolute path")
        object.__setattr__(self, "probe_paths", tuple(sorted(set(self.probe_paths))))


def _check_address(service: str, port: int, socket: str | None) -> None:
    """A node-local service is reached on exactly one of a TCP port and a Unix socket."""
    if socket is None:
        if not 0 < port < 65536:
            raise ValueError(f"{service} port {port} is not a TCP port")
    elif not socket.startswith("/"):
        raise ValueError(f"{service} socket {socket!r} is not an absolute path")
    elif port != 0:
        raise ValueError(f"{service} has both a socket and port {port}; give one")
