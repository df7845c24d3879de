"""The route-only baseline the benchmarks compare the shipped edge path with.

tiermesh never serves an app listener without ext_authz: a node without it compiles to a
listener that answers 503 to everything, and the verifier refuses one that forwards. To
measure what ext_authz (and the rest of the edge path) adds, the benchmarks still need the
same compiled config without it: :func:`compile_route_only` compiles the node as shipped
(with an ext_authz server on a placeholder port) and takes the ext_authz filter out of its
app listener. Everything else (routes, clusters, retries, health checks) is as compiled.
"""

from __future__ import annotations

import dataclasses

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.generators.authz import EXT_AUTHZ_FILTER
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings, names
from tiermesh.xds import Snapshot, typeurls

__all__ = ["compile_route_only"]

PLACEHOLDER_AUTHZ = AuthzSettings(port=9)
"""An ext_authz server nobody calls: its filter is removed before Envoy sees the config."""


def compile_route_only(model: MeshModel, node_id: str) -> Snapshot:
    """``node_id``'s snapshot compiled with ext_authz, then without its ext_authz filter
    (see the module docstring). ``model``'s node must have no ``authz`` settings."""
    node = model.node(node_id)
    settings: NodeSettings = dataclasses.replace(node.settings, authz=PLACEHOLDER_AUTHZ)
    shipped = MeshModel.build(
        [node.plan], {node_id: settings}, unhealthy_backends=model.unhealthy_backends, api=model.api
    )
    snapshot = compile_snapshot(shipped, node_id)
    resources = {
        type_url: [resource.decode() for resource in snapshot.encoded(type_url).values()]
        for type_url in typeurls.PUSH_ORDER
    }
    for listener in resources[typeurls.LISTENER]:
        if listener.name != names.APP_LISTENER:
            continue
        network = listener.filter_chains[0].filters[0]
        manager = hcm_pb2.HttpConnectionManager()
        network.typed_config.Unpack(manager)
        kept = [f for f in manager.http_filters if f.name != EXT_AUTHZ_FILTER]
        del manager.http_filters[:]
        manager.http_filters.extend(kept)
        network.typed_config.Pack(manager)
    return Snapshot.from_resources(resources)
