"""The ADS server behind mTLS and the SPIFFE node authorizer, with a real gRPC client."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from tests.support.resources import mesh
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import ServerCertificate, issue_server_certificate
from tiermesh.controlplane.identity.xds_auth import server_credentials, spiffe_node_authorizer
from tiermesh.xds import AdsServer, SnapshotCache, start_server, typeurls

TD = "mesh.example"

Client = tuple[bytes, bytes]


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def svid(ca: LocalCertificateAuthority, node_id: str) -> Client:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return ca.issue(csr, node_id).chain_pem(), pem_key(key)


@dataclass
class Served:
    ca: LocalCertificateAuthority
    certificate: ServerCertificate
    target: str


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    certificate = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
    cache = SnapshotCache()
    cache.set_snapshot("node-a", mesh({"a": 9}, listener_port=10000))
    ads = AdsServer(cache, authorize=spiffe_node_authorizer(TD))
    server, port = await start_server(
        ads, "127.0.0.1:0", credentials=server_credentials(certificate, ca.bundle())
    )
    try:
        yield Served(ca, certificate, f"127.0.0.1:{port}")
    finally:
        await server.stop(grace=None)


async def fetch_clusters(
    served: Served, claim: str, client: Client | None
) -> discovery_pb2.DiscoveryResponse | grpc.StatusCode:
    """Open one SotW stream as ``claim`` with ``client`` (chain, key); the first response or
    the status the stream ended with."""
    credentials = grpc.ssl_channel_credentials(
        served.ca.bundle().to_pem(),
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
    async with grpc.aio.secure_channel(served.target, credentials, options=options) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()
        try:
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    node=base_pb2.Node(id=claim, cluster="c"), type_url=typeurls.CLUSTER
                )
            )
            response = await asyncio.wait_for(call.read(), 5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            return await call.code()  # type: ignore[no-any-return]
        return response  # type: ignore[no-any-return]


async def test_a_node_svid_fetches_its_own_config(served: Served) -> None:
    result = await fetch_clusters(served, "node-a", svid(served.ca, "node-a"))
    assert isinstance(result, discovery_pb2.DiscoveryResponse)
    assert result.type_url == typeurls.CLUSTER
    assert len(result.resources) == 1


async def test_claiming_another_node_is_permission_denied(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tiermesh.xds"):
        result = await fetch_clusters(served, "node-b", svid(served.ca, "node-a"))
    assert result is grpc.StatusCode.PERMISSION_DENIED
    assert any(
        "PERMISSION_DENIED" in r.getMessage() and "may not claim node id 'node-b'" in r.getMessage()
        for r in caplog.records
    )


async def test_a_non_node_identity_is_permission_denied(served: Served) -> None:
    client = (served.certificate.chain_pem(), served.certificate.key_pem())
    assert await fetch_clusters(served, "controlplane", client) is grpc.StatusCode.PERMISSION_DENIED


async def test_no_client_certificate_fails_the_handshake(served: Served) -> None:
    assert await fetch_clusters(served, "node-a", None) is grpc.StatusCode.UNAVAILABLE


async def test_a_foreign_ca_fails_the_handshake(served: Served) -> None:
    foreign = LocalCertificateAuthority.create(CaConfig(TD))
    result = await fetch_clusters(served, "node-a", svid(foreign, "node-a"))
    assert result is grpc.StatusCode.UNAVAILABLE


async def test_another_trust_domain_is_refused(served: Served) -> None:
    other_td = LocalCertificateAuthority.create(CaConfig("other.example"))
    # Trusted at the TLS layer (its root is added), refused by the authorizer.
    bundle = served.ca.bundle().to_pem() + other_td.bundle().to_pem()
    cache = SnapshotCache()
    ads = AdsServer(cache, authorize=spiffe_node_authorizer(TD))
    creds = grpc.ssl_server_credentials(
        [(served.certificate.key_pem(), served.certificate.chain_pem())],
        root_certificates=bundle,
        require_client_auth=True,
    )
    server, port = await start_server(ads, "127.0.0.1:0", credentials=creds)
    try:
        other = Served(served.ca, served.certificate, f"127.0.0.1:{port}")
        result = await fetch_clusters(other, "node-a", svid(other_td, "node-a"))
    finally:
        await server.stop(grace=None)
    assert result is grpc.StatusCode.PERMISSION_DENIED
