"""The demo's signed model: a signing key made at start, the local model signed with it, and
the catalog's local backends trusting only that key.

`sign_demo_model` resolves the demo model (``tiny``: the test GGUF written into the state
dir; ``smollm2``: the installed package's GGUF, left where it is), writes a new P-256 key
pair under ``<state_dir>/model-signing/`` and the signature there too (never beside a file
in site-packages). `trust_signer` adds the public key as the only ``signers`` entry of the
named backends in a written bundle's ``data/catalog.yaml``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tiermesh.agents.models import smollm2_path, write_tiny_gguf
from tiermesh.modelsig import generate_key_pair, sign_model

__all__ = ["SignedModel", "sign_demo_model", "trust_signer"]


@dataclass(frozen=True, slots=True)
class SignedModel:
    """The demo model file, its signature and the public key that verifies it."""

    model: Path
    signature: Path
    public_key: Path
    signer: str


def sign_demo_model(state_dir: Path, model: str) -> SignedModel:
    """Make the key, resolve ``model`` (``tiny`` or ``smollm2``) and sign it (see module)."""
    folder = state_dir / "model-signing"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700, parents=True)
    if model == "tiny":
        path = write_tiny_gguf(folder / "tiny.gguf")
    elif model == "smollm2":
        path = smollm2_path()
    else:
        path = Path(model)
    private, public = folder / "signing-key.pem", folder / "signing-key.pub"
    signer = generate_key_pair(private, public)
    signature = sign_model(path, private_key=private, signature=folder / f"{path.name}.sig")
    return SignedModel(path, signature, public, signer.name)


def trust_signer(policies: Path, backends: Iterable[str], public_key: Path) -> None:
    """Name ``public_key`` as the only signer of ``backends`` in ``policies``' catalog."""
    path = policies / "data" / "catalog.yaml"
    text = path.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    catalog: dict[str, Any] = yaml.safe_load(text)
    names = set(backends)
    for backend in catalog["backends"]:
        if backend["name"] in names:
            backend["signers"] = [{"public_key": public_key.read_text()}]
    path.write_text(header + yaml.safe_dump(catalog, sort_keys=False))
