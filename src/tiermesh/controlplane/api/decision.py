"""The audit trail: one :class:`DecisionRecord` per policy decision, and how nodes ship them.

A record has the shape of an OPA decision-log event (``decision_id``, ``path``, ``input``,
``result``, ``timestamp``, ``timers``) plus what tiermesh needs to reproduce and trust it:
the bundle, etcd and snapshot versions it was made under, the node that made it, and a
per-node hash chain signed with the node's SVID key.

**Hash chain.** Every node numbers its records ``seq`` = 0, 1, 2 … and links each to the one
before: ``prev_hash`` is the previous record's ``hash`` (:data:`GENESIS_HASH` for ``seq``
0). ``hash`` is the lowercase hex SHA-256 of :func:`canonical_bytes` — the record's JSON
form without ``hash`` and ``signature``, keys sorted, no whitespace, UTF-8. Editing any
field breaks that record's hash; deleting a record breaks the next one's ``prev_hash``.

**Signature.** ``signature`` is base64 (standard alphabet, padded) of a DER ECDSA signature
with SHA-256 over :func:`canonical_bytes` — equivalently over the ``hash`` digest, since
ECDSA-SHA256 signs the SHA-256 of its message — made with the private key of the node's
X.509-SVID (EC P-256) at the time of the decision. The record names no certificate; the
collector checks the signature against the SVID the node ships it with.

**Shipping.** gRPC service :data:`AUDIT_SERVICE`, unary method :data:`SHIP_METHOD`
(:class:`ShipRequest` → :class:`ShipResponse`), messages as UTF-8 JSON like the node API.
Served over mutual TLS only. A node may ship only records whose ``node_spiffe_id`` is its
own client SVID's SPIFFE ID (else PERMISSION_DENIED and nothing is stored). Delivery is at
least once: the collector deduplicates by ``decision_id``, so shipping a batch again is
harmless. Status codes: UNAUTHENTICATED (no client SVID), PERMISSION_DENIED (another node's
record), INVALID_ARGUMENT (undecodable request; a record whose hash or signature does not
verify — the whole batch is refused and the first bad record named), RESOURCE_EXHAUSTED
(over :data:`MAX_SHIP_BYTES`), UNAVAILABLE (the collector cannot write its database).

Version :data:`DECISION_LOG_VERSION`: fields are only added with defaults within ``v1``;
an added field changes the canonical bytes of new records only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import uuid
from typing import Any, Final, Literal, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydantic import AwareDatetime, Field, field_validator

from tiermesh.controlplane.api._base import Contract

__all__ = [
    "AUDIT_SERVICE",
    "DECISION_LOG_VERSION",
    "GENESIS_HASH",
    "MAX_SHIP_BYTES",
    "MAX_SHIP_RECORDS",
    "SHIP_METHOD",
    "DecisionKind",
    "DecisionRecord",
    "ShipRequest",
    "ShipResponse",
    "audit_method_path",
    "canonical_bytes",
    "record_hash",
    "signature_valid",
    "signature_valid_for_hash",
]

DECISION_LOG_VERSION: Final = "v1"
"""Version of :class:`DecisionRecord` and of the shipping service."""

AUDIT_SERVICE: Final = f"tiermesh.audit.{DECISION_LOG_VERSION}.Collector"
"""Fully qualified gRPC service name of the control plane's audit collector."""

SHIP_METHOD: Final = "Ship"
"""Method name: store a batch of records."""

MAX_SHIP_RECORDS: Final = 1000
"""Most records one :class:`ShipRequest` may carry."""

MAX_SHIP_BYTES: Final = 16 * 1024 * 1024
"""Largest request message the collector accepts (gRPC max receive size)."""

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of a node's first record (``seq`` 0)."""

DecisionKind: TypeAlias = Literal["request", "plan", "model_verification"]
"""``request``: a request-time verdict (ext_authz); ``plan``: a compile-time routing plan;
``model_verification``: a node's check of its model file's signature (served or refused,
and why)."""

_HEX64 = r"^[0-9a-f]{64}$"
_CHAIN_FIELDS = frozenset({"hash", "signature"})


def audit_method_path(method: str = SHIP_METHOD) -> str:
    """The gRPC path of ``method`` (``/tiermesh.audit.v1.Collector/Ship``)."""
    return f"/{AUDIT_SERVICE}/{method}"


