"""The compiled resources of a snapshot, decoded and indexed, and where traffic goes.

A cluster *resolves* to leaves: a plain cluster is its own leaf; an aggregate cluster
resolves to every member's leaves, recursively (every failover state at once). Each leaf
carries the endpoint addresses Envoy would connect to: from the EDS assignment for EDS
clusters, from the inline ``load_assignment`` otherwise. A cluster whose endpoints are
Envoy internal addresses (a credentialed backend's egress listener) resolves through that
listener: to the clusters its inline routes (or TCP proxy) send to. Request mirrors met on
the way (cluster options, an internal listener's routes) come with the resolution.

**Closed world.** Only the shapes the compiler emits, and a few that only refuse
traffic, are modelled; any other shape is a problem (an ``unverifiable`` finding), never
"no targets":

- *Listeners*: filter chains (``default_filter_chain`` included) whose network filters are
  the HTTP connection manager with routes over ADS (RDS) or inline, or ``tcp_proxy`` (to
  its clusters), besides filters that can only refuse a connection
  (:data:`REFUSING_FILTERS`). Listener filters, filter chain discovery,
  ``use_original_dst``, API listeners, scoped routes, RDS from another source, filters
  configured by discovery and every other network filter are problems. An internal
  listener is no entry point: it is followed from the clusters whose endpoints name it.
- *Routes*: virtual hosts with routes (no VHDS, no matcher trees); actions ``route``
  (cluster or weighted clusters by name), ``direct_response`` and ``redirect``. A cluster
  chosen by a header or a plugin, and any other action, are problems.
- *Clusters*: types STATIC, STRICT_DNS, LOGICAL_DNS and EDS (over ADS), and aggregates,
  with socket-address endpoints (IP or DNS name, port number, default resolver) or Envoy
  internal addresses, not both. ORIGINAL_DST, other custom types, a transport chosen per
  endpoint (``transport_socket_matches``), upstream network or HTTP filters, pipe
  endpoints (except on :data:`NODE_SERVICES`), endpoints by name, LEDS, endpoint host
  names, named ports, custom resolvers and network namespaces are problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2

from tiermesh.controlplane.api.catalog import endpoint_address
from tiermesh.controlplane.generators.mesh_tls import MESH_LOCAL_CLUSTER
from tiermesh.controlplane.generators.usage import USAGE_CLUSTER
from tiermesh.controlplane.model import names
from tiermesh.controlplane.verify.findings import Finding, FindingKind
from tiermesh.controlplane.verify.route_tree import HostTrees, host_routes, tree_problems
from tiermesh.xds import Snapshot, typeurls

__all__ = [
    "AGGREGATE",
    "HTTP_OPTIONS",
    "NODE_SERVICES",
    "REFUSING_FILTERS",
    "Inventory",
    "Leaf",
    "ListenerShape",
    "Mirror",
    "Resolution",
    "filter_chains",
    "mirror_target",
    "over_ads",
    "route_policies",
    "route_targets",
    "table_problems",
]

AGGREGATE = "envoy.clusters.aggregate"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_PREFIX = "type.googleapis.com/"
_HCM_URL = _PREFIX + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_TCP_PROXY_URL = _PREFIX + tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name

REFUSING_FILTERS = frozenset(
    _PREFIX + name
    for name in (
        "envoy.extensions.filters.network.rbac.v3.RBAC",
        "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit",
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
    )
)
"""Type URLs of network filters that can only refuse or delay a connection, never send it
anywhere: allowed beside the connection manager or TCP proxy."""

NODE_SERVICES = frozenset(
    {
        names.AUTHZ_CLUSTER,
        USAGE_CLUSTER,
        names.CASCADE_CLUSTER,
        names.BATCH_CLUSTER,
        MESH_LOCAL_CLUSTER,
    }
)
"""Clusters of the node's own services beside Envoy: the ext_authz server, the usage
access-log server, the cascade handler, the batch service and (behind the inbound mTLS
listener) the node's model server. Filters and the inbound listener reach them, not only
app routes; their endpoints must be on the node (loopback IP addresses or Unix sockets)."""

_MODELLED_TYPES = frozenset(
    {
        cluster_pb2.Cluster.STATIC,
        cluster_pb2.Cluster.STRICT_DNS,
        cluster_pb2.Cluster.LOGICAL_DNS,
        cluster_pb2.Cluster.EDS,
    }
)


@dataclass(frozen=True, slots=True)
class Leaf:
    """A cluster Envoy connects through: its name, endpoint addresses (in the form of
    :func:`~tiermesh.controlplane.api.catalog.endpoint_address`), and the aggregates and
    clusters in front of internal listeners (outermost first) it was reached through."""

    cluster: str
    addresses: tuple[tuple[str, int], ...]
    via: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Mirror:
    """Requests through cluster ``source`` are also sent to ``target`` (``what`` names it
    for messages; ``target`` is empty when a header picks it)."""

    source: str
    target: str
    what: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where one cluster leads: leaves, problems met on the way (no route named; the
    caller adds it) and mirrors."""

    leaves: tuple[Leaf, ...]
    problems: tuple[Finding, ...]
    mirrors: tuple[Mirror, ...]


