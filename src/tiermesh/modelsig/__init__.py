"""Model signing: sign a model file or directory in the OpenSSF model-signing format and
verify it against trusted signers (EC public keys, certificate identities), offline.

Built on the ``model-signing`` package (Sigstore model transparency). Knows nothing of
tiermesh's catalog or agents: callers turn their configuration into `KeySigner` and
`CertificateSigner` values. Every error derives from `ModelSignatureError`.
"""

from __future__ import annotations

from tiermesh.modelsig.errors import (
    BadKeyError,
    ModelChangedError,
    ModelMissingError,
    ModelSignatureError,
    SignatureInvalidError,
    SignatureMissingError,
    UntrustedSignerError,
)
from tiermesh.modelsig.sign import generate_key_pair, sign_model
from tiermesh.modelsig.trust import (
    CertificateSigner,
    KeySigner,
    TrustedSigner,
    certificate_identities,
    key_hint,
)
from tiermesh.modelsig.verify import (
    Fingerprint,
    Verified,
    default_signature_path,
    fingerprint,
    verify_model,
)

__all__ = [
    "BadKeyError",
    "CertificateSigner",
    "Fingerprint",
    "KeySigner",
    "ModelChangedError",
    "ModelMissingError",
    "ModelSignatureError",
    "SignatureInvalidError",
    "SignatureMissingError",
    "TrustedSigner",
    "UntrustedSignerError",
    "Verified",
    "certificate_identities",
    "default_signature_path",
    "fingerprint",
    "generate_key_pair",
    "key_hint",
    "sign_model",
    "verify_model",
]
