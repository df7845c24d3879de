"""What the server reads from Envoy's CheckRequest: a client cannot hide a cut body."""

from __future__ import annotations

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from tiermesh.agents.authz import to_check_input


def _request(partial: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = "/v1/chat/completions"
    http.headers["x-envoy-auth-partial-body"] = partial
    http.raw_body = b'{"messages": []}'
    return request


@pytest.mark.parametrize(
    ("value", "partial"),
    [
        ("true", True),
        ("TRUE", True),
        ("false,true", True),
        ("true, false", True),
        ("false", False),
        ("", False),
        ("yes", False),
    ],
)
def test_the_partial_body_flag_counts_any_true(value: str, partial: bool) -> None:
    assert to_check_input(_request(value)).partial is partial
