"""The node's decision log: every policy decision, masked, chained, signed, durable, shipped.

- :class:`DecisionLog` appends :class:`DecisionEntry` parts as signed
  :class:`~tiermesh.controlplane.api.DecisionRecord` lines to an on-disk spool and returns
  only once they are fsynced (group commit); recovery cuts torn writes and quarantines
  corrupt segments.
- :class:`Masking` (:data:`DEFAULT_RULES`: no prompt text) runs on every input first.
- :func:`seal` / :func:`sign` / :func:`verify`: the hash chain and the ECDSA signature with
  the node's SVID key (:class:`StoreSigner` follows rotation).
- :class:`Shipper` sends the spool to the control plane at least once through a
  :class:`ShipClient` (:class:`GrpcShipClient`: mTLS gRPC), resuming from a cursor file.
- :func:`read_spool` / :func:`load_signers` read a spool for tools (``tiermesh audit``).

Every error derives from :class:`DecisionLogError`.
"""

from __future__ import annotations

from tiermesh.agents.decisionlog.client import RETRYABLE_CODES, GrpcShipClient, ShipClient
from tiermesh.agents.decisionlog.errors import (
    DecisionLogClosed,
    DecisionLogError,
    DecisionLogFailed,
    MaskingError,
    ShipFailed,
    SignatureInvalid,
    SpoolCorruptedError,
)
from tiermesh.agents.decisionlog.log import DEFAULT_SEGMENT_BYTES, DecisionLog, QuarantinedSegment
from tiermesh.agents.decisionlog.masking import (
    DEFAULT_RULES,
    MaskAction,
    Masking,
    MaskRule,
    hash_value,
)
from tiermesh.agents.decisionlog.shipper import Shipper
from tiermesh.agents.decisionlog.signing import (
    DecisionEntry,
    Signer,
    SigningIdentity,
    StaticSigner,
    StoreSigner,
    certificate_fingerprint,
    leaf_spiffe_id,
    seal,
    sign,
    signature_valid,
    verify,
)
from tiermesh.agents.decisionlog.spool import (
    SpooledRecord,
    SpoolPaths,
    list_segments,
    load_signers,
    read_cursor,
    read_spool,
)

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_SEGMENT_BYTES",
    "RETRYABLE_CODES",
    "DecisionEntry",
    "DecisionLog",
    "DecisionLogClosed",
    "DecisionLogError",
    "DecisionLogFailed",
    "GrpcShipClient",
    "MaskAction",
    "MaskRule",
    "Masking",
    "MaskingError",
    "QuarantinedSegment",
    "ShipClient",
    "ShipFailed",
    "Shipper",
    "SignatureInvalid",
    "Signer",
    "SigningIdentity",
    "SpoolCorruptedError",
    "SpoolPaths",
    "SpooledRecord",
    "StaticSigner",
    "StoreSigner",
    "certificate_fingerprint",
    "hash_value",
    "leaf_spiffe_id",
    "list_segments",
    "load_signers",
    "read_cursor",
    "read_spool",
    "seal",
    "sign",
    "signature_valid",
    "verify",
]
