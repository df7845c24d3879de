"""``tiermesh top`` in a real pseudo-terminal: it draws the dashboard's figures, redraws
when they change, and quits cleanly on ``q`` and on Ctrl-C."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.integration.dashboard.served import Served, served
from tiermesh.controlplane.api import AnswerCounts

TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
BOUND_S = 30


@pytest.fixture
def servers() -> Iterator[Served]:
    with served() as running:
        yield running


def spawn(url: str) -> pexpect.spawn:
    return pexpect.spawn(
        TIERMESH,
        ["top", "--dashboard", url, "--interval", "0.3"],
        dimensions=(60, 170),
        env={**os.environ, "TERM": "xterm-256color"},
        encoding="utf-8",
        timeout=BOUND_S,
    )


def test_top_draws_redraws_and_quits_on_q(servers: Served) -> None:
    child = spawn(servers.dashboard_url)
    try:
        child.expect("Tier use")
        child.expect("28.6%")  # 2 fallbacks in 7 answers
        servers.add("edge-1", AnswerCounts(by_tier={"local": 3}, first_choice=3))
        child.expect("20.0%")  # 2 in 10 after the redraw
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_top_quits_cleanly_on_ctrl_c(servers: Served) -> None:
    child = spawn(servers.dashboard_url)
    try:
        child.expect("Tier use")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "Traceback" not in (child.before or "")
