"""Sign and verify with keys and certificates made here: what is accepted, what is refused
and with which reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.unit.modelsig.conftest import issue
from tiermesh.modelsig import (
    BadKeyError,
    CertificateSigner,
    KeySigner,
    ModelMissingError,
    ModelSignatureError,
    SignatureInvalidError,
    SignatureMissingError,
    UntrustedSignerError,
    default_signature_path,
    fingerprint,
    sign_model,
    verify_model,
)


def test_a_signed_file_verifies_with_its_key(make_key, model: Path) -> None:
    key = make_key()
    written = sign_model(model, private_key=key.private)
    assert written == model.with_name("m.gguf.sig")
    verified = verify_model(model, [key.signer])
    assert verified.signer == key.signer.name
    assert verified.digest.startswith("sha256:")
    assert len(verified.digest) == len("sha256:") + 64
    assert verified.fingerprint == fingerprint(model, written)


def test_the_digest_follows_the_bytes(make_key, model: Path, tmp_path: Path) -> None:
    key = make_key()
    other = tmp_path / "other.gguf"
    other.write_bytes(model.read_bytes() + b"!")
    sign_model(model, private_key=key.private)
    sign_model(other, private_key=key.private)
    assert verify_model(model, [key.signer]).digest != verify_model(other, [key.signer]).digest


def test_a_flipped_byte_is_refused(make_key, model: Path) -> None:
    key = make_key()
    sign_model(model, private_key=key.private)
    data = bytearray(model.read_bytes())
    data[100] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(SignatureInvalidError, match="Hash mismatch") as caught:
        verify_model(model, [key.signer])
    assert caught.value.reason == "signature_invalid"


def test_a_swapped_file_is_refused(make_key, model: Path, tmp_path: Path) -> None:
    key = make_key()
    sign_model(model, private_key=key.private)
    swapped = tmp_path / "swap.gguf"
    swapped.write_bytes(b"GGUF" + b"\0" * 512)
    os.replace(swapped, model)
    with pytest.raises(SignatureInvalidError):
        verify_model(model, [key.signer])


def test_another_models_signature_is_refused(make_key, model: Path, tmp_path: Path) -> None:
    key = make_key()
    other = tmp_path / "m.gguf"
    other.write_bytes(b"GGUF other")
    sign_model(other, private_key=key.private)
    shutil.copy(default_signature_path(other), default_signature_path(model))
    with pytest.raises(SignatureInvalidError):
        verify_model(model, [key.signer])


def test_an_untrusted_key_is_refused(make_key, model: Path) -> None:
    trusted, stranger = make_key(), make_key()
    sign_model(model, private_key=stranger.private)
    with pytest.raises(UntrustedSignerError, match=stranger.signer.hint) as caught:
        verify_model(model, [trusted.signer])
    assert caught.value.reason == "untrusted_signer"


def test_no_trusted_signer_refuses_every_signature(make_key, model: Path) -> None:
    key = make_key()
    sign_model(model, private_key=key.private)
    with pytest.raises(UntrustedSignerError, match="no signer is trusted"):
        verify_model(model, [])


def test_a_missing_signature_is_refused(make_key, model: Path) -> None:
    key = make_key()
    with pytest.raises(SignatureMissingError, match=r"no signature at .*m\.gguf\.sig") as caught:
        verify_model(model, [key.signer])
    assert caught.value.reason == "signature_missing"


def test_a_missing_model_is_named(make_key, tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match=r"nope\.gguf"):
        verify_model(tmp_path / "nope.gguf", [make_key().signer])


def test_garbage_in_the_signature_is_invalid(make_key, model: Path) -> None:
    key = make_key()
    default_signature_path(model).write_text("not json")
    with pytest.raises(SignatureInvalidError, match="not JSON"):
        verify_model(model, [key.signer])


def test_a_resigned_file_verifies_once_the_new_key_is_trusted(make_key, model: Path) -> None:
    old, new = make_key(), make_key()
    sign_model(model, private_key=old.private)
    verify_model(model, [old.signer])
    sign_model(model, private_key=new.private)
    with pytest.raises(UntrustedSignerError):
        verify_model(model, [old.signer])
    assert verify_model(model, [old.signer, new.signer]).signer == new.signer.name


def test_a_directory_model_is_signed_whole(make_key, tmp_path: Path) -> None:
    key = make_key()
    folder = tmp_path / "model-dir"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "weights.bin").write_bytes(b"\1" * 1000)
    signature = sign_model(folder, private_key=key.private)
    assert signature == tmp_path / "model-dir.sig"
    verify_model(folder, [key.signer])
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(SignatureInvalidError, match="Extra files"):
        verify_model(folder, [key.signer])


def test_a_signature_elsewhere(make_key, model: Path, tmp_path: Path) -> None:
    key = make_key()
    elsewhere = tmp_path / "sigs" / "m.sig"
    sign_model(model, private_key=key.private, signature=elsewhere)
    assert not default_signature_path(model).exists()
    assert verify_model(model, [key.signer], signature=elsewhere).signature == elsewhere


def test_signing_with_an_unreadable_key_names_it(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    with pytest.raises(BadKeyError, match=r"bad\.pem"):
        sign_model(model, private_key=bad)
    with pytest.raises(BadKeyError, match="no such key"):
        sign_model(model, private_key=tmp_path / "absent.pem")


def test_only_ec_public_keys_are_trusted() -> None:
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="EC key"):
        KeySigner.from_pem(pem)
    with pytest.raises(ValueError, match="not a PEM public key"):
        KeySigner.from_pem(b"junk")


def test_a_certificate_identity_verifies(model: Path, tmp_path: Path) -> None:
    pki = issue(tmp_path, "spiffe://mesh.test/signer/models")
    sign_model(model, private_key=pki.key, certificate=pki.cert, chain=[pki.roots])
    trusted = CertificateSigner.from_pem(pki.identity, pki.roots.read_bytes())
    verified = verify_model(model, [trusted])
    assert verified.signer == "cert:spiffe://mesh.test/signer/models"


def test_a_certificate_for_another_identity_is_untrusted(model: Path, tmp_path: Path) -> None:
    pki = issue(tmp_path, "spiffe://mesh.test/signer/someone-else")
    sign_model(model, private_key=pki.key, certificate=pki.cert, chain=[pki.roots])
    trusted = CertificateSigner.from_pem("spiffe://mesh.test/signer/models", pki.roots.read_bytes())
    with pytest.raises(UntrustedSignerError, match="someone-else"):
        verify_model(model, [trusted])


def test_a_certificate_from_other_roots_is_untrusted(model: Path, tmp_path: Path) -> None:
    identity = "spiffe://mesh.test/signer/models"
    ours = issue(tmp_path, identity, ca_name="ours")
    theirs = issue(tmp_path, identity, ca_name="theirs")
    sign_model(model, private_key=theirs.key, certificate=theirs.cert, chain=[theirs.roots])
    trusted = CertificateSigner.from_pem(identity, ours.roots.read_bytes())
    with pytest.raises(UntrustedSignerError, match="not issued by its roots"):
        verify_model(model, [trusted])


def test_certificate_signing_needs_its_chain(model: Path, tmp_path: Path) -> None:
    pki = issue(tmp_path, "spiffe://mesh.test/signer/models")
    with pytest.raises(BadKeyError, match="needs the issuing CA"):
        sign_model(model, private_key=pki.key, certificate=pki.cert)


def test_a_signature_inside_a_model_directory_is_refused(make_key, tmp_path: Path) -> None:
    folder = tmp_path / "model-dir"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    with pytest.raises(ModelSignatureError, match="cannot be inside the model"):
        sign_model(folder, private_key=make_key().private, signature=folder / "model.sig")
