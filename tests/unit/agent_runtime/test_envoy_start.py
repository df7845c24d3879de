"""How the agent names a failed Envoy start without running one: ``envoy.binary`` in
node.yaml, the check of the binary, and Envoy's reason read from its log."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tiermesh.agents.config import load_config
from tiermesh.agents.runtime.envoy import EnvoySidecar, agent_bootstrap, envoy_failure_reason
from tiermesh.agents.runtime.errors import StartFailed
from tiermesh.procs.envoy import envoy_binary

# What Envoy 1.40 writes when its admin port is taken: the reason, then the bare reason again.
BIND_LOG = """\
[2026-11-23 16:35:14.421][13440][critical][main] [source/server/server.cc:449] error \
`cannot bind '127.0.0.1:19902': Address already in use` initializing config \
'goo.gle/debugproto
  /state/envoy/bootstrap.json'
cannot bind '127.0.0.1:19902': Address already in use
"""


def _node_yaml(folder: Path, envoy: str = "") -> Path:
    path = folder / "node.yaml"
    path.write_text(
        "node: {id: edge-1, tier: local}\n"
        "control_plane: {trust_domain: td.test, ads: ['127.0.0.1:1'], node_api: ['127.0.0.1:2'],"
        " join: ['127.0.0.1:3']}\n"
        "identity: {state_dir: state}\n" + (f"envoy: {{{envoy}}}\n" if envoy else "")
    )
    return path


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (BIND_LOG, "cannot bind '127.0.0.1:19902': Address already in use"),
        (
            "[2024-01-01 00:00:00.000][7][critical][main] [source/server/server.cc:131] error "
            "initializing configuration '/b.json': malformed IP address: localhost\n",
            "malformed IP address: localhost",
        ),
        (
            "[2026-11-23 16:35:14.421][1][warning][misc] [source/x.cc:1] something odd\n"
            "[2026-11-23 16:35:14.422][1][critical][main] [source/y.cc:2] cannot open log\n",
            "cannot open log",
        ),
        ("[2026-11-23 16:35:14.421][1][info][main] [source/x.cc:1] starting\n", None),
        ("", None),
    ],
)
def test_envoy_failure_reason_is_envoys_own_words(log: str, reason: str | None) -> None:
    assert envoy_failure_reason(log) == reason


def test_envoy_binary_is_optional_and_relative_to_node_yaml(tmp_path: Path) -> None:
    assert load_config(_node_yaml(tmp_path)).envoy.binary is None
    config = load_config(_node_yaml(tmp_path, "binary: bin/envoy"))
    assert config.envoy.binary == tmp_path / "bin" / "envoy"


def test_the_binary_is_checked_when_envoy_is_started(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap.json"
    default = EnvoySidecar(load_config(_node_yaml(tmp_path)), bootstrap)
    assert default.supervisor.spec.argv[0] == str(envoy_binary())

    pinned = tmp_path / "envoy"
    config = load_config(_node_yaml(tmp_path, f"binary: {pinned}"))
    missing = f"^Envoy failed to start: envoy.binary {re.escape(str(pinned))} does not exist$"
    with pytest.raises(StartFailed, match=missing):
        EnvoySidecar(config, bootstrap)
    pinned.write_text("#!/bin/sh\n")
    pinned.chmod(0o640)
    with pytest.raises(StartFailed, match=r"is not executable \(mode 0640\)$"):
        EnvoySidecar(config, bootstrap)
    pinned.chmod(0o750)
    assert EnvoySidecar(config, bootstrap).supervisor.spec.argv[0] == str(pinned)
    pinned.unlink()
    pinned.mkdir()
    with pytest.raises(StartFailed, match=r"is not a file$"):
        EnvoySidecar(config, bootstrap)


def test_envoy_admin_is_a_private_unix_socket_by_default(tmp_path: Path) -> None:
    """Envoy's admin has no authentication (its config dump holds the cascade token,
    ``/quitquitquit`` stops it): by default it listens on a 0600 socket in the state dir,
    which the agent's own checks use, never on a port."""
    config = load_config(_node_yaml(tmp_path))
    socket = tmp_path / "state" / "envoy-admin.sock"
    assert config.envoy_admin_socket == socket
    admin = agent_bootstrap(config)["admin"]["address"]
    assert admin == {"pipe": {"path": str(socket), "mode": 0o600}}
    assert EnvoySidecar(config, tmp_path / "b.json").admin == socket


def test_envoy_admin_may_stay_on_a_port(tmp_path: Path) -> None:
    config = load_config(_node_yaml(tmp_path, "admin_address: '127.0.0.1:9902'"))
    assert config.envoy_admin_socket is None
    admin = agent_bootstrap(config)["admin"]["address"]
    assert admin == {"socket_address": {"address": "127.0.0.1", "port_value": 9902}}
