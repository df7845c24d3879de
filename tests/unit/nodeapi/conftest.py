"""A running node API (real gRPC, TLS on 127.0.0.1) over an in-process CA and MemoryStore."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.server_cert import ServerCertificate, issue_server_certificate
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.nodeapi import NodeApiServer, NodeIdentityService, start_node_api
from tiermesh.controlplane.store import MemoryStore

TRUST_DOMAIN = "mesh.example"


class ShiftedClock:
    """The system clock plus a settable offset (gRPC's handshake always uses real time)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class ControlPlane:
    ca: LocalCertificateAuthority
    clock: ShiftedClock
    tokens: JoinTokens
    api: NodeApiServer
    certificate: ServerCertificate

    @property
    def bundle_pem(self) -> bytes:
        return self.ca.bundle().to_pem()

    @property
    def server_name(self) -> str:
        return control_plane_dns_name(TRUST_DOMAIN)

    def issued(self) -> int:
        return sum(record.issued for record in self.ca.state().generations)


@pytest.fixture
async def cp() -> AsyncIterator[ControlPlane]:
    clock = ShiftedClock()
    # Created three hours back, so tests can issue SVIDs that are already expired.
    clock.offset = -dt.timedelta(hours=3)
    ca = LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN), clock=clock)
    clock.offset = dt.timedelta(0)
    certificate = issue_server_certificate(ca, now=clock())
    store = MemoryStore()
    tokens = JoinTokens(store, clock=clock)
    service = NodeIdentityService(ca, tokens, clock=clock)
    api = await start_node_api(service, certificate=certificate, bundle=ca.bundle())
    try:
        yield ControlPlane(ca, clock, tokens, api, certificate)
    finally:
        await api.stop()
        await store.aclose()
