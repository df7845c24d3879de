"""The certificate authority: issues X.509-SVIDs to nodes and rolls its keys over.

The SPIFFE ID of an SVID comes from the *authenticated* node id the caller passes (join
token, existing SVID), never from the CSR. Leaf profile: one URI SAN (the node's SPIFFE ID)
plus one DNS SAN (``<node-id>.node.<td>``), BasicConstraints CA=false (critical), KeyUsage
digitalSignature (critical; plus keyEncipherment for RSA keys), EKU serverAuth+clientAuth,
SKI, AKI = the intermediate's SKI, subject ``O=tiermesh, CN=<node-id>``.

Rollover: :meth:`LocalCertificateAuthority.rotate` makes a new root+intermediate the signer;
the bundle keeps every held root. :meth:`LocalCertificateAuthority.retire` drops an old root
once no SVID it issued can still be live (the CA records the latest expiry per generation).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.csr import (
    MAX_CSR_BYTES,
    SvidPublicKey,
    check_csr,
    check_public_key,
    load_csr,
)
from tiermesh.controlplane.identity.errors import (
    CaExpiredError,
    InvalidCaConfigError,
    InvalidTtlError,
    RootInUseError,
    UnknownGenerationError,
)
from tiermesh.controlplane.identity.generation import (
    CaGeneration,
    CaState,
    GenerationRecord,
    KeyAlgorithm,
    new_generation,
    signature_hash,
)
from tiermesh.controlplane.identity.keystore import export_encrypted, load_encrypted
from tiermesh.controlplane.identity.spiffe_id import NodeIdentity, validate_trust_domain

__all__ = [
    "CaConfig",
    "CertificateAuthority",
    "Clock",
    "IssuedSvid",
    "LocalCertificateAuthority",
    "utc_now",
]

Clock = Callable[[], dt.datetime]
"""Returns the current time as a timezone-aware datetime."""


def utc_now() -> dt.datetime:
    """The system clock, in UTC."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class CaConfig:
    """CA settings. Construction raises :class:`InvalidCaConfigError` /
    :class:`InvalidTrustDomainError` on out-of-range values.

    ``backdate`` moves every ``not_before`` into the past to absorb clock skew between the
    CA and its peers. ``svid_ttl`` is the default leaf lifetime, ``max_svid_ttl`` the most a
    caller may ask for. Rotate the CA before the intermediate expires (``renewal.
    needs_rotation(ca.active.intermediate, now)`` says when half its life has passed).
    """

    trust_domain: str
    key_algorithm: KeyAlgorithm = KeyAlgorithm.P256
    root_ttl: dt.timedelta = dt.timedelta(days=365)
    intermediate_ttl: dt.timedelta = dt.timedelta(days=180)
    svid_ttl: dt.timedelta = dt.timedelta(hours=1)
    max_svid_ttl: dt.timedelta = dt.timedelta(hours=24)
    backdate: dt.timedelta = dt.timedelta(seconds=30)

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        zero = dt.timedelta(0)
        for name in ("root_ttl", "intermediate_ttl", "svid_ttl", "max_svid_ttl"):
            if getattr(self, name) <= zero:
                raise InvalidCaConfigError(name, "must be positive")
        if self.backdate < zero or self.backdate > dt.timedelta(hours=1):
            raise InvalidCaConfigError("backdate", "must be within [0, 1 h]")
        if self.intermediate_ttl > self.root_ttl:
            raise InvalidCaConfigError("intermediate_ttl", "must not exceed root_ttl")
        if self.svid_ttl > self.max_svid_ttl:
            raise InvalidCaConfigError("svid_ttl", "must not exceed max_svid_ttl")
        if self.max_svid_ttl >= self.intermediate_ttl:
            raise InvalidCaConfigError("max_svid_ttl", "must be shorter than intermediate_ttl")


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    """An X.509-SVID as issued: the leaf and the intermediate that signed it.

    The node keeps the private key; the CA never sees it. Immutable.
    """

    node_id: str
    spiffe_id: str
    certificate: x509.Certificate
    intermediate: x509.Certificate
    generation_id: str

    @property
    def serial(self) -> int:
        """The leaf's serial number (random, 159 bits)."""
        return self.certificate.serial_number

    @property
    def not_before(self) -> dt.datetime:
        """Start of validity (UTC)."""
        return self.certificate.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of validity (UTC)."""
        return self.certificate.not_valid_after_utc

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf first, then the intermediate (the root is in the bundle, not the chain)."""
        return (self.certificate, self.intermediate)

    def chain_pem(self) -> bytes:
        """The chain as concatenated PEM (Envoy SDS ``certificate_chain``)."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def chain_der(self) -> bytes:
        """The chain as concatenated DER (Workload API ``x509_svid`` field)."""
        return b"".join(c.public_bytes(serialization.Encoding.DER) for c in self.chain)


class CertificateAuthority(Protocol):
    """What the control plane needs from a CA (in-process keys, or later an upstream one)."""

    @property
    def trust_domain(self) -> str:
        """The trust domain every SVID belongs to."""
        ...

    def issue(self, csr: bytes, node_id: str, *, ttl: dt.timedelta | None = None) -> IssuedSvid:
        """Issue an SVID for the authenticated ``node_id`` from a PEM/DER ``csr``.

        Raises:
            InvalidNodeIdError, CsrRejectedError (subclasses), InvalidTtlError,
            CaExpiredError. Nothing is issued when it raises.
        """
        ...

    def bundle(self) -> TrustBundle:
        """The current trust bundle (every root a live SVID may chain to)."""
        ...


@dataclass(slots=True)
class _Usage:
    issued: int
    latest_expiry: dt.datetime | None


class LocalCertificateAuthority:
    """A CA whose keys live in this process.

    Thread safety: every method may be called from any thread. Signing and all state
    changes are serialised by one lock; CSR parsing and signature checks run outside it.
    Returned objects are immutable snapshots.
    """

    def __init__(self, config: CaConfig, state: CaState, *, clock: Clock = utc_now) -> None:
        """Adopt ``state`` (e.g. loaded from storage). Prefer :meth:`create` for a new CA.

        Raises:
            InvalidCaConfigError: ``state`` belongs to a different trust domain.
            KeyStoreFormatError: a generation's keys and certificates do not match.
        """
        if state.trust_domain != config.trust_domain:
            raise InvalidCaConfigError(
                "trust_domain",
                f"state is for {state.trust_domain!r}, config for {config.trust_domain!r}",
            )
        for record in state.generations:
            record.generation.check()
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._generations: dict[str, CaGeneration] = {}
        self._usage: dict[str, _Usage] = {}
        for record in state.generations:
            self._generations[record.generation.id] = record.generation
            self._usage[record.generation.id] = _Usage(record.issued, record.latest_expiry)
        self._active_id = state.generations[-1].generation.id

    @classmethod
    def create(cls, config: CaConfig, *, clock: Clock = utc_now) -> LocalCertificateAuthority:
        """A new CA with one freshly generated generation."""
        generation = new_generation(
            config.trust_domain,
            config.key_algorithm,
            now=_now(clock),
            root_ttl=config.root_ttl,
            intermediate_ttl=config.intermediate_ttl,
            backdate=config.backdate,
        )
        return cls(
            config, CaState(config.trust_domain, (GenerationRecord(generation),)), clock=clock
        )

    @classmethod
    def load_encrypted(
        cls, config: CaConfig, data: bytes, passphrase: bytes | str, *, clock: Clock = utc_now
    ) -> LocalCertificateAuthority:
        """Recreate a CA from :meth:`export_encrypted` output.

        Raises:
            WrongPassphraseError, KeyStoreFormatError, InvalidCaConfigError.
        """
        return cls(config, load_encrypted(data, passphrase), clock=clock)

    def export_encrypted(self, passphrase: bytes | str) -> bytes:
        """All generations, keys and issuance records, encrypted with ``passphrase``
        (scrypt + AES-256-GCM, see ``keystore``). Safe to store in etcd."""
        return export_encrypted(self.state(), passphrase)

    @property
    def config(self) -> CaConfig:
        """The settings this CA was created with."""
        return self._config

    @property
    def trust_domain(self) -> str:
        """The trust domain every SVID belongs to."""
        return self._config.trust_domain

    @property
    def active(self) -> CaGeneration:
        """The generation that signs new SVIDs."""
        with self._lock:
            return self._generations[self._active_id]

    @property
    def generations(self) -> tuple[CaGeneration, ...]:
        """Every held generation, oldest first; the last is active."""
        with self._lock:
            return tuple(self._generations.values())

    def state(self) -> CaState:
        """A consistent snapshot of everything needed to recreate this CA."""
        with self._lock:
            return CaState(
                self._config.trust_domain,
                tuple(
                    GenerationRecord(gen, self._usage[gid].issued, self._usage[gid].latest_expiry)
                    for gid, gen in self._generations.items()
                ),
            )

    def bundle(self) -> TrustBundle:
        """Roots of every held generation (old and new during a rollover)."""
        with self._lock:
            roots = tuple(gen.root for gen in self._generations.values())
        return TrustBundle(self._config.trust_domain, roots)

    def issue(self, csr: bytes, node_id: str, *, ttl: dt.timedelta | None = None) -> IssuedSvid:
        """Issue an SVID for the authenticated ``node_id`` from a PEM/DER ``csr``.

        The CSR contributes only its public key (rules in ``csr``). The lifetime is ``ttl``
        (default ``config.svid_ttl``), cut short at the intermediate's own expiry.

        Raises:
            InvalidNodeIdError, CsrRejectedError (subclasses), InvalidTtlError,
            CaExpiredError. Nothing is issued when it raises.
        """
        identity = NodeIdentity(self._config.trust_domain, node_id)
        request = load_csr(csr, max_bytes=MAX_CSR_BYTES)
        key = check_csr(request, identity)
        return self._sign(identity, key, ttl)

    def issue_for_key(
        self, public_key: object, node_id: str, *, ttl: dt.timedelta | None = None
    ) -> IssuedSvid:
        """Issue an SVID for an already-verified ``public_key`` (no CSR).

        The caller vouches that the node holds the matching private key.

        Raises:
            InvalidNodeIdError, UnsupportedKeyError, InvalidTtlError, CaExpiredError.
        """
        identity = NodeIdentity(self._config.trust_domain, node_id)
        return self._sign(identity, check_public_key(public_key), ttl)

    def rotate(self) -> CaGeneration:
        """Create a new root+intermediate and make it the signer; old roots stay trusted."""
        generation = new_generation(
            self._config.trust_domain,
            self._config.key_algorithm,
            now=_now(self._clock),
            root_ttl=self._config.root_ttl,
            intermediate_ttl=self._config.intermediate_ttl,
            backdate=self._config.backdate,
        )
        with self._lock:
            self._generations[generation.id] = generation
            self._usage[generation.id] = _Usage(0, None)
            self._active_id = generation.id
        return generation

    def retirable_at(self, generation_id: str) -> dt.datetime | None:
        """When the generation's last issued SVID expires (``None``: it issued none).

        Raises:
            UnknownGenerationError.
        """
        with self._lock:
            usage = self._usage.get(generation_id)
            if usage is None:
                raise UnknownGenerationError(generation_id)
            return usage.latest_expiry

    def retire(self, generation_id: str, *, force: bool = False) -> None:
        """Remove an old generation: its root leaves the bundle, its keys are dropped.

        Without ``force`` this is refused while any SVID the generation issued is unexpired
        (by this CA's own issuance record). ``force`` is for a compromised key: SVIDs that
        chain to it stop verifying at once. The active generation is never retired.

        Raises:
            UnknownGenerationError, RootInUseError.
        """
        now = _now(self._clock)
        with self._lock:
            usage = self._usage.get(generation_id)
            if usage is None:
                raise UnknownGenerationError(generation_id)
            if generation_id == self._active_id:
                raise RootInUseError(generation_id, "it is the active signing generation")
            if not force and usage.latest_expiry is not None and usage.latest_expiry >= now:
                raise RootInUseError(
                    generation_id,
                    f"{usage.issued} SVIDs issued, the last expires at "
                    f"{usage.latest_expiry.isoformat()}",
                )
            del self._generations[generation_id]
            del self._usage[generation_id]

    def _sign(
        self, identity: NodeIdentity, key: SvidPublicKey, ttl: dt.timedelta | None
    ) -> IssuedSvid:
        lifetime = self._config.svid_ttl if ttl is None else ttl
        if lifetime <= dt.timedelta(0) or lifetime > self._config.max_svid_ttl:
            raise InvalidTtlError(lifetime, self._config.max_svid_ttl)
        now = _now(self._clock)
        with self._lock:
            generation = self._generations[self._active_id]
            inter = generation.intermediate
            inter_end = inter.not_valid_after_utc
            if inter_end <= now:
                raise CaExpiredError(inter_end, now)
            not_before = max(now - self._config.backdate, inter.not_valid_before_utc)
            not_after = min(now + lifetime, inter_end)
            cert = _leaf_builder(identity, key, inter, not_before, not_after).sign(
                generation.intermediate_key, signature_hash(generation.intermediate_key)
            )
            usage = self._usage[generation.id]
            usage.issued += 1
            if usage.latest_expiry is None or not_after > usage.latest_expiry:
                usage.latest_expiry = not_after
        return IssuedSvid(identity.node_id, identity.spiffe_id, cert, inter, generation.id)


def _now(clock: Clock) -> dt.datetime:
    now = clock()
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidCaConfigError("clock", "must return timezone-aware datetimes")
    return now.astimezone(dt.UTC)


def _leaf_builder(
    identity: NodeIdentity,
    key: SvidPublicKey,
    issuer: x509.Certificate,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tiermesh"),
                    x509.NameAttribute(NameOID.COMMON_NAME, identity.node_id),
                ]
            )
        )
        .issuer_name(issuer.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(identity.spiffe_id),
                    x509.DNSName(identity.dns_name),
                ]
            ),
            critical=False,
        )
    )
