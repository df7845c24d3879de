"""Request-time policy on every listener that forwards: the ext_authz invariant.

DESIGN's request edge: every request that can reach a backend has been inspected by the
node's ext_authz server first, which sets the effective ``x-tiermesh-sensitivity`` the
routes match on. Without it a route trusts whatever sensitivity the caller declared.

**The rule.** Every HTTP connection manager of every listener must, if its routes can
forward (any route with a ``route`` action; RDS tables looked up in the snapshot, inline
``route_config`` read in place; a missing RDS table or ``scoped_routes`` counts as
forwarding, since what it holds is unknown), have as its **first** HTTP filter
``envoy.filters.http.ext_authz`` — or second, right after a ``jwt_authn`` filter in the
shape the compiler emits (:mod:`.jwt_filter`), which only verifies tokens for it and
never forwards, routes or answers — configured inline (no ``config_discovery``), not
``disabled``, with:

- ``failure_mode_allow: false`` — a dead or failing server lets nothing through;
- ``clear_route_cache: true`` — the route is chosen after the check set the headers;
- a ``grpc_service`` — the node agent's server speaks gRPC;
- ``with_request_body`` set — the detectors see the body;
- neither ``filter_enabled`` nor ``filter_enabled_metadata`` — it runs for every request.

The same holds for the filters of every ``upgrade_configs`` entry that lists its own
(they replace the chain for that upgrade). No route configuration, virtual host, route or
weighted-cluster entry of a forwarding table may, under the ext_authz filter's name in
``typed_per_filter_config``, disable the check (``ExtAuthzPerRoute`` with ``disabled``, a
``FilterConfig`` wrapper with ``disabled``), stop the body being sent
(``check_settings.disable_request_body_buffering``), send the check elsewhere
(``check_settings.grpc_service`` / ``http_service``), or hold a shape not modelled here.
A virtual host or route configuration is judged when it holds any forwarding route; a
route, when it forwards. A network filter other than the HTTP connection manager on a
listener that is not exempt is a finding too (a TCP proxy, or anything not known to only
refuse connections, :data:`~.inventory.REFUSING_FILTERS`): nothing HTTP-level runs there.

**Exempt listeners.**

- *Internal listeners* (``internal_listener`` set): the compiler's per-backend egress
  listeners, reachable only from the app listener's clusters, so every request on them
  already passed the app listener's ext_authz.

The node-to-node inbound mTLS listener (:mod:`~tiermesh.controlplane.generators.mesh_tls`)
is **not** exempt: requests from other nodes reach this node's model server, so they are
inspected, decided and recorded here like any other (its ext_authz check is marked as a
mesh hop, which changes who the caller is, never whether the check runs). A chain that
demands a client certificate (``require_client_certificate``) is also judged on whom it
admits: one that matches no subject alternative name, or any SAN other than exact URI
SANs, or runs a custom certificate validator, or accepts untrusted chains lets any SVID of
the trust bundle in (a cloud gateway's included), and is named as such.

Findings are of kind ``no-authz``; each names the listener (and the route, virtual host
or route configuration where one is at fault).
"""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from tiermesh.controlplane.verify.findings import Finding
from tiermesh.controlplane.verify.inventory import REFUSING_FILTERS, Inventory, filter_chains
from tiermesh.controlplane.verify.jwt_filter import JWT_AUTHN, jwt_filter_problem
from tiermesh.controlplane.verify.route_tree import host_routes

__all__ = ["EXT_AUTHZ", "authz_findings"]

EXT_AUTHZ = "envoy.filters.http.ext_authz"
"""The HTTP filter name the rule demands first (and the ``typed_per_filter_config`` key
that configures it per route)."""


def _url(message: type[Message]) -> str:
    return "type.googleapis.com/" + message.DESCRIPTOR.full_name


_HCM_URL = _url(hcm_pb2.HttpConnectionManager)
_EXT_AUTHZ_URL = _url(ext_authz_pb2.ExtAuthz)
_PER_ROUTE_URL = _url(ext_authz_pb2.ExtAuthzPerRoute)
_FILTER_CONFIG_URL = _url(rc.FilterConfig)
_DOWNSTREAM_TLS_URL = _url(tls_pb2.DownstreamTlsContext)


def authz_findings(inventory: Inventory) -> list[Finding]:
    """Every ``no-authz`` finding of the snapshot behind ``inventory`` (sorted, unique).

    Pure: reads the decoded listeners, route configurations and clusters only.
    """
    found: set[Finding] = set()
    for name, listener in sorted(inventory.listeners.items()):
        if listener.HasField("internal_listener"):
            continue
        found.update(_Listener(inventory, name, listener).findings())
    return sorted(found)


