"""The control plane's own Prometheus metrics (the process default registry, served on
``/metrics`` of the admin server, ``tiermesh controlplane run --admin``).

Besides the xDS library's (:mod:`tiermesh.xds.status`: responses sent, ACKed and NACKed
per type, open streams, connected nodes, push→ACK latency) and the node registry's
(:mod:`tiermesh.controlplane.nodeapi.registry`), these:

- ``tiermesh_reconcile_duration_seconds{outcome}``: one reconcile, store read → every
  node's snapshot set (``ok`` / ``failed``);
- ``tiermesh_node_svid_expiry_timestamp_seconds{node}``: the notAfter of the last SVID
  this replica issued to each node (join or renewal);
- ``tiermesh_svids_issued_total{how}``: SVIDs issued, by ``join`` / ``renew``;
- ``tiermesh_controlplane_server_cert_expiry_timestamp_seconds``: the notAfter of the
  certificate this replica's servers present to new handshakes;
- ``tiermesh_controlplane_trust_bundle_generation``: the shared CA state whose bundle they
  verify clients with (grows with every rollover or retirement);
- ``tiermesh_controlplane_server_cert_renewals_total``: server certificates issued after
  the first (due, or after a CA change).

Thread safety: prometheus-client's metrics are thread-safe.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONTROL_PLANE_METRICS",
    "RECONCILE_SECONDS",
    "SERVER_CERT_EXPIRY",
    "SERVER_CERT_RENEWALS",
    "SVIDS_ISSUED",
    "SVID_EXPIRY",
    "TRUST_BUNDLE_GENERATION",
    "issued_expiries",
    "note_issued",
    "note_reconcile",
    "note_server_identity",
]

RECONCILE_SECONDS: Final = Histogram(
    "tiermesh_reconcile_duration",
    "One reconcile: store read to every node's snapshot set",
    ["outcome"],
    unit="seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SVID_EXPIRY: Final = Gauge(
    "tiermesh_node_svid_expiry_timestamp_seconds",
    "notAfter of the last SVID issued to the node",
    ["node"],
)
SVIDS_ISSUED: Final = Counter("tiermesh_svids_issued", "SVIDs issued", ["how"])
SERVER_CERT_EXPIRY: Final = Gauge(
    "tiermesh_controlplane_server_cert_expiry_timestamp_seconds",
    "notAfter of the certificate the control plane's servers present",
)
TRUST_BUNDLE_GENERATION: Final = Gauge(
    "tiermesh_controlplane_trust_bundle_generation",
    "The shared CA state whose trust bundle the control plane's servers verify clients with",
)
SERVER_CERT_RENEWALS: Final = Counter(
    "tiermesh_controlplane_server_cert_renewals", "Server certificates issued after the first"
)

CONTROL_PLANE_METRICS: Final = (
    "tiermesh_reconcile_duration_seconds",
    "tiermesh_node_svid_expiry_timestamp_seconds",
    "tiermesh_svids_issued",
    "tiermesh_controlplane_server_cert_expiry_timestamp_seconds",
    "tiermesh_controlplane_trust_bundle_generation",
    "tiermesh_controlplane_server_cert_renewals",
)
"""Prometheus names registered here (counters without their ``_total``)."""


def note_reconcile(ok: bool, seconds: float) -> None:
    """Observe one reconcile."""
    RECONCILE_SECONDS.labels("ok" if ok else "failed").observe(seconds)


_ISSUED: dict[str, float] = {}


def note_issued(node_id: str, not_after_timestamp: float, how: Literal["join", "renew"]) -> None:
    """Record an SVID issued to ``node_id``."""
    SVID_EXPIRY.labels(node_id).set(not_after_timestamp)
    SVIDS_ISSUED.labels(how).inc()
    _ISSUED[node_id] = not_after_timestamp


def issued_expiries() -> dict[str, float]:
    """Node -> notAfter (POSIX seconds) of the last SVID this replica issued it; a node
    that joined and last renewed through another replica, or before a restart, is not
    in it. A copy."""
    return dict(_ISSUED)


def note_server_identity(not_after_timestamp: float, bundle_generation: int, reason: str) -> None:
    """Record a server certificate the replica's servers now present and the CA state
    whose bundle they trust; ``reason`` ``start`` is the first, not a renewal."""
    SERVER_CERT_EXPIRY.set(not_after_timestamp)
    TRUST_BUNDLE_GENERATION.set(bundle_generation)
    if reason != "start":
        SERVER_CERT_RENEWALS.inc()
