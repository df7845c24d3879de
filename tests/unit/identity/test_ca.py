"""CA certificate profiles, SVID issuance, TTLs and configuration."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiermesh.controlplane.identity import (
    CaConfig,
    CaExpiredError,
    CertificateAuthority,
    InvalidCaConfigError,
    InvalidNodeIdError,
    InvalidTrustDomainError,
    InvalidTtlError,
    KeyAlgorithm,
    LocalCertificateAuthority,
    UnsupportedKeyError,
    verify_svid,
)

if TYPE_CHECKING:
    from conftest import FakeClock

TD = "mesh.example"


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier


_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_and_intermediate_profiles(ca: LocalCertificateAuthority) -> None:
    root, inter = ca.active.root, ca.active.intermediate
    for cert, path_len in ((root, 1), (inter, 0)):
        assert cert.version is x509.Version.v3
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical
        assert bc.value == x509.BasicConstraints(ca=True, path_length=path_len)
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical
        assert ku.value.key_cert_sign
        assert ku.value.crl_sign
        assert not ku.value.digital_signature
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{TD}"]
    assert root.subject == root.issuer
    root.verify_directly_issued_by(root)
    inter.verify_directly_issued_by(root)
    assert _aki(root) == _ski(root)
    assert _aki(inter) == _ski(root)
    assert inter.not_valid_after_utc <= root.not_valid_after_utc
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)


def test_leaf_profile(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1")
    leaf = svid.certificate
    assert svid.spiffe_id == f"spiffe://{TD}/node/edge-1"
    assert svid.node_id == "edge-1"
    san = _ext(leaf, x509.SubjectAlternativeName).value
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [svid.spiffe_id]
    assert san.get_values_for_type(x509.DNSName) == [f"edge-1.node.{TD}"]
    assert len(list(san)) == 2
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical
    assert bc.value == x509.BasicConstraints(ca=False, path_length=None)
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not ku.value.key_cert_sign
    assert not ku.value.key_encipherment
    eku = _ext(leaf, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _aki(leaf) == _ski(svid.intermediate)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "edge-1"
    assert leaf.issuer == svid.intermediate.subject
    assert svid.serial > 0
    assert svid.not_after == clock.now + dt.timedelta(hours=1)
    assert svid.not_before == clock.now - dt.timedelta(seconds=30)
    assert svid.chain == (leaf, ca.active.intermediate)
    leaf.verify_directly_issued_by(ca.active.intermediate)


def test_spiffe_id_comes_from_node_id_not_csr(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    svid = ca.issue(make_csr(common_name="admin"), "edge-2")
    assert svid.spiffe_id == f"spiffe://{TD}/node/edge-2"
    cn = svid.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "edge-2"


def test_csr_asking_for_its_own_names_is_accepted(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    csr = make_csr(
        names=[
            x509.UniformResourceIdentifier(f"spiffe://{TD}/node/edge-3"),
            x509.DNSName(f"edge-3.node.{TD}"),
        ]
    )
    assert ca.issue(csr, "edge-3").spiffe_id.endswith("/node/edge-3")


def test_custom_ttl_and_bounds(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    svid = ca.issue(make_csr(), "edge-1", ttl=dt.timedelta(minutes=10))
    assert svid.not_after == clock.now + dt.timedelta(minutes=10)
    for bad in (dt.timedelta(0), dt.timedelta(seconds=-1), dt.timedelta(hours=25)):
        with pytest.raises(InvalidTtlError):
            ca.issue(make_csr(), "edge-1", ttl=bad)


def test_ttl_is_capped_by_intermediate_lifetime(
    make_csr: Callable[..., bytes], clock: FakeClock
) -> None:
    config = CaConfig(
        TD,
        root_ttl=dt.timedelta(hours=4),
        intermediate_ttl=dt.timedelta(hours=2),
        max_svid_ttl=dt.timedelta(hours=1),
    )
    ca = LocalCertificateAuthority.create(config, clock=clock)
    clock.advance(dt.timedelta(minutes=90))
    svid = ca.issue(make_csr(), "edge-1")
    assert svid.not_after == ca.active.intermediate.not_valid_after_utc
    assert svid.not_after - clock.now == dt.timedelta(minutes=30)
    clock.advance(dt.timedelta(hours=1))
    with pytest.raises(CaExpiredError, match="roll the CA over"):
        ca.issue(make_csr(), "edge-1")


def test_invalid_node_id_is_refused(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    with pytest.raises(InvalidNodeIdError):
        ca.issue(make_csr(), "../root")


def test_p384_ca_signs_with_sha384(make_csr: Callable[..., bytes], clock: FakeClock) -> None:
    ca = LocalCertificateAuthority.create(
        CaConfig(TD, key_algorithm=KeyAlgorithm.P384), clock=clock
    )
    root_key = ca.active.root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    assert isinstance(root_key.curve, ec.SECP384R1)
    svid = ca.issue(make_csr(), "edge-1")
    assert isinstance(svid.certificate.signature_hash_algorithm, hashes.SHA384)
    verify_svid(svid.chain, ca.bundle(), now=clock.now)


def test_rsa_node_key_gets_key_encipherment(
    ca: LocalCertificateAuthority,
    rsa_key: rsa.RSAPrivateKey,
    csr_builder: Callable[..., bytes],
    clock: FakeClock,
) -> None:
    svid = ca.issue(csr_builder(rsa_key), "rsa-node")
    ku = _ext(svid.certificate, x509.KeyUsage).value
    assert ku.digital_signature
    assert ku.key_encipherment
    verify_svid(svid.chain, ca.bundle(), now=clock.now)


def test_issue_for_key_checks_the_key(
    ca: LocalCertificateAuthority, node_key: ec.EllipticCurvePrivateKey
) -> None:
    svid = ca.issue_for_key(node_key.public_key(), "edge-1")
    assert svid.certificate.public_key() == node_key.public_key()
    with pytest.raises(UnsupportedKeyError):
        ca.issue_for_key(ec.generate_private_key(ec.SECP521R1()).public_key(), "edge-1")


def test_serials_are_unique(
    ca: LocalCertificateAuthority, node_key: ec.EllipticCurvePrivateKey
) -> None:
    serials = {ca.issue_for_key(node_key.public_key(), "edge-1").serial for _ in range(200)}
    assert len(serials) == 200


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"root_ttl": dt.timedelta(0)}, "root_ttl"),
        ({"svid_ttl": dt.timedelta(hours=-1)}, "svid_ttl"),
        ({"intermediate_ttl": dt.timedelta(days=400)}, "intermediate_ttl"),
        ({"svid_ttl": dt.timedelta(hours=30)}, "svid_ttl"),
        ({"max_svid_ttl": dt.timedelta(days=200)}, "max_svid_ttl"),
        ({"backdate": dt.timedelta(hours=2)}, "backdate"),
    ],
)
def test_config_validation(kwargs: dict[str, dt.timedelta], setting: str) -> None:
    with pytest.raises(InvalidCaConfigError) as info:
        CaConfig(TD, **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


def test_config_rejects_bad_trust_domain() -> None:
    with pytest.raises(InvalidTrustDomainError):
        CaConfig("Not_A_Domain")


def test_naive_clock_is_refused(config: CaConfig) -> None:
    with pytest.raises(InvalidCaConfigError, match="clock"):
        LocalCertificateAuthority.create(config, clock=lambda: dt.datetime(2026, 1, 1))


def test_satisfies_protocol(ca: LocalCertificateAuthority) -> None:
    authority: CertificateAuthority = ca
    assert authority.trust_domain == TD
    assert authority.bundle().roots == (ca.active.root,)


def test_concurrent_issue_and_rotate(
    ca: LocalCertificateAuthority, node_key: ec.EllipticCurvePrivateKey, clock: FakeClock
) -> None:
    issued: list[x509.Certificate] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(25):
            svid = ca.issue_for_key(node_key.public_key(), f"n{n}-{i}")
            with lock:
                issued.append(svid.certificate)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    ca.rotate()
    for t in threads:
        t.join()
    state = ca.state()
    assert sum(rec.issued for rec in state.generations) == 100
    bundle = ca.bundle()
    by_ski = {_ski(gen.intermediate): gen.intermediate for gen in ca.generations}
    for cert in issued:
        aki = _aki(cert)
        assert aki is not None
        verify_svid([cert, by_ski[aki]], bundle, now=clock.now)
