"""The demo's cloud control: steering the real HTTPS stand-ins over HTTP; bad input is
refused, named, and changes nothing."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.demo.standin_control import StandinControl


@pytest.fixture
def control() -> Iterator[StandinControl]:
    with CloudStandin(name="eu") as standin:
        server = StandinControl({"eu": standin})
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _post(control: StandinControl, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{control.url}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), dict(json.load(answer))
    except urllib.error.HTTPError as exc:
        return exc.code, dict(json.load(exc))


def _get(control: StandinControl) -> dict[str, Any]:
    with urllib.request.urlopen(f"{control.url}/standins", timeout=10) as answer:
        return dict(json.load(answer))


def _models(standin: CloudStandin) -> int:
    context = ssl.create_default_context(cafile=str(standin.ca_path))
    request = urllib.request.Request(
        f"{standin.base_url}/v1/models", headers={"authorization": f"Bearer {standin.api_key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_state_of_every_standin_is_shown(control: StandinControl) -> None:
    state = _get(control)
    assert state == {"eu": {"up": True, "first_byte_delay_s": 0.0, "failure_status": None,
                            "requests": 0, "posts": 0, "unauthorized": 0}}  # fmt: skip


def test_posts_count_requests_with_a_body_and_never_health_checks(
    control: StandinControl,
) -> None:
    standin = control.standins["eu"]
    assert _models(standin) == 200  # a GET, as Envoy's health checks are
    context = ssl.create_default_context(cafile=str(standin.ca_path))
    request = urllib.request.Request(
        f"{standin.base_url}/v1/chat/completions",
        data=b'{"messages": [{"role": "user", "content": "hi"}]}',
        headers={"authorization": "Bearer wrong"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5, context=context)
    refused.value.close()
    state = _get(control)["eu"]
    assert (state["requests"], state["posts"], state["unauthorized"]) == (2, 1, 1)


def test_steering_changes_only_the_given_fields(control: StandinControl) -> None:
    standin = control.standins["eu"]
    status, state = _post(control, "/standins/eu", b'{"failure_status": 502}')
    assert status == 200
    assert state["failure_status"] == 502
    assert _models(standin) == 502
    status, state = _post(control, "/standins/eu", b'{"first_byte_delay_s": 1.5}')
    assert (state["first_byte_delay_s"], state["failure_status"]) == (1.5, 502)
    status, state = _post(control, "/standins/eu", b'{"failure_status": null}')
    assert state["failure_status"] is None
    assert _models(standin) == 200


def test_down_closes_the_port_and_up_reopens_it(control: StandinControl) -> None:
    standin = control.standins["eu"]
    assert _post(control, "/standins/eu", b'{"up": false}')[1]["up"] is False
    with pytest.raises(urllib.error.URLError):
        _models(standin)
    assert _post(control, "/standins/eu", b'{"up": true}')[1]["up"] is True
    assert _models(standin) == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "named"),
    [
        ("/standins/eu", b'{"down": true}', 400, "down: Extra inputs are not permitted"),
        ("/standins/eu", b'{"failure_status": 404}', 400, "failure_status"),
        ("/standins/eu", b'{"first_byte_delay_s": -1}', 400, "first_byte_delay_s"),
        ("/standins/eu", b"not json", 400, "Invalid JSON"),
        ("/standins/us", b"{}", 404, "no cloud stand-in named 'us' (known: eu)"),
        ("/elsewhere", b"{}", 404, "no route for POST /elsewhere"),
    ],
)
def test_bad_input_is_named_and_changes_nothing(
    control: StandinControl, path: str, body: bytes, status: int, named: str
) -> None:
    before = _get(control)
    got, answer = _post(control, path, body)
    assert got == status
    assert named in answer["error"]
    assert _get(control) == before
