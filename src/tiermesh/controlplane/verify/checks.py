"""The invariants, checked on the compiled Envoy resources (not the plan, not the Rego).

Traffic enters through listeners that are not internal: their HTTP connection managers'
route tables (over RDS or inline) and their TCP proxies. For every route of every route
table (and every TCP proxy, which carries anything):

- **Restricted traffic** — a route is reachable by it unless its ``x-tiermesh-sensitivity``
  matchers surely reject both the value ``restricted`` and a missing header; a TCP proxy
  always is. Every cluster such a route can send to (route cluster, weighted clusters,
  aggregate members recursively, i.e. every failover state, and the clusters behind
  internal listeners) must have only endpoints whose address is a catalog backend cleared
  for restricted data: tier ``local``, or tier ``private`` with ``max_sensitivity:
  restricted`` and ``private`` in the tenant's ``restricted_tiers``. Such a backend off
  the node's loopback address must have a ``spiffe_id`` the cluster's TLS pins the peer
  to. Mirroring (route table, virtual host, route or cluster level) on such a route is a
  finding.
- **Signed models** — with sensitivities named in ``defaults.require_signed_models``, a
  route reachable by one of them (a missing header counts as ``restricted``; a TCP proxy
  always is) reaches only backends that name ``signers``.
- **Residency** — a route pinned to a tenant (exact ``x-tiermesh-tenant``; else every
  tenant) reaches only backends whose residency is one of the tenant's.
- **Existence** — route configs, clusters and EDS assignments referenced exist; every
  endpoint address of every cluster (reached or not) is a catalog backend's, and cluster
  metadata naming a backend or tier agrees with the backend found at its endpoints'
  addresses.
- **Closed world** — every shape :mod:`.inventory` does not model is an ``unverifiable``
  finding, wherever it is (in clusters no route reaches too), and so is an internal
  listener no cluster sends to.

Endpoints are mapped to backends by address
(:func:`~tiermesh.controlplane.api.catalog.endpoint_address`): labels cannot hide a cloud
address. The catalog refuses two backends on one address; should several still share one,
each is judged, so the least cleared decides.

**Node-local services** (:data:`~.inventory.NODE_SERVICES`: ext_authz, the usage log,
the cascade handler, the node's model server behind the inbound mTLS listener) are reached
by filters and by the inbound listener, not only by routes. Each must have only endpoints
on the node (loopback IP addresses, or Unix sockets), none of them a backend not cleared
for restricted data (ext_authz reads every body). Routes may reach the cascade handler
and the node's model server: a loopback endpoint of theirs that is no catalog backend is
the node's own (the handler asks the chain's steps back through the app listener's
per-step routes, which are checked here like every other route); one that *is* a catalog
backend's address is judged as that backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from tiermesh.controlplane.api import MATCH_HEADERS, Backend, Catalog, Tenant
from tiermesh.controlplane.api.catalog import endpoint_address, is_loopback
from tiermesh.controlplane.generators.mesh_tls import MESH_LOCAL_CLUSTER
from tiermesh.controlplane.model import names
from tiermesh.controlplane.verify.findings import Finding
from tiermesh.controlplane.verify.http_filters import authz_findings
from tiermesh.controlplane.verify.inventory import (
    NODE_SERVICES,
    Inventory,
    Leaf,
    mirror_target,
    route_targets,
    table_problems,
)
from tiermesh.controlplane.verify.jwt_filter import jwks_cluster_problems, used_jwks_clusters
from tiermesh.controlplane.verify.matching import HeaderFacts
from tiermesh.controlplane.verify.peer_identity import pins_peer
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.xds import Snapshot

__all__ = ["cleared_for_restricted", "verify_snapshot"]

_SENSITIVITY = MATCH_HEADERS["sensitivity"]
_TENANT = MATCH_HEADERS["tenant"]
_ROUTED_SERVICES = frozenset({names.CASCADE_CLUSTER, MESH_LOCAL_CLUSTER})
"""Node-local services routes may send to (see the module doc)."""


def cleared_for_restricted(backend: Backend, tenant: Tenant | None) -> bool:
    """May ``backend`` process restricted data (of ``tenant``, when known)?"""
    if backend.tier == "local":
        return True
    if backend.tier == "private" and backend.max_sensitivity == "restricted":
        return tenant is None or "private" in tenant.restricted_tiers
    return False


class _Reach(NamedTuple):
    """Who sends traffic on: findings' ``route``, ``place`` for messages (``route 'r'``),
    whether restricted traffic can come this way, and which tenants' (None: unknown)."""

    route: str
    place: str
    restricted: bool
    tenants: Sequence[Tenant | None]
    signed_only: bool = False
    """Traffic that only backends with ``signers`` may serve can come this way."""


