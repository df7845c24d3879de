"""CA generations: one self-signed root and the intermediate it signs.

A rollover creates a new generation; the trust bundle carries the roots of every generation
the CA still holds. Root and intermediate both carry the trust domain's SPIFFE ID
(``spiffe://<td>``) as their only URI SAN, as the X.509-SVID spec allows for signing certs.

Profiles (all X.509 v3, SHA-256 for P-256, SHA-384 for P-384):

- root: BasicConstraints CA=true, pathLen=1 (critical); KeyUsage keyCertSign+cRLSign
  (critical); SKI; AKI = own SKI.
- intermediate: BasicConstraints CA=true, pathLen=0 (critical); KeyUsage keyCertSign+cRLSign
  (critical); SKI; AKI = root's SKI.

Everything here is immutable and thread-safe.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiermesh.controlplane.identity.errors import KeyStoreFormatError
from tiermesh.controlplane.identity.spiffe_id import trust_domain_id

__all__ = [
    "CaGeneration",
    "CaState",
    "GenerationRecord",
    "KeyAlgorithm",
    "fingerprint",
    "new_generation",
    "signature_hash",
]

_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class KeyAlgorithm(enum.StrEnum):
    """Key type for the CA's root and intermediate."""

    P256 = "ec-p256"
    P384 = "ec-p384"

    def generate(self) -> ec.EllipticCurvePrivateKey:
        """A fresh private key of this type."""
        curve: ec.EllipticCurve = ec.SECP256R1() if self is KeyAlgorithm.P256 else ec.SECP384R1()
        return ec.generate_private_key(curve)


def signature_hash(key: ec.EllipticCurvePrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest matched to a CA key's curve (SHA-384 for P-384, else SHA-256)."""
    if isinstance(key.curve, ec.SECP384R1):
        return hashes.SHA384()
    return hashes.SHA256()


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True, slots=True)
class CaGeneration:
    """A root certificate, its signing intermediate, and both private keys.

    ``id`` is the root's SHA-256 fingerprint: stable across replicas and exports.
    Holds private keys: never log or serialise it outside ``keystore``.
    """

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @property
    def id(self) -> str:
        """The root's SHA-256 fingerprint (hex)."""
        return fingerprint(self.root)

    def check(self) -> None:
        """Check that the keys match the certificates and the root signed the intermediate.

        Raises:
            KeyStoreFormatError: naming the inconsistency (data loaded from storage).
        """
        if self.root.public_key() != self.root_key.public_key():
            raise KeyStoreFormatError("the root key does not match the root certificate")
        if self.intermediate.public_key() != self.intermediate_key.public_key():
            raise KeyStoreFormatError(
                "the intermediate key does not match the intermediate certificate"
            )
        try:
            self.intermediate.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise KeyStoreFormatError(f"the root did not sign the intermediate: {exc}") from exc


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """A generation plus what this CA knows about the SVIDs it issued.

    ``latest_expiry`` is the latest ``not_after`` of any SVID issued by the generation's
    intermediate (``None``: none issued); the root may be retired once it has passed.
    """

    generation: CaGeneration
    issued: int = 0
    latest_expiry: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CaState:
    """Everything needed to recreate a CA: its trust domain and generations, oldest first.

    The last generation is the active (signing) one. Holds private keys.
    """

    trust_domain: str
    generations: tuple[GenerationRecord, ...]

    def __post_init__(self) -> None:
        if not self.generations:
            raise KeyStoreFormatError("a CA state needs at least one generation")

    def with_usage_of(self, other: CaState) -> CaState:
        """This state, each generation's issuance record raised to ``other``'s where
        ``other`` holds the same generation (the larger count, the later expiry).

        For a replica that adopts a state another replica saved: the SVIDs it issued itself
        since its last save must still hold back the retirement of their root.
        Generations only ``other`` holds are not brought back.
        """
        theirs = {record.generation.id: record for record in other.generations}
        merged = []
        for record in self.generations:
            seen = theirs.get(record.generation.id)
            if seen is None:
                merged.append(record)
                continue
            expiries = [e for e in (record.latest_expiry, seen.latest_expiry) if e is not None]
            merged.append(
                GenerationRecord(
                    record.generation,
                    max(record.issued, seen.issued),
                    max(expiries, default=None),
                )
            )
        return CaState(self.trust_domain, tuple(merged))


def _name(trust_domain: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tiermesh"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"tiermesh {role} CA"),
        ]
    )


def new_generation(
    trust_domain: str,
    algorithm: KeyAlgorithm,
    *,
    now: dt.datetime,
    root_ttl: dt.timedelta,
    intermediate_ttl: dt.timedelta,
    backdate: dt.timedelta,
) -> CaGeneration:
    """Create a root valid ``[now - backdate, now + root_ttl]`` and an intermediate valid
    ``[now - backdate, now + intermediate_ttl]`` (``intermediate_ttl <= root_ttl``).

    Raises:
        InvalidTrustDomainError: if ``trust_domain`` breaks the naming rule.
    """
    td_uri = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(trust_domain_id(trust_domain))]
    )
    not_before = now - backdate

    root_key = algorithm.generate()
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root_name = _name(trust_domain, "root")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + root_ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(root_ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .add_extension(td_uri, critical=False)
        .sign(root_key, signature_hash(root_key))
    )

    inter_key = algorithm.generate()
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(_name(trust_domain, "intermediate"))
        .issuer_name(root_name)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + intermediate_ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        )
        .add_extension(td_uri, critical=False)
        .sign(root_key, signature_hash(root_key))
    )
    return CaGeneration(root, root_key, intermediate, inter_key)
