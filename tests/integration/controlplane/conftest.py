"""A node registry on a real etcd behind a real mTLS node port, and SVIDs to call it with."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.controlplane.api import SessionMessage, SessionReply, registry_method_path
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
)
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd import EtcdServer

TD = "mesh.example"
LEASE_TTL_S = 2
LOAD_INTERVAL_S = 0.5

Call = grpc.aio.StreamStreamCall[SessionMessage, SessionReply]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@dataclass
class Registry:
    ca: LocalCertificateAuthority
    store: EtcdStore
    api: NodeApiServer

    def svid(self, node_id: str) -> tuple[bytes, bytes]:
        """(chain PEM, key PEM) of a fresh SVID for ``node_id``."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return self.ca.issue(csr, node_id).chain_pem(), key_pem

    def channel(self, node_id: str | None) -> grpc.aio.Channel:
        """A channel to the node port with ``node_id``'s SVID, or to the join port (None)."""
        client = self.svid(node_id) if node_id is not None else None
        credentials = grpc.ssl_channel_credentials(
            self.ca.bundle().to_pem(),
            private_key=client[1] if client else None,
            certificate_chain=client[0] if client else None,
        )
        target = self.api.node_target if client else self.api.join_target
        options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
        return grpc.aio.secure_channel(target, credentials, options=options)


def open_session(channel: grpc.aio.Channel) -> Call:
    method = channel.stream_stream(
        registry_method_path(),
        request_serializer=lambda m: m.model_dump_json().encode(),
        response_deserializer=SessionReply.model_validate_json,
    )
    return method()  # type: ignore[return-value]


@pytest.fixture
async def registry(etcd: EtcdServer) -> AsyncIterator[Registry]:
    root = f"/test-{uuid.uuid4().hex}/tiermesh/v1/"
    ca = LocalCertificateAuthority.create(CaConfig(TD))
    certificate = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
    async with EtcdStore(etcd.endpoint, root=root) as store:
        service = NodeIdentityService(ca, JoinTokens(store))
        registry = NodeRegistryService(
            store, TD, lease_ttl_s=LEASE_TTL_S, load_interval_s=LOAD_INTERVAL_S
        )
        api = await start_node_api(
            service, certificate=certificate, bundle=ca.bundle(), registry=registry
        )
        try:
            yield Registry(ca, store, api)
        finally:
            await api.stop(grace=None)
