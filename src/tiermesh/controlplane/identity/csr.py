"""Checking a node's certificate signing request before anything is signed.

The CA decides every name and extension of an SVID itself; a CSR contributes only its public
key. A CSR is nevertheless refused (:class:`CsrRejectedError` subclasses) when it

- is larger than :data:`MAX_CSR_BYTES` (checked before parsing), or not PKCS#10 PEM/DER;
- carries a key outside :data:`ACCEPTED_KEYS`;
- has a self-signature that does not verify;
- requests a SAN other than the node's own SPIFFE ID / DNS name, CA=true, or
  keyCertSign/cRLSign — a request for powers the node cannot have is treated as hostile,
  not silently narrowed.

Other requested extensions and the subject are ignored. Pure functions, thread-safe.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tiermesh.controlplane.identity.errors import (
    CsrIdentityMismatchError,
    CsrRequestsCaError,
    CsrSignatureError,
    CsrTooLargeError,
    MalformedCsrError,
    UnsupportedKeyError,
)
from tiermesh.controlplane.identity.spiffe_id import NodeIdentity

__all__ = [
    "ACCEPTED_KEYS",
    "MAX_CSR_BYTES",
    "SvidPublicKey",
    "check_csr",
    "check_public_key",
    "load_csr",
]

MAX_CSR_BYTES = 16 * 1024
"""Upper bound on an encoded CSR (PEM or DER). A P-384 CSR is ~0.5 KiB, RSA-8192 ~2.5 KiB."""

ACCEPTED_KEYS = "EC P-256, EC P-384, RSA 2048-8192 bits with public exponent 65537"
"""Key types an SVID may carry: what Envoy's TLS stack loads as a certificate key (it refuses
Ed25519 certificates), and nothing below 112-bit strength."""

SvidPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_RSA_MIN_BITS = 2048
_RSA_MAX_BITS = 8192
_PEM_MARKER = b"-----BEGIN"


def load_csr(data: bytes, *, max_bytes: int = MAX_CSR_BYTES) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR of at most ``max_bytes`` bytes. Does not check the signature.

    Raises:
        CsrTooLargeError: ``len(data) > max_bytes``.
        MalformedCsrError: not bytes, or not a parseable PKCS#10 request.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedCsrError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise CsrTooLargeError(len(data), max_bytes)
    raw = bytes(data)
    try:
        if raw.lstrip().startswith(_PEM_MARKER):
            return x509.load_pem_x509_csr(raw)
        return x509.load_der_x509_csr(raw)
    except ValueError as exc:
        raise MalformedCsrError(str(exc) or "unparseable") from exc


def check_public_key(key: object) -> SvidPublicKey:
    """Return ``key`` if it is one of :data:`ACCEPTED_KEYS`.

    Raises:
        UnsupportedKeyError: describing the key that was refused.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            return key
        raise UnsupportedKeyError(f"EC curve {key.curve.name}; accepted: {ACCEPTED_KEYS}")
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < _RSA_MIN_BITS or bits > _RSA_MAX_BITS:
            raise UnsupportedKeyError(f"RSA {bits} bits; accepted: {ACCEPTED_KEYS}")
        exponent = key.public_numbers().e
        if exponent != 65537:
            raise UnsupportedKeyError(f"RSA public exponent {exponent}; accepted: {ACCEPTED_KEYS}")
        return key
    raise UnsupportedKeyError(f"{type(key).__name__}; accepted: {ACCEPTED_KEYS}")


def check_csr(csr: x509.CertificateSigningRequest, identity: NodeIdentity) -> SvidPublicKey:
    """Apply the module's rules to ``csr`` for ``identity``; return the key to certify.

    Raises:
        UnsupportedKeyError, CsrSignatureError, CsrIdentityMismatchError, CsrRequestsCaError,
        MalformedCsrError (undecodable extensions).
    """
    try:
        key = check_public_key(csr.public_key())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UnsupportedKeyError(f"undecodable public key: {exc}") from exc
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise MalformedCsrError(f"cannot check the signature: {exc}") from exc
    if not signature_ok:
        raise CsrSignatureError()
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedCsrError(f"undecodable extensions: {exc}") from exc
    for ext in extensions:
        _check_extension(ext.value, identity)
    return key


def _check_extension(value: x509.ExtensionType, identity: NodeIdentity) -> None:
    allowed = f"URI {identity.spiffe_id!r} and DNS {identity.dns_name!r}"
    if isinstance(value, x509.SubjectAlternativeName):
        for name in value:
            if isinstance(name, x509.UniformResourceIdentifier):
                if name.value != identity.spiffe_id:
                    raise CsrIdentityMismatchError(f"URI:{name.value}", allowed)
            elif isinstance(name, x509.DNSName):
                if name.value != identity.dns_name:
                    raise CsrIdentityMismatchError(f"DNS:{name.value}", allowed)
            else:
                raise CsrIdentityMismatchError(f"{type(name).__name__}:{name.value}", allowed)
    elif isinstance(value, x509.BasicConstraints):
        if value.ca:
            raise CsrRequestsCaError("BasicConstraints CA=true")
    elif isinstance(value, x509.KeyUsage) and (value.key_cert_sign or value.crl_sign):
        raise CsrRequestsCaError("KeyUsage keyCertSign/cRLSign")
