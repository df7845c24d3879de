"""``tiermesh agent run`` with a catalog that names who may sign the edge node's model: an
untrusted signature keeps llama.cpp stopped, the node reports unhealthy (status shows why),
restricted traffic fails closed, the agent's decision log holds a signed record with the
reason; a pushed catalog that trusts the signer brings the model up, with its digest and
signer in ``tiermesh status``."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.agent_support import (
    AgentProc,
    NodePorts,
    chat,
    eventually_ok,
    join_token,
    node_yaml,
)
from tests.integration.controlplane.test_controlplane_run import Running, start_plane, tiermesh
from tiermesh.agents.decisionlog import load_signers, read_spool, verify
from tiermesh.agents.models import write_tiny_gguf
from tiermesh.demo.catalog import DemoEndpoint, write_demo_policies
from tiermesh.modelsig import generate_key_pair, sign_model
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
NODE = "edge-1"
PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "classify",
          "x-tiermesh-sensitivity": "public"}  # fmt: skip
RESTRICTED = {**PUBLIC, "x-tiermesh-sensitivity": "restricted"}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Running]:
    with EtcdServer.for_tests() as etcd:
        running = start_plane(tmp_path, etcd.endpoint)
        try:
            yield running
        finally:
            if running.proc.poll() is None:
                running.proc.kill()
            running.proc.communicate(timeout=10)


def _push(plane: Running, target: Path, ports: NodePorts, signers: list[Path]) -> None:
    endpoints = {
        "edge-smollm": DemoEndpoint(ports.model, node=NODE),
        "onprem-gpu": DemoEndpoint(free_port(), node="private-1"),
        "frontier-us": DemoEndpoint(free_port(), tls=True),
        "frontier-eu": DemoEndpoint(free_port(), tls=True),
    }
    policies = write_demo_policies(target, endpoints)
    catalog_file = policies / "data" / "catalog.yaml"
    catalog: dict[str, Any] = yaml.safe_load(catalog_file.read_text())
    for backend in catalog["backends"]:
        if backend["name"] == "edge-smollm":
            backend["signers"] = [{"public_key": key.read_text()} for key in signers]
    catalog_file.write_text(yaml.safe_dump(catalog, sort_keys=False))
    pushed = tiermesh("policy", "push", str(policies), "--etcd", plane.etcd, "--root", plane.root)
    assert pushed.returncode == 0, pushed.stderr


def _node(plane: Running) -> dict[str, Any]:
    shown = tiermesh("status", "--admin", plane.admin, "--json", timeout=20)
    assert shown.returncode == 0, shown.stderr
    nodes = {node["id"]: node for node in json.loads(shown.stdout)["nodes"]}
    return nodes.get(NODE, {})


def _until_status(plane: Running, predicate: Any, limit_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        node = _node(plane)
        if predicate(node):
            return node
        assert time.monotonic() < deadline, f"status never matched: {node}"
        time.sleep(0.3)


def _model(node: dict[str, Any]) -> dict[str, Any]:
    return (node.get("load") or {}).get("model") or {}


def _host_flags(ports: NodePorts) -> str:
    """The health flags of the edge model's host in the node's Envoy (admin /clusters)."""
    url = f"http://127.0.0.1:{ports.admin}/clusters"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    host = f"::127.0.0.1:{ports.model}::health_flags::"
    return " ".join(line.split(host, 1)[1] for line in lines if host in line)


def _until_flags(ports: NodePorts, needle: str, limit_s: float = 30.0) -> str:
    deadline = time.monotonic() + limit_s
    while needle not in (flags := _host_flags(ports)):
        assert time.monotonic() < deadline, f"host flags never showed {needle!r}: {flags!r}"
        time.sleep(0.3)
    return flags


def _audited(plane: Running, limit_s: float = 30.0) -> list[dict[str, Any]]:
    """The model_verification records the control plane's audit collector holds."""
    deadline = time.monotonic() + limit_s
    while True:
        shown = tiermesh("audit", "query", "--db", str(plane.data_dir / "audit.sqlite3"),
                         "--kind", "model_verification", "--json")  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        records = [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]
        if len(records) >= 2 or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def _verification_records(spool: Path) -> list[dict[str, Any]]:
    chains = load_signers(spool)
    found = []
    for spooled in read_spool(spool):
        verify(spooled.record, chains[spooled.signer])
        if spooled.record.kind == "model_verification":
            assert spooled.record.node_spiffe_id.endswith(f"/node/{NODE}")
            found.append(spooled.record.result)
    return found


def test_an_untrusted_model_is_not_served_until_the_catalog_trusts_its_signer(
    plane: Running, tmp_path: Path
) -> None:
    trusted_private, trusted_public = tmp_path / "trusted.pem", tmp_path / "trusted.pub"
    generate_key_pair(trusted_private, trusted_public)
    other_private, other_public = tmp_path / "other.pem", tmp_path / "other.pub"
    other = generate_key_pair(other_private, other_public)
    (tmp_path / "models").mkdir()
    model = write_tiny_gguf(tmp_path / "models" / "edge.gguf")
    sign_model(model, private_key=other_private)

    ports = NodePorts()
    _push(plane, tmp_path / "policies-1", ports, [trusted_public])
    token = join_token(plane, NODE, tmp_path)
    config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                       ports=ports, token=token, model=str(model))  # fmt: skip
    audit = re.search(r"audit=(\S+)", plane.ready_line)
    assert audit is not None, plane.ready_line
    document = yaml.safe_load(config.read_text())
    document["control_plane"]["audit"] = [audit.group(1)]
    config.write_text(yaml.safe_dump(document))
    agent = AgentProc.start(config)
    try:
        agent.wait_ready()
        assert not any("llama" in " ".join(c.cmdline()) for c in agent.descendants())
        node = _until_status(plane, lambda n: _model(n).get("outcome") == "refused")
        assert node["health"] == "unhealthy"
        assert _model(node)["reason"] == "untrusted_signer"
        # The control plane serves the backend's endpoint unhealthy: Envoy routes around it.
        _until_flags(ports, "/failed_eds_health")
        status, headers, _ = chat(ports.app, RESTRICTED)
        assert status == 503
        assert headers.get("x-tiermesh-tier") != "cloud"
        shown = tiermesh("status", "--admin", plane.admin, timeout=20)
        assert "model refused: untrusted_signer" in shown.stdout

        # The catalog now trusts the signer: the agent follows the bundle and serves.
        _push(plane, tmp_path / "policies-2", ports, [trusted_public, other_public])
        node = _until_status(plane, lambda n: _model(n).get("outcome") == "verified")
        _until_status(plane, lambda n: n.get("health") == "healthy")
        assert _model(node)["signer"] == other.name
        assert _model(node)["digest"].startswith("sha256:")
        headers = eventually_ok(ports.app, PUBLIC)
        assert headers["x-tiermesh-tier"] == "local"
        assert "failed_eds_health" not in _host_flags(ports)

        records = _verification_records(tmp_path / f"{NODE}-state" / "decisions")
        assert [(r["outcome"], r["reason"]) for r in records] == [
            ("refused", "untrusted_signer"),
            ("verified", None),
        ]
        audited = _audited(plane)
        assert [(r["result"]["outcome"], r["result"]["reason"]) for r in audited] == [
            ("refused", "untrusted_signer"),
            ("verified", None),
        ]
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        shutil.rmtree(tmp_path / "models", ignore_errors=True)
