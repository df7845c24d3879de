"""``tiermesh policy push`` changes the edge's request-time decisions in the running mesh
(``tiermesh up``) without restarting its agent: a task the pushed request policy pauses is
denied by ext_authz within a bound, and the shipped decision names the pushed bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_support import TIERMESH, audit_cli, chat_text
from tests.e2e.up_support import CHILD_ENV, Up, running_up
from tiermesh.controlplane.bundle import read_policy_dir

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
PAUSED_TASK = "e2e-paused"
HEADERS = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": PAUSED_TASK,
           "x-tiermesh-sensitivity": "public"}  # fmt: skip
PAUSE = (
    f'\n_denials contains "task {PAUSED_TASK} is paused" if input.headers.task == "{PAUSED_TASK}"\n'
)
ADOPTED_WITHIN_S = 30.0
SHIPPED_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-reload") / "state") as running:
        yield running


def _denied_for_pause(up: Up) -> dict[str, str] | None:
    status, _, body = chat_text(up.port, up.keyed(HEADERS), "hello", timeout=10)
    if status != 403:
        return None
    answer = dict(json.loads(body))
    return answer if PAUSED_TASK in str(answer.get("reason", "")) else None


def _shipped(up: Up, decision_id: str) -> dict[str, object]:
    db = str(up.mesh["control_plane"]["audit_db"])
    deadline = time.monotonic() + SHIPPED_WITHIN_S
    last = ""
    while time.monotonic() < deadline:
        found = audit_cli("query", "--db", db, "--decision-id", decision_id, "--json",
                          env=CHILD_ENV)  # fmt: skip
        lines = [line for line in found.stdout.splitlines() if line.strip()]
        if found.returncode == 0 and lines:
            return dict(json.loads(lines[0]))
        last = found.stdout + found.stderr
        time.sleep(0.3)
    raise AssertionError(f"decision {decision_id} not shipped in {SHIPPED_WITHIN_S}s: {last}")


def test_a_pushed_request_policy_changes_decisions_without_an_agent_restart(
    up: Up, tmp_path: Path
) -> None:
    mesh = up.mesh
    assert mesh["etcd"]["endpoint"], mesh
    agent_pid = mesh["nodes"]["edge-1"]["agent_pid"]
    assert _denied_for_pause(up) is None

    changed = tmp_path / "policies"
    shutil.copytree(up.state / "policies", changed)
    rego = changed / "request" / "request.rego"
    rego.write_text(rego.read_text() + PAUSE)
    pushed_at = time.monotonic()
    pushed = subprocess.run(
        [TIERMESH, "policy", "push", str(changed), "--etcd", mesh["etcd"]["endpoint"],
         "--root", mesh["etcd"]["root"]],
        capture_output=True, text=True, timeout=120, check=False, env=CHILD_ENV,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    denial = None
    deadline = time.monotonic() + ADOPTED_WITHIN_S
    while denial is None and time.monotonic() < deadline:
        denial = _denied_for_pause(up)
        if denial is None:
            time.sleep(0.2)
    assert denial is not None, f"the pushed policy was not used within {ADOPTED_WITHIN_S}s"
    print(f"push to first decision with the new policy: {time.monotonic() - pushed_at:.1f} s")

    assert up.mesh["nodes"]["edge-1"]["agent_pid"] == agent_pid
    record = _shipped(up, denial["decision_id"])
    assert record["bundle_revision"] == f"sha256:{read_policy_dir(changed).sha256}"
    # Other requests still pass under the new bundle.
    status, _, body = chat_text(up.port, up.keyed({**HEADERS, "x-tiermesh-task": "chat"}), "hello")
    assert status == 200, body
