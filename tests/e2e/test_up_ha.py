"""``tiermesh up --ha``: etcd as a 3-member cluster on loopback, and the mesh riding out the
death of the etcd leader: public requests keep being served and a tenant key created after
the fault reaches the edge within the bound of a running mesh."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.e2e.agent_support import TIERMESH, chat
from tests.e2e.up_support import CHILD_ENV, Up, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]

PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "reasoning",
          "x-tiermesh-sensitivity": "restricted"}  # fmt: skip
KEY_CHANGE_WITHIN_S = 5.0
"""How soon a created tenant key takes effect at the edge, as in a mesh without faults."""
LEADER_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-ha") / "state", args=("--ha",)) as running:
        yield running


def _status(endpoint: str) -> dict[str, object] | None:
    host, _, port = endpoint.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("POST", "/v3/maintenance/status", body=b"{}")
        return dict(json.loads(conn.getresponse().read()))
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def _leader(members: list[str]) -> str:
    """The member every answering member names as leader (polled within a bound)."""
    deadline = time.monotonic() + LEADER_WITHIN_S
    while time.monotonic() < deadline:
        ids: dict[str, str] = {}
        named: set[str] = set()
        for endpoint in members:
            status = _status(endpoint)
            if status is not None:
                header = status["header"]
                assert isinstance(header, dict)
                ids[str(header["member_id"])] = endpoint
                named.add(str(status.get("leader", "0")))
        if len(named) == 1 and (leader := ids.get(named.pop())) is not None:
            return leader
        time.sleep(0.1)
    raise AssertionError(f"no etcd leader agreed on within {LEADER_WITHIN_S} s")


def _member_id(endpoint: str) -> str:
    status = _status(endpoint)
    assert status is not None, f"etcd at {endpoint} does not answer"
    header = status["header"]
    assert isinstance(header, dict)
    return str(header["member_id"])


def _make_leader(members: list[str], target: str) -> None:
    """Hand etcd leadership to ``target`` (the maintenance API's leader transfer)."""
    leader = _leader(members)
    if leader == target:
        return
    host, _, port = leader.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps({"targetID": _member_id(target)}).encode()
        conn.request("POST", "/v3/maintenance/transfer-leadership", body=body)
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
    finally:
        conn.close()
    deadline = time.monotonic() + LEADER_WITHIN_S
    while _leader(members) != target:
        assert time.monotonic() < deadline, f"leadership did not move to {target}"
        time.sleep(0.1)


def _plane_member(up: Up) -> str:
    """The member the control plane connected to (it stays there until that one fails)."""
    log = (up.state / "logs" / "controlplane.log").read_text()
    found = re.search(r"connected to etcd at (\S+) ", log)
    assert found is not None, log[-2000:]
    return found.group(1)


def _pid_serving(up: Up, endpoint: str) -> int:
    for process in up.descendants():
        with contextlib.suppress(psutil.Error):
            if f"--listen-client-urls=http://{endpoint}" in process.cmdline():
                return process.pid
    raise AssertionError(f"no etcd process serves {endpoint}")


def _key_cli(up: Up, *args: str) -> str:
    etcd = up.mesh["etcd"]
    done = subprocess.run(
        [TIERMESH, "key", *args, "--etcd", etcd["endpoint"], "--root", etcd["root"]],
        capture_output=True, text=True, timeout=60, check=False, env=CHILD_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_up_ha_runs_three_members_and_gives_both_replicas_all_of_them(up: Up) -> None:
    members = up.mesh["etcd"]["members"]
    assert len(set(members)) == 3
    assert up.mesh["etcd"]["endpoint"] == ",".join(members)
    assert len({_pid_serving(up, member) for member in members}) == 3
    planes = [
        process.cmdline()
        for process in up.descendants()
        if "controlplane" in process.cmdline() and "run" in process.cmdline()
    ]
    assert len(planes) == 2  # two replicas, each given every member
    for plane in planes:
        assert plane[plane.index("--etcd") + 1] == ",".join(members)
    assert sorted(plane[plane.index("--replica") + 1] for plane in planes) == ["cp-1", "cp-2"]


def test_the_etcd_leader_dies_and_requests_and_key_changes_go_on(up: Up) -> None:
    members = up.mesh["etcd"]["members"]
    # The worst single fault: the member the control plane talks to, made the leader.
    victim = _plane_member(up)
    _make_leader(members, victim)
    failures: list[object] = []
    served = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal served
        while not stop.is_set():
            status, _, body = chat(up.port, up.keyed(PUBLIC), timeout=30)
            if status == 200:
                served += 1
            else:
                failures.append((status, body[:200]))
            time.sleep(0.2)  # well under the tenant's rate limit (20/s)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        time.sleep(2)
        os.kill(_pid_serving(up, victim), signal.SIGKILL)
        killed = time.monotonic()
        assert _leader([m for m in members if m != victim]) != victim

        key = _key_cli(up, "create", "--tenant", "globex")
        created = time.monotonic()
        sent = {**PUBLIC, "authorization": f"Bearer {key}"}
        while (answer := chat(up.port, sent, timeout=30))[0] == 401:
            assert time.monotonic() - created < KEY_CHANGE_WITHIN_S, answer
            time.sleep(0.2)
        assert answer[0] == 200, answer
        print(f"new key served {time.monotonic() - killed:.2f} s after the leader died")
        time.sleep(2)
    finally:
        stop.set()
        loader.join(timeout=60)
    assert served > 0
    assert failures == []
