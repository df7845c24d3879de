"""The trust bundle: the set of root certificates that SVIDs of one trust domain chain to.

During a CA rollover the bundle holds the old and the new root; retiring a generation
removes its root. A :class:`TrustBundle` is immutable and thread-safe; share it freely.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import Store
from spiffe import TrustDomain, X509Bundle

from tiermesh.controlplane.identity.errors import InvalidBundleError
from tiermesh.controlplane.identity.generation import fingerprint
from tiermesh.controlplane.identity.spiffe_id import validate_trust_domain

__all__ = ["TrustBundle"]


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """Root certificates of ``trust_domain``, without duplicates, in insertion order.

    Construction raises :class:`InvalidTrustDomainError` for a bad name and
    :class:`InvalidBundleError` if it is empty or a certificate is not a CA.
    """

    trust_domain: str
    roots: tuple[x509.Certificate, ...]
    _store: Store = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        unique: dict[str, x509.Certificate] = {}
        for cert in self.roots:
            if not _is_ca(cert):
                raise InvalidBundleError(f"{cert.subject.rfc4514_string()} is not a CA certificate")
            unique.setdefault(fingerprint(cert), cert)
        if not unique:
            raise InvalidBundleError("a trust bundle needs at least one root")
        object.__setattr__(self, "roots", tuple(unique.values()))
        object.__setattr__(self, "_store", Store(list(unique.values())))

    @property
    def store(self) -> Store:
        """The roots as a ``cryptography.x509.verification.Store`` (built once)."""
        return self._store

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """SHA-256 fingerprints (hex) of the roots, in order."""
        return tuple(fingerprint(cert) for cert in self.roots)

    def to_pem(self) -> bytes:
        """The roots as concatenated PEM blocks."""
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in self.roots)

    def to_der(self) -> bytes:
        """The roots as concatenated DER (the Workload API's ``bundle`` field format)."""
        return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in self.roots)

    def to_spiffe(self) -> X509Bundle:
        """The same roots as a py-spiffe ``X509Bundle`` (a new, mutable object)."""
        return X509Bundle(TrustDomain(self.trust_domain), set(self.roots))

    @classmethod
    def from_pem(cls, trust_domain: str, data: bytes) -> TrustBundle:
        """Parse concatenated PEM root certificates.

        Raises:
            InvalidBundleError: unparseable, empty, or a non-CA certificate.
        """
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise InvalidBundleError(str(exc)) from exc
        return cls(trust_domain, tuple(certs))

    def with_roots(self, roots: Iterable[x509.Certificate]) -> TrustBundle:
        """A new bundle holding this bundle's roots and ``roots``."""
        return TrustBundle(self.trust_domain, (*self.roots, *roots))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca
