"""Key storage: owner-only files, encrypted export/import, and refusing bad input."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.controlplane.identity import (
    CaConfig,
    CaGeneration,
    CaState,
    FileKeyStore,
    GenerationRecord,
    InsecurePermissionsError,
    InvalidCaConfigError,
    KeyStoreError,
    KeyStoreFormatError,
    LocalCertificateAuthority,
    WrongPassphraseError,
    export_encrypted,
    load_encrypted,
    verify_svid,
)
from tiermesh.controlplane.identity.keystore import state_from_json, state_to_json

if TYPE_CHECKING:
    from conftest import FakeClock

FAST = 10  # scrypt log2(N) for tests; production default is 15


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _same(a: CaState, b: CaState) -> None:
    assert a.trust_domain == b.trust_domain
    assert [r.generation.id for r in a.generations] == [r.generation.id for r in b.generations]
    assert [r.issued for r in a.generations] == [r.issued for r in b.generations]
    assert [r.latest_expiry for r in a.generations] == [r.latest_expiry for r in b.generations]
    for x, y in zip(a.generations, b.generations, strict=True):
        assert x.generation.intermediate_key.private_numbers() == (
            y.generation.intermediate_key.private_numbers()
        )


def test_plain_file_store_permissions(ca: LocalCertificateAuthority, tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "ca")
    store.save(ca.state())
    assert _mode(tmp_path / "ca") == 0o700
    assert store.state_path.name == "ca.json"
    assert _mode(store.state_path) == 0o600
    assert _mode(store.bundle_path) == 0o644
    assert store.bundle_path.read_bytes() == ca.bundle().to_pem()
    assert sorted(p.name for p in (tmp_path / "ca").iterdir()) == ["bundle.pem", "ca.json"]
    _same(store.load(), ca.state())


def test_save_replaces_and_keeps_mode(
    ca: LocalCertificateAuthority, tmp_path: Path, make_csr: Callable[..., bytes]
) -> None:
    store = FileKeyStore(tmp_path / "ca")
    store.save(ca.state())
    ca.issue(make_csr(), "edge-1")
    ca.rotate()
    store.save(ca.state())
    assert _mode(store.state_path) == 0o600
    loaded = store.load()
    assert len(loaded.generations) == 2
    assert loaded.generations[0].issued == 1


def test_encrypted_file_store(ca: LocalCertificateAuthority, tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "ca", passphrase="correct horse")
    store.save(ca.state())
    assert store.state_path.name == "ca.enc"
    assert _mode(store.state_path) == 0o600
    assert b"PRIVATE KEY" not in store.state_path.read_bytes()
    _same(store.load(), ca.state())
    with pytest.raises(WrongPassphraseError):
        FileKeyStore(tmp_path / "ca", passphrase="wrong horse").load()


def test_load_refuses_readable_key_file(ca: LocalCertificateAuthority, tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "ca")
    store.save(ca.state())
    os.chmod(store.state_path, 0o644)
    with pytest.raises(InsecurePermissionsError) as info:
        store.load()
    assert info.value.mode == 0o644
    assert "owner only" in str(info.value)


def test_refuses_open_directory(ca: LocalCertificateAuthority, tmp_path: Path) -> None:
    directory = tmp_path / "ca"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    with pytest.raises(InsecurePermissionsError):
        FileKeyStore(directory).save(ca.state())
    assert list(directory.iterdir()) == []
    with pytest.raises(InsecurePermissionsError):
        FileKeyStore(directory).load()


def test_missing_store(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    assert not store.exists()
    with pytest.raises(KeyStoreError):
        store.load()


def test_encrypted_roundtrip(ca: LocalCertificateAuthority) -> None:
    blob = export_encrypted(ca.state(), b"s3cret", scrypt_log2_n=FAST)
    assert b"PRIVATE KEY" not in blob
    _same(load_encrypted(blob, b"s3cret"), ca.state())
    assert export_encrypted(ca.state(), b"s3cret", scrypt_log2_n=FAST) != blob  # fresh salt


def test_ca_export_and_load_shares_the_ca(
    ca: LocalCertificateAuthority,
    config: CaConfig,
    clock: FakeClock,
    make_csr: Callable[..., bytes],
) -> None:
    blob = ca.export_encrypted("replica passphrase")
    replica = LocalCertificateAuthority.load_encrypted(
        config, blob, "replica passphrase", clock=clock
    )
    svid = replica.issue(make_csr(), "edge-1")
    verify_svid(svid.chain, ca.bundle(), now=clock.now)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        LocalCertificateAuthority.load_encrypted(config, blob, "guess", clock=clock)
    with pytest.raises(InvalidCaConfigError, match="trust_domain"):
        LocalCertificateAuthority.load_encrypted(
            CaConfig("other.example"), blob, "replica passphrase", clock=clock
        )


def test_tampered_export(ca: LocalCertificateAuthority) -> None:
    blob = bytearray(export_encrypted(ca.state(), b"pw", scrypt_log2_n=FAST))
    for index in (8, len(blob) // 2, len(blob) - 1):  # salt, ciphertext, tag
        altered = bytearray(blob)
        altered[index] ^= 0x01
        with pytest.raises(WrongPassphraseError):
            load_encrypted(bytes(altered), b"pw")


@pytest.mark.parametrize(
    "data", [b"", b"TMCA", b"XXXX\x01" + bytes(40), b"TMCA\x01\x1f\x08\x01" + bytes(60)]
)
def test_not_an_export(data: bytes) -> None:
    with pytest.raises(KeyStoreFormatError):
        load_encrypted(data, b"pw")


def test_bad_passphrase_and_cost(ca: LocalCertificateAuthority) -> None:
    with pytest.raises(KeyStoreError, match="empty"):
        export_encrypted(ca.state(), b"")
    with pytest.raises(KeyStoreError, match="scrypt"):
        export_encrypted(ca.state(), b"pw", scrypt_log2_n=30)


def test_json_with_mismatched_key_is_refused(ca: LocalCertificateAuthority) -> None:
    gen = ca.active
    other = ec.generate_private_key(ec.SECP256R1())
    bad = CaState(
        ca.trust_domain,
        (GenerationRecord(CaGeneration(gen.root, gen.root_key, gen.intermediate, other)),),
    )
    with pytest.raises(KeyStoreFormatError, match="intermediate key"):
        state_from_json(state_to_json(bad))


def test_json_with_foreign_intermediate_is_refused(
    ca: LocalCertificateAuthority, config: CaConfig, clock: FakeClock
) -> None:
    gen, other = ca.active, LocalCertificateAuthority.create(config, clock=clock).active
    swapped = CaGeneration(gen.root, gen.root_key, other.intermediate, other.intermediate_key)
    with pytest.raises(KeyStoreFormatError, match="did not sign"):
        state_from_json(state_to_json(CaState(ca.trust_domain, (GenerationRecord(swapped),))))


@pytest.mark.parametrize(
    "doc", [b"{", b"[]", b'{"format": "other"}', json.dumps({"format": "tiermesh-ca/v1"}).encode()]
)
def test_json_garbage(doc: bytes) -> None:
    with pytest.raises(KeyStoreFormatError):
        state_from_json(doc)


def test_empty_state_is_refused() -> None:
    with pytest.raises(KeyStoreFormatError):
        CaState("mesh.example", ())
