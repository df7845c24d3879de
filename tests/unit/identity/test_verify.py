"""Verifying SVID chains against the trust bundle: each failure is its own error."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiermesh.controlplane.identity import (
    CaConfig,
    IdentityError,
    InvalidSvidError,
    LocalCertificateAuthority,
    MissingSpiffeIdError,
    SpiffeIdMismatchError,
    SvidExpiredError,
    SvidNotYetValidError,
    SvidVerificationError,
    TrustBundle,
    TrustDomainMismatchError,
    UntrustedChainError,
    load_chain,
    verify_svid,
)

if TYPE_CHECKING:
    from conftest import FakeClock

TD = "mesh.example"
_KU_LEAF = x509.KeyUsage(True, False, False, False, False, False, False, False, False)


def _forge_leaf(
    ca: LocalCertificateAuthority,
    now: dt.datetime,
    *,
    names: Sequence[x509.GeneralName] | None,
    is_ca: bool = False,
    usage: x509.KeyUsage = _KU_LEAF,
) -> x509.Certificate:
    """A leaf signed by ``ca``'s real intermediate but built outside the CA's rules."""
    inter = ca.active.intermediate
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(inter.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.active.intermediate_key.public_key()
            ),
            critical=False,
        )
    )
    if names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(ca.active.intermediate_key, hashes.SHA256())


def test_valid_svid(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    for chain in (svid.chain, svid.chain_pem(), svid.chain_der()):
        verified = verify_svid(chain, ca.bundle(), now=clock.now)
        assert verified.spiffe_id == "spiffe://mesh.example/node/edge-1"
        assert verified.node_id == "edge-1"
        assert verified.trust_domain == TD
        assert verified.chain == (svid.certificate, svid.intermediate, ca.active.root)
        assert verified.not_after == svid.not_after
    verify_svid(svid.chain, ca.bundle(), now=clock.now, expected_spiffe_id=svid.spiffe_id)


def test_expired_svid(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    later = clock.now + dt.timedelta(hours=1, seconds=1)
    with pytest.raises(SvidExpiredError) as info:
        verify_svid(svid.chain, ca.bundle(), now=later)
    assert info.value.not_after == svid.not_after
    assert "expired at" in str(info.value)
    # the last instant of validity still verifies
    verify_svid(svid.chain, ca.bundle(), now=svid.not_after)


def test_not_yet_valid_svid(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    with pytest.raises(SvidNotYetValidError):
        verify_svid(svid.chain, ca.bundle(), now=clock.now - dt.timedelta(minutes=5))


def test_foreign_ca_same_trust_domain(
    ca: LocalCertificateAuthority,
    config: CaConfig,
    make_csr: Callable[..., bytes],
    clock: FakeClock,
) -> None:
    impostor = LocalCertificateAuthority.create(config, clock=clock)
    svid = impostor.issue(make_csr(), "edge-1")
    with pytest.raises(UntrustedChainError) as info:
        verify_svid(svid.chain, ca.bundle(), now=clock.now)
    assert "trust bundle" in str(info.value)


def test_foreign_trust_domain(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    other = LocalCertificateAuthority.create(CaConfig("other.example"), clock=clock)
    svid = other.issue(make_csr(), "edge-1")
    with pytest.raises(TrustDomainMismatchError) as info:
        verify_svid(svid.chain, ca.bundle(), now=clock.now)
    assert info.value.expected_trust_domain == TD
    # the same chain checked against its own trust domain's bundle with our roots
    wrong = TrustBundle(TD, other.bundle().roots)
    with pytest.raises(TrustDomainMismatchError):
        verify_svid(svid.chain, wrong, now=clock.now)


def test_missing_intermediate(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    with pytest.raises(UntrustedChainError):
        verify_svid([svid.certificate], ca.bundle(), now=clock.now)


def test_missing_uri_san(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    for names in (None, [x509.DNSName("edge-1.node.mesh.example")]):
        leaf = _forge_leaf(ca, clock.now, names=names)
        with pytest.raises(MissingSpiffeIdError):
            verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_non_spiffe_uri_san(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    leaf = _forge_leaf(ca, clock.now, names=[x509.UniformResourceIdentifier("https://x.example")])
    with pytest.raises(MissingSpiffeIdError):
        verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_two_uri_sans(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    names = [
        x509.UniformResourceIdentifier("spiffe://mesh.example/node/a"),
        x509.UniformResourceIdentifier("spiffe://mesh.example/node/b"),
    ]
    leaf = _forge_leaf(ca, clock.now, names=names)
    with pytest.raises(InvalidSvidError, match="exactly one"):
        verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_leaf_marked_ca(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    names = [x509.UniformResourceIdentifier("spiffe://mesh.example/node/a")]
    leaf = _forge_leaf(ca, clock.now, names=names, is_ca=True)
    with pytest.raises(InvalidSvidError, match="CA"):
        verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_leaf_without_digital_signature(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    names = [x509.UniformResourceIdentifier("spiffe://mesh.example/node/a")]
    usage = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    leaf = _forge_leaf(ca, clock.now, names=names, usage=usage)
    with pytest.raises(InvalidSvidError, match="digitalSignature"):
        verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_trust_domain_id_as_leaf(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    leaf = _forge_leaf(
        ca, clock.now, names=[x509.UniformResourceIdentifier("spiffe://mesh.example")]
    )
    with pytest.raises(InvalidSvidError, match="path"):
        verify_svid([leaf, ca.active.intermediate], ca.bundle(), now=clock.now)


def test_ca_cert_presented_as_leaf(ca: LocalCertificateAuthority, clock: FakeClock) -> None:
    with pytest.raises(InvalidSvidError):
        verify_svid([ca.active.intermediate], ca.bundle(), now=clock.now)


def test_expected_spiffe_id_mismatch(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    with pytest.raises(SpiffeIdMismatchError) as info:
        verify_svid(
            svid.chain,
            ca.bundle(),
            now=clock.now,
            expected_spiffe_id="spiffe://mesh.example/node/edge-2",
        )
    assert info.value.spiffe_id == svid.spiffe_id


@pytest.mark.parametrize(
    "data", [b"", b"\x30\x05ab", b"not a chain", b"-----BEGIN CERTIFICATE-----\n!!\n", b"\x30"]
)
def test_unparseable_chain(ca: LocalCertificateAuthority, clock: FakeClock, data: bytes) -> None:
    with pytest.raises(InvalidSvidError):
        verify_svid(data, ca.bundle(), now=clock.now)


def test_oversized_chain_is_refused() -> None:
    with pytest.raises(InvalidSvidError, match="exceeds"):
        load_chain(b"\x30" * (64 * 1024 + 1))


def test_naive_time_is_refused(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    with pytest.raises(ValueError, match="timezone"):
        verify_svid(svid.chain, ca.bundle(), now=dt.datetime(2026, 3, 1))


def test_errors_share_roots() -> None:
    for error in (
        InvalidSvidError,
        MissingSpiffeIdError,
        TrustDomainMismatchError,
        SvidExpiredError,
        SvidNotYetValidError,
        UntrustedChainError,
        SpiffeIdMismatchError,
    ):
        assert issubclass(error, SvidVerificationError)
        assert issubclass(error, IdentityError)
