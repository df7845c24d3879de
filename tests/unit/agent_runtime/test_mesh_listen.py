"""What the agent registers for ``mesh_listen``: the host as an IP address and the port
(a free one for port 0), so the compiled listener binds exactly that address."""

from __future__ import annotations

from pathlib import Path

from tiermesh.agents.config import load_config
from tiermesh.agents.runtime.agent import _mesh_listen
from tiermesh.procs.ports import free_port

MODEL = "model_server: {kind: llama_cpp}\n"


def _config(folder: Path, extra: str) -> Path:
    path = folder / "node.yaml"
    path.write_text(
        "node: {id: private-1, tier: private}\n"
        "control_plane: {trust_domain: td.test, ads: ['127.0.0.1:1'], node_api: ['127.0.0.1:2'],"
        " join: ['127.0.0.1:3']}\n"
        "identity: {state_dir: state}\n" + extra
    )
    return path


def test_the_host_and_port_of_mesh_listen_are_registered(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(_config(tmp_path, f"mesh_listen: '127.0.0.1:{port}'\n{MODEL}"))
    assert _mesh_listen(config) == ("127.0.0.1", port)


def test_a_host_name_is_registered_as_its_address_and_port_0_as_a_free_port(
    tmp_path: Path,
) -> None:
    config = load_config(_config(tmp_path, "mesh_listen: 'localhost:0'\n" + MODEL))
    found = _mesh_listen(config)
    assert found is not None
    host, port = found
    assert host in {"127.0.0.1", "::1"}
    assert 0 < port < 65536


def test_no_mesh_listener_without_mesh_listen_or_a_model_server(tmp_path: Path) -> None:
    assert _mesh_listen(load_config(_config(tmp_path, ""))) is None
    without_model = "mesh_listen: '127.0.0.1:0'\nmodel_server: {kind: none}\n"
    assert _mesh_listen(load_config(_config(tmp_path, without_model))) is None
