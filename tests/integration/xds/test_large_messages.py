"""A route table larger than gRPC's customary 4 MB message limit reaches a real Envoy.

16 000 plan routes per node make a ~10 MB RDS response. Both ends must take it: the ADS
server (``start_server``: gRPC's send limit is unbounded by default and nothing here
lowers it) and Envoy's ADS client (the bootstrap ``render_bootstrap`` writes leaves the
EnvoyGrpc ``max_receive_message_length`` unset: no limit). Either end refusing it would
reset the stream instead of an ACK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.xdsthread import XdsThread
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, Snapshot, render_bootstrap, typeurls
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config

pytestmark = pytest.mark.envoy
NODE = "edge-big"
TYPES = (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE)
LIMIT = 4 * 1024 * 1024
ROUTES = 20_000
"""Routes of ~250 bytes each: a ~5 MB route table (compiled tables are denser: 16 000
plan routes made a 10.5 MB one)."""


def big_snapshot(listener: int, routes: int, marker: str) -> Snapshot:
    prefixes = [
        (f"/tenant-{i:05d}/{'sensitivity-internal/task-reasoning/' * 6}{marker}/", "backend")
        for i in range(routes)
    ]
    return Snapshot.build(
        clusters=[eds_cluster("backend")],
        endpoints=[load_assignment("backend", [("127.0.0.1", 9)])],
        listeners=[
            http_listener("app", address="127.0.0.1", port=listener, route_config_name="app")
        ],
        routes=[route_config("app", prefixes, response_headers=[("x-config", marker)])],
    )


@pytest.fixture(params=["sotw", "delta"])
def envoy_and_xds(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[XdsThread, EnvoyProcess]]:
    xds = XdsThread()
    spec = BootstrapSpec(
        node_id=NODE,
        xds_host="127.0.0.1",
        xds_port=xds.port,
        admin_port=free_port(),
        mode=request.param,
    )
    try:
        with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
            yield xds, envoy
    finally:
        xds.close()


def acked(xds: XdsThread, snapshot: Snapshot) -> bool:
    status = xds.status(NODE)
    return status is not None and all(
        status.types.get(t) is not None
        and status.types[t].acked_version == snapshot.type_version(t)
        for t in TYPES
    )


def wait_acked(xds: XdsThread, snapshot: Snapshot, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if acked(xds, snapshot):
            return
        time.sleep(0.05)
    raise AssertionError(f"Envoy did not ACK every type within {timeout_s} s: {xds.status(NODE)}")


def test_a_route_table_over_4_mb_is_acked_and_served(
    envoy_and_xds: tuple[XdsThread, EnvoyProcess],
) -> None:
    xds, envoy = envoy_and_xds
    listener = free_port()
    first = big_snapshot(listener, ROUTES, "v1")
    assert len(first.sotw_body(typeurls.ROUTE, None).body) > LIMIT
    xds.set_snapshot(NODE, first)
    envoy.wait_ready(timeout=60)
    wait_acked(xds, first)

    second = big_snapshot(listener, ROUTES, "v2")
    xds.set_snapshot(NODE, second)
    wait_acked(xds, second)
    dump = envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    (config,) = dump["configs"]
    (host,) = config["route_config"]["virtual_hosts"]
    assert len(host["routes"]) == ROUTES
    # The table Envoy serves is the second one (its header names the version).
    (header,) = host["response_headers_to_add"]
    assert header["header"] == {"key": "x-config", "value": "v2"}
    assert host["routes"][-1]["match"]["prefix"].endswith("/v2/")
