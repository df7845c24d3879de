"""One complete identity of the node: private key, SVID chain and trust bundle.

:func:`load_material` checks what a CA (or SPIRE) hands over before the agent adopts it: the
chain parses and is an X.509-SVID by py-spiffe's profile rules, the leaf certifies *our*
private key, the leaf is valid now, and a path leads from it to a root of the bundle
(``cryptography``'s verifier, client-certificate policy). Anything else raises
:class:`SvidRejectedError` and nothing changes.

:class:`SvidMaterial` is immutable and thread-safe. It holds the private key: its ``repr``
leaves the key out, and only :meth:`SvidMaterial.key_pem` / :meth:`SvidMaterial.key_der`
serialize it (for the local Workload API, SDS to the node's own Envoy, and 0600 files).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from spiffe import SpiffeId, TrustDomain, X509Bundle, X509Svid
from spiffe.errors import PySpiffeError

from tiermesh.agents.identity.errors import SpiffeIdChangedError, SvidRejectedError

__all__ = ["PrivateKey", "SvidMaterial", "load_material"]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""Key types an SVID may certify (tiermesh issues P-256; SPIRE may hand over others)."""

_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


@dataclass(frozen=True, slots=True)
class SvidMaterial:
    """An X.509-SVID with its private key and the roots of its trust domain.

    Build it with :func:`load_material`, which checks every invariant; ``chain`` is leaf
    first, then intermediates (no root); ``bundle`` holds the trust domain's roots.
    """

    spiffe_id: str
    private_key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    bundle: tuple[x509.Certificate, ...]

    @property
    def trust_domain(self) -> str:
        """The trust domain name (no scheme), e.g. ``mesh.example``."""
        return SpiffeId(self.spiffe_id).trust_domain.name

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def serial(self) -> int:
        """The leaf's serial number."""
        return self.leaf.serial_number

    @property
    def not_before(self) -> dt.datetime:
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    @property
    def rotation_due_at(self) -> dt.datetime:
        """Half-life of the leaf: ``not_before + (not_after - not_before) / 2`` (UTC)."""
        return self.not_before + (self.not_after - self.not_before) / 2

    def chain_pem(self) -> bytes:
        """The chain as concatenated PEM (Envoy ``certificate_chain``)."""
        return b"".join(cert.public_bytes(_PEM) for cert in self.chain)

    def chain_der(self) -> bytes:
        """The chain as concatenated DER (Workload API ``x509_svid``)."""
        return b"".join(cert.public_bytes(_DER) for cert in self.chain)

    def bundle_pem(self) -> bytes:
        """The roots as concatenated PEM (Envoy ``trusted_ca``)."""
        return b"".join(cert.public_bytes(_PEM) for cert in self.bundle)

    def bundle_der(self) -> bytes:
        """The roots as concatenated DER (Workload API ``bundle``)."""
        return b"".join(cert.public_bytes(_DER) for cert in self.bundle)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM. Handle as a secret."""
        return self.private_key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def key_der(self) -> bytes:
        """The private key, unencrypted PKCS#8 DER (Workload API ``x509_svid_key``)."""
        return self.private_key.private_bytes(
            _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def to_x509_svid(self) -> X509Svid:
        """The same SVID as a py-spiffe ``X509Svid`` (a new object)."""
        return X509Svid(SpiffeId(self.spiffe_id), list(self.chain), self.private_key)

    def to_x509_bundle(self) -> X509Bundle:
        """The roots as a py-spiffe ``X509Bundle`` (a new, mutable object)."""
        return X509Bundle(TrustDomain(self.trust_domain), set(self.bundle))


def load_material(
    private_key: PrivateKey,
    chain: bytes | Sequence[x509.Certificate],
    bundle: bytes | Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    expected_spiffe_id: str | None = None,
) -> SvidMaterial:
    """Check and assemble an identity; ``chain``/``bundle`` as PEM bytes or certificates.

    ``now`` must be timezone-aware. ``expected_spiffe_id`` (the identity held so far) makes a
    renewal that changes the SPIFFE ID fail with :class:`SpiffeIdChangedError`.

    Raises:
        SvidRejectedError: any check failed (the message says which).
        ValueError: ``now`` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    certs = _certificates(chain, "chain")
    roots = _certificates(bundle, "bundle")
    for root in roots:
        if not _is_ca(root):
            raise SvidRejectedError(f"bundle entry {root.subject.rfc4514_string()} is not a CA")
    key_der = private_key.private_bytes(
        _DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain_der = b"".join(cert.public_bytes(_DER) for cert in certs)
    try:
        svid = X509Svid.parse_raw(chain_der, key_der)
    except PySpiffeError as exc:
        raise SvidRejectedError(f"not an X.509-SVID: {exc}") from exc
    leaf = certs[0]
    if _spki(leaf.public_key()) != _spki(private_key.public_key()):
        raise SvidRejectedError("the leaf certifies a different key than the node's own")
    spiffe_id = str(svid.spiffe_id)
    if expected_spiffe_id is not None and spiffe_id != expected_spiffe_id:
        raise SpiffeIdChangedError(expected_spiffe_id, spiffe_id)
    if now < leaf.not_valid_before_utc:
        raise SvidRejectedError(f"not valid before {leaf.not_valid_before_utc.isoformat()}")
    if now > leaf.not_valid_after_utc:
        raise SvidRejectedError(f"expired at {leaf.not_valid_after_utc.isoformat()}")
    verifier = PolicyBuilder().store(Store(list(roots))).time(now).build_client_verifier()
    try:
        verifier.verify(leaf, certs[1:])
    except VerificationError as exc:
        raise SvidRejectedError(f"the chain does not lead to a bundle root: {exc}") from exc
    return SvidMaterial(spiffe_id, private_key, tuple(certs), tuple(roots))


def _certificates(value: bytes | Sequence[x509.Certificate], what: str) -> list[x509.Certificate]:
    if isinstance(value, bytes):
        try:
            certs = x509.load_pem_x509_certificates(value)
        except ValueError as exc:
            raise SvidRejectedError(f"unparseable {what}: {exc}") from exc
    else:
        certs = list(value)
    if not certs:
        raise SvidRejectedError(f"empty {what}")
    return certs


def _spki(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    data: bytes = public_bytes(_DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return data


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca
