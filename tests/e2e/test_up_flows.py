"""The request flows through a running ``tiermesh up`` (real etcd, control plane, three
agents with their Envoys, llama.cpp on the edge and private nodes, the HTTPS cloud
stand-ins), steered the way an operator would see them fail:

- ``/v1/models`` is answered by the first tier of the request's route;
- a request without a known tenant is refused by the request policy, naming why;
- the cloud's first byte later than the route's budget → a local tier's answer is served
  (JSON and SSE);
- the cloud down, or failing until it is ejected → a local tier answers, and the cloud is
  used again once it is back;
- a tenant whose spend (counted from Envoy's access log) reaches its budget is answered by
  the local tier, never refused;
- the ``cascade`` task: the local answer is not confident enough, the next tier answers,
  the client sees one answer;
- restricted data with every local tier down: 503, never the cloud.

Acme's public ``reasoning`` chain is frontier-eu → the private tier → the edge; the EU
stand-in's first-byte budget is 6 s (the catalog's ``first_byte_timeout_ms: 6000``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psutil
import pytest

from tests.e2e.agent_support import TIERMESH, chat
from tests.e2e.up_support import CHILD_ENV, Up, cloud_answer, running_up, standins, steer
from tiermesh.controlplane.api import new_api_key, parse_api_key
from tiermesh.demo.mesh import CASCADE_HEADERS, TRIAL_BUDGET_USD, TRIAL_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]

REASONING = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "reasoning",
             "x-tiermesh-sensitivity": "public"}  # fmt: skip
LOCAL_TIERS = {"local", "private"}
EU = "frontier-eu"
HEDGE_S = 6.0
"""frontier-eu's first-byte budget in the shipped catalog."""
GREEDY = {"temperature": 0, "max_tokens": 16}
KEY_CHANGE_WITHIN_S = 5.0
"""How soon a created or revoked tenant key takes effect at the edge (no restart)."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-flows") / "state") as running:
        yield running


@pytest.fixture
def eu_restored(up: Up) -> Iterator[None]:
    """frontier-eu back to normal after the test, whatever it changed."""
    yield
    steer(up, EU, up=True, first_byte_delay_s=0, failure_status=None)


def _eu_requests(up: Up) -> int:
    return int(standins(up)[EU]["requests"])


def _get_models(up: Up, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{up.port}/v1/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_models_are_listed_by_the_tier_a_route_starts_with(up: Up) -> None:
    status, headers, body = _get_models(up, up.keyed(REASONING))
    assert status == 200, body
    assert headers["x-tiermesh-tier"] == "cloud"
    assert {m["id"] for m in json.loads(body)["data"]} == {"frontier-large", "frontier-mini"}
    restricted = {**REASONING, "x-tiermesh-sensitivity": "restricted"}
    status, headers, body = _get_models(up, up.keyed(restricted))
    assert status == 200, body
    assert headers["x-tiermesh-tier"] in LOCAL_TIERS
    assert json.loads(body)["object"] == "list"


def test_a_request_without_a_valid_tenant_key_is_refused_naming_why(up: Up) -> None:
    # The mesh requires a tenant key: without one, whatever x-tiermesh-tenant says (none,
    # an unknown one), the request is refused before the policy looks at the tenant.
    for sent, reason in (
        ({"x-tiermesh-sensitivity": "public"}, "no credential"),
        ({**REASONING, "x-tiermesh-tenant": "nobody"}, "no credential"),
        ({**REASONING, "authorization": f"Bearer {new_api_key()[0]}"}, "unknown API key"),
    ):
        status, headers, body = chat(up.port, sent)
        assert status == 401, body
        assert json.loads(body)["reason"] == reason, body
        assert headers["x-tiermesh-decision-id"]


def _key_cli(up: Up, *args: str) -> str:
    etcd = up.mesh["etcd"]
    done = subprocess.run(
        [TIERMESH, "key", *args, "--etcd", etcd["endpoint"], "--root", etcd["root"]],
        capture_output=True, text=True, timeout=60, check=False, env=CHILD_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _status_with(up: Up, key: str) -> tuple[int, bytes]:
    sent = {**REASONING, "x-tiermesh-sensitivity": "restricted",
            "authorization": f"Bearer {key}"}  # fmt: skip
    status, _, body = chat(up.port, sent, timeout=30)
    return status, body


def _agent_pids(up: Up) -> list[int]:
    pids = []
    for process in up.descendants():
        with contextlib.suppress(psutil.Error):
            command = process.cmdline()
            if "agent" in command and "run" in command and "--config" in command:
                pids.append(process.pid)
    return sorted(pids)


def test_a_revoked_key_is_refused_within_seconds_without_a_restart(up: Up) -> None:
    agents = _agent_pids(up)
    key = _key_cli(up, "create", "--tenant", "globex")
    parsed = parse_api_key(key)
    assert parsed is not None
    deadline = time.monotonic() + KEY_CHANGE_WITHIN_S
    while (answer := _status_with(up, key))[0] == 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer[0] == 200, answer  # the new key reached the edge without a restart

    _key_cli(up, "revoke", parsed.key_id)
    revoked = time.monotonic()
    while (answer := _status_with(up, key))[0] != 401:
        assert time.monotonic() - revoked < KEY_CHANGE_WITHIN_S, answer
        time.sleep(0.2)
    assert json.loads(answer[1])["reason"] == "revoked API key"
    assert _agent_pids(up) == agents
    status, _, _ = chat(up.port, up.keyed(REASONING | {"x-tiermesh-sensitivity": "restricted"}))
    assert status == 200, "the demo keys still work"


def test_a_late_cloud_first_byte_is_hedged_to_a_local_tier(up: Up, eu_restored: None) -> None:
    cloud_answer(up, REASONING)
    steer(up, EU, first_byte_delay_s=HEDGE_S + 4)
    for stream in (False, True):
        started = time.monotonic()
        status, headers, body = chat(up.port, up.keyed(REASONING), stream=stream, timeout=30)
        took = time.monotonic() - started
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in LOCAL_TIERS, headers
        assert b"frontier" not in body
        # Served once the budget ran out, well before the cloud's first byte.
        assert HEDGE_S - 0.5 < took < HEDGE_S + 3, took
        if stream:
            assert headers["content-type"].startswith("text/event-stream")
            assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
        else:
            assert json.loads(body)["choices"][0]["message"]["role"] == "assistant"


def test_a_cloud_that_went_down_is_replaced_by_a_local_tier(up: Up, eu_restored: None) -> None:
    cloud_answer(up, REASONING)
    steer(up, EU, up=False)
    for _ in range(3):
        status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in LOCAL_TIERS, headers
    steer(up, EU, up=True)
    headers, _ = cloud_answer(up, REASONING)
    assert headers["x-tiermesh-backend"] == EU


def test_a_spent_budget_moves_the_tenant_to_the_local_tier_never_429(up: Up) -> None:
    budget = up.state / "edge-1" / "budget.json"
    tiers: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(tiers) < 40:
        status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert status == 200, body  # never 429 or 402: a spent budget changes the tier
        tiers.append(headers["x-tiermesh-tier"])
        if tiers[-1] == "local" and "cloud" in tiers:
            break
        time.sleep(0.3)  # the access log reaches the ledger within a second or so
    assert tiers[0] == "cloud", tiers
    assert tiers[-1] == "local", tiers
    spent = json.loads(budget.read_text())["initech"]
    assert spent["limit_usd"] == TRIAL_BUDGET_USD
    assert spent["spent_usd"] >= TRIAL_BUDGET_USD
    for _ in range(3):
        status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert status == 200, body
        assert headers["x-tiermesh-tier"] == "local", headers
    # Other tenants keep their cloud route.
    cloud_answer(up, REASONING)


def test_the_cascade_task_escalates_an_unconfident_local_answer(up: Up) -> None:
    # Greedy decoding makes the tiny test model's answer, and so its confidence, the same
    # on every run; its random weights leave it far below the task's min_confidence 0.6.
    for stream in (False, True):
        status, headers, body = chat(
            up.port, up.keyed(CASCADE_HEADERS), stream=stream, timeout=60, extra=GREEDY
        )
        assert status == 200, body
        assert int(headers["x-tiermesh-cascade-steps"]) >= 2, json.dumps(headers)
        assert headers["x-tiermesh-tier"] != "local", headers
        if stream:
            assert body.count(b"data: [DONE]") == 1, body[-300:]
            continue
        answer = json.loads(body)
        assert len(answer["choices"]) == 1
        assert answer["choices"][0].get("logprobs") is None  # the client did not ask


def test_a_failing_cloud_is_ejected_and_skipped(up: Up, eu_restored: None) -> None:
    cloud_answer(up, REASONING)
    steer(up, EU, failure_status=503)
    tiers = []
    for _ in range(8):
        status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
        assert status == 200, body
        tiers.append(headers["x-tiermesh-tier"])
    assert set(tiers) <= LOCAL_TIERS, tiers
    # Ejected after consecutive 5xx (the breaker is open): later requests skip the cloud
    # (for the catalog's 60 s ejection time, so this runs after the tests that need it).
    seen = _eu_requests(up)
    for _ in range(5):
        status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in LOCAL_TIERS, headers
    assert _eu_requests(up) == seen


def _model_servers(up: Up) -> list[psutil.Process]:
    ports = {str(n["model_port"]) for n in up.mesh["nodes"].values() if n["model_port"]}
    found = []
    for process in up.descendants():
        try:
            command = process.cmdline()
        except psutil.Error:
            continue
        if "tiermesh.agents.models.serve" in command and ports & set(command):
            found.append(process)
    return found


def _keep_killing(up: Up, stop: threading.Event) -> None:
    """Kill every model server of the mesh as soon as its supervisor starts it again."""
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        for process in _model_servers(up):
            with contextlib.suppress(psutil.Error):
                process.kill()
        stop.wait(0.05)


def test_restricted_data_with_every_local_tier_down_is_503_never_the_cloud(up: Up) -> None:
    restricted = {**REASONING, "x-tiermesh-sensitivity": "restricted"}
    status, headers, body = chat(up.port, up.keyed(restricted), timeout=30)
    assert status == 200, body
    assert headers["x-tiermesh-tier"] in LOCAL_TIERS
    assert len(_model_servers(up)) == 2
    before = {name: s["requests"] for name, s in standins(up).items()}
    stop = threading.Event()
    killer = threading.Thread(target=_keep_killing, args=(up, stop), daemon=True)
    killer.start()
    try:
        time.sleep(1.0)
        statuses = []
        for _ in range(5):
            status, headers, body = chat(up.port, up.keyed(restricted), timeout=30)
            statuses.append(status)
            assert headers.get("x-tiermesh-tier") != "cloud", headers
            assert b"frontier" not in body
        assert statuses == [503] * 5, statuses
        assert {name: s["requests"] for name, s in standins(up).items()} == before
    finally:
        stop.set()
        killer.join()
    # The supervisors bring the model servers back; restricted data is served again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, headers, _ = chat(up.port, up.keyed(restricted), timeout=30)
        if status == 200:
            assert headers["x-tiermesh-tier"] in LOCAL_TIERS
            return
        time.sleep(1)
    raise AssertionError("restricted requests were not served again within 90 s")
