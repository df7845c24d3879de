"""A cloud whose first byte is later than the hedge deadline: the local answer is served."""

from __future__ import annotations

import pytest

from tests.integration.flows.conftest import HEDGE_MS, FlowMesh

pytestmark = [pytest.mark.envoy, pytest.mark.model]


def test_a_late_cloud_is_hedged_to_the_local_tier(flow_mesh: FlowMesh) -> None:
    flow_mesh.cloud.first_byte_delay_s = 3.0
    answer = flow_mesh.chat("reasoning")
    assert (answer.status, answer.tier) == (200, "local")
    assert answer.json()["choices"][0]["message"]["content"] is not None
    assert HEDGE_MS / 1000 <= answer.elapsed_s < 2.5


def test_a_late_cloud_stream_is_hedged_to_the_local_stream(flow_mesh: FlowMesh) -> None:
    flow_mesh.cloud.first_byte_delay_s = 3.0
    answer = flow_mesh.chat("reasoning", stream=True)
    assert (answer.status, answer.tier) == (200, "local")
    events = [line for line in answer.body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > 2
    assert HEDGE_MS / 1000 <= answer.elapsed_s < 2.5


def test_an_answer_in_time_comes_from_the_cloud(flow_mesh: FlowMesh) -> None:
    flow_mesh.cloud.first_byte_delay_s = 0.1
    answer = flow_mesh.chat("reasoning", stream=True)
    assert (answer.status, answer.tier) == (200, "cloud")
