"""node.yaml: the request policy runs unless a node turns it off."""

from __future__ import annotations

from pathlib import Path

from tiermesh.agents.config import load_config

_BASE = (
    "node: {id: private-1, tier: private}\n"
    "control_plane: {trust_domain: td.test, ads: ['127.0.0.1:1'], node_api: ['127.0.0.1:2'],"
    " join: ['127.0.0.1:3']}\n"
    "identity: {state_dir: state}\n"
)


def test_authz_is_on_without_an_authz_section(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(_BASE)
    assert load_config(path).authz.enabled is True


def test_a_node_may_still_turn_it_off(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(_BASE + "authz: {enabled: false}\n")
    assert load_config(path).authz.enabled is False