def _forwards(route: rc.Route) -> bool:
    return bool(route.HasField("route"))


class _Listener:
    """One non-internal listener, judged chain by chain."""

    def __init__(self, inventory: Inventory, name: str, listener: listener_pb2.Listener) -> None:
        self.inventory = inventory
        self.name = name
        self.listener = listener
        self.found: list[Finding] = []

    def add(self, message: str, route: str = "") -> None:
        self.found.append(Finding("no-authz", route, "", f"listener '{self.name}' {message}"))

    def findings(self) -> list[Finding]:
        for chain in filter_chains(self.listener):
            managers: list[hcm_pb2.HttpConnectionManager] = []
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url in REFUSING_FILTERS:
                    continue  # it can only refuse a connection, never forward one
                if network_filter.typed_config.type_url != _HCM_URL:
                    self.add(
                        f"runs network filter '{network_filter.name}', which the verifier does "
                        "not model: no ext_authz can run on it"
                    )
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                managers.append(manager)
            admission = _peer_admission(chain)
            if admission:
                self.add(
                    f"demands a client certificate but {admission}: any SVID of the trust "
                    "bundle may pass, not only the named peers"
                )
            for manager in managers:
                self.manager(manager)
        return self.found

    # -- one HTTP connection manager ------------------------------------------------------

    def tables(
        self, manager: hcm_pb2.HttpConnectionManager
    ) -> list[route_pb2.RouteConfiguration] | None:
        """The route tables ``manager`` uses, or None when they cannot be known."""
        specifier = manager.WhichOneof("route_specifier")
        if specifier == "route_config":
            return [manager.route_config]
        if specifier == "rds":
            table = self.inventory.route_configs.get(manager.rds.route_config_name)
            return None if table is None else [table]
        return None

    def routes(
        self, table: route_pb2.RouteConfiguration
    ) -> Iterator[tuple[rc.VirtualHost, rc.Route]]:
        """Every route of ``table`` with its virtual host."""
        for host in table.virtual_hosts:
            for route in host_routes(host, self.inventory.trees):
                yield host, route

    def manager(self, manager: hcm_pb2.HttpConnectionManager) -> None:
        tables = self.tables(manager)
        if tables is not None and not any(
            _forwards(route) for table in tables for _, route in self.routes(table)
        ):
            return  # nothing it serves reaches an upstream
        self.chain(list(manager.http_filters), "")
        for upgrade in manager.upgrade_configs:
            if upgrade.filters:
                self.chain(list(upgrade.filters), f" (upgrade '{upgrade.upgrade_type}')")
        for table in tables or []:
            self.per_filter(table)

    def chain(self, filters: list[hcm_pb2.HttpFilter], where: str) -> None:
        if len(filters) > 1 and filters[0].name == JWT_AUTHN and filters[1].name == EXT_AUTHZ:
            problem, _ = jwt_filter_problem(filters[0])
            if problem is not None:
                self.add(f"runs {JWT_AUTHN} before ext_authz{where}, which {problem}")
            filters = filters[1:]
        if not filters or filters[0].name != EXT_AUTHZ:
            first = f"'{filters[0].name}'" if filters else "none"
            self.add(
                f"forwards requests without {EXT_AUTHZ} as its first HTTP filter{where} "
                f"(first: {first})"
            )
            return
        first = filters[0]
        problem = _filter_problem(first)
        if problem is not None:
            self.add(f"has ext_authz{where} {problem}")

    def per_filter(self, table: route_pb2.RouteConfiguration) -> None:
        forwarding = any(_forwards(route) for _host, route in self.routes(table))
        if forwarding and EXT_AUTHZ in table.typed_per_filter_config:
            problem = _per_route_problem(table.typed_per_filter_config[EXT_AUTHZ])
            if problem is not None:
                self.add(f"→ route config '{table.name}' {problem}")
        for host in table.virtual_hosts:
            if not any(_forwards(route) for route in host_routes(host, self.inventory.trees)):
                continue
            if EXT_AUTHZ in host.typed_per_filter_config:
                problem = _per_route_problem(host.typed_per_filter_config[EXT_AUTHZ])
                if problem is not None:
                    self.add(f"→ virtual host '{host.name}' {problem}")
            for route in host_routes(host, self.inventory.trees):
                if not _forwards(route):
                    continue
                name = route.name or f"{host.name}[unnamed]"
                configs = [route.typed_per_filter_config]
                if route.route.HasField("weighted_clusters"):
                    configs += [
                        c.typed_per_filter_config for c in route.route.weighted_clusters.clusters
                    ]
                for config in configs:
                    if EXT_AUTHZ in config:
                        problem = _per_route_problem(config[EXT_AUTHZ])
                        if problem is not None:
                            self.add(f"→ route '{name}' {problem}", route=name)


