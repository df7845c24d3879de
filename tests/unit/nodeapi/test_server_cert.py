"""The control plane's certificate: its names, profile and chain."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

from tiermesh.controlplane.api.join import control_plane_spiffe_id
from tiermesh.controlplane.identity import (
    CaConfig,
    InvalidTtlError,
    LocalCertificateAuthority,
    verify_svid,
)
from tiermesh.controlplane.identity.server_cert import issue_server_certificate

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def ca() -> LocalCertificateAuthority:
    return LocalCertificateAuthority.create(CaConfig("mesh.example"), clock=lambda: T0)


def test_names_profile_and_chain(ca: LocalCertificateAuthority) -> None:
    cert = issue_server_certificate(ca, now=T0, extra_dns_names=("localhost",))
    san = cert.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://mesh.example/controlplane"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["controlplane.mesh.example", "localhost"]
    verified = verify_svid(
        cert.chain_pem(),
        ca.bundle(),
        now=T0,
        expected_spiffe_id=control_plane_spiffe_id("mesh.example"),
    )
    assert verified.node_id is None
    assert cert.not_after == T0 + dt.timedelta(days=1)
    assert b"PRIVATE KEY" in cert.key_pem()


def test_ttl_bounds(ca: LocalCertificateAuthority) -> None:
    with pytest.raises(InvalidTtlError):
        issue_server_certificate(ca, now=T0, ttl=dt.timedelta(0))
    with pytest.raises(ValueError, match="aware"):
        issue_server_certificate(ca, now=T0.replace(tzinfo=None))
