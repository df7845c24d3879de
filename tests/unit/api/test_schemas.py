"""The committed JSON Schemas in policies/schemas/ are exactly what the models generate.

Regenerate after changing a model: ``TIERMESH_UPDATE_SCHEMAS=1 pytest tests/unit/api``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tiermesh.controlplane.api import SCHEMA_MODELS, render_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "policies" / "schemas"
UPDATE = os.environ.get("TIERMESH_UPDATE_SCHEMAS") == "1"


@pytest.mark.parametrize("file", sorted(SCHEMA_MODELS))
def test_committed_schema_matches_the_model(file: str) -> None:
    expected = render_schemas()[file]
    path = SCHEMA_DIR / file
    if UPDATE:
        path.write_text(expected, encoding="utf-8")
    assert path.exists(), f"{path} is missing; run with TIERMESH_UPDATE_SCHEMAS=1"
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path} differs from {SCHEMA_MODELS[file].__name__}; "
        "regenerate with TIERMESH_UPDATE_SCHEMAS=1 and review the diff"
    )


def test_every_field_is_documented() -> None:
    """Field docstrings become descriptions: a field without one is undocumented."""
    undocumented: list[str] = []
    for model in SCHEMA_MODELS.values():
        schema = model.model_json_schema()
        for name, definition in {model.__name__: schema, **schema.get("$defs", {})}.items():
            for field, spec in definition.get("properties", {}).items():
                if "description" not in spec:
                    undocumented.append(f"{name}.{field}")
    assert undocumented == []


def test_schemas_are_json_with_an_id() -> None:
    for file, text in render_schemas().items():
        assert json.loads(text)["$id"].endswith(file)