def _peer_admission(chain: listener_components_pb2.FilterChain) -> str | None:
    """How ``chain`` admits client certificates: None when it does not demand one, ``""``
    when only exact URI SANs pass, else what widens it."""
    socket = chain.transport_socket
    if socket.typed_config.type_url != _DOWNSTREAM_TLS_URL:
        return None
    context = tls_pb2.DownstreamTlsContext()
    socket.typed_config.Unpack(context)
    if not context.require_client_certificate.value:
        return None
    common = context.common_tls_context
    validation = common.combined_validation_context.default_validation_context
    if common.HasField("validation_context"):
        validation = common.validation_context
    return _widening(validation)


def _widening(validation: common_pb2.CertificateValidationContext) -> str:
    """What lets a certificate of the trust bundle pass ``validation`` without its URI SAN
    being exactly one of the named ones; ``""``: nothing."""
    matchers = validation.match_typed_subject_alt_names
    if not matchers:
        return "matches no subject alternative name"
    if validation.HasField("custom_validator_config"):
        return f"runs certificate validator '{validation.custom_validator_config.name}'"
    if validation.trust_chain_verification != validation.VERIFY_TRUST_CHAIN:
        return "accepts untrusted certificate chains"
    for matcher in matchers:
        kind = matcher.matcher.WhichOneof("match_pattern")
        if matcher.san_type != common_pb2.SubjectAltNameMatcher.URI:
            return "matches a subject alternative name other than a URI"
        if kind != "exact" or not matcher.matcher.exact or matcher.matcher.ignore_case:
            return f"matches URI SANs by {kind or 'nothing'}, not exactly"
    return ""


def _filter_problem(http_filter: hcm_pb2.HttpFilter) -> str | None:
    """Why the (first) ext_authz filter does not inspect every request, or None."""
    if http_filter.disabled:
        return "disabled by default (it runs only where a route enables it)"
    if http_filter.WhichOneof("config_type") != "typed_config":
        return "configured outside the snapshot (config_discovery), which is not verifiable"
    if http_filter.typed_config.type_url != _EXT_AUTHZ_URL:
        return f"of unknown type '{http_filter.typed_config.type_url}'"
    config = ext_authz_pb2.ExtAuthz()
    http_filter.typed_config.Unpack(config)
    problems = []
    if config.failure_mode_allow:
        problems.append("failure_mode_allow: true (a failing check lets requests through)")
    if not config.clear_route_cache:
        problems.append(
            "clear_route_cache: false (the route is chosen before the check sets its headers)"
        )
    if config.WhichOneof("services") != "grpc_service":
        problems.append("no gRPC service")
    if not config.HasField("with_request_body"):
        problems.append("no with_request_body (the body is never inspected)")
    if config.HasField("filter_enabled") or config.HasField("filter_enabled_metadata"):
        problems.append("filter_enabled set (it may skip requests)")
    return "; ".join(problems) or None


def _per_route_problem(config: any_pb2.Any) -> str | None:
    """Why a ``typed_per_filter_config`` entry for ext_authz weakens it, or None."""
    if config.type_url == _FILTER_CONFIG_URL:
        wrapper = rc.FilterConfig()
        config.Unpack(wrapper)
        if wrapper.disabled:
            return "disables ext_authz (FilterConfig disabled)"
        if not wrapper.HasField("config"):
            return None
        config = wrapper.config
    if config.type_url != _PER_ROUTE_URL:
        return f"configures ext_authz with unknown type '{config.type_url}'"
    per_route = ext_authz_pb2.ExtAuthzPerRoute()
    config.Unpack(per_route)
    settings = per_route.check_settings
    if per_route.disabled:
        problem = "disables ext_authz (ExtAuthzPerRoute disabled)"
    elif settings.disable_request_body_buffering:
        problem = "stops ext_authz reading the body (disable_request_body_buffering)"
    elif settings.HasField("grpc_service") or settings.HasField("http_service"):
        problem = "sends the ext_authz check to another service"
    else:
        return None
    return problem
