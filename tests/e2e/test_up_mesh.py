"""``tiermesh up`` as a user runs it: etcd, the control plane and three nodes (agents,
Envoys, llama.cpp) start within a bound; requests flow through the edge; restricted data
stays local; killing the edge model under load loses no public request; Ctrl-C leaves
nothing behind; a port in use is named."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.agent_support import TIERMESH, alive, chat
from tests.e2e.up_support import ENV, START_BOUND_S, Up, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "classify",
          "x-tiermesh-sensitivity": "public"}  # fmt: skip


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up") / "state", graceful=False) as running:
        yield running


def test_up_starts_in_bounded_time_and_prints_the_endpoint(up: Up) -> None:
    assert up.took_s < START_BOUND_S
    text = "".join(up.lines)
    assert f"App endpoint: http://127.0.0.1:{up.port}" in text
    assert "curl -s" in text
    assert "x-tiermesh-tenant: acme" in text
    assert "x-tiermesh-sensitivity: public" in text
    assert "x-tiermesh-task: reasoning" in text  # the curl that reaches the cloud tier
    names = [p.name() for p in up.descendants()]
    assert sum("envoy" in n for n in names) == 3
    assert any("etcd" in n for n in names)

    status, headers, body = chat(up.port, up.keyed(PUBLIC))
    assert status == 200, body
    assert headers["server"] == "envoy"
    assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"

    shown = subprocess.run(
        [TIERMESH, "status", "--admin", up.mesh["control_plane"]["admin_url"], "--json"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    nodes = {n["id"]: n for n in json.loads(shown.stdout)["nodes"]}
    assert set(nodes) == {"edge-1", "private-1", "cloud-gw-1"}
    assert nodes["edge-1"]["inference_url"] == f"http://127.0.0.1:{up.port}"

    # Both model nodes serve the model signed with the key `up` made at start.
    signer = up.mesh["model_signature"]["signer"]
    deadline = time.monotonic() + 15
    while True:
        shown = subprocess.run(
            [TIERMESH, "status", "--admin", up.mesh["control_plane"]["admin_url"], "--json"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        nodes = {n["id"]: n for n in json.loads(shown.stdout)["nodes"]}
        models = [(nodes[n].get("load") or {}).get("model") or {} for n in ("edge-1", "private-1")]
        if all(m.get("outcome") == "verified" for m in models) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(m.get("outcome"), m.get("signer")) for m in models] == [("verified", signer)] * 2


def _listening_tcp_ports(process: psutil.Process) -> set[int]:
    return {
        c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }


def test_node_local_services_are_on_private_unix_sockets(up: Up) -> None:
    """Loopback is not a trust boundary: every node's ext_authz (and the edge's usage log
    and cascade handler) is registered as a Unix socket, Envoy's admin is one too, each of
    mode 0600; no agent listens on TCP but for its read-only metrics endpoint, and each
    Envoy only on its app and mesh ports."""
    mesh = up.mesh
    shown = subprocess.run(
        [TIERMESH, "status", "--admin", mesh["control_plane"]["admin_url"], "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    registrations = {n["id"]: n["registration"] for n in json.loads(shown.stdout)["nodes"]}
    services = {"edge-1": ("authz", "usage", "cascade"), "private-1": ("authz",),
                "cloud-gw-1": ("authz",)}  # fmt: skip
    node_ports: set[int | None] = set()
    for node_id, node in mesh["nodes"].items():
        registration = registrations[node_id]
        sockets = [Path(registration[f"{name}_socket"]) for name in services[node_id]]
        sockets.append(Path(node["envoy_admin"]))
        for path in sockets:
            assert stat.S_ISSOCK(path.lstat().st_mode), path
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
        assert registration["authz_port"] is None
        assert registration["usage_port"] is None
        assert registration["cascade_port"] is None
        # The one TCP port an agent may have is its read-only Prometheus endpoint.
        metrics_port = int(node["metrics_url"].rsplit(":", 1)[1].split("/", 1)[0])
        agent_ports = _listening_tcp_ports(psutil.Process(node["agent_pid"]))
        assert agent_ports <= {metrics_port}, node_id
        node_ports |= {int(node["app_url"].rsplit(":", 1)[1]), node["mesh_port"]}
    envoys = [p for p in up.descendants() if "envoy" in p.name()]
    assert len(envoys) == 3
    for envoy in envoys:
        assert _listening_tcp_ports(envoy) <= node_ports, envoy.cmdline()


def test_restricted_data_through_the_edge_lands_on_a_local_tier(up: Up) -> None:
    restricted = {**PUBLIC, "x-tiermesh-sensitivity": "restricted"}
    for _ in range(3):
        status, headers, body = chat(up.port, up.keyed(restricted))
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in {"local", "private"}
    assert headers["x-tiermesh-tier"] == "local"


def _edge_model(up: Up) -> psutil.Process:
    port = str(up.mesh["nodes"]["edge-1"]["model_port"])
    for process in up.descendants():
        command = process.cmdline()
        if "tiermesh.agents.models.serve" in command and port in command:
            return process
    raise AssertionError("the edge model server is not running")


def test_killing_the_edge_model_under_load_loses_no_public_request(up: Up) -> None:
    tiers: list[str] = []
    killed_at = 5
    for index in range(30):
        if index == killed_at:
            _edge_model(up).kill()
        status, headers, body = chat(up.port, up.keyed(PUBLIC), timeout=30)
        assert status == 200, f"request {index}: {status} {body[:200]!r}"
        tiers.append(headers["x-tiermesh-tier"])
    assert tiers[:killed_at] == ["local"] * killed_at
    # The request right after the kill is answered further down the chain: by the private
    # tier, or by the cloud while the private node's first mTLS health checks are pending.
    assert tiers[killed_at] in {"private", "cloud"}, tiers


def test_ctrl_c_stops_everything_and_leaves_nothing(up: Up) -> None:
    children = up.descendants()
    assert children
    started = time.monotonic()
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 25
    assert alive(children) == []
    assert up.proc.stdout is not None
    assert "stopped; nothing left running." in up.proc.stdout.read()


def test_up_names_a_port_in_use_and_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [TIERMESH, "up", "--port", str(port), "--state-dir", str(tmp_path / "s")],
            capture_output=True, text=True, timeout=60, env=ENV, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"app listener port {port} on 127.0.0.1 is in use" in result.stdout
    assert "stopped; nothing left running." in result.stdout
