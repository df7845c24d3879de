"""``deploy/kubernetes/`` against the code it deploys: the real CLI, the agent's config
model, the admin server the probes ask, the ports, the images compose runs.

Each check (``checks.py``) runs on the manifests as written, then on a broken copy, so
a check that can no longer fail is caught too.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.unit.compose.conftest import COMPOSE_FILE
from tests.unit.kubernetes import checks
from tests.unit.kubernetes.manifests import find, pod_spec
from tiermesh.controlplane.runtime.admin import start_admin


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _container(docs: list[dict[str, Any]], kind: str, name: str, container: str) -> Any:
    spec = pod_spec(find(docs, kind, name))
    (found,) = [
        c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == container
    ]
    return found


def _node_yaml(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    config_map = find(docs, "ConfigMap", name)
    document = yaml.safe_load(config_map["data"]["node.yaml"])
    assert isinstance(document, dict)
    return document


def _set_node_yaml(docs: list[dict[str, Any]], name: str, document: dict[str, Any]) -> None:
    find(docs, "ConfigMap", name)["data"]["node.yaml"] = yaml.safe_dump(document)


def _args(docs: list[dict[str, Any]]) -> list[str]:
    args = _container(docs, "StatefulSet", "tiermesh-controlplane", "controlplane")["args"]
    assert isinstance(args, list)
    return args


def _replace_arg(docs: list[dict[str, Any]], flag: str, value: str) -> None:
    args = _args(docs)
    args[args.index(flag) + 1] = value


def test_images_are_the_ones_compose_runs(
    docs: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    assert checks.check_images_match_compose(docs, compose) == []
    _container(docs, "DaemonSet", "tiermesh-node-edge", "envoy")["image"] = (
        "envoyproxy/envoy:v1.39.0"
    )
    assert checks.check_images_match_compose(docs, compose) == [
        "tiermesh-node-edge/envoy: envoyproxy/envoy:v1.39.0, compose runs envoyproxy/envoy:v1.40.0"
    ]


def test_every_tiermesh_command_line_parses_with_the_real_cli(docs: list[dict[str, Any]]) -> None:
    assert checks.check_cli_args(docs) == []


def test_the_cli_check_refuses_what_tiermesh_refuses(docs: list[dict[str, Any]]) -> None:
    _args(docs)[_args(docs).index("--join")] = "--join-listen"
    agent = _container(docs, "DaemonSet", "tiermesh-node-edge", "agent")
    agent["env"] = []  # $(NODE_NAME) can no longer be expanded
    problems = checks.check_cli_args(docs)
    assert any("No such option: --join-listen" in p for p in problems), problems
    assert any("unexpanded" in p and "$(NODE_NAME)" in p for p in problems), problems


def test_control_plane_ports_agree_with_its_services(docs: list[dict[str, Any]]) -> None:
    assert checks.check_controlplane_ports(docs) == []


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--listen", "0.0.0.0:18010", "--listen 0.0.0.0:18010: containerPort ads is 18000"),
        ("--audit", "127.0.0.1:18005", "--audit 127.0.0.1:18005 is not reachable"),
        ("--admin", "0.0.0.0:18003", "--admin 0.0.0.0:18003: no authentication"),
        ("--admin", "127.0.0.1:18004", "the admin port 18004 is a containerPort"),
    ],
)
def test_the_port_check_catches_drift(
    docs: list[dict[str, Any]], flag: str, value: str, expected: str
) -> None:
    _replace_arg(docs, flag, value)
    problems = checks.check_controlplane_ports(docs)
    assert any(p.startswith(expected) for p in problems), problems


def test_a_service_on_a_port_nobody_listens_on_is_caught(docs: list[dict[str, Any]]) -> None:
    service = find(docs, "Service", "tiermesh-controlplane")
    service["spec"]["ports"].append({"name": "admin", "port": 18003, "targetPort": 18003})
    problems = checks.check_controlplane_ports(docs)
    assert "Service tiermesh-controlplane exposes the admin port" in problems


def test_control_plane_probes_ask_the_admin_servers_healthz(docs: list[dict[str, Any]]) -> None:
    assert checks.check_controlplane_probes(docs) == []
    _replace_arg(docs, "--admin", "127.0.0.1:18013")
    assert len(checks.check_controlplane_probes(docs)) == 3


def _probe_exit_code(command: list[str], port: int, path: str) -> int:
    """Run the control plane's probe command against a real admin server on ``port``."""
    script = command[2].replace("127.0.0.1:18003/healthz", f"127.0.0.1:{port}{path}")
    assert script != command[2], "the probe no longer asks 127.0.0.1:18003/healthz"
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=30, check=False
    ).returncode


