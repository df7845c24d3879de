"""``load_config(..., node_id=, join_token_file=)``: one node.yaml for many nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiermesh.agents.config import ConfigError, load_config
from tiermesh.cli.main import app

NODE_YAML = """\
version: v1
node: {id: edge-template, tier: local}
control_plane:
  trust_domain: tiermesh.example
  ads: [cp:18000]
  node_api: [cp:18001]
  join: [cp:18002]
  trust_bundle_file: bundle.pem
identity:
  state_dir: state
  join_token_file: tokens/edge-template
endpoints:
  - {name: edge-template.extra, host: 127.0.0.1, port: 9000}
"""


@pytest.fixture
def node_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(NODE_YAML)
    return path


def test_without_overrides_the_file_decides(node_yaml: Path) -> None:
    config = load_config(node_yaml)
    assert config.node.id == "edge-template"
    assert config.identity.join_token_file == node_yaml.parent / "tokens/edge-template"


def test_overrides_replace_node_id_and_join_token_file(
    node_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_yaml.write_text(NODE_YAML.split("endpoints:", maxsplit=1)[0])
    monkeypatch.chdir(tmp_path)
    config = load_config(node_yaml, node_id="edge-box-7", join_token_file=Path("t/edge-box-7"))
    assert config.node.id == "edge-box-7"
    # Relative to the working directory, not to node.yaml's folder.
    assert config.identity.join_token_file == tmp_path / "t/edge-box-7"
    assert config.state_dir == node_yaml.parent / "state"


def test_an_overridden_node_id_is_checked_like_the_files(node_yaml: Path) -> None:
    with pytest.raises(ConfigError, match=r"node\.id"):
        load_config(node_yaml, node_id="box.example.com")  # a DNS label, no dots


def test_the_files_endpoints_must_belong_to_the_overridden_node(node_yaml: Path) -> None:
    with pytest.raises(ConfigError, match="do not belong to node 'edge-box-7'"):
        load_config(node_yaml, node_id="edge-box-7")


def test_agent_run_refuses_an_overridden_node_id_that_breaks_the_schema(node_yaml: Path) -> None:
    """The CLI passes --node-id through the same check: exit 2, naming the field, before
    anything starts."""
    result = CliRunner().invoke(
        app, ["agent", "run", "--config", str(node_yaml), "--node-id", "Box_1"]
    )
    assert result.exit_code == 2
    assert "node.id" in result.output
    assert "invalid agent config" in result.output
