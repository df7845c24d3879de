"""``tiermesh policy check`` passes on the policies and demo catalog the repository ships.

With the real compiler and verifier, as an operator runs it. Restricted routes that
have no cleared backend on a node fail closed (503) and are warnings, not violations.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tiermesh.cli.main import app

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"


def test_check_passes_on_the_shipped_policies() -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(POLICY_DIR)])
    assert result.exit_code == 0, result.output
    assert "ok: " in result.output
    assert "plans for 2 node(s) (edge-1, gpu-1)" in result.output
    assert "error:" not in result.output
    assert "violation" not in result.output