async def test_the_probe_command_passes_on_a_live_admin_server_and_fails_otherwise(
    docs: list[dict[str, Any]],
) -> None:
    """The exec probe really runs: 0 on ``/healthz`` of a started admin server, non-zero on
    a path it does not serve and on a port nothing listens on."""
    probe = _container(docs, "StatefulSet", "tiermesh-controlplane", "controlplane")
    command = probe["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    server = await start_admin("127.0.0.1", 0, dict)
    try:
        run = asyncio.to_thread
        assert await run(_probe_exit_code, command, server.port, "/healthz") == 0
        assert await run(_probe_exit_code, command, server.port, "/nothing-here") != 0
    finally:
        await server.aclose()
    assert await asyncio.to_thread(_probe_exit_code, command, server.port, "/healthz") != 0


def test_control_plane_files_are_on_the_right_volumes(docs: list[dict[str, Any]]) -> None:
    assert checks.check_controlplane_files(docs) == []


def test_a_credentials_file_straight_from_the_secret_is_caught(docs: list[dict[str, Any]]) -> None:
    """Mounted directly, the file would be group-readable (fsGroup) and refused at start."""
    _replace_arg(docs, "--credentials-file", "/etc/tiermesh-secrets/cloud-credentials.yaml")
    container = _container(docs, "StatefulSet", "tiermesh-controlplane", "controlplane")
    container["volumeMounts"].append(
        {"name": "secret-source", "mountPath": "/etc/tiermesh-secrets", "readOnly": True}
    )
    init = _container(docs, "StatefulSet", "tiermesh-controlplane", "secrets")
    init["command"][init["command"].index("-m") + 1] = "0440"
    problems = checks.check_controlplane_files(docs)
    assert any("credentials_file" in p and "memory emptyDir" in p for p in problems), problems
    assert "no init container installs ca-passphrase (0400) from a Secret" in problems


def test_node_configs_load_with_the_agent_config_model(docs: list[dict[str, Any]]) -> None:
    assert checks.check_node_configs(docs) == []


def test_the_node_config_check_catches_bad_and_drifted_files(docs: list[dict[str, Any]]) -> None:
    private = _node_yaml(docs, "tiermesh-node-private")
    private["control_plane"]["ads"] = ["tiermesh-controlplane:18010"]
    private["envoy"]["run"] = True
    _set_node_yaml(docs, "tiermesh-node-private", private)
    cloud = _node_yaml(docs, "tiermesh-node-cloud-gateway")
    cloud["node"]["tierr"] = "cloud"
    _set_node_yaml(docs, "tiermesh-node-cloud-gateway", cloud)
    edge = _container(docs, "DaemonSet", "tiermesh-node-edge", "agent")
    edge["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] = "metadata.name"  # "<ds>-0"
    edge["args"][edge["args"].index("--node-id") + 1] = "private-1"
    problems = checks.check_node_configs(docs)
    assert any("control_plane.ads" in p and ":18000" in p for p in problems), problems
    assert any("envoy.run must be false" in p for p in problems), problems
    assert any("node.tierr" in p and "Extra inputs" in p for p in problems), problems
    assert any("node ids repeat" in p for p in problems), problems


def test_an_edge_node_name_that_is_not_a_dns_label_is_refused(docs: list[dict[str, Any]]) -> None:
    edge = _container(docs, "DaemonSet", "tiermesh-node-edge", "agent")
    edge["env"] = [{"name": "NODE_NAME", "value": "box-1.example.com"}]
    problems = checks.check_node_configs(docs)
    assert any("tiermesh-node-edge/agent" in p and "node.id" in p for p in problems), problems


def test_node_paths_are_where_the_pod_mounts_them(docs: list[dict[str, Any]]) -> None:
    assert checks.check_node_volumes(docs) == []


def test_the_volume_check_catches_a_socket_in_a_folder_nobody_creates(
    docs: list[dict[str, Any]],
) -> None:
    """compose's named volume starts with the image's /run/tiermesh/envoy; an emptyDir
    starts empty, and the SDS server refuses a socket whose directory is missing."""
    edge = _node_yaml(docs, "tiermesh-node-edge")
    edge["envoy"]["sds_socket"] = "/run/tiermesh/envoy/sds.sock"
    edge["identity"]["state_dir"] = "/tmp/state"
    _set_node_yaml(docs, "tiermesh-node-edge", edge)
    problems = checks.check_node_volumes(docs)
    assert any("sds.sock's directory is not a mount point" in p for p in problems), problems
    assert any("state_dir /tmp/state dies with the pod" in p for p in problems), problems


def test_envoy_waits_for_the_agent_and_probes_the_ready_listener(
    docs: list[dict[str, Any]],
) -> None:
    assert checks.check_node_sidecars(docs) == []
    private = _node_yaml(docs, "tiermesh-node-private")
    private["envoy"]["ready_address"] = "127.0.0.1:9902"
    _set_node_yaml(docs, "tiermesh-node-private", private)
    del _container(docs, "Deployment", "tiermesh-node-cloud-gateway", "agent")["restartPolicy"]
    problems = checks.check_node_sidecars(docs)
    assert sum("does not GET /ready at /dev/tcp/127.0.0.1/9902" in p for p in problems) == 3
    assert any("cloud-gateway/agent: not an init container" in p for p in problems), problems


def test_scrape_annotations_name_the_metrics_ports(docs: list[dict[str, Any]]) -> None:
    assert checks.check_metrics_annotations(docs) == []
    _replace_arg(docs, "--metrics", "0.0.0.0:18014")
    find(docs, "StatefulSet", "tiermesh-etcd")["spec"]["template"]["metadata"]["annotations"][
        "prometheus.io/port"
    ] = "2379"
    problems = checks.check_metrics_annotations(docs)
    assert any("tiermesh-controlplane: prometheus.io/port 18004" in p for p in problems)
    assert any("tiermesh-etcd: prometheus.io/port 2379" in p for p in problems)
