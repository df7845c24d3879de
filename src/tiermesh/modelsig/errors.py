"""Errors of model signing and verification. Every exception derives from `ModelSignatureError`.

Each names the file and the reason in its message and keeps them as fields, so a caller
(the CLI, the agent's audit record) can report the reason without parsing text.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BadKeyError",
    "ModelChangedError",
    "ModelMissingError",
    "ModelSignatureError",
    "SignatureInvalidError",
    "SignatureMissingError",
    "UntrustedSignerError",
]


class ModelSignatureError(Exception):
    """Root of the model signing errors. ``reason`` is a short machine-readable word."""

    reason: str = "error"

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class ModelMissingError(ModelSignatureError):
    """The model file or directory does not exist."""

    reason = "model_missing"

    def __init__(self, path: Path) -> None:
        super().__init__(path, "no such model file or directory")


class SignatureMissingError(ModelSignatureError):
    """No signature file where one is expected."""

    reason = "signature_missing"

    def __init__(self, path: Path, signature: Path) -> None:
        self.signature = signature
        super().__init__(path, f"no signature at {signature}")


class SignatureInvalidError(ModelSignatureError):
    """The signature is unreadable, its cryptographic check fails, or the model's bytes are
    not the ones it signs (a flipped byte, a swapped or added file)."""

    reason = "signature_invalid"


class UntrustedSignerError(ModelSignatureError):
    """The signature may be sound, but its signer is none of the trusted ones."""

    reason = "untrusted_signer"


class ModelChangedError(ModelSignatureError):
    """The model changed while it was being verified; nothing about it can be said."""

    reason = "model_changed"


class BadKeyError(ModelSignatureError):
    """A key or certificate file is unreadable or of an unsupported kind (``path`` names
    that file)."""

    reason = "bad_key"
