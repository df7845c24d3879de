"""``tiermesh agent run`` against a running control plane: the node joins with a token, its
Envoy gets config over mTLS, its tiny llama.cpp model answers through the Envoy app
listener, status lists it, SIGTERM drains it away; and start-up failures that name their
cause and leave nothing running."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_support import (
    TIERMESH,
    AgentProc,
    NodePorts,
    alive,
    chat,
    eventually_ok,
    join_token,
    node_yaml,
    push_demo,
    running_under,
)
from tests.integration.controlplane.test_controlplane_run import (
    TD,
    Running,
    start_plane,
    tiermesh,
)
from tiermesh.demo.catalog import DemoEndpoint
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
NODE = "edge-1"
PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "classify",
          "x-tiermesh-sensitivity": "public"}  # fmt: skip
RESTRICTED = {**PUBLIC, "x-tiermesh-sensitivity": "restricted"}


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture
def plane(tmp_path: Path, etcd: EtcdServer) -> Iterator[Running]:
    running = start_plane(tmp_path, etcd.endpoint)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.communicate(timeout=10)


def _status(plane: Running) -> dict[str, dict[str, object]]:
    shown = tiermesh("status", "--admin", plane.admin, "--json", timeout=20)
    assert shown.returncode == 0, shown.stderr
    return {node["id"]: node for node in json.loads(shown.stdout)["nodes"]}


def _edge_catalog(ports: NodePorts) -> dict[str, DemoEndpoint]:
    return {
        "edge-smollm": DemoEndpoint(ports.model, node=NODE),
        "onprem-gpu": DemoEndpoint(free_port(), node="private-1"),
        "frontier-us": DemoEndpoint(free_port(), tls=True),
        "frontier-eu": DemoEndpoint(free_port(), tls=True),
    }


def test_an_agent_joins_serves_through_envoy_and_drains_away(
    plane: Running, tmp_path: Path
) -> None:
    ports = NodePorts()
    push_demo(plane, tmp_path / "policies", _edge_catalog(ports))
    token = join_token(plane, NODE, tmp_path)
    config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                       ports=ports, token=token)  # fmt: skip
    agent = AgentProc.start(config)
    try:
        ready = agent.wait_ready()
        assert f"spiffe_id=spiffe://{TD}/node/{NODE}" in ready
        children = agent.descendants()
        assert any("envoy" in c.name() for c in children)

        headers = eventually_ok(ports.app, PUBLIC)
        assert headers["x-tiermesh-tier"] == "local"
        status, _, body = chat(ports.app, PUBLIC)
        assert status == 200
        assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        status, headers, body = chat(ports.app, PUBLIC, stream=True)
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert json.loads(events[0].removeprefix("data: "))["object"] == "chat.completion.chunk"
        status, headers, _ = chat(ports.app, RESTRICTED)
        assert (status, headers["x-tiermesh-tier"]) == (200, "local")

        node = _status(plane)[NODE]
        assert node["inference_url"] == f"http://127.0.0.1:{ports.app}"
        assert node["registered"] is True

        started = time.monotonic()
        assert agent.terminate() == 0
        assert time.monotonic() - started < 15
        assert alive(children) == []
        assert "said goodbye" in agent.stderr()
        assert "agent stopped" in agent.stderr()
        deadline = time.monotonic() + 2.0  # well inside the 3 s lease: the goodbye removed it
        while NODE in (nodes := _status(plane)) and nodes[NODE]["registered"]:
            assert time.monotonic() < deadline, "registration outlived the goodbye"
            time.sleep(0.1)

        # Restarted without a token (it was consumed): the saved SVID is reused.
        config.write_text(config.read_text().replace(f"join_token_file: {token}\n", ""))
        again = AgentProc.start(config)
        try:
            again.wait_ready()
            assert "reusing saved SVID" in again.stderr()
            eventually_ok(ports.app, PUBLIC)
            assert again.terminate() == 0
        finally:
            if again.proc.poll() is None:
                again.kill()
    finally:
        if agent.proc.poll() is None:
            agent.kill()


def _run_agent(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIERMESH, "agent", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def test_a_broken_node_yaml_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("version: v1\nnode: {id: edge-1, tier: edge}\nidentity: {state_dir: s}\n")
    result = _run_agent(config)
    assert result.returncode == 2
    assert "node.tier" in result.stderr
    assert "control_plane: Field required" in result.stderr
    config.write_text("node: [unclosed\n")
    result = _run_agent(config)
    assert result.returncode == 2
    assert "not YAML" in result.stderr


def test_a_port_in_use_is_named_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = NodePorts(app=busy.getsockname()[1])
        listens = {k: free_port() for k in ("ads", "node", "join", "admin")}
        plane = Running(None, "", "", tmp_path, listens, "")  # type: ignore[arg-type]
        result = _run_agent(node_yaml(tmp_path / "node.yaml", plane, node_id=NODE,
                                      tier="local", ports=ports, token=None))  # fmt: skip
    assert result.returncode == 1
    assert f"app listener port 127.0.0.1:{ports.app} is already in use" in result.stderr


def test_an_unreachable_control_plane_is_named(tmp_path: Path, etcd: EtcdServer) -> None:
    running = start_plane(tmp_path, etcd.endpoint)
    running.terminate()  # its bundle stays on disk; nothing listens any more
    running.proc.communicate(timeout=10)
    token = tmp_path / "token"
    token.write_text("not-used-anyway")
    config = node_yaml(tmp_path / "node.yaml", running, node_id=NODE, tier="local",
                       ports=NodePorts(), token=token)  # fmt: skip
    started = time.monotonic()
    result = _run_agent(config)
    assert result.returncode == 1
    assert "control plane unreachable for joining" in result.stderr
    assert f"127.0.0.1:{running.ports['join']}" in result.stderr
    assert time.monotonic() - started < 30


def test_a_model_that_will_not_load_is_named_and_nothing_is_left(
    plane: Running, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                       ports=NodePorts(), token=join_token(plane, NODE, tmp_path),
                       model=str(broken))  # fmt: skip
    agent = AgentProc.start(config)
    try:
        code, children = agent.wait_exit()
        assert code == 1
        assert alive(children) == []
        assert running_under(tmp_path / f"{NODE}-state") == []
        assert "did not load" in agent.stderr() or "model server" in agent.stderr()
        assert str(broken) in agent.stderr()
    finally:
        if agent.proc.poll() is None:
            agent.kill()


def _fails_to_start(plane: Running, config: Path) -> str:
    """Run the agent of ``config`` to its failed start; its error line. Asserts it exited 1
    with one ``error:`` line, left no process of the node running and is not registered."""
    agent = AgentProc.start(config)
    try:
        code, children = agent.wait_exit()
    finally:
        if agent.proc.poll() is None:
            agent.kill()
    errors = [line for line in agent.stderr().splitlines() if line.startswith("error:")]
    assert (code, len(errors)) == (1, 1), agent.stderr()
    assert "Traceback" not in agent.stderr()
    assert alive(children) == []
    assert running_under(config.parent / f"{NODE}-state") == []
    assert not _status(plane).get(NODE, {}).get("registered")
    return errors[0]


def test_envoy_that_cannot_bind_its_admin_port_is_named_and_nothing_is_left(
    plane: Running, tmp_path: Path
) -> None:
    # The model server is told to listen on Envoy's admin port: both are free when the
    # agent checks its ports, and the model server (started first) holds it when Envoy
    # starts, as any process that takes the port in between would.
    ports = NodePorts()
    ports.model = ports.admin
    config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                       ports=ports, token=join_token(plane, NODE, tmp_path))  # fmt: skip
    state = tmp_path / f"{NODE}-state"
    error = _fails_to_start(plane, config)
    assert error == (
        f"error: Envoy failed to start: cannot bind '127.0.0.1:{ports.admin}': Address already"
        f" in use (log: {state / 'logs' / 'envoy.log'})"
    )


def test_envoy_refusing_its_configuration_is_named(plane: Running, tmp_path: Path) -> None:
    ports = NodePorts()
    config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                       ports=ports, token=join_token(plane, NODE, tmp_path), model=None,
                       envoy={"admin_address": f"localhost:{ports.admin}"})  # fmt: skip
    error = _fails_to_start(plane, config)
    log = tmp_path / f"{NODE}-state" / "logs" / "envoy.log"
    assert error == f"error: Envoy failed to start: malformed IP address: localhost (log: {log})"


def test_an_envoy_that_cannot_be_run_is_named_before_it_starts(
    plane: Running, tmp_path: Path
) -> None:
    token = join_token(plane, NODE, tmp_path)
    pinned = tmp_path / "envoy-1.40"
    pinned.write_text("#!/bin/sh\nexit 0\n")
    pinned.chmod(0o644)

    def run(envoy: dict[str, str]) -> str:
        config = node_yaml(tmp_path / "node.yaml", plane, node_id=NODE, tier="local",
                           ports=NodePorts(), token=token, model=None, envoy=envoy)  # fmt: skip
        return _fails_to_start(plane, config)

    assert run({"binary": str(pinned)}) == (
        f"error: Envoy failed to start: envoy.binary {pinned} is not executable (mode 0644)"
    )
    missing = tmp_path / "no-such" / "envoy"
    assert run({"binary": str(missing)}) == (
        f"error: Envoy failed to start: envoy.binary {missing} does not exist"
    )
    in_a_file = pinned / "bootstrap.json"
    assert run({"bootstrap_path": str(in_a_file)}) == (
        f"error: Envoy failed to start: cannot write its bootstrap {in_a_file}: "
        f"{pinned} is not a directory"
    )
