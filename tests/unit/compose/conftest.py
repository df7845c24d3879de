"""Loads the files under ``compose/`` once per test session; nothing here runs a container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.schema.json")


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """``compose/compose.yaml`` as Compose sees it: anchors and ``<<`` merge keys resolved."""
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found
