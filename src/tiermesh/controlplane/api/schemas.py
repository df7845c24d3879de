"""JSON Schemas of the policy's input, data and decision, generated from the models.

The committed copies live in ``policies/schemas/``; a unit test keeps them equal
to :func:`render_schemas` (``TIERMESH_UPDATE_SCHEMAS=1`` rewrites them).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel

from tiermesh.controlplane.api.catalog import Catalog
from tiermesh.controlplane.api.compact_plan import CompactPlan
from tiermesh.controlplane.api.plan import Plan, PlanInput

__all__ = ["SCHEMA_MODELS", "render_schemas"]

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "plan_input.schema.json": PlanInput,
    "plan.schema.json": Plan,
    "compact_plan.schema.json": CompactPlan,
    "catalog.schema.json": Catalog,
}
"""File name -> model, for every committed schema."""


def render_schemas() -> dict[str, str]:
    """File name -> schema text (sorted keys, two-space indent, final newline).

    Input schemas are validation-mode schemas (what a producer may send); the
    plan schemas are serialization-mode (what the policy emits).
    """
    rendered: dict[str, str] = {}
    for file, model in SCHEMA_MODELS.items():
        mode: Literal["validation", "serialization"] = (
            "serialization" if model in (Plan, CompactPlan) else "validation"
        )
        schema = model.model_json_schema(mode=mode)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://tiermesh.dev/schemas/v1/{file}"
        rendered[file] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered
