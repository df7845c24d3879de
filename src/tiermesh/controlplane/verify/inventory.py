"""The compiled resources of a snapshot, decoded and indexed, and where clusters lead.

A cluster *resolves* to leaves: a plain cluster is its own leaf; an aggregate cluster
resolves to every member's leaves, recursively (every failover state at once). Each leaf
carries the endpoint addresses Envoy would connect to: from the EDS assignment for EDS
clusters, from the inline ``load_assignment`` otherwise. A cluster whose endpoints are
Envoy internal addresses (a credentialed backend's egress listener) resolves through that
listener: to the clusters its inline routes send to (an internal listener using RDS, or
one that is missing, is reported, not followed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2

from tiermesh.controlplane.verify.findings import Finding
from tiermesh.xds import Snapshot, typeurls

__all__ = ["AGGREGATE", "HTTP_OPTIONS", "Inventory", "Leaf"]

AGGREGATE = "envoy.clusters.aggregate"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


@dataclass(frozen=True, slots=True)
class Leaf:
    """A cluster Envoy connects through: its name, endpoint addresses, and the aggregates
    (outermost first) it was reached through."""

    cluster: str
    addresses: tuple[tuple[str, int], ...]
    via: tuple[str, ...]


@dataclass
class Inventory:
    """Decoded resources of one snapshot by name, and memoized cluster resolution.

    Not thread-safe (the memo); build one per verification.
    """

    clusters: dict[str, cluster_pb2.Cluster]
    assignments: dict[str, endpoint_pb2.ClusterLoadAssignment]
    listeners: dict[str, listener_pb2.Listener]
    route_configs: dict[str, route_pb2.RouteConfiguration]
    _resolved: dict[str, tuple[tuple[Leaf, ...], tuple[Finding, ...]]] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: Snapshot) -> Inventory:
        def decoded(type_url: str) -> dict[str, Any]:
            return {name: r.decode() for name, r in snapshot.encoded(type_url).items()}

        return cls(
            clusters=decoded(typeurls.CLUSTER),
            assignments=decoded(typeurls.ENDPOINT),
            listeners=decoded(typeurls.LISTENER),
            route_configs=decoded(typeurls.ROUTE),
        )

    def rds_names(self) -> Iterator[tuple[str, str]]:
        """(listener, route config name) for every HTTP connection manager using RDS."""
        for name, listener in sorted(self.listeners.items()):
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            for chain in chains:
                for network_filter in chain.filters:
                    if network_filter.typed_config.type_url != _HCM_URL:
                        continue
                    manager = hcm_pb2.HttpConnectionManager()
                    network_filter.typed_config.Unpack(manager)
                    if manager.HasField("rds"):
                        yield name, manager.rds.route_config_name

    def mirror_targets(self, cluster: cluster_pb2.Cluster) -> list[str]:
        """Clusters a cluster's own upstream HTTP options mirror requests to."""
        options = cluster.typed_extension_protocol_options
        if HTTP_OPTIONS not in options:
            return []
        parsed = upstream_http_pb2.HttpProtocolOptions()
        options[HTTP_OPTIONS].Unpack(parsed)
        return [policy.cluster for policy in parsed.request_mirror_policies]

    def resolve(self, name: str) -> tuple[tuple[Leaf, ...], tuple[Finding, ...]]:
        """Leaves of cluster ``name`` and problems met on the way (missing, unverifiable).

        Findings here have no route; the caller adds it.
        """
        memo = self._resolved.get(name)
        if memo is None:
            leaves: list[Leaf] = []
            findings: list[Finding] = []
            self._walk(name, (), leaves, findings)
            memo = (tuple(leaves), tuple(findings))
            self._resolved[name] = memo
        return memo

    def _walk(
        self, name: str, via: tuple[str, ...], leaves: list[Leaf], findings: list[Finding]
    ) -> None:
        cluster = self.clusters.get(name)
        if cluster is None:
            findings.append(Finding("missing", "", name, f"cluster '{name}' does not exist"))
            return
        if cluster.HasField("cluster_type"):
            kind = cluster.cluster_type.name
            if kind != AGGREGATE:
                findings.append(
                    Finding("unverifiable", "", name, f"cluster '{name}' has unknown type '{kind}'")
                )
                return
            if name in via:
                findings.append(
                    Finding("unverifiable", "", name, f"aggregate cluster '{name}' contains itself")
                )
                return
            config = aggregate_pb2.ClusterConfig()
            cluster.cluster_type.typed_config.Unpack(config)
            for member in config.clusters:
                self._walk(member, (*via, name), leaves, findings)
            return
        if cluster.type == cluster_pb2.Cluster.ORIGINAL_DST:
            findings.append(
                Finding("unverifiable", "", name, f"cluster '{name}' forwards to any address")
            )
            return
        if cluster.type == cluster_pb2.Cluster.EDS:
            service = cluster.eds_cluster_config.service_name or name
            assignment = self.assignments.get(service)
            if assignment is None:
                findings.append(
                    Finding(
                        "missing",
                        "",
                        name,
                        f"cluster '{name}' → endpoints '{service}' do not exist",
                    )
                )
                return
        else:
            assignment = cluster.load_assignment
        internal = _internal_listeners(assignment)
        if internal:
            self._through(name, internal, via, leaves, findings)
        else:
            leaves.append(Leaf(name, _addresses(assignment), via))

    def _through(
        self,
        name: str,
        listeners: list[str],
        via: tuple[str, ...],
        leaves: list[Leaf],
        findings: list[Finding],
    ) -> None:
        """Walk on from cluster ``name`` through the internal ``listeners`` it sends to."""
        if name in via:
            findings.append(Finding("unverifiable", "", name, f"cluster '{name}' leads to itself"))
            return
        for listener in listeners:
            for target in self._listener_targets(name, listener, findings):
                self._walk(target, (*via, name), leaves, findings)

    def _listener_targets(self, cluster: str, name: str, findings: list[Finding]) -> list[str]:
        """Clusters internal listener ``name`` (reached from ``cluster``) routes to."""
        listener = self.listeners.get(name)
        if listener is None:
            findings.append(
                Finding(
                    "missing", "", cluster, f"cluster '{cluster}' → listener '{name}' is missing"
                )
            )
            return []
        targets: list[str] = []
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url != _HCM_URL:
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                if not manager.HasField("route_config"):
                    findings.append(
                        Finding(
                            "unverifiable",
                            "",
                            cluster,
                            f"cluster '{cluster}' → listener '{name}' has no inline routes",
                        )
                    )
                    continue
                for host in manager.route_config.virtual_hosts:
                    for route in host.routes:
                        action = route.route
                        if action.WhichOneof("cluster_specifier") == "cluster":
                            targets.append(action.cluster)
                        elif route.HasField("route"):
                            findings.append(
                                Finding(
                                    "unverifiable",
                                    "",
                                    cluster,
                                    f"cluster '{cluster}' → listener '{name}' picks clusters "
                                    "dynamically",
                                )
                            )
        return targets


def _internal_listeners(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    return [
        lb_endpoint.endpoint.address.envoy_internal_address.server_listener_name
        for locality in assignment.endpoints
        for lb_endpoint in locality.lb_endpoints
        if lb_endpoint.endpoint.address.HasField("envoy_internal_address")
    ]


def _addresses(assignment: endpoint_pb2.ClusterLoadAssignment) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for locality in assignment.endpoints:
        for lb_endpoint in locality.lb_endpoints:
            endpoint = lb_endpoint.endpoint
            for address in [endpoint.address, *(a.address for a in endpoint.additional_addresses)]:
                socket = address.socket_address
                found.append((str(socket.address), int(socket.port_value)))
    return tuple(found)
