"""The agent side reaches the control plane only through its contracts
(``tiermesh.controlplane.api``); tests may import anything."""

from __future__ import annotations

import ast
from pathlib import Path

import tiermesh.agents.identity as package


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_agent_identity_imports_only_the_control_plane_contracts() -> None:
    root = Path(package.__file__).parent
    offending = [
        f"{path.name}: {name}"
        for path in sorted(root.glob("*.py"))
        for name in _imports(path)
        if name.startswith("tiermesh.controlplane")
        and not (
            name == "tiermesh.controlplane.api" or name.startswith("tiermesh.controlplane.api.")
        )
    ]
    assert offending == []
