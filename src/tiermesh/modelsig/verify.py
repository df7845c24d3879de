"""Verify a model (one file, e.g. a GGUF, or a directory) against its OpenSSF model-signing
signature and a set of trusted signers. Offline: keys and certificates only, no Sigstore.

`verify_model` answers a `Verified` (the model's digest, the signer that vouched for it and
the files' fingerprint) or raises a `ModelSignatureError` subclass whose ``reason`` names
what failed: ``model_missing``, ``signature_missing``, ``signature_invalid`` (unreadable,
bad signature, bytes that differ from the signed ones), ``untrusted_signer`` (a signer, or a
certificate chain, that no trusted signer covers), ``model_changed`` (the files changed
while being hashed). Pure apart from reading the files (and a private temp dir for the
key material the library wants as files); safe to call from any thread.

The digest is the signed in-toto statement's subject digest (``sha256:<hex>``): SHA-256
over the digests of every file of the model, as model-signing defines it.

Pinning: a `Fingerprint` is each file's device, inode, size, mtime and ctime. It is taken
before and after hashing; a writer that changes a byte changes the ctime (which a process
cannot set), and a swap by rename changes the inode. A caller that serves the model must
compare `fingerprint` with the files again after its server loaded them, and on any later
change stop serving and verify again.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from model_signing import verifying

from tiermesh.modelsig.errors import (
    ModelChangedError,
    ModelMissingError,
    SignatureInvalidError,
    SignatureMissingError,
    UntrustedSignerError,
)
from tiermesh.modelsig.trust import (
    CertificateSigner,
    KeySigner,
    TrustedSigner,
    certificate_identities,
)

__all__ = [
    "MAX_SIGNATURE_BYTES",
    "Fingerprint",
    "Verified",
    "default_signature_path",
    "fingerprint",
    "verify_model",
]

MAX_SIGNATURE_BYTES = 1 << 20
"""A signature bundle larger than this is refused unread (a few KB is usual)."""

Fingerprint = tuple[tuple[str, int, int, int, int, int], ...]
"""(relative path, device, inode, size, mtime_ns, ctime_ns) per file, in path order."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A model whose bytes a trusted signer signed."""

    path: Path
    signature: Path
    digest: str
    """``sha256:<hex>``: the signed statement's subject digest."""
    signer: str
    """The trusted signer's name (``key:sha256:…`` or ``cert:<identity>``)."""
    fingerprint: Fingerprint
    """The model's and the signature's files as they were verified."""


def default_signature_path(path: Path) -> Path:
    """``PATH.sig`` beside the model (for a directory: beside it, not inside)."""
    path = Path(os.path.normpath(path))
    return path.with_name(path.name + ".sig")


def _entry(name: str, path: Path) -> tuple[str, int, int, int, int, int]:
    st = path.stat()
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def fingerprint(path: Path, signature: Path) -> Fingerprint:
    """The fingerprint of the model at ``path`` (every file under a directory) and of its
    signature. Raises OSError when a file vanished while being listed."""
    entries = [_entry("\0signature", signature)]
    if path.is_dir():
        entries.append(_entry(".", path))
        for child in sorted(p for p in path.rglob("*") if p.is_file() or p.is_dir()):
            entries.append(_entry(child.relative_to(path).as_posix(), child))
    else:
        entries.append(_entry(".", path))
    return tuple(entries)


def _bundle(path: Path, signature: Path) -> dict[str, Any]:
    try:
        raw = signature.read_bytes()
    except FileNotFoundError:
        raise SignatureMissingError(path, signature) from None
    if len(raw) > MAX_SIGNATURE_BYTES:
        raise SignatureInvalidError(path, f"signature {signature} is over {MAX_SIGNATURE_BYTES} B")
    try:
        bundle = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SignatureInvalidError(path, f"signature {signature} is not JSON: {exc}") from None
    if not isinstance(bundle, dict) or not isinstance(bundle.get("verificationMaterial"), dict):
        raise SignatureInvalidError(path, f"{signature} is not a model-signing bundle")
    return bundle


