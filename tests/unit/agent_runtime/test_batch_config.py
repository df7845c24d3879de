"""node.yaml: the batch lane is off unless a node sets ``batch``, and only on a Unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiermesh.agents.config import AgentConfig, ConfigError, load_config

_BASE = (
    "node: {id: edge-1, tier: local}\n"
    "control_plane: {trust_domain: td.test, ads: ['127.0.0.1:1'], node_api: ['127.0.0.1:2'],"
    " join: ['127.0.0.1:3']}\n"
    "identity: {state_dir: state}\n"
)


def load_config_with(tmp_path: Path, extra: str) -> AgentConfig:
    path = tmp_path / "node.yaml"
    path.write_text(_BASE + extra)
    return load_config(path)


def test_the_batch_lane_is_off_by_default(tmp_path: Path) -> None:
    assert load_config_with(tmp_path, "").batch is None


def test_a_node_turns_it_on_with_a_queue_server(tmp_path: Path) -> None:
    config = load_config_with(tmp_path, "batch: {nats_url: 'nats://127.0.0.1:4222'}\n")
    assert config.batch is not None
    assert config.batch.worker is True
    assert config.service_socket("batch", config.batch.listen) == config.state_dir / "batch.sock"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("batch: {nats_url: 'nats://127.0.0.1:4222', listen: '127.0.0.1:9000'}\n", "listen"),
        ("batch: {nats_url: 'http://127.0.0.1:4222'}\n", "nats_url"),
        ("batch: {}\n", "nats_url"),
        ("batch: {nats_url: 'nats://127.0.0.1:4222', restricted_tiers: [local]}\n", "restricted"),
    ],
)
def test_bad_batch_settings_are_refused_naming_the_field(
    tmp_path: Path, extra: str, field: str
) -> None:
    with pytest.raises(ConfigError, match=f"batch.{field}"):
        load_config_with(tmp_path, extra)
