"""Tenant JWTs in the compiled config: jwt_authn right before ext_authz, never answering a
request itself, its verdict handed to the check; the JWKS clusters; and the verifier, which
lets exactly that filter (in that shape) precede ext_authz."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from tests.unit.compiler.conftest import EDGE, EDGE_SETTINGS
from tests.unit.compiler.mutate import Resources, decode, rebuild
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.generators import compile_snapshot
from tiermesh.controlplane.model import MeshModel, names
from tiermesh.controlplane.verify import Finding, compile_and_verify, verify_snapshot
from tiermesh.xds import typeurls

APP = names.APP_LISTENER
JWT = "envoy.filters.http.jwt_authn"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
REMOTE = "https://login.example.com/.well-known/jwks.json"
ED25519_X = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"  # of the private key bytes 0..31
INLINE = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": "k1"}]}


@pytest.fixture(scope="module")
def jwt_catalog(catalog: Catalog) -> Catalog:
    issuers = [
        {
            "name": "idp",
            "issuer": "https://login.example.com/",
            "audiences": ["tiermesh"],
            "remote_jwks": {"uri": REMOTE, "cache_duration_s": 60, "fetch_timeout_ms": 1500},
            "tenant_claim": "org_id",
        },
        {
            "name": "ci",
            "issuer": "ci-runner",
            "audiences": ["tiermesh", "ci"],
            "local_jwks": INLINE,
            "clock_skew_s": 5,
        },
    ]
    return Catalog.model_validate({**catalog.model_dump(mode="json"), "jwt_issuers": issuers})


@pytest.fixture
def resources(edge_plan: Plan, jwt_catalog: Catalog) -> Resources:
    model = MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS}, jwt_issuers=jwt_catalog.jwt_issuers)
    return decode(compile_and_verify(model, EDGE, jwt_catalog))


def _manager(r: Resources) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    r[typeurls.LISTENER][APP].filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def _set_manager(r: Resources, manager: hcm_pb2.HttpConnectionManager) -> None:
    r[typeurls.LISTENER][APP].filter_chains[0].filters[0].typed_config.Pack(manager)


def _jwt(manager: hcm_pb2.HttpConnectionManager) -> jwt_pb2.JwtAuthentication:
    config = jwt_pb2.JwtAuthentication()
    assert manager.http_filters[0].name == JWT
    manager.http_filters[0].typed_config.Unpack(config)
    return config


def _change_jwt(r: Resources, change: Callable[[jwt_pb2.JwtAuthentication], None]) -> None:
    manager = _manager(r)
    config = _jwt(manager)
    change(config)
    manager.http_filters[0].typed_config.Pack(config)
    _set_manager(r, manager)


def _no_authz(r: Resources, catalog: Catalog) -> list[Finding]:
    return [f for f in verify_snapshot(rebuild(r), catalog) if f.kind == "no-authz"]


# -- what is compiled ---------------------------------------------------------------------


def test_jwt_authn_comes_right_before_ext_authz_which_gets_its_verdict(
    resources: Resources,
) -> None:
    manager = _manager(resources)
    assert [f.name for f in manager.http_filters][:2] == [JWT, EXT_AUTHZ]
    authz = ext_authz_pb2.ExtAuthz()
    manager.http_filters[1].typed_config.Unpack(authz)
    assert list(authz.metadata_context_namespaces) == [JWT]


def test_every_provider_hands_its_verdict_on_and_never_forwards_the_token(
    resources: Resources,
) -> None:
    config = _jwt(_manager(resources))
    assert sorted(config.providers) == ["ci", "idp"]
    idp, ci = config.providers["idp"], config.providers["ci"]
    for name, provider in config.providers.items():
        assert not provider.forward
        assert provider.require_expiration
        assert provider.payload_in_metadata == f"payload/{name}"
        assert provider.failed_status_in_metadata == f"failure/{name}"
        assert [(h.name, h.value_prefix) for h in provider.from_headers] == [
            ("authorization", "Bearer "),
            ("authorization", "bearer "),
        ]
    assert (idp.issuer, list(idp.audiences)) == ("https://login.example.com/", ["tiermesh"])
    assert idp.remote_jwks.http_uri.uri == REMOTE
    assert idp.remote_jwks.http_uri.cluster == "jwks|idp"
    assert idp.remote_jwks.http_uri.timeout.ToMilliseconds() == 1500
    assert idp.remote_jwks.cache_duration.seconds == 60
    assert ci.local_jwks.inline_string == (
        f'{{"keys":[{{"crv":"Ed25519","kid":"k1","kty":"OKP","x":"{ED25519_X}"}}]}}'
    )
    assert ci.clock_skew_seconds == 5
    (rule,) = config.rules
    assert rule.match.prefix == "/"
    kinds = [r.WhichOneof("requires_type") for r in rule.requires.requires_any.requirements]
    assert kinds == ["provider_name", "provider_name", "allow_missing_or_failed"]


def test_a_remote_key_set_has_a_tls_cluster_checking_the_host(resources: Resources) -> None:
    cluster = resources[typeurls.CLUSTER]["jwks|idp"]
    assert cluster.type == cluster_pb2.Cluster.STRICT_DNS
    (locality,) = cluster.load_assignment.endpoints
    (endpoint,) = locality.lb_endpoints
    address = endpoint.endpoint.address.socket_address
    assert (address.address, address.port_value) == ("login.example.com", 443)
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    assert context.sni == "login.example.com"
    validation = context.common_tls_context.validation_context
    assert validation.HasField("system_root_certs")
    (san,) = validation.match_typed_subject_alt_names
    assert san.matcher.exact == "login.example.com"
    assert "jwks|ci" not in resources[typeurls.CLUSTER]


def test_no_issuer_compiles_no_jwt_filter_and_no_metadata(edge_model: MeshModel) -> None:
    r = decode(compile_snapshot(edge_model, EDGE))
    manager = _manager(r)
    assert manager.http_filters[0].name == EXT_AUTHZ
    assert JWT not in [f.name for f in manager.http_filters]
    authz = ext_authz_pb2.ExtAuthz()
    manager.http_filters[0].typed_config.Unpack(authz)
    assert list(authz.metadata_context_namespaces) == []
    assert not [name for name in r[typeurls.CLUSTER] if name.startswith("jwks|")]


# -- what the verifier allows ---------------------------------------------------------------


def test_the_compiled_shape_has_no_finding(resources: Resources, jwt_catalog: Catalog) -> None:
    assert verify_snapshot(rebuild(resources), jwt_catalog) == []


def test_another_filter_before_ext_authz_is_still_a_finding(
    resources: Resources, jwt_catalog: Catalog
) -> None:
    manager = _manager(resources)
    manager.http_filters[0].CopyFrom(hcm_pb2.HttpFilter(name="envoy.filters.http.lua"))
    manager.http_filters[0].typed_config.Pack(lua_pb2.Lua())
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, jwt_catalog)
    assert "first: 'envoy.filters.http.lua'" in finding.message


def test_a_jwt_filter_with_another_filter_before_ext_authz_is_a_finding(
    resources: Resources, jwt_catalog: Catalog
) -> None:
    manager = _manager(resources)
    lua = hcm_pb2.HttpFilter(name="envoy.filters.http.lua")
    lua.typed_config.Pack(lua_pb2.Lua())
    manager.http_filters.insert(1, lua)
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, jwt_catalog)
    assert "first: 'envoy.filters.http.jwt_authn'" in finding.message


def _forward(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["idp"].forward = True


def _claim_header(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["idp"].claim_to_headers.add(header_name="x-tiermesh-tenant", claim_name="o")


def _payload_header(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["ci"].forward_payload_header = "x-jwt-payload"


def _strict(config: jwt_pb2.JwtAuthentication) -> None:
    config.rules[0].requires.CopyFrom(jwt_pb2.JwtRequirement(provider_name="idp"))


def _query(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["idp"].from_params.append("token")


def _other_header(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["ci"].from_headers.add(name="x-tiermesh-tenant")


def _no_verdict(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["idp"].failed_status_in_metadata = ""


def _route_cache(config: jwt_pb2.JwtAuthentication) -> None:
    config.providers["idp"].clear_route_cache = True


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_forward, "provider 'idp' forwards the token upstream"),
        (_claim_header, "provider 'idp' copies token claims into request headers"),
        (_payload_header, "provider 'ci' copies token claims into request headers"),
        (_strict, "may answer a request itself"),
        (_query, "provider 'idp' reads tokens from query parameters or cookies"),
        (_no_verdict, "provider 'idp' does not hand its verdict to ext_authz"),
        (_other_header, "provider 'ci' reads tokens from other headers than authorization"),
        (_route_cache, "provider 'idp' re-matches the route"),
    ],
)
def test_a_jwt_filter_in_another_shape_is_a_finding(
    resources: Resources,
    jwt_catalog: Catalog,
    change: Callable[[jwt_pb2.JwtAuthentication], None],
    problem: str,
) -> None:
    _change_jwt(resources, change)
    (finding,) = _no_authz(resources, jwt_catalog)
    assert f"runs {JWT} before ext_authz, which {problem}" in finding.message


def test_a_disabled_jwt_filter_is_a_finding(resources: Resources, jwt_catalog: Catalog) -> None:
    manager = _manager(resources)
    manager.http_filters[0].disabled = True
    _set_manager(resources, manager)
    (finding,) = _no_authz(resources, jwt_catalog)
    assert "is disabled by default" in finding.message


def test_a_jwks_cluster_elsewhere_than_the_issuers_is_a_finding(
    resources: Resources, jwt_catalog: Catalog
) -> None:
    cluster = resources[typeurls.CLUSTER]["jwks|idp"]
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    address.socket_address.address = "exfil.example.net"
    findings = verify_snapshot(rebuild(resources), jwt_catalog)
    assert [f.message for f in findings] == [
        "JWKS cluster 'jwks|idp' has endpoints other than the issuer's JWKS login.example.com:443"
    ]


def test_keys_fetched_through_a_backend_cluster_are_a_finding(
    resources: Resources, jwt_catalog: Catalog
) -> None:
    backend = next(iter(resources[typeurls.CLUSTER]))
    _change_jwt(
        resources,
        lambda config: setattr(config.providers["idp"].remote_jwks.http_uri, "cluster", backend),
    )
    messages = [f.message for f in verify_snapshot(rebuild(resources), jwt_catalog)]
    assert f"JWKS cluster '{backend}' is not the JWKS cluster of a catalog JWT issuer" in messages


def test_a_node_without_authz_gets_no_jwt_filter_nor_jwks_cluster(
    edge_plan: Plan, jwt_catalog: Catalog
) -> None:
    settings = dataclasses.replace(EDGE_SETTINGS, authz=None)
    model = MeshModel.build([edge_plan], {EDGE: settings}, jwt_issuers=jwt_catalog.jwt_issuers)
    r = decode(compile_and_verify(model, EDGE, jwt_catalog))
    assert JWT not in [f.name for f in _manager(r).http_filters]
    assert not [name for name in r[typeurls.CLUSTER] if name.startswith("jwks|")]
