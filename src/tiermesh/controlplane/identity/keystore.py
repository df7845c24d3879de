"""Storing CA state: an encrypted export for sharing, and owner-only files on disk.

Encrypted export (for etcd, shared by control-plane replicas)::

    b"TMCA\\x01" | log2(N) (1 byte) | r (1) | p (1) | salt (16) | nonce (12) | ciphertext+tag

The key is ``scrypt(passphrase, salt, N, r, p)`` (32 bytes); the cipher AES-256-GCM with the
header as associated data, so any change to header, certificates or keys is detected. The
plaintext is JSON holding PEM certificates, PKCS#8 keys and per-generation issuance records.
A wrong passphrase and altered data are indistinguishable; both raise
:class:`WrongPassphraseError`.

On disk, :class:`FileKeyStore` keeps one file, ``ca.json`` (plaintext PKCS#8 keys) or
``ca.enc`` (the encrypted export) with mode 0600 in a 0700 directory, replaced atomically,
and ``bundle.pem`` (public roots, 0644). Loading refuses looser permissions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tiermesh.controlplane.identity.errors import (
    InsecurePermissionsError,
    KeyStoreError,
    KeyStoreFormatError,
    WrongPassphraseError,
)
from tiermesh.controlplane.identity.generation import CaGeneration, CaState, GenerationRecord

__all__ = [
    "DEFAULT_SCRYPT_LOG2_N",
    "FileKeyStore",
    "export_encrypted",
    "load_encrypted",
    "state_from_json",
    "state_to_json",
]

_MAGIC = b"TMCA\x01"
_FORMAT = "tiermesh-ca/v1"
DEFAULT_SCRYPT_LOG2_N = 15
"""scrypt cost: N = 2**15, r = 8 → 32 MiB and roughly 0.1 s per export or load."""
_MIN_LOG2_N, _MAX_LOG2_N = 10, 20
_SALT_LEN, _NONCE_LEN = 16, 12
_HEADER_LEN = len(_MAGIC) + 3 + _SALT_LEN + _NONCE_LEN
_MAX_EXPORT_BYTES = 4 * 1024 * 1024

_DIR_MODE, _KEY_MODE, _PUBLIC_MODE = 0o700, 0o600, 0o644


# --- JSON form ---------------------------------------------------------------------------


def state_to_json(state: CaState) -> bytes:
    """The state as JSON with **unencrypted** private keys: encrypt or protect it."""

    def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def cert_pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    doc = {
        "format": _FORMAT,
        "trust_domain": state.trust_domain,
        "generations": [
            {
                "root": cert_pem(rec.generation.root),
                "root_key": key_pem(rec.generation.root_key),
                "intermediate": cert_pem(rec.generation.intermediate),
                "intermediate_key": key_pem(rec.generation.intermediate_key),
                "issued": rec.issued,
                "latest_expiry": (
                    None if rec.latest_expiry is None else rec.latest_expiry.isoformat()
                ),
            }
            for rec in state.generations
        ],
    }
    return json.dumps(doc, indent=1).encode("utf-8")


def state_from_json(data: bytes) -> CaState:
    """Parse :func:`state_to_json` output and check each generation's keys and signatures.

    Raises:
        KeyStoreFormatError: naming what is wrong.
    """
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise KeyStoreFormatError(f"not a {_FORMAT} document")
        records = tuple(_record_from_json(item) for item in doc["generations"])
        state = CaState(str(doc["trust_domain"]), records)
    except KeyStoreFormatError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyStoreFormatError(f"{type(exc).__name__}: {exc}") from exc
    for record in state.generations:
        record.generation.check()
    return state


def _record_from_json(item: dict[str, Any]) -> GenerationRecord:
    expiry = item["latest_expiry"]
    latest = None if expiry is None else dt.datetime.fromisoformat(expiry)
    if latest is not None and latest.tzinfo is None:
        raise KeyStoreFormatError("latest_expiry lacks a timezone")
    generation = CaGeneration(
        root=x509.load_pem_x509_certificate(item["root"].encode("ascii")),
        root_key=_load_ec_key(item["root_key"]),
        intermediate=x509.load_pem_x509_certificate(item["intermediate"].encode("ascii")),
        intermediate_key=_load_ec_key(item["intermediate_key"]),
    )
    return GenerationRecord(generation, int(item["issued"]), latest)


def _load_ec_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyStoreFormatError(f"CA key is {type(key).__name__}, expected an EC key")
    return key


# --- encrypted export --------------------------------------------------------------------


def _passphrase_bytes(passphrase: bytes | str) -> bytes:
    raw = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not raw:
        raise KeyStoreError("the passphrase must not be empty")
    return raw


def _derive(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(passphrase)


def export_encrypted(
    state: CaState, passphrase: bytes | str, *, scrypt_log2_n: int = DEFAULT_SCRYPT_LOG2_N
) -> bytes:
    """Encrypt ``state`` with a key derived from ``passphrase`` (format in the module doc).

    Raises:
        KeyStoreError: empty passphrase or ``scrypt_log2_n`` outside [10, 20].
    """
    secret = _passphrase_bytes(passphrase)
    if not _MIN_LOG2_N <= scrypt_log2_n <= _MAX_LOG2_N:
        raise KeyStoreError(f"scrypt_log2_n must be within [{_MIN_LOG2_N}, {_MAX_LOG2_N}]")
    salt, nonce = secrets.token_bytes(_SALT_LEN), secrets.token_bytes(_NONCE_LEN)
    header = _MAGIC + bytes([scrypt_log2_n, 8, 1]) + salt + nonce
    key = _derive(secret, salt, scrypt_log2_n, 8, 1)
    return header + AESGCM(key).encrypt(nonce, state_to_json(state), header)


def load_encrypted(data: bytes, passphrase: bytes | str) -> CaState:
    """Decrypt and parse :func:`export_encrypted` output.

    Raises:
        WrongPassphraseError: wrong passphrase, or the data was altered.
        KeyStoreFormatError: not an export of this format, or implausible parameters.
    """
    secret = _passphrase_bytes(passphrase)
    if len(data) > _MAX_EXPORT_BYTES:
        raise KeyStoreFormatError(f"export of {len(data)} bytes exceeds {_MAX_EXPORT_BYTES}")
    if len(data) <= _HEADER_LEN or not data.startswith(_MAGIC):
        raise KeyStoreFormatError("not a tiermesh CA export (bad magic or truncated)")
    log2_n, r, p = data[len(_MAGIC)], data[len(_MAGIC) + 1], data[len(_MAGIC) + 2]
    if not (_MIN_LOG2_N <= log2_n <= _MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 4):
        raise KeyStoreFormatError(f"implausible scrypt parameters N=2**{log2_n} r={r} p={p}")
    salt_at = len(_MAGIC) + 3
    salt = data[salt_at : salt_at + _SALT_LEN]
    nonce = data[salt_at + _SALT_LEN : _HEADER_LEN]
    key = _derive(secret, salt, log2_n, r, p)
    try:
        plaintext = AESGCM(key).decrypt(nonce, data[_HEADER_LEN:], data[:_HEADER_LEN])
    except InvalidTag as exc:
        raise WrongPassphraseError() from exc
    return state_from_json(plaintext)


# --- files -------------------------------------------------------------------------------


class FileKeyStore:
    """CA state in a directory readable only by its owner.

    With ``passphrase`` the state is written encrypted (``ca.enc``), else as plain JSON
    (``ca.json``); either file is 0600, the directory 0700. :meth:`save` replaces the file
    atomically (write to a temporary file, fsync, rename). Not safe for concurrent
    writers on the same directory; one process should own it.
    """

    def __init__(self, directory: Path | str, *, passphrase: bytes | str | None = None) -> None:
        self._dir = Path(directory)
        self._passphrase = None if passphrase is None else _passphrase_bytes(passphrase)

    @property
    def state_path(self) -> Path:
        """The file holding the (possibly encrypted) state."""
        return self._dir / ("ca.enc" if self._passphrase is not None else "ca.json")

    @property
    def bundle_path(self) -> Path:
        """The public trust bundle (PEM roots), written for operators and bootstrap."""
        return self._dir / "bundle.pem"

    def exists(self) -> bool:
        """Whether a saved state is present."""
        return self.state_path.exists()

    def save(self, state: CaState) -> None:
        """Write ``state`` and the bundle. Creates the directory (0700) if missing.

        Raises:
            InsecurePermissionsError: the directory exists with group/other access.
            KeyStoreError: on an OS error.
        """
        try:
            self._dir.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(f"cannot create {self._dir}: {exc}") from exc
        _require_owner_only(self._dir, _DIR_MODE)
        if self._passphrase is not None:
            payload = export_encrypted(state, self._passphrase)
        else:
            payload = state_to_json(state)
        roots = b"".join(
            rec.generation.root.public_bytes(serialization.Encoding.PEM)
            for rec in state.generations
        )
        _atomic_write(self.state_path, payload, _KEY_MODE)
        _atomic_write(self.bundle_path, roots, _PUBLIC_MODE)

    def load(self) -> CaState:
        """Read the saved state.

        Raises:
            InsecurePermissionsError: directory or state file allows group/other access.
            KeyStoreError: missing or unreadable file.
            WrongPassphraseError, KeyStoreFormatError.
        """
        _require_owner_only(self._dir, _DIR_MODE)
        _require_owner_only(self.state_path, _KEY_MODE)
        try:
            data = self.state_path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read {self.state_path}: {exc}") from exc
        if self._passphrase is not None:
            return load_encrypted(data, self._passphrase)
        return state_from_json(data)


def _require_owner_only(path: Path, expected: int) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise KeyStoreError(f"cannot stat {path}: {exc}") from exc
    if mode & 0o077:
        raise InsecurePermissionsError(str(path), mode, expected)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyStoreError(f"cannot write {path}: {exc}") from exc
