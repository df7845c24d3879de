"""An audit collector on real mTLS gRPC (127.0.0.1), its database, and node identities."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.decisionlog.helpers import TRUST_DOMAIN, new_ca
from tiermesh.agents.decisionlog import GrpcShipClient, SigningIdentity
from tiermesh.agents.identity import SvidMaterial, load_material
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.audit import (
    AuditCollector,
    AuditCollectorServer,
    AuditStore,
    start_audit_collector,
)
from tiermesh.controlplane.identity import LocalCertificateAuthority, utc_now
from tiermesh.controlplane.identity.server_cert import ServerCertificate, issue_server_certificate
from tiermesh.procs.ports import free_port


def material_for(ca: LocalCertificateAuthority, node: str) -> SvidMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_for_key(key.public_key(), node)
    return load_material(key, issued.chain_pem(), ca.bundle().to_pem(), now=utc_now())


def signing(material: SvidMaterial) -> SigningIdentity:
    key = material.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return SigningIdentity(material.spiffe_id, key, material.chain)


@dataclass
class ControlPlane:
    ca: LocalCertificateAuthority
    certificate: ServerCertificate
    store: AuditStore
    port: int
    server: AuditCollectorServer | None = None

    async def start(self) -> None:
        collector = AuditCollector(self.store, self.ca.bundle)
        self.server = await start_audit_collector(
            collector, certificate=self.certificate, bundle=self.ca.bundle(), port=self.port
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    def client(self, material: SvidMaterial) -> GrpcShipClient:
        return GrpcShipClient(
            f"127.0.0.1:{self.port}",
            lambda: material,
            server_name=control_plane_dns_name(TRUST_DOMAIN),
            timeout_s=5,
        )


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    ca = new_ca()
    store = AuditStore(tmp_path / "audit.sqlite3")
    plane = ControlPlane(ca, issue_server_certificate(ca, now=utc_now()), store, free_port())
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()
        store.close()
