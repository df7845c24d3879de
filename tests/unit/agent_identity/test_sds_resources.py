"""The SDS secrets and the Envoy bootstrap pieces that fetch them (pure functions)."""

from __future__ import annotations

import pytest
from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from tests.unit.agent_identity.casource import SPIFFE_ID, CaSource, FakeClock
from tiermesh.agents.identity import (
    BUNDLE_SDS_NAME,
    SVID_SDS_NAME,
    SdsNames,
    SvidMaterial,
    SvidRotator,
    SvidStore,
    downstream_tls_socket,
    sds_cluster,
    sds_secrets,
    upstream_tls_socket,
    with_sds_cluster,
)
from tiermesh.xds import BootstrapSpec, Snapshot, render_bootstrap, validate_bootstrap


async def _material(source: CaSource, clock: FakeClock) -> SvidMaterial:
    return await SvidRotator(SvidStore(), source, clock=clock).rotate_now()


async def test_secrets_carry_the_svid_key_and_bundle(source: CaSource, clock: FakeClock) -> None:
    material = await _material(source, clock)
    svid, bundle, peer = sds_secrets(material, SdsNames(peers={"peer": (SPIFFE_ID,)}))
    assert svid.name == SVID_SDS_NAME
    assert svid.tls_certificate.certificate_chain.inline_bytes == material.chain_pem()
    assert svid.tls_certificate.private_key.inline_bytes == material.key_pem()
    assert bundle.name == BUNDLE_SDS_NAME
    assert bundle.validation_context.trusted_ca.inline_bytes == material.bundle_pem()
    assert not bundle.validation_context.match_typed_subject_alt_names
    (matcher,) = peer.validation_context.match_typed_subject_alt_names
    assert matcher.san_type == common_pb2.SubjectAltNameMatcher.URI
    assert matcher.matcher.exact == SPIFFE_ID
    snapshot = Snapshot.build(secrets=[svid, bundle, peer])
    assert snapshot.names(
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    ) == {
        SVID_SDS_NAME,
        BUNDLE_SDS_NAME,
        "peer",
    }


def test_bootstrap_pieces_parse_as_envoy_config() -> None:
    base = render_bootstrap(BootstrapSpec(node_id="edge-1", xds_host="127.0.0.1", xds_port=18000))
    document = with_sds_cluster(base, "unix:/run/tiermesh/sds.sock")
    assert document is not base
    assert len(base["static_resources"]["clusters"]) == 1
    clusters = document["static_resources"]["clusters"]
    assert clusters[-1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"pipe": {"path": "/run/tiermesh/sds.sock"}}
    }
    clusters.append({**sds_cluster("127.0.0.1:9901", name="tcp_sds")})
    clusters[-1]["transport_socket"] = upstream_tls_socket(sni="x", alpn=["h2"])
    document["static_resources"]["listeners"] = [
        {
            "name": "in",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
            "filter_chains": [{"filters": [], "transport_socket": downstream_tls_socket()}],
        }
    ]
    validate_bootstrap(document)
    sds = downstream_tls_socket()["typed_config"]["common_tls_context"]
    source = sds["tls_certificate_sds_secret_configs"][0]["sds_config"]["api_config_source"]
    assert source["api_type"] == "GRPC"
    assert source["grpc_services"] == [{"envoy_grpc": {"cluster_name": "tiermesh_sds"}}]


def test_sds_addresses_must_be_unix_or_host_port() -> None:
    with pytest.raises(ValueError, match="neither"):
        sds_cluster("localhost")
