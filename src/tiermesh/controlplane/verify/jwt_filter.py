"""The one HTTP filter allowed before ext_authz: ``jwt_authn`` in the shape the compiler
emits (:mod:`~tiermesh.controlplane.generators.jwt`), and the clusters it fetches keys
through.

A filter before ext_authz sees (and may change) the request before it is inspected, so only
a ``jwt_authn`` filter that cannot route, forward or add anything is accepted there:

- configured inline (``typed_config`` of type ``JwtAuthentication``), not ``disabled``;
- every provider: ``forward: false`` (the token never goes upstream), no
  ``forward_payload_header``, no ``claim_to_headers``, no ``clear_route_cache``, tokens
  only from ``authorization: Bearer`` (or ``bearer``), and its verdict written for ext_authz
  (``payload_in_metadata``, ``failed_status_in_metadata``);
- no ``filter_state_rules`` and no ``requirement_map``; every rule's requirement lets a
  request through whatever its token (``requires_any`` ending in
  ``allow_missing_or_failed``), so ext_authz, not Envoy, answers for a bad one;
- its remote key sets fetched through clusters of the JWKS of a catalog issuer
  (:func:`jwks_cluster_problems`).

Anything else first is still a ``no-authz`` finding (:mod:`.http_filters`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.api.catalog import endpoint_address, jwks_address
from tiermesh.controlplane.model import names

__all__ = ["JWT_AUTHN", "jwks_cluster_problems", "jwt_filter_problem", "used_jwks_clusters"]

JWT_AUTHN = "envoy.filters.http.jwt_authn"
"""The only HTTP filter name allowed before ext_authz."""
_JWT_URL = "type.googleapis.com/" + jwt_pb2.JwtAuthentication.DESCRIPTOR.full_name
_BEARER = frozenset({("authorization", "Bearer "), ("authorization", "bearer ")})
_HCM_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def _provider_problem(name: str, provider: jwt_pb2.JwtProvider) -> str | None:
    headers = [(h.name.lower(), h.value_prefix) for h in provider.from_headers]
    problems = {
        "forwards the token upstream (forward: true)": provider.forward,
        "copies token claims into request headers": bool(
            provider.forward_payload_header or provider.claim_to_headers
        ),
        "re-matches the route (clear_route_cache)": provider.clear_route_cache,
        "reads tokens from query parameters or cookies": bool(
            provider.from_params or provider.from_cookies
        ),
        "reads tokens from other headers than authorization: Bearer": not headers
        or not set(headers) <= _BEARER,
        "does not hand its verdict to ext_authz (payload and failed-status metadata)": not (
            provider.payload_in_metadata and provider.failed_status_in_metadata
        ),
    }
    for problem, found in problems.items():
        if found:
            return f"provider '{name}' {problem}"
    return None


def _lets_through(requirement: jwt_pb2.JwtRequirement) -> bool:
    kind = requirement.WhichOneof("requires_type")
    if kind == "allow_missing_or_failed":
        return True
    if kind != "requires_any":
        return False
    return any(
        r.WhichOneof("requires_type") == "allow_missing_or_failed"
        for r in requirement.requires_any.requirements
    )


def jwt_filter_problem(http_filter: hcm_pb2.HttpFilter) -> tuple[str | None, frozenset[str]]:
    """Why ``http_filter`` (named :data:`JWT_AUTHN`) is not the modelled ``jwt_authn`` shape
    (None when it is), and the clusters its providers fetch remote key sets through."""
    if http_filter.disabled:
        return "is disabled by default", frozenset()
    if (
        http_filter.WhichOneof("config_type") != "typed_config"
        or http_filter.typed_config.type_url != _JWT_URL
    ):
        return "is not configured inline as a JwtAuthentication", frozenset()
    config = jwt_pb2.JwtAuthentication()
    http_filter.typed_config.Unpack(config)
    clusters = frozenset(
        p.remote_jwks.http_uri.cluster
        for p in config.providers.values()
        if p.HasField("remote_jwks")
    )
    if config.filter_state_rules.name or config.requirement_map:
        return "selects requirements by filter state or per route", clusters
    if not config.rules or not all(_lets_through(rule.requires) for rule in config.rules):
        return "may answer a request itself (a rule without allow_missing_or_failed)", clusters
    for name, provider in sorted(config.providers.items()):
        problem = _provider_problem(name, provider)
        if problem is not None:
            return problem, clusters
    return None, clusters


def jwks_cluster_problems(
    used: Iterable[str], clusters: Mapping[str, cluster_pb2.Cluster], catalog: Catalog
) -> list[tuple[str, str]]:
    """``(cluster, problem)`` for each cluster in ``used`` (named by a ``jwt_authn``
    provider's remote key set) that is not the JWKS cluster of a catalog issuer: named
    :func:`~tiermesh.controlplane.model.names.jwks_cluster`, STATIC or STRICT_DNS, with
    exactly the endpoint of the issuer's ``remote_jwks.uri``."""
    expected: dict[str, tuple[str, int]] = {}
    for issuer in catalog.jwt_issuers:
        if issuer.remote_jwks is not None:
            host, port, _ = jwks_address(issuer.remote_jwks.uri)
            expected[names.jwks_cluster(issuer.name)] = endpoint_address(host, port)
    problems: list[tuple[str, str]] = []
    for name in sorted(set(used)):
        cluster = clusters.get(name)
        if name not in expected:
            problems.append((name, "is not the JWKS cluster of a catalog JWT issuer"))
            continue
        if cluster is None:
            problems.append((name, "does not exist"))
            continue
        if cluster.HasField("cluster_type") or cluster.type not in {
            cluster_pb2.Cluster.STATIC,
            cluster_pb2.Cluster.STRICT_DNS,
        }:
            problems.append((name, "is neither STATIC nor STRICT_DNS"))
            continue
        addresses = [
            lb.endpoint.address.socket_address
            for locality in cluster.load_assignment.endpoints
            for lb in locality.lb_endpoints
        ]
        found = {endpoint_address(a.address, a.port_value) for a in addresses}
        if found != {expected[name]}:
            host, port = expected[name]
            problems.append((name, f"has endpoints other than the issuer's JWKS {host}:{port}"))
    return problems


def used_jwks_clusters(listeners: Iterable[listener_pb2.Listener]) -> frozenset[str]:
    """Clusters the ``jwt_authn`` filters of ``listeners`` fetch remote key sets through."""
    used: set[str] = set()
    for listener in listeners:
        chains = [*listener.filter_chains]
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            for network_filter in chain.filters:
                if network_filter.typed_config.type_url != _HCM_URL:
                    continue
                manager = hcm_pb2.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                filters = [*manager.http_filters]
                for upgrade in manager.upgrade_configs:
                    filters += upgrade.filters
                for http_filter in filters:
                    if http_filter.typed_config.type_url == _JWT_URL:
                        used |= jwt_filter_problem(http_filter)[1]
    return frozenset(used)