def _where(reach: _Reach, leaf: Leaf) -> tuple[str, str]:
    """For messages: ``… → cluster 'leaf'`` and `` via 'aggregate'`` (or nothing)."""
    via = f" via '{leaf.via[-1]}'" if leaf.via else ""
    return f"{reach.place} → cluster '{leaf.cluster}'", via


class _Checker:
    def __init__(self, inventory: Inventory, catalog: Catalog) -> None:
        self.inventory = inventory
        self.catalog = catalog
        self.by_address: dict[tuple[str, int], list[Backend]] = {}
        for backend in catalog.backends:
            key = endpoint_address(backend.endpoint.host, backend.endpoint.port)
            self.by_address.setdefault(key, []).append(backend)
        self.tenants = {t.name: t for t in catalog.tenants}
        self.signed_only = frozenset(catalog.defaults.require_signed_models)
        # Per route: may restricted traffic (the value, or no header) and may each
        # signed-only sensitivity come this way; which tenant it is pinned to.
        self._facts = HeaderFacts(
            _SENSITIVITY, ("restricted", None, *sorted(self.signed_only)), _TENANT
        )
        self.findings: set[Finding] = set()
        self._unpinned: dict[tuple[str, int, str], str | None] = {}
        self._adds = 0
        # (cluster, restricted, ids of the tenants, signed_only) whose check found nothing.
        self._sound: set[tuple[str, bool, int, bool]] = set()
        # A route's tenants by the tenant it is pinned to (None: none), one tuple each,
        # held while the checker lives (reached() keys on the tuple's id).
        self._reach_tenants: dict[str | None, tuple[Tenant | None, ...]] = {}

    def add(self, kind: str, route: str, cluster: str, message: str) -> None:
        self._adds += 1
        self.findings.add(Finding(kind, route, cluster, message))  # type: ignore[arg-type]

    def reached(self, reach: _Reach, name: str) -> None:
        """:meth:`cluster`, skipped where a reach equal in all but its route's name and
        place found nothing before: what the check finds depends on the rest of the reach
        alone (the name only goes into messages), and a big table sends thousands of
        routes of one shape to the same few clusters. ``reach.tenants`` is one of the
        checker's own tuples (:meth:`tenants_of`, held), so its id identifies it."""
        key = (name, reach.restricted, id(reach.tenants), reach.signed_only)
        if key in self._sound:
            return
        before = self._adds
        self.cluster(reach, name)
        if self._adds == before:
            self._sound.add(key)

    def run(self) -> list[Finding]:
        for listener, config_name in self.inventory.rds_names():
            if config_name not in self.inventory.route_configs:
                self.add(
                    "missing",
                    "",
                    "",
                    f"listener '{listener}' → route config '{config_name}' does not exist",
                )
        for config in self.inventory.route_configs.values():
            self.table(config, "")
        self.listeners()
        self.unreached()
        self.node_services()
        self.labels()
        return sorted(self.findings)

    def table(self, config: route_pb2.RouteConfiguration, listener: str) -> None:
        """Check every route of ``config`` (served over RDS, or inline in ``listener``)."""
        where = f"listener '{listener}'" if listener else f"route config '{config.name}'"
        trees = self.inventory.trees
        for problem in table_problems(config, trees):
            self.add("unverifiable", "", "", f"{where} {problem}")
        shared = list(config.request_mirror_policies)
        for host in config.virtual_hosts:
            inherited = [*shared, *host.request_mirror_policies]
            for route in host_routes(host, trees):
                self.route(route, host, inherited, listener)

    def route(
        self,
        route: rc.Route,
        host: rc.VirtualHost,
        inherited: list[rc.RouteAction.RequestMirrorPolicy],
        listener: str = "",
    ) -> None:
        """Check one route; ``inherited``: its table's and virtual host's mirror policies."""
        name = route.name or (f"{listener}/" if listener else "") + f"{host.name}[unnamed]"
        allowed, tenant_name = self._facts.of(route.match.headers)
        restricted = allowed[0] or allowed[1]
        tenants = self.tenants_of(tenant_name)
        targets, problems = route_targets(route)
        for problem in problems:
            self.add(
                "unverifiable",
                name,
                "",
                f"route '{name}' {problem}"
                + (", reachable by restricted traffic" if restricted else ""),
            )
        own = route.route.request_mirror_policies if route.HasField("route") else []
        mirrors = [mirror_target(p) for p in (*inherited, *own)] if inherited or own else []
        place = f"route '{name}'"
        for cluster, what in mirrors:
            if restricted:
                self.add("mirror", name, cluster, f"{place} mirrors restricted traffic to {what}")
            if not cluster:
                self.add("unverifiable", name, "", f"{place} mirrors to {what}")
        signed_only = any(allowed[2:]) or ("restricted" in self.signed_only and allowed[1])
        reach = _Reach(name, place, restricted, tenants, signed_only)
        for cluster in dict.fromkeys(
            [*targets, *(c for c, _ in mirrors if c)] if mirrors else targets
        ):
            self.reached(reach, cluster)

    def tenants_of(self, tenant_name: str | None) -> tuple[Tenant | None, ...]:
        """Whose traffic a route pinned to ``tenant_name`` carries: that tenant (None when
        the catalog has no such tenant), or every tenant when it is pinned to none."""
        found = self._reach_tenants.get(tenant_name)
        if found is None:
            if tenant_name is None:
                found = tuple(self.tenants.values()) or (None,)
            else:
                found = (self.tenants.get(tenant_name),)
            self._reach_tenants[tenant_name] = found
        return found

    def listeners(self) -> None:
        """Every listener's unmodelled shapes; entry listeners' inline routes and TCP
        proxies checked like routes; internal listeners no cluster sends to."""
        users = self.inventory.internal_listener_users()
        everyone: list[Tenant | None] = [*self.tenants.values()] or [None]
        for name, listener in sorted(self.inventory.listeners.items()):
            shape = self.inventory.shape(name)
            for problem in shape.problems:
                self.add("unverifiable", "", "", f"listener '{name}' {problem}")
            if listener.HasField("internal_listener"):
                if name not in users:
                    self.add(
                        "unverifiable",
                        "",
                        "",
                        f"internal listener '{name}' is reached from no cluster",
                    )
                continue  # followed from the clusters that send to it
            for config in shape.inline:
                self.table(config, name)
            reach = _Reach(
                f"{name}/tcp_proxy",
                f"listener '{name}' (TCP proxy)",
                True,
                everyone,
                bool(self.signed_only),
            )
            for cluster in dict.fromkeys(shape.tcp):
                self.cluster(reach, cluster)

    def cluster(self, reach: _Reach, name: str, seen: frozenset[str] = frozenset()) -> None:
        """Check what ``reach`` gets to through cluster ``name`` (``seen``: clusters whose
        mirrors led here)."""
        route, place = reach.route, reach.place
        resolution = self.inventory.resolve(name)
        for problem in resolution.problems:
            self.add(problem.kind, route, problem.cluster, f"{place} → {problem.message}")
        for mirror in resolution.mirrors:
            if reach.restricted:
                self.add(
                    "mirror",
                    route,
                    mirror.source,
                    f"{place} → cluster '{mirror.source}' mirrors restricted traffic to "
                    f"{mirror.what}",
                )
            if mirror.target and mirror.target not in seen:
                self.cluster(reach, mirror.target, seen | {name})
        for leaf in resolution.leaves:
            for address in leaf.addresses:
                self.endpoint(reach, leaf, address)

    def endpoint(self, reach: _Reach, leaf: Leaf, address: tuple[str, int]) -> None:
        backends = self.by_address.get(address)
        if backends is None:
            host, port = address
            if leaf.cluster in _ROUTED_SERVICES and is_loopback(host):
                return  # the node's own service (see the module doc)
            where, via = _where(reach, leaf)
            self.add(
                "unknown-endpoint",
                reach.route,
                leaf.cluster,
                f"{where}{via} has endpoint {host}:{port}, which is no catalog backend"
                + (" (reachable by restricted traffic)" if reach.restricted else ""),
            )
            return
        for backend in backends:
            self.backend(reach, leaf, backend, address)

    def backend(
        self, reach: _Reach, leaf: Leaf, backend: Backend, address: tuple[str, int]
    ) -> None:
        """Judge ``backend``, found at ``address`` of ``leaf``."""
        host, port = address
        route, restricted = reach.route, reach.restricted
        if restricted and (backend.spiffe_id or cleared_for_restricted(backend, None)):
            key = (leaf.cluster, id(backend), host)
            if key not in self._unpinned:
                self._unpinned[key] = self.unpinned(leaf.cluster, backend, host)
            problem = self._unpinned[key]
            if problem is not None:
                where, via = _where(reach, leaf)
                self.add("peer-identity", route, leaf.cluster, f"{where}{via} {problem}")
        if reach.signed_only and not backend.signers:
            where, via = _where(reach, leaf)
            self.add(
                "unsigned-model",
                route,
                leaf.cluster,
                f"{where}{via} reaches backend '{backend.name}', which names no model "
                f"signers, with traffic that require_signed_models keeps on signed models",
            )
        for tenant in reach.tenants:
            if restricted and not cleared_for_restricted(backend, tenant):
                where, via = _where(reach, leaf)
                self.add(
                    "restricted-egress",
                    route,
                    leaf.cluster,
                    f"{where} (tier {backend.tier}){via} reachable by restricted traffic "
                    f"(endpoint {host}:{port} is backend '{backend.name}')",
                )
            if tenant is not None and backend.residency not in tenant.residency:
                where, via = _where(reach, leaf)
                self.add(
                    "residency",
                    route,
                    leaf.cluster,
                    f"{where}{via} reaches backend '{backend.name}' in residency "
                    f"{backend.residency}, outside tenant {tenant.name}'s "
                    f"({', '.join(tenant.residency)})",
                )

    def unpinned(self, cluster: str, backend: Backend, host: str) -> str | None:
        """Why ``cluster`` could reach another host than ``backend`` at ``host``, or None:
        a backend with a SPIFFE ID needs the cluster's TLS pinned to it; one cleared for
        restricted data without one must be on the node's loopback address."""
        if backend.spiffe_id:
            if pins_peer(
                self.inventory.clusters[cluster], backend.spiffe_id, self.inventory.secrets
            ):
                return None
            return (
                f"reaches backend '{backend.name}' (restricted traffic) without TLS pinning "
                f"the peer to {backend.spiffe_id}"
            )
        if is_loopback(host):
            return None
        return (
            f"reaches backend '{backend.name}' (restricted traffic) at {host}, which is not "
            "the node's loopback address, and the backend has no spiffe_id to pin the peer to"
        )

    def unreached(self) -> None:
        """Clusters no route, TCP proxy or mirror reaches, node-local services aside.

        The compiler leaves some (the backends of a node without ext_authz, whose one
        route answers 503; the aggregate of a chain whose cascade routes go step by step),
        and only a filter naming one could send to it (filters are judged by their own
        checks). Each is still held to the existence invariant and its shapes: every
        endpoint a catalog backend's, nothing unmodelled.
        """
        jwks = self.jwks_clusters()
        unrouted = self.inventory.clusters.keys() - self.inventory.reached - NODE_SERVICES - jwks
        for name in sorted(unrouted):
            self.cluster(_Reach("", f"unrouted cluster '{name}'", False, [None]), name)

    def jwks_clusters(self) -> frozenset[str]:
        """The clusters ``jwt_authn`` fetches key sets through, each checked to be the JWKS
        endpoint of a catalog issuer (:mod:`.jwt_filter`); a route that reaches one is
        judged like any other."""
        used = used_jwks_clusters(self.inventory.listeners.values())
        for name, problem in jwks_cluster_problems(used, self.inventory.clusters, self.catalog):
            self.add("unverifiable", "", name, f"JWKS cluster '{name}' {problem}")
        return used

    def node_services(self) -> None:
        """Every node-local service cluster has endpoints only on the node."""
        for name in sorted(NODE_SERVICES & self.inventory.clusters.keys()):
            place = f"node-local service cluster '{name}'"
            resolution = self.inventory.resolve(name)
            for problem in resolution.problems:
                self.add(problem.kind, "", problem.cluster, f"{place}: {problem.message}")
            for mirror in resolution.mirrors:
                self.add(
                    "mirror",
                    "",
                    mirror.source,
                    f"{place} → cluster '{mirror.source}' mirrors its traffic to {mirror.what}",
                )
            for leaf in resolution.leaves:
                if leaf.cluster != name:
                    self.add(
                        "node-service",
                        "",
                        name,
                        f"{place} leads to cluster '{leaf.cluster}', not straight to the "
                        "node's service",
                    )
                for host, port in leaf.addresses:
                    self.service_endpoint(place, leaf.cluster, host, port)

    def service_endpoint(self, place: str, cluster: str, host: str, port: int) -> None:
        if not is_loopback(host):
            self.add(
                "node-service",
                "",
                cluster,
                f"{place} has endpoint {host}:{port}, which is not on the node "
                "(no loopback IP address)",
            )
        for backend in self.by_address.get((host, port), []):
            if not cleared_for_restricted(backend, None):
                self.add(
                    "restricted-egress",
                    "",
                    cluster,
                    f"{place} has endpoint {host}:{port}, which is backend '{backend.name}' "
                    f"(tier {backend.tier}), not cleared for the restricted data it sees",
                )

    def labels(self) -> None:
        for name, cluster in sorted(self.inventory.clusters.items()):
            labels = cluster.metadata.filter_metadata.get("tiermesh")
            if labels is None:
                continue
            claimed = {
                k: labels.fields[k].string_value for k in ("backend", "tier") if k in labels.fields
            }
            for leaf in self.inventory.resolve(name).leaves:
                for host, port in leaf.addresses:
                    for backend in self.by_address.get((host, port), []):
                        actual = {"backend": backend.name, "tier": backend.tier}
                        if any(actual[k] != v for k, v in claimed.items()):
                            self.add(
                                "mislabelled",
                                "",
                                name,
                                f"cluster '{name}' is labelled {claimed} but endpoint "
                                f"{host}:{port} is backend '{backend.name}' (tier {backend.tier})",
                            )


def verify_snapshot(snapshot: Snapshot, catalog: Catalog) -> list[Finding]:
    """Every broken invariant of ``snapshot`` judged against ``catalog``; empty when sound.

    Pure: reads the snapshot's encoded resources, never mutates anything. Findings are
    sorted and unique. Besides the invariants above, every listener that forwards must
    run ext_authz first (:mod:`.http_filters`).
    """
    inventory = Inventory.of(snapshot)
    findings = {*_Checker(inventory, catalog).run(), *authz_findings(inventory)}
    return sorted(findings)
