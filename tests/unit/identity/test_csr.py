"""CSRs the CA must refuse: each names its problem, and nothing is issued."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tiermesh.controlplane.identity import (
    MAX_CSR_BYTES,
    CsrIdentityMismatchError,
    CsrRejectedError,
    CsrRequestsCaError,
    CsrSignatureError,
    CsrTooLargeError,
    IdentityError,
    LocalCertificateAuthority,
    MalformedCsrError,
    UnsupportedKeyError,
)

TD = "mesh.example"


def _refused(
    ca: LocalCertificateAuthority,
    csr: bytes,
    error: type[CsrRejectedError],
    node_id: str = "edge-1",
) -> CsrRejectedError:
    before = sum(rec.issued for rec in ca.state().generations)
    with pytest.raises(error) as info:
        ca.issue(csr, node_id)
    assert isinstance(info.value, IdentityError)
    assert str(info.value).startswith("CSR rejected: ")
    assert sum(rec.issued for rec in ca.state().generations) == before
    return info.value


def test_csr_for_another_spiffe_id(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    csr = make_csr(names=[x509.UniformResourceIdentifier(f"spiffe://{TD}/node/control-plane")])
    err = _refused(ca, csr, CsrIdentityMismatchError)
    assert "control-plane" in str(err)


def test_csr_for_another_trust_domain(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    csr = make_csr(names=[x509.UniformResourceIdentifier("spiffe://evil.example/node/edge-1")])
    _refused(ca, csr, CsrIdentityMismatchError)


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("control-plane.node.mesh.example"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.RFC822Name("root@mesh.example"),
    ],
)
def test_csr_with_other_sans(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes], name: x509.GeneralName
) -> None:
    _refused(ca, make_csr(names=[name]), CsrIdentityMismatchError)


def test_csr_requesting_ca(ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]) -> None:
    csr = make_csr(extensions=[x509.BasicConstraints(ca=True, path_length=None)])
    err = _refused(ca, csr, CsrRequestsCaError)
    assert "CA=true" in str(err)


def test_csr_requesting_cert_sign_usage(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    usage = x509.KeyUsage(True, False, False, False, False, True, False, False, False)
    _refused(ca, make_csr(extensions=[usage]), CsrRequestsCaError)


def test_csr_with_ca_false_is_fine(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    csr = make_csr(extensions=[x509.BasicConstraints(ca=False, path_length=None)])
    assert ca.issue(csr, "edge-1").node_id == "edge-1"


def test_csr_with_bad_signature(
    ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]
) -> None:
    der = bytearray(make_csr(encoding=serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    _refused(ca, bytes(der), CsrSignatureError)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        (rsa.generate_private_key(65537, 1024), "RSA 1024"),
        (rsa.generate_private_key(3, 2048), "exponent 3"),
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
    ids=["rsa1024", "rsa-e3", "p521", "secp256k1", "ed25519"],
)
def test_csr_with_unsupported_key(
    ca: LocalCertificateAuthority,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
    fragment: str,
) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n")])
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)
    err = _refused(ca, csr, UnsupportedKeyError)
    assert fragment in str(err)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nnotbase64\n-----END CERTIFICATE REQUEST-----\n",
        b"\x30\x82\xff\xff\x00",
    ],
    ids=["empty", "garbage", "bad-pem", "truncated-der"],
)
def test_malformed_csr(ca: LocalCertificateAuthority, data: bytes) -> None:
    _refused(ca, data, MalformedCsrError)


def test_truncated_pem_csr(ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]) -> None:
    _refused(ca, make_csr()[:200], MalformedCsrError)


def test_certificate_instead_of_csr(ca: LocalCertificateAuthority) -> None:
    pem = ca.active.root.public_bytes(serialization.Encoding.PEM)
    _refused(ca, pem, MalformedCsrError)


def test_csr_given_as_text(ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]) -> None:
    _refused(ca, make_csr().decode(), MalformedCsrError)  # type: ignore[arg-type]


def test_oversized_csr(ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]) -> None:
    csr = make_csr() + b"\n" * (MAX_CSR_BYTES)
    err = _refused(ca, csr, CsrTooLargeError)
    assert isinstance(err, CsrTooLargeError)
    assert err.limit == MAX_CSR_BYTES
    assert "exceeds" in str(err)


def test_der_csr_is_accepted(ca: LocalCertificateAuthority, make_csr: Callable[..., bytes]) -> None:
    assert ca.issue(make_csr(encoding=serialization.Encoding.DER), "edge-1").node_id == "edge-1"
