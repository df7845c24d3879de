"""Keys, certificates and a small model made at test time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiermesh.modelsig import KeySigner, generate_key_pair


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    signer: KeySigner


@pytest.fixture
def make_key(tmp_path: Path):  # type: ignore[no-untyped-def]
    counter = iter(range(1000))

    def make() -> KeyPair:
        n = next(counter)
        private, public = tmp_path / f"k{n}.pem", tmp_path / f"k{n}.pub"
        return KeyPair(private, public, generate_key_pair(private, public))

    return make


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "m.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


@dataclass(frozen=True)
class CertSigner:
    key: Path
    cert: Path
    roots: Path
    identity: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(tmp_path: Path, identity: str, *, ca_name: str = "models-ca") -> CertSigner:
    """A CA and a code-signing leaf for ``identity`` (a URI SAN), written as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path / f"pki-{ca_name}"
    folder.mkdir(exist_ok=True)
    key_file, cert_file, roots = folder / "leaf.key", folder / "leaf.pem", folder / "ca.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    roots.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return CertSigner(key_file, cert_file, roots, identity)
