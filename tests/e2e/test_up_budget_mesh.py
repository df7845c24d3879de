"""``tiermesh up``: a tenant's spend at the edge reaches the control plane's counters in
etcd, shows in ``tiermesh status --json``, and crossing the budget re-plans the mesh."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.agent_support import TIERMESH, chat
from tests.e2e.up_support import CHILD_ENV, Up, running_up
from tiermesh.demo.mesh import TRIAL_BUDGET_USD, TRIAL_HEADERS, TRIAL_TENANT

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-budget-mesh") / "state") as running:
        yield running


def status(up: Up) -> dict[str, Any]:
    admin = up.mesh["control_plane"]["admin_url"]
    shown = subprocess.run(
        [TIERMESH, "status", "--admin", admin, "--json"],
        capture_output=True, text=True, timeout=30, env=CHILD_ENV, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return dict(json.loads(shown.stdout))


def tenant(document: dict[str, Any], name: str) -> dict[str, Any]:
    (row,) = [t for t in document["tenants"] if t["name"] == name]
    return dict(row)


def test_edge_spend_reaches_the_control_plane_and_status(up: Up) -> None:
    before = tenant(status(up), TRIAL_TENANT)
    assert before["budget_usd"] == TRIAL_BUDGET_USD
    assert before["exhausted"] is False
    reconciles = status(up)["reconcile"]["count"]

    tiers: list[str] = []
    shown = before
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not shown["exhausted"]:
        code, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert code == 200, body
        tiers.append(headers["x-tiermesh-tier"])
        time.sleep(0.5)  # access log → ledger → next report (about a second)
        shown = tenant(status(up), TRIAL_TENANT)
    assert tiers[0] == "cloud", tiers
    assert shown["exhausted"] is True, (shown, tiers)
    assert shown["spent_usd"] >= TRIAL_BUDGET_USD

    # The crossing re-planned the mesh; later answers come from the local tier.
    assert status(up)["reconcile"]["count"] > reconciles
    for _ in range(3):
        code, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert code == 200, body
        assert headers["x-tiermesh-tier"] == "local", headers
    # The edge's budget file carries the mesh total it heard back.
    budget = json.loads((up.state / "edge-1" / "budget.json").read_text())[TRIAL_TENANT]
    assert budget["spent_usd"] >= shown["spent_usd"] - 1e-9
