"""py-spiffe accepts what the CA produces."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe import SpiffeId, TrustDomain, X509Bundle, X509Svid

from tiermesh.controlplane.identity import (
    CaConfig,
    KeyAlgorithm,
    LocalCertificateAuthority,
    TrustBundle,
    needs_rotation,
)

if TYPE_CHECKING:
    from conftest import FakeClock


def _key_bytes(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, encoding: serialization.Encoding
) -> bytes:
    return key.private_bytes(
        encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_x509svid_parse_pem_and_der(
    ca: LocalCertificateAuthority,
    make_csr: Callable[..., bytes],
    node_key: ec.EllipticCurvePrivateKey,
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    parsed = X509Svid.parse(svid.chain_pem(), _key_bytes(node_key, serialization.Encoding.PEM))
    assert parsed.spiffe_id == SpiffeId("spiffe://mesh.example/node/edge-1")
    assert parsed.leaf == svid.certificate
    assert parsed.cert_chain == list(svid.chain)
    raw = X509Svid.parse_raw(svid.chain_der(), _key_bytes(node_key, serialization.Encoding.DER))
    assert str(raw.spiffe_id) == svid.spiffe_id
    assert needs_rotation(raw, svid.not_after)


def test_x509svid_parse_rsa_and_p384(
    rsa_key: rsa.RSAPrivateKey, csr_builder: Callable[..., bytes], clock: FakeClock
) -> None:
    ca = LocalCertificateAuthority.create(
        CaConfig("mesh.example", key_algorithm=KeyAlgorithm.P384), clock=clock
    )
    svid = ca.issue(csr_builder(rsa_key), "gpu-1", ttl=dt.timedelta(minutes=5))
    parsed = X509Svid.parse(svid.chain_pem(), _key_bytes(rsa_key, serialization.Encoding.PEM))
    assert str(parsed.spiffe_id) == "spiffe://mesh.example/node/gpu-1"


def test_bundle_round_trips_through_py_spiffe(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    ca.rotate()
    bundle = ca.bundle()
    td = TrustDomain("mesh.example")
    from_pem = X509Bundle.parse(td, bundle.to_pem())
    from_der = X509Bundle.parse_raw(td, bundle.to_der())
    assert from_pem.x509_authorities == set(bundle.roots)
    assert from_der.x509_authorities == set(bundle.roots)
    converted = bundle.to_spiffe()
    assert converted == from_pem
    assert converted.trust_domain == td
    assert TrustBundle.from_pem("mesh.example", bundle.to_pem()) == bundle
