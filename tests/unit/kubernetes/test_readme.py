"""deploy/README.md against the manifests and the CLI: its commands create what the pods
mount, and every tiermesh command in it parses; the READMEs that lead to it link it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.kubernetes import checks
from tests.unit.kubernetes.manifests import README, REPO


@pytest.fixture(scope="module")
def text() -> str:
    return README.read_text(encoding="utf-8")


def test_readme_commands_are_read_as_a_shell_would() -> None:
    text = (
        "```sh\nETCD=a:1,b:2\nkubectl exec p -c c -- \\\n    tiermesh token create --node-id "
        '"edge-$box" --etcd "$ETCD" > t   # note\n```\n'
        "```sh\ntiermesh status\nkubectl -n tiermesh get pods\n```\n"
    )
    lines = checks.readme_commands(text)
    assert [checks.tiermesh_argv(words) for words in lines] == [
        ["token", "create", "--node-id", "edge-box-1", "--etcd", "a:1,b:2"],
        ["status"],
        None,
    ]


def test_the_readme_brings_up_what_the_manifests_need(
    docs: list[dict[str, Any]], text: str
) -> None:
    assert checks.check_readme(docs, text) == []


def test_the_readme_check_catches_a_missing_secret_a_wrong_key_and_a_bad_command(
    docs: list[dict[str, Any]], text: str
) -> None:
    broken = (
        text.replace("--from-file=ca-passphrase=", "--from-file=ca_passphrase=")
        .replace("create configmap tiermesh-trust-bundle", "create configmap trust-bundle")
        .replace("--node-id cloud-gw-1", "--node-id cloud-gw-2")
        .replace("tiermesh status", "tiermesh status --verbose")
    )
    problems = checks.check_readme(docs, broken)
    assert any("tiermesh-controlplane must hold" in p for p in problems), problems
    assert "nothing creates the configmap tiermesh-trust-bundle" in problems
    assert "no `tiermesh token create` for cloud-gw-1" in problems
    assert any("status --verbose" in p and "No such option" in p for p in problems), problems


def test_the_way_from_tiermesh_up_to_kubernetes_is_linked() -> None:
    for readme in (REPO / "README.md", REPO / "compose" / "README.md"):
        assert "deploy/README.md" in readme.read_text(encoding="utf-8"), readme
