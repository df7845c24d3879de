"""Catalog backends' ``signers`` and ``defaults.require_signed_models``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from tiermesh.controlplane.api import Catalog, ModelSigner

CATALOG = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"

PUBLIC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _catalog() -> dict[str, Any]:
    document = yaml.safe_load(CATALOG.read_text())
    assert isinstance(document, dict)
    return document


def test_a_backend_names_key_and_certificate_signers() -> None:
    document = _catalog()
    document["defaults"]["require_signed_models"] = ["restricted"]
    document["backends"][0]["signers"] = [
        {"public_key": PUBLIC_PEM},
        {"certificate_identity": "spiffe://mesh.test/signer", "roots": CA_PEM},
    ]
    catalog = Catalog.model_validate(document)
    assert catalog.defaults.require_signed_models == ("restricted",)
    signers = catalog.backends[0].signers
    assert signers[0].public_key == PUBLIC_PEM
    assert signers[1].certificate_identity == "spiffe://mesh.test/signer"
    assert catalog.model_dump(mode="json")["backends"][0]["signers"][0]["roots"] is None


def test_the_shipped_catalog_demands_nothing() -> None:
    catalog = Catalog.model_validate(_catalog())
    assert catalog.defaults.require_signed_models == ()
    assert all(backend.signers == () for backend in catalog.backends)


@pytest.mark.parametrize(
    ("signer", "problem"),
    [
        ({}, "exactly one of public_key and certificate_identity"),
        (
            {"public_key": "x", "certificate_identity": "spiffe://a/b", "roots": "x"},
            "String should match pattern",
        ),
        ({"public_key": "not pem"}, "String should match pattern"),
        ({"certificate_identity": "spiffe://mesh.test/signer"}, "go together"),
        ({"public_key": "PLACEHOLDER", "roots": "PLACEHOLDER_CA"}, "go together"),
        ({"public_key": "PLACEHOLDER", "fingerprint": "x"}, "Extra inputs"),
    ],
)
def test_a_malformed_signer_is_refused(signer: dict[str, str], problem: str) -> None:
    filled = {
        key: PUBLIC_PEM
        if value == "PLACEHOLDER"
        else CA_PEM
        if value == "PLACEHOLDER_CA"
        else value
        for key, value in signer.items()
    }
    with pytest.raises(ValidationError, match=problem):
        ModelSigner.model_validate(filled)


def test_require_signed_models_names_sensitivities() -> None:
    document = _catalog()
    document["defaults"]["require_signed_models"] = ["secret"]
    with pytest.raises(ValidationError, match="require_signed_models"):
        Catalog.model_validate(document)


CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBfzCCASWgAwIBAgIUKzKq1f3m5bNQb0LkYqk7aYpK0z8wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKbW9kZWxzLWNhMB4XDTI2MDEwMTAwMDAwMFoXDTI3MDEwMTAw
MDAwMFowFTETMBEGA1UEAwwKbW9kZWxzLWNh
-----END CERTIFICATE-----
"""
