"""Contract models: frozen, closed to unknown fields, and the few rules they enforce."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tiermesh.controlplane.api import NodeInfo, PlanInput, RetryPolicy, RouteMatch


def test_models_are_frozen() -> None:
    node = NodeInfo(id="edge-1", tier="local", region="eu-west")
    with pytest.raises(ValidationError):
        node.id = "other"  # type: ignore[misc]


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PlanInput.model_validate(
            {"node": {"id": "n", "tier": "local", "region": "r"}, "tenant": "acme"}
        )


def test_names_must_be_header_safe() -> None:
    with pytest.raises(ValidationError, match="String should match pattern"):
        RouteMatch(tenant="Acme Corp", sensitivity="public", task="*", model="*")


def test_backoff_max_not_below_base() -> None:
    with pytest.raises(ValidationError, match="backoff_max_ms must be at least"):
        RetryPolicy(count=1, backoff_base_ms=500, backoff_max_ms=100)


def test_plan_input_defaults() -> None:
    parsed = PlanInput.model_validate({"node": {"id": "n", "tier": "cloud", "region": "us"}})
    assert parsed.model_dump(mode="json") == {
        "version": "v1",
        "node": {"id": "n", "tier": "cloud", "region": "us", "residency": []},
    }