def _subject_digest(path: Path, bundle: dict[str, Any]) -> str:
    """The statement's subject digest; call only after the signature was verified."""
    try:
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        return f"sha256:{statement['subject'][0]['digest']['sha256']}"
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise SignatureInvalidError(
            path, f"signed statement has no subject digest: {exc}"
        ) from None


def _leaf(path: Path, material: dict[str, Any]) -> x509.Certificate:
    try:
        der = base64.b64decode(material["x509CertificateChain"]["certificates"][0]["rawBytes"])
        return x509.load_der_x509_certificate(der)
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as exc:
        raise SignatureInvalidError(path, f"unreadable signing certificate: {exc}") from None


def _candidates(
    path: Path, bundle: dict[str, Any], trusted: Sequence[TrustedSigner]
) -> list[TrustedSigner]:
    """The trusted signers that could have made this signature (by key hint or identity)."""
    material = bundle["verificationMaterial"]
    if "x509CertificateChain" in material:
        identities = certificate_identities(_leaf(path, material))
        found: list[TrustedSigner] = [
            s for s in trusted if isinstance(s, CertificateSigner) and s.identity in identities
        ]
        if not found:
            shown = ", ".join(identities) or "no identity"
            raise UntrustedSignerError(
                path, f"signed by a certificate for {shown}, which no trusted signer names"
            )
        return found
    hint = material.get("publicKey", {}).get("hint") if isinstance(material, dict) else None
    keys = [s for s in trusted if isinstance(s, KeySigner)]
    found = [k for k in keys if k.hint == hint] if hint else list(keys)
    if not found:
        who = f"key sha256:{hint}" if hint else "an unnamed key"
        raise UntrustedSignerError(path, f"signed by {who}, which no trusted signer holds")
    return found


def _check(path: Path, signature: Path, signer: TrustedSigner, scratch: Path) -> None:
    """One library verification; raises what model-signing raises."""
    config = verifying.Config()  # type: ignore[no-untyped-call]  # its __init__ is unannotated
    if isinstance(signer, KeySigner):
        key_file = scratch / "key.pem"
        key_file.write_bytes(signer.public_key_pem)
        config.use_elliptic_key_verifier(public_key=key_file)
    else:
        roots = scratch / "roots.pem"
        roots.write_bytes(signer.roots_pem)
        config.use_certificate_verifier(certificate_chain=[roots])
    config.verify(path, signature)


def verify_model(
    path: Path, trusted: Sequence[TrustedSigner], *, signature: Path | None = None
) -> Verified:
    """Verify ``path`` against ``signature`` (default `default_signature_path`) for one of
    ``trusted``. See the module docstring for what is raised."""
    path = Path(path)
    signature = Path(signature) if signature is not None else default_signature_path(path)
    if not path.exists():
        raise ModelMissingError(path)
    if not signature.is_file():
        raise SignatureMissingError(path, signature)
    before = fingerprint(path, signature)
    bundle = _bundle(path, signature)
    if not trusted:
        raise UntrustedSignerError(path, "no signer is trusted for this model")
    candidates = _candidates(path, bundle, trusted)
    failures: list[str] = []
    chain_refused = False
    with tempfile.TemporaryDirectory(prefix="tiermesh-modelsig-") as scratch:
        for signer in candidates:
            try:
                _check(path, signature, signer, Path(scratch))
            except InvalidSignature:
                failures.append(f"{signer.name}: the signature does not verify")
            except Exception as exc:  # noqa: BLE001 - the library raises many kinds; each is a refusal
                if type(exc).__name__ == "X509StoreContextError":
                    chain_refused = True
                    failures.append(f"{signer.name}: certificate not issued by its roots ({exc})")
                else:
                    failures.append(f"{signer.name}: {exc}")
            else:
                after = fingerprint(path, signature)
                if after != before:
                    raise ModelChangedError(
                        path, "the model or its signature changed while verified"
                    )
                return Verified(path, signature, _subject_digest(path, bundle), signer.name, after)
    detail = "; ".join(failures)
    if chain_refused and len(failures) == 1:
        raise UntrustedSignerError(path, detail)
    if fingerprint(path, signature) != before:
        raise ModelChangedError(
            path, f"the model or its signature changed while verified ({detail})"
        )
    raise SignatureInvalidError(path, detail)
