"""Budget sources: the in-memory table and the JSON file that is re-read on change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tiermesh.agents.authz import (
    BudgetSource,
    BudgetState,
    BudgetUnavailable,
    JsonFileBudgetSource,
    StaticBudgetSource,
)


async def test_static_source() -> None:
    source = StaticBudgetSource({"acme": BudgetState.of(10, 100)})
    assert isinstance(source, BudgetSource)
    assert await source.state("acme") == BudgetState(True, False, 10, 100)
    assert await source.state("other") == BudgetState(known=False)
    source.set("acme", BudgetState.of(100, 100))
    assert (await source.state("acme")).exhausted


async def test_json_file_source_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "budgets.json"
    source = JsonFileBudgetSource(path)
    assert await source.state("acme") == BudgetState(known=False)
    path.write_text(json.dumps({"acme": {"spent_usd": 5, "limit_usd": 100}, "odd": 3}))
    assert await source.state("acme") == BudgetState(True, False, 5.0, 100.0)
    assert await source.state("odd") == BudgetState(known=False)
    path.write_text(json.dumps({"acme": {"spent_usd": 150.5, "limit_usd": 100}}))
    os.utime(path, ns=(1, 2))  # a different mtime even on a coarse clock
    assert await source.state("acme") == BudgetState(True, True, 150.5, 100.0)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
async def test_a_broken_file_is_unavailable(tmp_path: Path, content: str) -> None:
    path = tmp_path / "budgets.json"
    path.write_text(content)
    with pytest.raises(BudgetUnavailable, match=r"budgets\.json"):
        await JsonFileBudgetSource(path).state("acme")