@dataclass(frozen=True, slots=True)
class ListenerShape:
    """What one listener hands traffic to, and what of it the verifier does not model.

    ``rds``: route configuration names its connection managers take over ADS;
    ``inline``: their inline route configurations; ``tcp``: clusters its TCP proxies
    send to; ``problems``: unmodelled shapes, each a phrase after ``listener 'name'``.
    """

    rds: tuple[str, ...]
    inline: tuple[route_pb2.RouteConfiguration, ...]
    tcp: tuple[str, ...]
    problems: tuple[str, ...]


def over_ads(source: config_source_pb2.ConfigSource) -> bool:
    """Does ``source`` name the ADS stream (the snapshot itself)?"""
    return bool(source.WhichOneof("config_source_specifier") == "ads")


def route_targets(route: rc.Route) -> tuple[list[str], list[str]]:
    """Clusters ``route`` sends to (mirrors aside), and how it picks one the verifier
    cannot follow (phrases after ``route 'name'``)."""
    kind = route.WhichOneof("action")
    if kind != "route":
        modelled = kind in {"direct_response", "redirect"}
        return [], [] if modelled else [f"has action '{kind}', which is not modelled"]
    action = route.route
    specifier = action.WhichOneof("cluster_specifier")
    targets: list[str] = []
    problems: list[str] = []
    if specifier == "cluster":
        targets.append(action.cluster)
    elif specifier == "weighted_clusters":
        for weighted in action.weighted_clusters.clusters:
            if weighted.cluster_header:
                problems.append(f"picks a weighted cluster from header '{weighted.cluster_header}'")
            else:
                targets.append(weighted.name)
    elif specifier == "cluster_header":
        problems.append(f"picks its cluster from header '{action.cluster_header}'")
    else:
        problems.append(
            "names no cluster" if specifier is None else "picks its cluster from a plugin"
        )
    return targets, problems


def route_policies(
    config: route_pb2.RouteConfiguration, host: rc.VirtualHost, route: rc.Route
) -> list[rc.RouteAction.RequestMirrorPolicy]:
    """Every mirror policy that applies to ``route`` (route table, virtual host, route)."""
    policies = [*config.request_mirror_policies, *host.request_mirror_policies]
    if route.HasField("route"):
        policies += route.route.request_mirror_policies
    return policies


def mirror_target(policy: rc.RouteAction.RequestMirrorPolicy) -> tuple[str, str]:
    """``(cluster, what)`` of a mirror policy: ``cluster`` is empty when a header picks
    it; ``what`` names it for messages."""
    if policy.cluster_header:
        return "", f"the cluster named by header '{policy.cluster_header}'"
    return policy.cluster, f"cluster '{policy.cluster}'"


def table_problems(
    config: route_pb2.RouteConfiguration, trees: HostTrees | None = None
) -> Iterator[str]:
    """Unmodelled shapes of a route table (phrases after ``route config 'name'``);
    ``trees``: the verification's, if any."""
    if config.HasField("vhds"):
        yield "takes virtual hosts from VHDS"
    for host in config.virtual_hosts:
        for problem in tree_problems(host, trees):
            yield f"virtual host '{host.name}' {problem}"


def filter_chains(listener: listener_pb2.Listener) -> list[listener_components_pb2.FilterChain]:
    """Every filter chain of ``listener``, its default chain last."""
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    return chains


