"""Sign a model (one file or a directory) in the OpenSSF model-signing format, offline: with
an EC private key, or with a private key and its signing certificate (plus the chain that
leads to a root verifiers trust). Keyless Sigstore signing needs its network services and
is not offered here.

`generate_key_pair` writes a new P-256 key pair (private key mode 0600).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import signing

from tiermesh.modelsig.errors import BadKeyError, ModelMissingError, ModelSignatureError
from tiermesh.modelsig.trust import KeySigner
from tiermesh.modelsig.verify import default_signature_path

__all__ = ["generate_key_pair", "sign_model"]


def generate_key_pair(private_key: Path, public_key: Path) -> KeySigner:
    """Write a new EC P-256 private key (PKCS#8 PEM, mode 0600, unencrypted) and its public
    key (PEM); returns the public key as a `KeySigner`. Refuses to overwrite either file
    (FileExistsError)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public_key.exists():
        raise FileExistsError(f"{public_key} exists")
    fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private_pem)
    public_key.write_bytes(public_pem)
    return KeySigner.from_pem(public_pem)


def sign_model(
    path: Path,
    *,
    private_key: Path,
    signature: Path | None = None,
    password: str | None = None,
    certificate: Path | None = None,
    chain: Sequence[Path] = (),
) -> Path:
    """Sign ``path`` and write the signature to ``signature`` (default ``PATH.sig``)
    atomically (a reader sees the old signature or the new one, never half of one).
    Returns the signature's path.

    Raises:
        ModelMissingError: no such model.
        ModelSignatureError: a signature path inside a model directory, or unwritable.
        BadKeyError: the key (or certificate) is unreadable, encrypted without
            ``password``, not EC on P-256/384/521, or does not match the certificate;
            a certificate without its ``chain`` (at least the issuing CA).
    """
    path = Path(path)
    signature = Path(signature) if signature is not None else default_signature_path(path)
    if not path.exists():
        raise ModelMissingError(path)
    if path.is_dir() and signature.resolve().is_relative_to(path.resolve()):
        # It would be hashed as a file of the model and fail every verification.
        raise ModelSignatureError(path, f"the signature {signature} cannot be inside the model")
    for file in (private_key, certificate, *chain):
        if file is not None and not Path(file).is_file():
            raise BadKeyError(Path(file), "no such key or certificate file")
    if certificate is not None and not chain:
        # model-signing 1.1 fails on an empty chain with an unrelated PEM framing error.
        raise BadKeyError(
            Path(certificate), "certificate signing needs the issuing CA certificates (chain)"
        )
    config = signing.Config()  # type: ignore[no-untyped-call]  # its __init__ is unannotated
    try:
        if certificate is None:
            config.use_elliptic_key_signer(private_key=private_key, password=password)
        else:
            config.use_certificate_signer(
                private_key=private_key, signing_certificate=certificate, certificate_chain=chain
            )
    except (ValueError, TypeError) as exc:
        used = "key" if certificate is None else "key, certificate or chain"
        raise BadKeyError(Path(private_key), f"cannot sign with this {used}: {exc}") from None
    signature.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{signature.name}.", dir=signature.parent)
    os.close(fd)
    try:
        config.sign(path, staging)
        os.replace(staging, signature)
    except OSError as exc:
        raise ModelSignatureError(path, f"cannot write the signature: {exc}") from exc
    finally:
        Path(staging).unlink(missing_ok=True)
    return signature
