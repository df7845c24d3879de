"""The invariants, checked on the compiled Envoy resources (not the plan, not the Rego).

For every route of every route configuration a listener serves:

- **Restricted traffic** — a route is reachable by it unless its ``x-tiermesh-sensitivity``
  matchers surely reject both the value ``restricted`` and a missing header. Every
  cluster such a route can send to (route cluster, weighted clusters, aggregate members
  recursively, i.e. every failover state) must have only endpoints whose address is a
  catalog backend cleared for restricted data: tier ``local``, or tier ``private`` with
  ``max_sensitivity: restricted`` and ``private`` in the tenant's ``restricted_tiers``.
  Mirroring (route, virtual host or cluster level) and targets unknown before the request
  (``cluster_header``, a cluster specifier plugin) on such a route are findings.
- **Residency** — a route pinned to a tenant (exact ``x-tiermesh-tenant``; else every
  tenant) reaches only backends whose residency is one of the tenant's.
- **Existence** — route configs, clusters and EDS assignments referenced exist; every
  endpoint address is a catalog backend's, and cluster metadata naming a backend or tier
  agrees with the backend found at its endpoints' addresses.

Endpoints are mapped to backends by ``(host, port)``: labels cannot hide a cloud address.

**Node-local services**: the cascade handler's cluster
(:data:`~tiermesh.controlplane.model.names.CASCADE_CLUSTER`) may have loopback endpoints
that are no catalog backend. The handler only asks the chain's steps back through the app
listener's per-step routes, which are checked here like every other route; an endpoint of
that cluster that *is* a catalog backend's address is judged as that backend.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence

from envoy.config.route.v3 import route_components_pb2 as rc

from tiermesh.controlplane.api import MATCH_HEADERS, Backend, Catalog, Tenant
from tiermesh.controlplane.model import names
from tiermesh.controlplane.verify.findings import Finding
from tiermesh.controlplane.verify.http_filters import authz_findings
from tiermesh.controlplane.verify.inventory import Inventory, Leaf
from tiermesh.controlplane.verify.matching import exact_value, may_match
from tiermesh.controlplane.verify.peer_identity import pins_peer
from tiermesh.xds import Snapshot

__all__ = ["cleared_for_restricted", "verify_snapshot"]

_SENSITIVITY = MATCH_HEADERS["sensitivity"]
_TENANT = MATCH_HEADERS["tenant"]


def cleared_for_restricted(backend: Backend, tenant: Tenant | None) -> bool:
    """May ``backend`` process restricted data (of ``tenant``, when known)?"""
    if backend.tier == "local":
        return True
    if backend.tier == "private" and backend.max_sensitivity == "restricted":
        return tenant is None or "private" in tenant.restricted_tiers
    return False


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Checker:
    def __init__(self, inventory: Inventory, catalog: Catalog) -> None:
        self.inventory = inventory
        self.catalog = catalog
        self.by_address = {(b.endpoint.host, b.endpoint.port): b for b in catalog.backends}
        self.tenants = {t.name: t for t in catalog.tenants}
        self.findings: set[Finding] = set()

    def add(self, kind: str, route: str, cluster: str, message: str) -> None:
        self.findings.add(Finding(kind, route, cluster, message))  # type: ignore[arg-type]

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
            for host in config.virtual_hosts:
                for route in host.routes:
                    self.route(route, host)
        self.labels()
        return sorted(self.findings)

    def route(self, route: rc.Route, host: rc.VirtualHost) -> None:
        name = route.name or f"{host.name}[unnamed]"
        headers = list(route.match.headers)
        restricted = may_match(headers, _SENSITIVITY, "restricted") or may_match(
            headers, _SENSITIVITY, None
        )
        tenant_name = exact_value(headers, _TENANT)
        tenants: Sequence[Tenant | None]
        if tenant_name is None:
            tenants = list(self.tenants.values()) or [None]
        elif tenant_name in self.tenants:
            tenants = [self.tenants[tenant_name]]
        else:
            tenants = [None]
        if not route.HasField("route"):
            return
        action = route.route
        targets = list(self._targets(name, action, restricted))
        mirrors = [
            m.cluster for m in (*action.request_mirror_policies, *host.request_mirror_policies)
        ]
        for cluster in mirrors:
            if restricted:
                self.add(
                    "mirror",
                    name,
                    cluster,
                    f"route '{name}' mirrors restricted traffic to cluster '{cluster}'",
                )
        for cluster in [*targets, *mirrors]:
            self.cluster(name, cluster, restricted, tenants)

    def _targets(self, name: str, action: rc.RouteAction, restricted: bool) -> Iterator[str]:
        specifier = action.WhichOneof("cluster_specifier")
        if specifier == "cluster":
            yield action.cluster
        elif specifier == "weighted_clusters":
            yield from (c.name for c in action.weighted_clusters.clusters)
        elif specifier in {
            "cluster_header",
            "cluster_specifier_plugin",
            "inline_cluster_specifier_plugin",
        }:
            what = (
                f"header '{action.cluster_header}'" if specifier == "cluster_header" else "a plugin"
            )
            self.add(
                "unverifiable",
                name,
                "",
                f"route '{name}' picks its cluster from {what}"
                + (", reachable by restricted traffic" if restricted else ""),
            )

    def cluster(
        self, route: str, name: str, restricted: bool, tenants: Sequence[Tenant | None]
    ) -> None:
        leaves, problems = self.inventory.resolve(name)
        for problem in problems:
            self.add(problem.kind, route, problem.cluster, f"route '{route}' → {problem.message}")
        for leaf in leaves:
            cluster = self.inventory.clusters[leaf.cluster]
            if restricted:
                for mirror in self.inventory.mirror_targets(cluster):
                    self.add(
                        "mirror",
                        route,
                        leaf.cluster,
                        f"route '{route}' → cluster '{leaf.cluster}' mirrors restricted "
                        f"traffic to cluster '{mirror}'",
                    )
            for address in leaf.addresses:
                self.endpoint(route, leaf, address, restricted, tenants)

    def endpoint(
        self,
        route: str,
        leaf: Leaf,
        address: tuple[str, int],
        restricted: bool,
        tenants: Sequence[Tenant | None],
    ) -> None:
        host, port = address
        via = f" via '{leaf.via[-1]}'" if leaf.via else ""
        where = f"route '{route}' → cluster '{leaf.cluster}'"
        backend = self.by_address.get(address)
        if backend is None and leaf.cluster == names.CASCADE_CLUSTER and _loopback(host):
            return  # the node's cascade handler: it re-enters the listener's step routes
        if backend is None:
            self.add(
                "unknown-endpoint",
                route,
                leaf.cluster,
                f"{where}{via} has endpoint {host}:{port}, which is no catalog backend"
                + (" (reachable by restricted traffic)" if restricted else ""),
            )
            return
        cluster = self.inventory.clusters[leaf.cluster]
        if restricted and backend.spiffe_id and not pins_peer(cluster, backend.spiffe_id):
            self.add(
                "peer-identity",
                route,
                leaf.cluster,
                f"{where}{via} reaches backend '{backend.name}' (restricted traffic) without "
                f"TLS pinning the peer to {backend.spiffe_id}",
            )
        for tenant in tenants:
            if restricted and not cleared_for_restricted(backend, tenant):
                self.add(
                    "restricted-egress",
                    route,
                    leaf.cluster,
                    f"{where} (tier {backend.tier}){via} reachable by restricted traffic"
                    f" (endpoint {host}:{port} is backend '{backend.name}')",
                )
            if tenant is not None and backend.residency not in tenant.residency:
                self.add(
                    "residency",
                    route,
                    leaf.cluster,
                    f"{where}{via} reaches backend '{backend.name}' in residency "
                    f"{backend.residency}, outside tenant {tenant.name}'s "
                    f"({', '.join(tenant.residency)})",
                )

    def labels(self) -> None:
        for name, cluster in sorted(self.inventory.clusters.items()):
            labels = cluster.metadata.filter_metadata.get("tiermesh")
            if labels is None:
                continue
            leaves, _ = self.inventory.resolve(name)
            for leaf in leaves:
                for host, port in leaf.addresses:
                    backend = self.by_address.get((host, port))
                    if backend is None:
                        continue
                    claimed = {
                        k: labels.fields[k].string_value
                        for k in ("backend", "tier")
                        if k in labels.fields
                    }
                    actual = {"backend": backend.name, "tier": backend.tier}
                    if any(actual[k] != v for k, v in claimed.items()):
                        self.add(
                            "mislabelled",
                            "",
                            name,
                            f"cluster '{name}' is labelled {claimed} but endpoint {host}:{port} "
                            f"is backend '{backend.name}' (tier {backend.tier})",
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