def _shape(listener: listener_pb2.Listener) -> ListenerShape:
    rds: list[str] = []
    inline: list[route_pb2.RouteConfiguration] = []
    tcp: list[str] = []
    problems: list[str] = []
    if listener.listener_filters:
        named = ", ".join(f"'{f.name}'" for f in listener.listener_filters)
        problems.append(f"has listener filters ({named})")
    if listener.HasField("fcds_config"):
        problems.append("takes filter chains from discovery (FCDS)")
    if listener.HasField("use_original_dst") and listener.use_original_dst.value:
        problems.append("hands connections to the listener of their original destination")
    if listener.HasField("api_listener"):
        problems.append("is an API listener")
    for chain in filter_chains(listener):
        for network_filter in chain.filters:
            url = network_filter.typed_config.type_url
            if network_filter.HasField("config_discovery"):
                problems.append(f"configures network filter '{network_filter.name}' by discovery")
            elif url == _HCM_URL:
                _manager(network_filter, rds, inline, problems)
            elif url == _TCP_PROXY_URL:
                _tcp_proxy(network_filter, tcp, problems)
            elif url not in REFUSING_FILTERS:
                problems.append(
                    f"has network filter '{network_filter.name}' ({url or 'no config'}), "
                    "which is not modelled"
                )
    return ListenerShape(tuple(rds), tuple(inline), tuple(tcp), tuple(problems))


def _manager(
    network_filter: listener_components_pb2.Filter,
    rds: list[str],
    inline: list[route_pb2.RouteConfiguration],
    problems: list[str],
) -> None:
    manager = hcm_pb2.HttpConnectionManager()
    network_filter.typed_config.Unpack(manager)
    specifier = manager.WhichOneof("route_specifier")
    if specifier == "rds":
        rds.append(manager.rds.route_config_name)
        if not over_ads(manager.rds.config_source):
            problems.append(
                f"takes route config '{manager.rds.route_config_name}' from a source other than ADS"
            )
    elif specifier == "route_config":
        inline.append(manager.route_config)
    elif specifier == "scoped_routes":
        problems.append("uses scoped routes")
    else:
        problems.append("has an HTTP connection manager without routes")


def _tcp_proxy(
    network_filter: listener_components_pb2.Filter, tcp: list[str], problems: list[str]
) -> None:
    proxy = tcp_proxy_pb2.TcpProxy()
    network_filter.typed_config.Unpack(proxy)
    if proxy.HasField("on_demand"):
        problems.append("has a TCP proxy that discovers its cluster on demand")
    specifier = proxy.WhichOneof("cluster_specifier")
    if specifier == "cluster":
        tcp.append(proxy.cluster)
    elif specifier == "weighted_clusters":
        tcp.extend(weighted.name for weighted in proxy.weighted_clusters.clusters)
    else:
        problems.append("has a TCP proxy without a cluster")