class DecisionRecord(Contract):
    """One policy decision, hash-chained and signed by the node that made it."""

    version: Literal["v1"] = DECISION_LOG_VERSION
    """Contract version of this record."""
    decision_id: uuid.UUID
    """Unique id of the decision (random UUID). The collector stores each id once."""
    path: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z_][A-Za-z0-9_/]*$")
    """The policy document that decided, ``/``-separated under ``data`` as OPA logs it:
    ``tiermesh/request/decision`` or ``tiermesh/routing/plan``."""
    input: Any = None
    """The policy input, *masked* before it was recorded (by default no prompt text: only
    detector findings and a SHA-256 of the body). JSON."""
    result: Any = None
    """The decision the policy returned (JSON); ``null`` when the document was undefined."""
    timestamp: AwareDatetime
    """When the decision was made, RFC 3339 in UTC (``…Z``)."""
    timers: dict[str, int] = Field(default_factory=dict)
    """Durations in nanoseconds by OPA's timer names, e.g. ``timer_rego_query_eval_ns``."""
    bundle_revision: str | None = None
    """Revision (digest) of the policy bundle the decision was made with."""
    etcd_revision: int | None = Field(default=None, ge=0)
    """etcd revision the bundle was read at."""
    snapshot_version: str | None = None
    """Version of the xDS snapshot the node was serving."""
    node_spiffe_id: str = Field(pattern=r"^spiffe://", max_length=2048)
    """SPIFFE ID of the node that made and signed the decision."""
    kind: DecisionKind
    """Which level of policy decided (see :data:`DecisionKind`)."""
    seq: int = Field(ge=0)
    """Position in the node's chain, 0 for its first record, +1 for each next one."""
    prev_hash: str = Field(pattern=_HEX64)
    """``hash`` of record ``seq - 1`` of the same node; :data:`GENESIS_HASH` for ``seq`` 0."""
    hash: str = Field(pattern=_HEX64)
    """Hex SHA-256 of :func:`canonical_bytes` of this record."""
    signature: str = Field(max_length=512)
    """Base64 DER ECDSA-SHA256 signature of :func:`canonical_bytes` by the node's SVID key."""

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC)


def canonical_bytes(record: DecisionRecord) -> bytes:
    """The bytes ``hash`` and ``signature`` cover: the record's JSON form (as pydantic
    serializes it) without those two fields, keys sorted at every level, separators ``,``
    and ``:``, non-ASCII as UTF-8. Pure; raises ``ValueError`` for NaN or infinity."""
    fields = record.model_dump(mode="json", exclude=set(_CHAIN_FIELDS))
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_hash(record: DecisionRecord) -> str:
    """Lowercase hex SHA-256 of :func:`canonical_bytes` — what ``record.hash`` must be."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def signature_valid(record: DecisionRecord, public_key: object) -> bool:
    """Whether ``record.signature`` is ``public_key``'s ECDSA-SHA256 signature of the
    record's canonical bytes (base64). False for a non-EC key or undecodable base64."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    try:
        signature = base64.b64decode(record.signature, validate=True)
        public_key.verify(signature, canonical_bytes(record), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_valid_for_hash(record: DecisionRecord, public_key: object) -> bool:
    """:func:`signature_valid` for a record whose ``hash`` the caller has already checked
    against its content (``record_hash(record) == record.hash``): the signature is checked
    against that digest instead of the canonical bytes made again. Given a record whose
    hash was not checked, the answer says nothing about its content."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        return False
    try:
        signature = base64.b64decode(record.signature, validate=True)
        digest = bytes.fromhex(record.hash)
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        return False
    return True


class ShipRequest(Contract):
    """A batch of one node's records, in chain order."""

    records: tuple[DecisionRecord, ...] = Field(min_length=1, max_length=MAX_SHIP_RECORDS)
    """The records; each must name the caller's SPIFFE ID."""
    signer_chains_pem: tuple[str, ...] = Field(default=(), max_length=16)
    """SVID chains (PEM, leaf first) that signed records in this batch, when that was not
    the client certificate of this connection (the node rotated its SVID since). Each must
    chain to the trust bundle and name the caller's SPIFFE ID, and a record signed by it
    must fall within its validity."""


class ShipResponse(Contract):
    """What the collector did with a :class:`ShipRequest`; sent only once every record is
    durably stored (the node may then forget them)."""

    accepted: int = Field(ge=0)
    """Records stored by this call."""
    duplicates: int = Field(ge=0)
    """Records whose ``decision_id`` was already stored (an earlier delivery); ignored."""
