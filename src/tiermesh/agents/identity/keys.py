"""The node's private keys and the CSRs that carry their public halves to a CA.

Keys are EC P-256, generated in this process; only the CSR (public key + self-signature)
ever leaves the node. Pure functions, thread-safe.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["build_csr", "generate_key"]


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey, *, node_id: str = "", spiffe_id: str = "") -> bytes:
    """A PEM PKCS#10 request signed by ``key``.

    ``node_id`` becomes the subject CN and ``spiffe_id`` a URI SAN when given; a CA decides
    the SVID's names itself and may ignore both, but one that checks them (tiermesh's CA
    refuses a SAN other than the node's own) sees a request that is honest about who asks.
    """
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, node_id)] if node_id else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if spiffe_id:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
