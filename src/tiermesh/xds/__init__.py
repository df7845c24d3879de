"""An Envoy xDS library: snapshots, a snapshot cache and an ADS server (SotW and delta).

It knows nothing of tiermesh's domain: give it Envoy resources, it serves them.

Typical use::

    cache = SnapshotCache()
    ads = AdsServer(cache)
    server, port = await start_server(ads, "127.0.0.1:0")
    cache.set_snapshot("node-1", Snapshot.build(clusters=[...], endpoints=[...]))
"""

from tiermesh.xds import typeurls
from tiermesh.xds.ackstate import Decision, Verdict, classify
from tiermesh.xds.bootstrap import AdsTls, BootstrapSpec, render_bootstrap, validate_bootstrap
from tiermesh.xds.cache import SnapshotCache, SnapshotSource, node_id_key
from tiermesh.xds.errors import (
    InconsistentSnapshotError,
    InvalidRequestError,
    NodeNotAuthorizedError,
    UnknownTypeUrlError,
    XdsError,
)
from tiermesh.xds.server import AdsServer, start_server
from tiermesh.xds.snapshot import EncodedResource, Snapshot
from tiermesh.xds.status import Callbacks, NackRecord, NodeStatus, StatusRegistry, TypeStatus
from tiermesh.xds.stream import NodeAuthorizer

__all__ = [
    "AdsServer",
    "AdsTls",
    "BootstrapSpec",
    "Callbacks",
    "Decision",
    "EncodedResource",
    "InconsistentSnapshotError",
    "InvalidRequestError",
    "NackRecord",
    "NodeAuthorizer",
    "NodeNotAuthorizedError",
    "NodeStatus",
    "Snapshot",
    "SnapshotCache",
    "SnapshotSource",
    "StatusRegistry",
    "TypeStatus",
    "UnknownTypeUrlError",
    "Verdict",
    "XdsError",
    "classify",
    "node_id_key",
    "render_bootstrap",
    "start_server",
    "typeurls",
    "validate_bootstrap",
]
