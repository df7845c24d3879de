"""Public traffic whose chain starts at the cloud: a dead or failing cloud → the local tier;
outlier detection then keeps requests off the cloud (the breaker is open)."""

from __future__ import annotations

import pytest

from tests.integration.flows.conftest import FlowMesh

pytestmark = [pytest.mark.envoy, pytest.mark.model]


def test_a_cloud_that_went_down_is_replaced_by_the_local_tier(flow_mesh: FlowMesh) -> None:
    flow_mesh.cloud.go_down()
    answers = [flow_mesh.chat("reasoning") for _ in range(3)]
    assert [(a.status, a.tier) for a in answers] == [(200, "local")] * 3
    flow_mesh.cloud.come_up()


def test_a_failing_cloud_is_ejected_and_skipped(flow_mesh: FlowMesh) -> None:
    flow_mesh.cloud.fail(503)
    before = flow_mesh.cloud.requests
    answers = [flow_mesh.chat("reasoning") for _ in range(6)]
    assert [(a.status, a.tier) for a in answers] == [(200, "local")] * 6
    # consecutive_5xx = 2 for the cloud tier: after two 503s the cloud is ejected and the
    # remaining requests go straight to the local tier.
    assert flow_mesh.cloud.requests - before == 2
    ejected = flow_mesh.envoy.admin_text("/clusters")
    assert "cloud::envoy://egress|cloud/::health_flags::/failed_outlier_check" in ejected
