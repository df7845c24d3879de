"""Sealing records into a node's chain, signing them with its SVID key, verifying them.

:func:`seal` turns the parts of a decision into a :class:`DecisionRecord` at a given chain
position: it computes ``hash`` (see :mod:`tiermesh.controlplane.api.decision`) and signs it
with the current :class:`SigningIdentity`. :func:`verify` checks one record against the
SVID chain that signed it (and optionally the trust bundle).

A :class:`Signer` supplies the identity to sign with *now*: :class:`StaticSigner` (one
fixed key, tests and tools) or :class:`StoreSigner` (the agent's live
:class:`~tiermesh.agents.identity.SvidStore`, so records follow SVID rotation). Only EC
P-256 keys sign records. Every function here is pure and thread-safe.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tiermesh.agents.decisionlog.errors import SignatureInvalid
from tiermesh.agents.identity import SvidStore
from tiermesh.controlplane.api.decision import (
    GENESIS_HASH,
    DecisionKind,
    DecisionRecord,
    canonical_bytes,
    record_hash,
    signature_valid,
)

__all__ = [
    "DecisionEntry",
    "Signer",
    "SigningIdentity",
    "StaticSigner",
    "StoreSigner",
    "certificate_fingerprint",
    "leaf_spiffe_id",
    "seal",
    "sign",
    "signature_valid",
    "verify",
]

_ECDSA_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """What the caller knows about a decision; the log adds the node, chain and signature.

    ``input`` must already be JSON (dicts, lists, str, int, float, bool, None); the log
    masks it before recording. ``timestamp`` defaults to the time of the append.
    """

    path: str
    input: Any
    result: Any
    kind: DecisionKind = "request"
    timers: dict[str, int] = field(default_factory=dict)
    bundle_revision: str | None = None
    etcd_revision: int | None = None
    snapshot_version: str | None = None
    decision_id: uuid.UUID = field(default_factory=uuid.uuid4)
    timestamp: dt.datetime | None = None


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's DER (names a signer in the spool and the database)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def leaf_spiffe_id(certificate: x509.Certificate) -> str | None:
    """The certificate's single ``spiffe://`` URI SAN, or None."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = list(san.value.get_values_for_type(x509.UniformResourceIdentifier))
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    return spiffe[0] if len(spiffe) == 1 else None


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """A node's SVID key and chain (leaf first) as used to sign records. Immutable."""

    spiffe_id: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    _fingerprint: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            raise ValueError("decision records are signed with EC P-256 keys only")
        if not self.chain:
            raise ValueError("a signing identity needs its SVID chain")
        # Asked on every append: computed once (the DER encoding and its hash cost ~40 us).
        object.__setattr__(self, "_fingerprint", certificate_fingerprint(self.chain[0]))

    @property
    def fingerprint(self) -> str:
        """:func:`certificate_fingerprint` of the leaf."""
        return self._fingerprint

    def chain_pem(self) -> str:
        """The chain as concatenated PEM, leaf first."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain).decode()


class Signer(Protocol):
    """Supplies the identity to sign the next record with. Called on the log's event loop
    for every append; must be fast and must not block."""

    def identity(self) -> SigningIdentity: ...


class StaticSigner:
    """Always the same identity."""

    def __init__(self, identity: SigningIdentity) -> None:
        self._identity = identity

    def identity(self) -> SigningIdentity:
        return self._identity


class StoreSigner:
    """The agent's current SVID from ``store``. Bound to the store's event loop.

    Raises :class:`~tiermesh.agents.identity.NoSvidError` before the first SVID, and
    ``ValueError`` when the SVID's key is not EC P-256.
    """

    def __init__(self, store: SvidStore) -> None:
        self._store = store
        self._cached: tuple[int, SigningIdentity] | None = None

    def identity(self) -> SigningIdentity:
        version = self._store.version
        if self._cached is None or self._cached[0] != version:
            material = self._store.require()
            key = material.private_key
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("decision records are signed with EC P-256 keys only")
            self._cached = (version, SigningIdentity(material.spiffe_id, key, material.chain))
        return self._cached[1]


def _signed(record: DecisionRecord, key: ec.EllipticCurvePrivateKey) -> DecisionRecord:
    digest = hashlib.sha256(canonical_bytes(record)).digest()
    signature = key.sign(digest, _ECDSA_PREHASHED)
    return record.model_copy(
        update={"hash": digest.hex(), "signature": base64.b64encode(signature).decode()}
    )


def seal(
    entry: DecisionEntry,
    masked_input: Any,
    *,
    seq: int,
    prev_hash: str,
    identity: SigningIdentity,
    now: dt.datetime,
) -> DecisionRecord:
    """The record for ``entry`` at chain position ``seq`` after ``prev_hash``, hashed and
    signed by ``identity``. ``masked_input`` replaces ``entry.input``.

    Raises:
        pydantic.ValidationError: the parts break the contract (bad path, naive timestamp).
        ValueError: the input or result holds NaN or infinity.
    """
    record = DecisionRecord(
        decision_id=entry.decision_id,
        path=entry.path,
        input=masked_input,
        result=entry.result,
        timestamp=entry.timestamp or now,
        timers=entry.timers,
        bundle_revision=entry.bundle_revision,
        etcd_revision=entry.etcd_revision,
        snapshot_version=entry.snapshot_version,
        node_spiffe_id=identity.spiffe_id,
        kind=entry.kind,
        seq=seq,
        prev_hash=prev_hash,
        hash=GENESIS_HASH,
        signature="",
    )
    return _signed(record, identity.private_key)


def sign(record: DecisionRecord, key: ec.EllipticCurvePrivateKey) -> DecisionRecord:
    """``record`` with ``hash`` recomputed and ``signature`` made by ``key``."""
    return _signed(record, key)


def verify(
    record: DecisionRecord, chain_pem: str | bytes, bundle: str | bytes | None = None
) -> None:
    """Check that ``record`` is intact and was signed by the SVID ``chain_pem`` (leaf first).

    Checks: ``hash`` equals the recomputed hash; the leaf's SPIFFE ID is the record's
    ``node_spiffe_id``; the signature verifies with the leaf's key; and, when ``bundle``
    (PEM roots) is given, the chain leads to one of its roots and the leaf was valid at the
    record's ``timestamp`` (an SVID that has since expired still vouches for old records).

    Raises:
        SignatureInvalid: naming the first check that failed.
    """
    decision = str(record.decision_id)
    if record_hash(record) != record.hash:
        raise SignatureInvalid(decision, "hash does not match the record's content")
    data = chain_pem.encode() if isinstance(chain_pem, str) else chain_pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise SignatureInvalid(decision, f"unparseable signer chain: {exc}") from exc
    leaf = certs[0]
    if leaf_spiffe_id(leaf) != record.node_spiffe_id:
        raise SignatureInvalid(
            decision, f"signer is {leaf_spiffe_id(leaf)!r}, not {record.node_spiffe_id!r}"
        )
    if not signature_valid(record, leaf.public_key()):
        raise SignatureInvalid(decision, "signature does not verify with the signer's key")
    if bundle is None:
        return
    roots_pem = bundle.encode() if isinstance(bundle, str) else bundle
    try:
        roots = x509.load_pem_x509_certificates(roots_pem)
        verifier = (
            PolicyBuilder().store(Store(roots)).time(record.timestamp).build_client_verifier()
        )
        verifier.verify(leaf, certs[1:])
    except (ValueError, VerificationError) as exc:
        raise SignatureInvalid(
            decision, f"signer does not chain to the trust bundle at {record.timestamp}: {exc}"
        ) from exc
