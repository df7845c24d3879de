"""The restricted routes' sensitivity matcher in a real Envoy: the value ``restricted``, an
empty value and a missing header all take the restricted route; any other value does not.
The verifier's model of that matcher (``verify/matching.py``) is checked on the same values,
so what the verifier judges reachable by restricted traffic is what Envoy routes there."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from tiermesh.controlplane.api import MATCH_HEADERS
from tiermesh.controlplane.generators import routes
from tiermesh.controlplane.verify.matching import may_match
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port

pytestmark = pytest.mark.envoy

SENSITIVITY = MATCH_HEADERS["sensitivity"]
CASES = [
    (None, True),
    ("", True),
    ("restricted", True),
    ("public", False),
    ("internal", False),
    ("restricted,public", False),
    ("xrestricted", False),
    ("restricted2", False),
    ("RESTRICTED", False),
]


def _bootstrap(admin: int, app: int, matcher: dict[str, Any]) -> dict[str, Any]:
    def answer(status: int, body: str) -> dict[str, Any]:
        return {"status": status, "body": {"inline_string": body}}

    route_config = {
        "virtual_hosts": [
            {
                "name": "app",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/", "headers": [matcher]},
                        "direct_response": answer(200, "restricted"),
                    },
                    {"match": {"prefix": "/"}, "direct_response": answer(404, "other")},
                ],
            }
        ]
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "app",
        "route_config": route_config,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "app",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": app}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


@pytest.fixture(scope="module")
def app_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    matcher = json_format.MessageToDict(
        routes.restricted_matcher(),
        preserving_proto_field_name=True,
    )
    admin, app = free_port(), free_port()
    workdir: Path = tmp_path_factory.mktemp("sensitivity")
    with EnvoyProcess(_bootstrap(admin, app, matcher), workdir=workdir) as envoy:
        envoy.wait_ready(10)
        yield app


def _routed(port: int, value: str | None) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {} if value is None else {SENSITIVITY: value}
        connection.request("GET", "/v1/models", headers=headers)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize(("value", "restricted"), CASES)
def test_envoy_and_the_verifier_agree_on_the_restricted_matcher(
    app_port: int, value: str | None, restricted: bool
) -> None:
    assert _routed(app_port, value) == ("restricted" if restricted else "other")
    matcher = routes.restricted_matcher()
    assert may_match([matcher], SENSITIVITY, value) is restricted
