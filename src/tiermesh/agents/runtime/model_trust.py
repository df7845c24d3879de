"""Who the node trusts to sign its model file, and how a verification is recorded.

Trusted signers are the ``signers`` of every catalog backend this node hosts
(``Backend.node`` equal to the node id) plus node.yaml's ``model_server.trusted_keys``. A
signature is demanded when any of those backends names a signer, when a trusted key is
configured, or when ``model_server.require_signature`` is set. A catalog signer that cannot
be parsed is left out (logged): it can never make a model acceptable, and the demand it
makes still stands.

Each verification outcome is written to the node's decision log as a ``model_verification``
record (path :data:`VERIFICATION_PATH`): input = the model, its signature and why it was
checked; result = outcome, reason, digest, signer, whether it is served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tiermesh.agents.decisionlog import DecisionEntry
from tiermesh.agents.models.guard import VerificationOutcome
from tiermesh.controlplane.api import Catalog, ModelSigner
from tiermesh.modelsig import CertificateSigner, KeySigner, TrustedSigner

__all__ = ["VERIFICATION_PATH", "NodeTrust", "node_trust", "verification_entry"]

log = logging.getLogger("tiermesh.agent")

VERIFICATION_PATH = "tiermesh/model/verification"
"""The ``path`` of model verification records."""

NodeTrust = tuple[tuple[TrustedSigner, ...], bool]
"""(trusted signers, whether a signature is demanded)."""


def _signer(backend: str, signer: ModelSigner) -> TrustedSigner | None:
    try:
        if signer.public_key is not None:
            return KeySigner.from_pem(signer.public_key)
        identity, roots = signer.certificate_identity, signer.roots
        if identity is None or roots is None:  # the contract allows no such signer
            return None
        return CertificateSigner.from_pem(identity, roots)
    except ValueError as exc:
        log.error("backend %s: a signer is left out: %s", backend, exc)
        return None


def node_trust(
    catalog: Catalog | None,
    node_id: str,
    *,
    trusted_keys: Sequence[Path] = (),
    require_signature: bool = False,
) -> NodeTrust:
    """The node's trusted signers and demand (module docstring). Raises ValueError naming
    a ``trusted_keys`` file that is unreadable or no EC public key."""
    signers: list[TrustedSigner] = []
    demanded = require_signature or bool(trusted_keys)
    for key_file in trusted_keys:
        try:
            signers.append(KeySigner.from_pem(Path(key_file).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"model_server.trusted_keys: {key_file}: {exc}") from None
    hosted = [] if catalog is None else [b for b in catalog.backends if b.node == node_id]
    for backend in hosted:
        demanded = demanded or bool(backend.signers)
        for named in backend.signers:
            signer = _signer(backend.name, named)
            if signer is not None and signer not in signers:
                signers.append(signer)
    return tuple(signers), demanded


def verification_entry(outcome: VerificationOutcome) -> DecisionEntry:
    """The decision-log entry of one verification."""
    return DecisionEntry(
        path=VERIFICATION_PATH,
        input={
            "model": str(outcome.model),
            "signature": str(outcome.signature),
            "trigger": outcome.trigger,
            "trusted": list(outcome.trusted),
        },
        result={
            "outcome": outcome.outcome,
            "serving": outcome.serving,
            "reason": outcome.reason,
            "detail": outcome.detail,
            "digest": outcome.digest,
            "signer": outcome.signer,
        },
        kind="model_verification",
    )
