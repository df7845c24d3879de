"""Loads the manifests under ``deploy/kubernetes/`` once per test session; no cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.unit.kubernetes.manifests import load_manifests


@pytest.fixture(scope="session")
def _loaded() -> list[dict[str, Any]]:
    return load_manifests()


@pytest.fixture
def docs(_loaded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every object of every manifest, in file order; a deep copy a test may mutate."""
    return copy.deepcopy(_loaded)
