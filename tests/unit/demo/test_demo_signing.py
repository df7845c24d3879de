"""The demo's signing step: a fresh key signs the tiny model; the written catalog names
that key as the only signer of the local and private backends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiermesh.controlplane.api import Catalog
from tiermesh.demo.catalog import DemoEndpoint, write_demo_policies
from tiermesh.demo.signing import sign_demo_model, trust_signer
from tiermesh.modelsig import KeySigner, UntrustedSignerError, verify_model


def test_the_tiny_model_is_signed_with_a_key_made_now(tmp_path: Path) -> None:
    first = sign_demo_model(tmp_path, "tiny")
    key = KeySigner.from_pem(first.public_key.read_bytes())
    assert first.signature.parent == tmp_path / "model-signing"
    assert verify_model(first.model, [key], signature=first.signature).signer == first.signer
    again = sign_demo_model(tmp_path, "tiny")
    assert again.signer != first.signer  # a new key at every start
    with pytest.raises(UntrustedSignerError):
        verify_model(again.model, [key], signature=again.signature)


def test_the_catalog_trusts_only_that_key_for_the_model_backends(tmp_path: Path) -> None:
    signed = sign_demo_model(tmp_path, "tiny")
    policies = write_demo_policies(
        tmp_path / "policies",
        {
            "edge-smollm": DemoEndpoint(18080, node="edge-1"),
            "onprem-gpu": DemoEndpoint(18081, node="private-1"),
            "frontier-us": DemoEndpoint(18082, tls=True),
            "frontier-eu": DemoEndpoint(18083, tls=True),
        },
    )
    trust_signer(policies, ("edge-smollm", "onprem-gpu"), signed.public_key)
    text = (policies / "data" / "catalog.yaml").read_text()
    assert text.startswith("# Written by `tiermesh up`")
    catalog = Catalog.model_validate(yaml.safe_load(text))
    signers = {b.name: [s.public_key for s in b.signers] for b in catalog.backends}
    assert signers == {
        "edge-smollm": [signed.public_key.read_text()],
        "onprem-gpu": [signed.public_key.read_text()],
        "frontier-us": [],
        "frontier-eu": [],
    }
