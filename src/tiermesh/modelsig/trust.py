"""Who may sign a model: trusted public keys and certificate identities. Immutable values.

A `KeySigner` is an elliptic-curve public key (P-256, P-384 or P-521: what the OpenSSF
model-signing format supports); it is named ``key:sha256:<hex>``, the SHA-256 of its PEM
SubjectPublicKeyInfo, which is also the key hint a key-based signature carries.

A `CertificateSigner` is an identity (a URI SAN such as a SPIFFE ID, or an e-mail SAN) in a
signing certificate that chains to ``roots_pem``; it is named ``cert:<identity>``. Any
certificate of those roots that names another identity is not trusted by it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "SUPPORTED_CURVES",
    "CertificateSigner",
    "KeySigner",
    "TrustedSigner",
    "certificate_identities",
    "key_hint",
]

SUPPORTED_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex SHA-256 of the key's PEM SubjectPublicKeyInfo (model-signing's key hint)."""
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def certificate_identities(certificate: x509.Certificate) -> tuple[str, ...]:
    """The certificate's URI and e-mail SANs, in that order (empty without a SAN)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    emails = san.get_values_for_type(x509.RFC822Name)
    return (*uris, *emails)


@dataclass(frozen=True, slots=True)
class KeySigner:
    """A trusted EC public key (PEM). Build it with `KeySigner.from_pem`, which checks it."""

    public_key_pem: bytes
    hint: str

    @classmethod
    def from_pem(cls, pem: bytes | str) -> KeySigner:
        """Raises ValueError naming the problem: not a PEM public key, or not an EC key on
        a supported curve."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ValueError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(
                f"a {type(key).__name__} cannot verify model signatures: use an EC key "
                "(P-256, P-384 or P-521)"
            )
        if key.curve.name not in SUPPORTED_CURVES:
            raise ValueError(f"EC curve {key.curve.name} is not supported (P-256/384/521 are)")
        normalized = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(public_key_pem=normalized, hint=key_hint(key))

    @property
    def name(self) -> str:
        return f"key:sha256:{self.hint}"


@dataclass(frozen=True, slots=True)
class CertificateSigner:
    """A trusted identity in certificates issued under ``roots_pem`` (PEM, one or more)."""

    identity: str
    roots_pem: bytes

    @classmethod
    def from_pem(cls, identity: str, roots_pem: bytes | str) -> CertificateSigner:
        """Raises ValueError: an empty identity, or roots that hold no PEM certificate."""
        data = roots_pem.encode() if isinstance(roots_pem, str) else roots_pem
        if not identity:
            raise ValueError("a certificate signer needs an identity")
        try:
            roots = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise ValueError(f"the roots of {identity!r} are no PEM certificates: {exc}") from None
        if not roots:
            raise ValueError(f"the roots of {identity!r} hold no certificate")
        return cls(identity=identity, roots_pem=data)

    @property
    def name(self) -> str:
        return f"cert:{self.identity}"


TrustedSigner = KeySigner | CertificateSigner
