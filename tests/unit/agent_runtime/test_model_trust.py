"""Which signers a node trusts for its model, and the record a verification leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.modelsig.conftest import issue
from tiermesh.agents.models.guard import VerificationOutcome
from tiermesh.agents.runtime.model_trust import VERIFICATION_PATH, node_trust, verification_entry
from tiermesh.controlplane.api import Catalog
from tiermesh.modelsig import CertificateSigner, KeySigner

CATALOG = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"


def _pem() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _catalog(signers: dict[str, list[dict[str, Any]]]) -> Catalog:
    document = yaml.safe_load(CATALOG.read_text())
    for backend in document["backends"]:
        backend["signers"] = signers.get(backend["name"], [])
    return Catalog.model_validate(document)


def test_only_the_backends_this_node_hosts_count(tmp_path: Path) -> None:
    catalog = _catalog({})
    edge = next(b for b in catalog.backends if b.node is not None)
    other = next(b for b in catalog.backends if b.node not in (None, edge.node))
    pki = issue(tmp_path, "spiffe://mesh.test/signer")
    mine, theirs = _pem(), _pem()
    catalog = _catalog(
        {
            edge.name: [
                {"public_key": mine},
                {"certificate_identity": pki.identity, "roots": pki.roots.read_text()},
            ],
            other.name: [{"public_key": theirs}],
        }
    )
    assert edge.node is not None
    signers, required = node_trust(catalog, edge.node)
    assert required
    assert signers == (
        KeySigner.from_pem(mine),
        CertificateSigner.from_pem(pki.identity, pki.roots.read_bytes()),
    )


def test_no_signers_named_demands_nothing() -> None:
    catalog = _catalog({})
    node = next(b.node for b in catalog.backends if b.node is not None)
    assert node_trust(catalog, node) == ((), False)
    assert node_trust(None, "edge-1") == ((), False)
    assert node_trust(None, "edge-1", require_signature=True) == ((), True)


def test_node_yaml_keys_are_trusted_and_a_bad_one_is_named(tmp_path: Path) -> None:
    key = tmp_path / "local.pub"
    key.write_text(_pem())
    signers, required = node_trust(None, "edge-1", trusted_keys=[key])
    assert (signers, required) == ((KeySigner.from_pem(key.read_bytes()),), True)
    bad = tmp_path / "bad.pub"
    bad.write_text("nope")
    with pytest.raises(ValueError, match=r"trusted_keys: .*bad\.pub: not a PEM public key"):
        node_trust(None, "edge-1", trusted_keys=[bad])


def test_an_unusable_catalog_signer_is_left_out_but_still_demands(tmp_path: Path) -> None:
    catalog = _catalog({})
    edge = next(b for b in catalog.backends if b.node is not None)
    assert edge.node is not None
    rsa_like = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    catalog = _catalog({edge.name: [{"public_key": rsa_like}]})
    assert node_trust(catalog, edge.node) == ((), True)


def test_the_record_names_outcome_reason_digest_and_signer() -> None:
    outcome = VerificationOutcome(
        Path("/m.gguf"),
        Path("/m.gguf.sig"),
        "refused",
        "changed",
        reason="signature_invalid",
        detail="Hash mismatch",
        trusted=("key:sha256:ab",),
    )
    entry = verification_entry(outcome)
    assert (entry.kind, entry.path) == ("model_verification", VERIFICATION_PATH)
    assert entry.input == {
        "model": "/m.gguf",
        "signature": "/m.gguf.sig",
        "trigger": "changed",
        "trusted": ["key:sha256:ab"],
    }
    assert entry.result == {
        "outcome": "refused",
        "serving": False,
        "reason": "signature_invalid",
        "detail": "Hash mismatch",
        "digest": None,
        "signer": None,
    }
