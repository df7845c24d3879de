"""node.yaml ``metrics_listen``: a free loopback port unless told, ``off``, or HOST:PORT."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiermesh.agents.config import ConfigError, load_config

_BASE = (
    "node: {id: edge-1, tier: local}\n"
    "control_plane: {trust_domain: td.test, ads: ['127.0.0.1:1'], node_api: ['127.0.0.1:2'],"
    " join: ['127.0.0.1:3']}\n"
    "identity: {state_dir: state}\n"
)


def load(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "node.yaml"
    path.write_text(_BASE + extra)
    return load_config(path).metrics_listen


def test_metrics_are_served_on_a_free_loopback_port_by_default(tmp_path: Path) -> None:
    assert load(tmp_path) == "127.0.0.1:0"


@pytest.mark.parametrize("value", ["off", "0.0.0.0:9464", "[::1]:9464"])
def test_a_node_names_where_or_turns_them_off(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, f"metrics_listen: '{value}'\n") == value


@pytest.mark.parametrize("value", ["9464", "unix", "on", "host:port"])
def test_anything_else_is_refused_naming_the_field(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        load(tmp_path, f"metrics_listen: '{value}'\n")
