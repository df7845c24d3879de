"""The confidence cascade end to end: Envoy → handler → per-step routes → one answer."""

from __future__ import annotations

import pytest

from tests.integration.cascade.conftest import CascadeFactory

pytestmark = [pytest.mark.envoy, pytest.mark.model]

UNREACHABLE = 1.0
"""A threshold no real answer of the tiny model meets (its top-1 probabilities are low)."""
ANY = 1e-9
"""The least threshold a plan may hold (``min_confidence`` > 0): every answer meets it."""


def test_a_threshold_the_local_model_cannot_meet_is_answered_by_the_next_tier(
    cascade_mesh: CascadeFactory,
) -> None:
    with cascade_mesh(UNREACHABLE) as mesh:
        (route,) = [
            r
            for r in mesh.plan.routes
            if r.match.task == "triage" and r.match.sensitivity == "public"
        ]
        assert [step.backend for step in route.chain] == ["edge", "cloud"]
        assert route.cascade is not None
        before = mesh.cloud.requests
        answer = mesh.triage()
        assert answer.status == 200, answer.body
        assert answer.tier == "cloud"
        assert answer.headers["x-tiermesh-backend"] == "cloud"
        assert answer.headers["x-tiermesh-cascade-steps"] == "2"
        body = answer.json()
        assert len(body["choices"]) == 1
        assert body["choices"][0].get("logprobs") is None
        assert mesh.cloud.requests == before + 1


def test_a_threshold_any_answer_meets_is_answered_locally(cascade_mesh: CascadeFactory) -> None:
    with cascade_mesh(ANY) as mesh:
        before = mesh.cloud.requests
        answer = mesh.triage()
        assert answer.status == 200, answer.body
        assert answer.tier == "local"
        assert answer.headers["x-tiermesh-cascade-steps"] == "1"
        assert 0 < float(answer.headers["x-tiermesh-cascade-confidence"]) <= 1
        body = answer.json()
        assert body["choices"][0]["logprobs"] is None  # the client did not ask for them
        assert mesh.cloud.requests == before


def test_asked_logprobs_are_kept(cascade_mesh: CascadeFactory) -> None:
    with cascade_mesh(ANY) as mesh:
        answer = mesh.triage(logprobs=True, top_logprobs=2)
        assert answer.headers["x-tiermesh-cascade-steps"] == "1"
        assert answer.json()["choices"][0]["logprobs"]["content"]


def test_a_streaming_request_gets_one_event_stream(cascade_mesh: CascadeFactory) -> None:
    with cascade_mesh(ANY) as mesh:
        answer = mesh.triage(stream=True)
        assert answer.status == 200, answer.body
        assert answer.headers["x-tiermesh-cascade-steps"] == "1"
        assert answer.body.rstrip().endswith("data: [DONE]")


def test_the_local_step_down_is_answered_by_the_next_tier(cascade_mesh: CascadeFactory) -> None:
    with cascade_mesh(ANY, local_down=True) as mesh:
        answer = mesh.triage()
        assert answer.status == 200, answer.body
        assert answer.tier == "cloud"
        assert answer.headers["x-tiermesh-cascade-steps"] == "2"


CASCADE_HEADERS = ("x-tiermesh-cascade-step", "x-tiermesh-cascade-token")


def test_a_client_step_header_is_walked_from_the_first_step(
    cascade_mesh: CascadeFactory,
) -> None:
    with cascade_mesh(ANY, record=True) as mesh:
        assert mesh.recorder is not None
        before = (len(mesh.recorder.seen), mesh.cloud.requests)
        spoofed = {"x-tiermesh-cascade-step": "1", "x-tiermesh-cascade-token": "guessed"}
        answer = mesh.send("triage", extra_headers=spoofed)
        assert answer.status == 200, answer.body
        assert answer.headers["x-tiermesh-cascade-steps"] == "1"  # step 0 answered
        assert answer.tier == "local"
        assert (len(mesh.recorder.seen), mesh.cloud.requests) == (before[0] + 1, before[1])
        assert not [h for h in CASCADE_HEADERS if h in mesh.recorder.seen[-1]]


def test_a_client_token_header_never_reaches_a_backend(cascade_mesh: CascadeFactory) -> None:
    with cascade_mesh(ANY, record=True) as mesh:
        assert mesh.recorder is not None
        answer = mesh.send("classify", extra_headers={"x-tiermesh-cascade-token": "guessed"})
        assert answer.status == 200, answer.body
        assert answer.tier == "local"
        assert mesh.recorder.seen
        assert all("x-tiermesh-cascade-token" not in seen for seen in mesh.recorder.seen)


def test_no_secret_of_the_handler_is_in_envoys_config(cascade_mesh: CascadeFactory) -> None:
    """The step routes match ext_authz's metadata: the handler's secret is in no route,
    so Envoy's config_dump (and the xDS it came from) cannot give it away."""
    with cascade_mesh(UNREACHABLE) as mesh:
        token = mesh.handler.token
        assert token is not None
        answer = mesh.triage()
        assert answer.status == 200, answer.body
        assert answer.tier == "cloud"  # both steps were routed by the metadata
        dump = mesh.envoy.admin_text("/config_dump?include_eds")
        assert "tiermesh_cascade_step" in dump  # the step routes are there...
        assert token not in dump  # ...and match no secret
        # The provider key the cloud step was sent with is an SDS secret, shown redacted.
        assert mesh.cloud.api_key not in dump
        assert "[redacted]" in dump
