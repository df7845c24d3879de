"""EDS: one ClusterLoadAssignment per backend reachable by IP address.

An endpoint carries no health status (Envoy's active health checks and outlier detection
judge it), except when its backend is in the model's ``unhealthy_backends`` (its hosting
node reports its model server down): then it is ``UNHEALTHY``, and every Envoy stops
sending to it at once and fails over down the chain, whatever its own checks say.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import struct_pb2

from tiermesh.controlplane.api import BackendPlan
from tiermesh.controlplane.generators._protos import is_ip
from tiermesh.controlplane.model import MeshModel, names

__all__ = ["generate", "internal_assignment", "load_assignment"]


def load_assignment(
    name: str, backend: BackendPlan, *, healthy: bool = True
) -> endpoint_pb2.ClusterLoadAssignment:
    """The one-endpoint assignment ``name`` for ``backend``, at priority 0.

    The endpoint's metadata ``tiermesh`` = ``{backend, tier}`` names the answering
    backend in the ``x-tiermesh-tier`` response header (``%UPSTREAM_METADATA%``).
    ``healthy`` False marks the endpoint ``UNHEALTHY``; True leaves its health status
    unset (``UNKNOWN``: Envoy's own checks decide).
    """
    endpoint = backend.endpoint
    address = address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=endpoint.host, port_value=endpoint.port)
    )
    return _one(name, backend, address, healthy=healthy)


def internal_assignment(name: str, backend: BackendPlan) -> endpoint_pb2.ClusterLoadAssignment:
    """Like :func:`load_assignment`, but the endpoint is the backend's egress listener
    (an Envoy internal address), for backends with a credential."""
    address = address_pb2.Address(
        envoy_internal_address=address_pb2.EnvoyInternalAddress(
            server_listener_name=names.egress_listener(backend.name)
        )
    )
    return _one(name, backend, address)


def _one(
    name: str, backend: BackendPlan, address: address_pb2.Address, *, healthy: bool = True
) -> endpoint_pb2.ClusterLoadAssignment:
    metadata = struct_pb2.Struct()
    metadata.update({"backend": backend.name, "tier": backend.tier})
    lb_endpoint = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address),
        metadata=base_pb2.Metadata(filter_metadata={"tiermesh": metadata}),
    )
    if not healthy:
        lb_endpoint.health_status = health_check_pb2.UNHEALTHY
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])],
    )


def generate(model: MeshModel, node_id: str) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """One assignment per planned backend with an IP endpoint, named after the backend;
    ``UNHEALTHY`` for the backends in ``model.unhealthy_backends``.

    Backends addressed by DNS name get no
    assignment: their clusters are STRICT_DNS with the endpoint inline (CDS), which
    carries no health status, reported or not.
    """
    node = model.node(node_id)
    down = model.unhealthy_backends
    return [
        load_assignment(backend.name, backend, healthy=backend.name not in down)
        for backend in node.backends.values()
        if is_ip(backend.endpoint.host)
    ]
