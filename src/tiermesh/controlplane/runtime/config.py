"""What one control-plane process is told: where etcd is, where to listen, what to trust."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tiermesh.controlplane.store import ROOT

__all__ = ["ControlPlaneConfig", "HostPort"]

_REPLICA = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; port 0 lets the OS pick (the bound port is reported)."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or not 0 <= self.port < 65536:
            raise ValueError(f"not a listen address: {self.host!r}:{self.port}")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ControlPlaneConfig:
    """Settings of one control-plane replica. Immutable.

    ``etcd`` lists endpoints of one etcd cluster (``HOST:PORT``); the store uses them all,
    moving to another member whenever the one in use fails. ``ads`` is the xDS port (mTLS),
    ``node_api`` the node port (mTLS: renew, registry) and ``join`` the join port (TLS, join
    tokens); ``admin`` the read-only HTTP status and metrics server, which has no
    authentication and belongs on loopback; ``audit`` the decision-record collector (mTLS).
    ``data_dir`` receives the server certificate (key mode 0600) and the audit database
    (``audit.sqlite3``). ``ca_passphrase``
    decrypts the CA shared through etcd (every replica needs the same one).
    """

    etcd: tuple[str, ...]
    trust_domain: str
    data_dir: Path
    ca_passphrase: bytes
    ads: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 18000))
    node_api: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 18001))
    join: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 18002))
    admin: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 18003))
    metrics: HostPort | None = None
    """Where to serve Prometheus ``/metrics`` alone (``--metrics``), for a scraper on
    another host; None: metrics only on the admin server. It serves no status document,
    only counts and timings (node ids as labels)."""
    audit: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 0))
    """The audit collector (mTLS, node SVIDs; ``tiermesh.audit.v1.Collector``). Its own
    port because shipped batches (up to 16 MiB) are far larger than the node API accepts.
    Port 0 by default: the bound address is reported as ``addresses["audit"]`` in the
    status document, where agents' ``control_plane.audit`` is taken from."""
    dashboard: HostPort | None = None
    """The read-only web dashboard (:mod:`tiermesh.controlplane.dashboard`), or None: not
    served. Beyond loopback it needs ``dashboard_token``."""
    dashboard_token: str | None = field(default=None, repr=False, hash=False)
    """The token the dashboard asks for (bearer, or basic-auth password); None: no
    authentication, which only a loopback ``dashboard`` may have."""
    root: str = ROOT
    etcd_timeout_s: float = 5.0
    lease_ttl_s: int = 10
    load_interval_s: float = 1.0
    debounce_s: float = 0.1
    replica: str | None = None
    """This replica's name among several over the same etcd (``--replica``): it names the
    leader-election holder and the chain of plan records this replica signs
    (``spiffe://<td>/controlplane/<replica>``), so the audit databases of several replicas
    can be read together without two chains of one name. None: host:pid, and the plan chain
    ``spiffe://<td>/controlplane`` (one replica)."""
    leader_ttl_s: int = 5
    """TTL of the leader lease: a dead leader's once-only work moves on within about this."""
    freeze_heap: bool = False
    """Keep the served state out of full garbage collections
    (:class:`~tiermesh.controlplane.reconciler.heap.FrozenHeap`). Process-wide, so only for
    the one control plane of a process: ``tiermesh controlplane run`` turns it on; tests
    that run several replicas in one process leave it off."""
    server_dns_names: tuple[str, ...] = ("localhost",)
    """Extra DNS SANs of the server certificate besides ``controlplane.<trust-domain>``."""
    server_cert_ttl_s: float = 86_400.0
    """Lifetime of the server certificate; it is renewed at two thirds of it (and after
    every CA change). Short values are for tests."""
    svid_ttl_s: float | None = None
    """Lifetime of the node SVIDs this replica issues; None: the CA's default (one hour).
    Nodes renew at half of it."""
    credentials: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )
    """Cloud API keys by secret name (what a catalog backend's ``credential.secret``
    names). Every node's compiler settings carry them; the secrets generator serves a key,
    as SDS generic secret ``tiermesh-credential-<name>``, only to nodes whose plan uses a
    backend naming it. Held read-only, left out of ``repr``, never logged nor reported in
    the status document."""

    def __post_init__(self) -> None:
        if not 1.0 <= self.server_cert_ttl_s <= 30 * 86_400:
            raise ValueError("the server certificate lifetime must be 1 s to 30 days")
        if self.svid_ttl_s is not None and not 1.0 <= self.svid_ttl_s <= 86_400:
            raise ValueError("the SVID lifetime must be 1 s to 24 hours")
        if not self.etcd:
            raise ValueError("at least one etcd endpoint is needed")
        if self.replica is not None and not _REPLICA.fullmatch(self.replica):
            raise ValueError(f"replica name {self.replica!r}: use 1-63 of a-z 0-9 -")
        if self.leader_ttl_s < 2:
            raise ValueError(f"the leader lease needs at least 2 s, got {self.leader_ttl_s}")
        if not self.ca_passphrase:
            raise ValueError("the CA passphrase must not be empty")
        for name, key in self.credentials.items():
            if not name or not isinstance(name, str) or not isinstance(key, str) or not key:
                # Name only: the key must not reach an error message.
                raise ValueError(f"credential {name!r} needs a non-empty name and key")
        object.__setattr__(self, "credentials", MappingProxyType(dict(self.credentials)))
