"""Node SVIDs for tests: a fresh key and CSR, what a test CA issues for it, and a channel to
a node API that presents it."""

from __future__ import annotations

import datetime as dt

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.agents.identity.material import SvidMaterial, load_material
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import LocalCertificateAuthority
from tiermesh.controlplane.nodeapi import NodeApiServer

__all__ = ["issue_svid", "node_api_channel", "node_material"]


def _key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return key, csr


def issue_svid(ca: LocalCertificateAuthority, node_id: str) -> tuple[bytes, bytes]:
    """(chain PEM, key PEM) of a fresh SVID ``ca`` issues for ``node_id``."""
    key, csr = _key_and_csr()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ca.issue(csr, node_id).chain_pem(), key_pem


def node_material(ca: LocalCertificateAuthority, node_id: str) -> SvidMaterial:
    """A fresh SVID for ``node_id`` as an agent's ``SvidStore`` holds it."""
    key, csr = _key_and_csr()
    issued = ca.issue(csr, node_id)
    return load_material(key, issued.chain_pem(), ca.bundle().to_pem(), now=dt.datetime.now(dt.UTC))


def node_api_channel(
    ca: LocalCertificateAuthority, api: NodeApiServer, trust_domain: str, node_id: str | None
) -> grpc.aio.Channel:
    """A channel to ``api``'s node port with a fresh SVID of ``node_id``, or to its join
    port without a client certificate (None)."""
    client = issue_svid(ca, node_id) if node_id is not None else None
    credentials = grpc.ssl_channel_credentials(
        ca.bundle().to_pem(),
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )
    target = api.node_target if client else api.join_target
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(trust_domain))]
    return grpc.aio.secure_channel(target, credentials, options=options)
