"""``tiermesh envoy bootstrap``: the ADS address as given on the command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tiermesh.cli.main import app
from tiermesh.xds import validate_bootstrap

runner = CliRunner()


@pytest.mark.parametrize(
    ("xds", "host", "cluster_type"),
    [
        ("127.0.0.1:18000", "127.0.0.1", "STATIC"),
        ("[::1]:18000", "::1", "STATIC"),
        ("localhost:18000", "localhost", "LOGICAL_DNS"),
        ("controlplane-1:18000", "controlplane-1", "LOGICAL_DNS"),
    ],
)
def test_bootstrap_command_picks_the_ads_cluster_type(
    xds: str, host: str, cluster_type: str
) -> None:
    result = runner.invoke(app, ["envoy", "bootstrap", "--node-id", "edge-1", "--xds", xds])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    validate_bootstrap(document)
    [cluster] = document["static_resources"]["clusters"]
    assert cluster["type"] == cluster_type
    [locality] = cluster["load_assignment"]["endpoints"]
    [lb_endpoint] = locality["lb_endpoints"]
    assert lb_endpoint["endpoint"]["address"]["socket_address"] == {
        "address": host,
        "port_value": 18000,
    }