@dataclass
class Inventory:
    """Decoded resources of one snapshot by name, and memoized cluster resolution.

    Not thread-safe (the memos and :attr:`reached`); build one per verification.
    """

    clusters: dict[str, cluster_pb2.Cluster]
    assignments: dict[str, endpoint_pb2.ClusterLoadAssignment]
    listeners: dict[str, listener_pb2.Listener]
    route_configs: dict[str, route_pb2.RouteConfiguration]
    secrets: dict[str, secret_pb2.Secret] = field(default_factory=dict)
    reached: set[str] = field(default_factory=set)
    """Every existing cluster a resolution has entered so far."""
    trees: HostTrees = field(default_factory=HostTrees)
    """The matcher trees of these route tables' virtual hosts, each read once."""
    _resolved: dict[str, Resolution] = field(default_factory=dict)
    _shapes: dict[str, ListenerShape] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: Snapshot) -> Inventory:
        def decoded(type_url: str) -> dict[str, Any]:
            return {name: r.decode() for name, r in snapshot.encoded(type_url).items()}

        return cls(
            clusters=decoded(typeurls.CLUSTER),
            assignments=decoded(typeurls.ENDPOINT),
            listeners=decoded(typeurls.LISTENER),
            route_configs=decoded(typeurls.ROUTE),
            secrets=decoded(typeurls.SECRET),
        )

    def rds_names(self) -> Iterator[tuple[str, str]]:
        """(listener, route config name) for every HTTP connection manager using RDS."""
        for name in sorted(self.listeners):
            for config_name in self.shape(name).rds:
                yield name, config_name

    def shape(self, name: str) -> ListenerShape:
        """What listener ``name`` (which must exist) hands traffic to (memoized)."""
        shape = self._shapes.get(name)
        if shape is None:
            shape = self._shapes[name] = _shape(self.listeners[name])
        return shape

    def internal_listener_users(self) -> dict[str, list[str]]:
        """Internal listener name → the clusters whose endpoints name it."""
        users: dict[str, list[str]] = {}
        for name, cluster in sorted(self.clusters.items()):
            assignment = self._assignment(cluster)
            if assignment is None:
                assignment = cluster.load_assignment
            for listener in _internal_listeners(assignment):
                users.setdefault(listener, []).append(name)
        return users

    def resolve(self, name: str) -> Resolution:
        """Where cluster ``name`` leads (memoized); see :class:`Resolution`."""
        memo = self._resolved.get(name)
        if memo is None:
            found = _Found()
            self._walk(name, (), found)
            memo = Resolution(tuple(found.leaves), tuple(found.findings), tuple(found.mirrors))
            self._resolved[name] = memo
        return memo

    def _assignment(
        self, cluster: cluster_pb2.Cluster
    ) -> endpoint_pb2.ClusterLoadAssignment | None:
        if cluster.HasField("cluster_type") or cluster.type != cluster_pb2.Cluster.EDS:
            return None
        return self.assignments.get(cluster.eds_cluster_config.service_name or cluster.name)

    def _walk(self, name: str, via: tuple[str, ...], found: _Found) -> None:
        cluster = self.clusters.get(name)
        if cluster is None:
            found.problem(name, f"cluster '{name}' does not exist", "missing")
            return
        self.reached.add(name)
        if name in via:
            found.problem(name, f"cluster '{name}' leads to itself")
            return
        for problem in _cluster_problems(cluster):
            found.problem(name, f"cluster '{name}' {problem}")
        options = _http_options(cluster)
        for policy in [] if options is None else options.request_mirror_policies:
            found.mirror(name, policy, f"cluster '{name}'")
        if cluster.HasField("cluster_type"):
            self._aggregate(name, cluster, via, found)
            return
        if cluster.type not in _MODELLED_TYPES:
            what = (
                "forwards to any address"
                if cluster.type == cluster_pb2.Cluster.ORIGINAL_DST
                else f"has type {cluster_pb2.Cluster.DiscoveryType.Name(cluster.type)}, "
                "which is not modelled"
            )
            found.problem(name, f"cluster '{name}' {what}")
            return
        assignment = self._endpoints_of(name, cluster, found)
        if assignment is None:
            return
        addresses, internal = _endpoints(name, assignment, found)
        if internal and addresses:
            found.problem(name, f"cluster '{name}' mixes internal listeners and socket addresses")
        for listener in internal:
            self._through(name, listener, (*via, name), found)
        if addresses or not internal:
            found.leaves.append(Leaf(name, tuple(addresses), via))

    def _endpoints_of(
        self, name: str, cluster: cluster_pb2.Cluster, found: _Found
    ) -> endpoint_pb2.ClusterLoadAssignment | None:
        """The assignment Envoy uses for ``cluster``: inline, or its EDS one over ADS."""
        if cluster.type != cluster_pb2.Cluster.EDS:
            return cluster.load_assignment
        if not over_ads(cluster.eds_cluster_config.eds_config):
            found.problem(
                name, f"cluster '{name}' takes its endpoints from a source other than ADS"
            )
            return None
        service = cluster.eds_cluster_config.service_name or name
        assignment = self.assignments.get(service)
        if assignment is None:
            found.problem(name, f"cluster '{name}' → endpoints '{service}' do not exist", "missing")
        return assignment

    def _aggregate(
        self, name: str, cluster: cluster_pb2.Cluster, via: tuple[str, ...], found: _Found
    ) -> None:
        kind = cluster.cluster_type.name
        if kind != AGGREGATE:
            found.problem(name, f"cluster '{name}' has unknown type '{kind}'")
            return
        config = aggregate_pb2.ClusterConfig()
        cluster.cluster_type.typed_config.Unpack(config)
        for member in config.clusters:
            self._walk(member, (*via, name), found)

    def _through(self, cluster: str, name: str, via: tuple[str, ...], found: _Found) -> None:
        """Walk on from ``cluster`` through internal listener ``name``: its inline routes'
        and TCP proxies' clusters. Its own unmodelled shapes are reported once, for the
        listener, by the checker."""
        if name not in self.listeners:
            found.problem(cluster, f"cluster '{cluster}' → listener '{name}' is missing", "missing")
            return
        shape = self.shape(name)
        where = f"cluster '{cluster}' → listener '{name}'"
        if shape.rds:
            found.problem(cluster, f"{where} has no inline routes")
        targets: list[str] = list(shape.tcp)
        for config in shape.inline:
            for problem in table_problems(config, self.trees):
                found.problem(cluster, f"{where} {problem}")
            for host, route in _routes(config, self.trees):
                reached, problems = route_targets(route)
                targets += reached
                label = route.name or f"{host.name}[unnamed]"
                for problem in problems:
                    found.problem(cluster, f"{where} route '{label}' {problem}")
                for policy in route_policies(config, host, route):
                    found.mirror(cluster, policy, where)
        for target in dict.fromkeys(targets):
            self._walk(target, via, found)


