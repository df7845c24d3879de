"""``tiermesh controlplane run`` builds the replica's configuration from its flags: the
process it runs in holds that one control plane, so it keeps the served state out of full
garbage collections (a process-wide setting, left off where tests run several replicas
in one process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tiermesh.cli import controlplane_cmd
from tiermesh.cli.main import app
from tiermesh.controlplane.runtime import ControlPlaneConfig


class _Captured:
    def __init__(self) -> None:
        self.configs: list[ControlPlaneConfig] = []


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> _Captured:
    seen = _Captured()

    class _Plane:
        def __init__(self, config: ControlPlaneConfig) -> None:
            seen.configs.append(config)

    async def _serve(plane: Any) -> None:
        return None

    monkeypatch.setattr(controlplane_cmd, "ControlPlane", _Plane)
    monkeypatch.setattr(controlplane_cmd, "_serve", _serve)
    return seen


def test_the_one_control_plane_of_the_process_freezes_its_heap(
    captured: _Captured, tmp_path: Path
) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text("secret\n")
    result = CliRunner().invoke(
        app,
        ["controlplane", "run", "--etcd", "127.0.0.1:2379", "--trust-domain", "mesh.test",
         "--data-dir", str(tmp_path / "data"), "--ca-passphrase-file", str(passphrase)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [config] = captured.configs
    assert config.freeze_heap is True
    assert config.etcd == ("127.0.0.1:2379",)
    assert config.trust_domain == "mesh.test"


def test_a_configuration_built_in_code_leaves_the_heap_alone(tmp_path: Path) -> None:
    config = ControlPlaneConfig(
        etcd=("127.0.0.1:2379",),
        trust_domain="mesh.test",
        data_dir=tmp_path,
        ca_passphrase=b"secret",
    )
    assert config.freeze_heap is False