@dataclass
class _Found:
    """What one resolution collects."""

    leaves: list[Leaf] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    mirrors: list[Mirror] = field(default_factory=list)

    def problem(self, cluster: str, message: str, kind: FindingKind = "unverifiable") -> None:
        self.findings.append(Finding(kind, "", cluster, message))

    def mirror(self, cluster: str, policy: rc.RouteAction.RequestMirrorPolicy, where: str) -> None:
        """Requests through ``cluster`` are mirrored by ``policy`` (found at ``where``)."""
        target, what = mirror_target(policy)
        self.mirrors.append(Mirror(cluster, target, what))
        if not target:
            self.problem(cluster, f"{where} mirrors to {what}")


def _http_options(cluster: cluster_pb2.Cluster) -> upstream_http_pb2.HttpProtocolOptions | None:
    options = cluster.typed_extension_protocol_options
    if HTTP_OPTIONS not in options:
        return None
    parsed = upstream_http_pb2.HttpProtocolOptions()
    options[HTTP_OPTIONS].Unpack(parsed)
    return parsed


def _cluster_problems(cluster: cluster_pb2.Cluster) -> Iterator[str]:
    if cluster.transport_socket_matches or cluster.HasField("transport_socket_matcher"):
        yield "chooses its transport per endpoint (transport_socket_matches)"
    if cluster.filters:
        yield "has upstream network filters"
    options = _http_options(cluster)
    if options is not None and options.http_filters:
        yield "has upstream HTTP filters"


def _endpoints(
    name: str, assignment: endpoint_pb2.ClusterLoadAssignment, found: _Found
) -> tuple[list[tuple[str, int]], list[str]]:
    """Socket addresses and internal listener names of ``assignment``'s endpoints."""
    sockets: list[tuple[str, int]] = []
    internal: list[str] = []
    problems: list[str] = []
    for locality in assignment.endpoints:
        if locality.WhichOneof("lb_config") is not None:
            problems.append("takes endpoints from LEDS or an endpoint list")
        for lb_endpoint in locality.lb_endpoints:
            if lb_endpoint.WhichOneof("host_identifier") != "endpoint":
                problems.append(f"names endpoint '{lb_endpoint.endpoint_name}' by name")
                continue
            endpoint = lb_endpoint.endpoint
            if endpoint.hostname:
                problems.append(f"gives an endpoint host name '{endpoint.hostname}'")
            for address in [endpoint.address, *(a.address for a in endpoint.additional_addresses)]:
                kind = address.WhichOneof("address")
                if kind == "envoy_internal_address":
                    internal.append(address.envoy_internal_address.server_listener_name)
                elif kind == "socket_address":
                    problems += _socket_problems(address.socket_address)
                    socket = address.socket_address
                    sockets.append(endpoint_address(socket.address, socket.port_value))
                elif kind != "pipe":
                    problems.append("has an endpoint without an address")
                elif name not in NODE_SERVICES:
                    problems.append(f"has a Unix socket endpoint '{address.pipe.path}'")
    for problem in dict.fromkeys(problems):
        found.problem(name, f"cluster '{name}' {problem}")
    return sockets, internal


def _socket_problems(socket: address_pb2.SocketAddress) -> Iterator[str]:
    if socket.resolver_name:
        yield f"resolves an endpoint with '{socket.resolver_name}'"
    if socket.WhichOneof("port_specifier") != "port_value":
        yield f"has an endpoint without a port number ({socket.address})"
    if socket.network_namespace_filepath:
        yield (
            f"connects to {socket.address} in network namespace "
            f"'{socket.network_namespace_filepath}'"
        )


def _routes(
    config: route_pb2.RouteConfiguration, trees: HostTrees
) -> Iterable[tuple[rc.VirtualHost, rc.Route]]:
    return ((host, route) for host in config.virtual_hosts for route in host_routes(host, trees))


def _internal_listeners(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[str]:
    return [
        address.envoy_internal_address.server_listener_name
        for locality in assignment.endpoints
        for lb_endpoint in locality.lb_endpoints
        for address in [
            lb_endpoint.endpoint.address,
            *(more.address for more in lb_endpoint.endpoint.additional_addresses),
        ]
        if address.HasField("envoy_internal_address")
    ]
