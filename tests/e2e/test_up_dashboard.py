"""The dashboard of a running ``tiermesh up``, while the mesh takes known traffic: each
figure moves by exactly what was sent (a cloud answer, a restricted request, a PII
request, a cascade escalation, a local fallback after the cloud is stopped, an exhausted
budget, a refused request; the cloud answer's price moves its tenant's spend), a real
headless chromium shows it to a person (screenshots in bench/results/), and ``status``,
``top`` and ``audit`` find the mesh without flags.

Figures reach the control plane with the nodes' usage reports (about a second after the
access log, which Envoy flushes within a second), so each step waits for the exact delta
within a bound, then checks that nothing more arrives.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import expect

from tests.e2e.agent_support import TIERMESH, chat, chat_text
from tests.e2e.up_support import (
    CHILD_ENV,
    Up,
    cloud_answer,
    running_up,
    state_file,
    steer,
)
from tests.support.browser import chromium_path, headless_chromium
from tiermesh.agents.usage.ledger import cost_micro
from tiermesh.demo.mesh import CASCADE_HEADERS, TRIAL_HEADERS

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]

REASONING = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "reasoning",
             "x-tiermesh-sensitivity": "public"}  # fmt: skip
RESTRICTED = {**REASONING, "x-tiermesh-sensitivity": "restricted"}
PII = "Charge card 4111 1111 1111 1111 and mail the receipt to jane.doe@example.com, please."
LOCAL_TIERS = {"local", "private"}
EU = "frontier-eu"
EDGE = "edge-1"
GREEDY = {"temperature": 0, "max_tokens": 16}
DELTA_BOUND_S = 30.0
QUIET_S = 3.0
"""Longer than an access-log flush plus a usage report interval: what has not arrived by
then was not sent."""
SHOTS_ENV = "TIERMESH_SCREENSHOTS"
"""Set it to a folder (``bench/results`` to refresh the README's screenshots) and the
dashboard tests save what the browser showed there; unset, into the test's own temp dir,
so a test run never changes tracked files."""


def shots(up: Up) -> Path:
    """Where this run's screenshots go (:data:`SHOTS_ENV`)."""
    folder = Path(os.environ.get(SHOTS_ENV) or up.state.parent / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


Figures = Counter[str]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    chromium_path()  # skip before starting the mesh on a machine without a browser
    with running_up(tmp_path_factory.mktemp("up-dashboard") / "state") as running:
        yield running


def dashboard_url(up: Up) -> str:
    return str(up.mesh["control_plane"]["dashboard_url"])


def view(up: Up) -> dict[str, Any]:
    with urllib.request.urlopen(dashboard_url(up) + "api/dashboard", timeout=10) as answer:
        return dict(json.load(answer)["view"])


def flat(document: dict[str, Any]) -> Figures:
    """Every traffic figure of the dashboard, one counter key each."""
    total = document["traffic"]["total"]
    figures: Figures = Counter(
        answers=total["answers"], first=total["first_choice"], fallback=total["fallback"]
    )
    figures.update({f"tier.{k}": v for k, v in total["by_tier"].items()})
    figures.update({f"reason.{k}": v for k, v in total["fallback_reasons"].items()})
    figures.update({f"refused.{k}": v for k, v in total["refused"].items()})
    figures.update({f"node.{n['id']}": n["answers"] for n in document["nodes"]})
    return figures


def settled(up: Up) -> Figures:
    """The figures once they stopped moving (three equal reads over ``QUIET_S``)."""
    deadline = time.monotonic() + DELTA_BOUND_S
    reads = [flat(view(up))]
    while time.monotonic() < deadline:
        time.sleep(QUIET_S / 2)
        reads.append(flat(view(up)))
        if len(reads) >= 3 and reads[-1] == reads[-2] == reads[-3]:
            return reads[-1]
    raise AssertionError(f"the dashboard's figures kept moving: {reads[-3:]}")


def moved(before: Figures, after: Figures) -> dict[str, int]:
    keys = set(before) | set(after)
    return {k: after[k] - before[k] for k in sorted(keys) if after[k] != before[k]}


def expect_delta(up: Up, before: Figures, accept: Callable[[dict[str, int]], bool]) -> None:
    """Wait until the change since ``before`` is one ``accept`` takes, then check that it
    stays so for ``QUIET_S`` (nothing more arrives)."""
    deadline = time.monotonic() + DELTA_BOUND_S
    change: dict[str, int] = {}
    while time.monotonic() < deadline:
        change = moved(before, flat(view(up)))
        if accept(change):
            time.sleep(QUIET_S)
            final = moved(before, flat(view(up)))
            assert final == change, f"more than was sent arrived: {change} then {final}"
            return
        time.sleep(0.3)
    raise AssertionError(f"the dashboard moved by {change}")


def answered(tier: str, **more: int) -> dict[str, int]:
    return {"answers": 1, f"tier.{tier}": 1, f"node.{EDGE}": 1, **more}


def test_up_prints_the_dashboard_url(up: Up) -> None:
    printed = "".join(up.lines)
    assert f"Dashboard: {dashboard_url(up)}" in printed
    assert str(state_file(up.state)) in printed.replace("\n", "")


def spent_micro(up: Up, tenant: str) -> int:
    """The tenant's mesh-wide spend the dashboard shows, in micro-dollars."""
    (row,) = [t for t in view(up)["tenants"] if t["name"] == tenant]
    return round(float(row["spent_usd"]) * 1_000_000)


def price(up: Up, backend: str) -> tuple[float, float]:
    """The pushed catalog's (input, output) USD per 1000 tokens of ``backend``."""
    catalog = yaml.safe_load((up.state / "policies" / "data" / "catalog.yaml").read_text())
    (found,) = [b for b in catalog["backends"] if b["name"] == backend]
    cost = found["cost_per_1k_tokens"]
    return float(cost["input"]), float(cost["output"])


def test_a_cloud_answer_is_one_first_choice_cloud_answer_and_its_price(up: Up) -> None:
    cloud_answer(up, REASONING)  # the cloud tier is reachable (its secrets arrived)
    before = settled(up)
    spent = spent_micro(up, "acme")
    status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
    assert (status, headers["x-tiermesh-tier"]) == (200, "cloud"), body
    expect_delta(up, before, lambda d: d == answered("cloud", first=1))
    usage = json.loads(body)["usage"]
    charged = cost_micro(
        usage["prompt_tokens"], usage["completion_tokens"], price(up, headers["x-tiermesh-backend"])
    )
    assert charged > 0
    deadline = time.monotonic() + DELTA_BOUND_S
    while time.monotonic() < deadline and spent_micro(up, "acme") - spent != charged:
        time.sleep(0.3)
    assert spent_micro(up, "acme") - spent == charged
    time.sleep(QUIET_S)
    assert spent_micro(up, "acme") - spent == charged  # and nothing more


def _local(change: dict[str, int], tier: str) -> bool:
    """One local answer: the chain's first choice, or a fallback from its first step."""
    fallbacks = [
        answered(tier, fallback=1, **{f"reason.{reason}": 1}) for reason in ("retry", "unavailable")
    ]
    return change == answered(tier, first=1) or change in fallbacks


@pytest.mark.parametrize("kind", ["restricted", "pii"])
def test_restricted_and_pii_requests_are_answered_locally_and_shown_as_decisions(
    up: Up, kind: str
) -> None:
    before = settled(up)
    if kind == "restricted":
        status, headers, body = chat(up.port, up.keyed(RESTRICTED), timeout=60)
    else:
        status, headers, body = chat_text(up.port, up.keyed(REASONING), PII, timeout=60)
    assert status == 200, body
    tier = headers["x-tiermesh-tier"]
    assert tier in LOCAL_TIERS
    expect_delta(up, before, lambda d: _local(d, tier))
    decision = headers["x-tiermesh-decision-id"]
    deadline = time.monotonic() + DELTA_BOUND_S
    while time.monotonic() < deadline:
        rows = {row["decision_id"]: row for row in view(up)["decisions"]}
        if decision in rows:
            break
        time.sleep(0.5)
    row = rows[decision]
    assert (row["tenant"], row["sensitivity"]) == ("acme", "restricted")
    assert "jane.doe" not in json.dumps(view(up))  # masked: the prompt never shows
    with headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.goto(dashboard_url(up))
        shown = page.locator("#decisions tr", has=page.locator(f'[data-decision-id="{decision}"]'))
        expect(shown).to_contain_text("acme")
        expect(shown).to_contain_text("restricted")
        expect(page.locator("#decisions")).not_to_contain_text("jane.doe")
        if kind == "pii":
            page.locator("#decisions").screenshot(path=str(shots(up) / "dashboard-decisions.png"))


def test_a_cascade_escalation_is_one_cascade_fallback(up: Up) -> None:
    before = settled(up)
    status, headers, body = chat(up.port, up.keyed(CASCADE_HEADERS), timeout=60, extra=GREEDY)
    assert status == 200, body
    assert int(headers["x-tiermesh-cascade-steps"]) >= 2
    tier = headers["x-tiermesh-tier"]
    expect_delta(up, before, lambda d: d == answered(tier, fallback=1, **{"reason.cascade": 1}))


def test_with_the_cloud_stopped_a_local_tier_answers_as_a_fallback(up: Up) -> None:
    cloud_answer(up, REASONING)
    before = settled(up)
    steer(up, EU, up=False)
    try:
        status, headers, body = chat(up.port, up.keyed(REASONING), timeout=30)
        assert status == 200, body
        tier = headers["x-tiermesh-tier"]
        assert tier in LOCAL_TIERS
        reasons = ("retry", "unavailable")
        options = [answered(tier, fallback=1, **{f"reason.{r}": 1}) for r in reasons]
        expect_delta(up, before, lambda d: d in options)
    finally:
        steer(up, EU, up=True, first_byte_delay_s=0, failure_status=None)


def test_an_exhausted_budget_is_one_budget_fallback(up: Up) -> None:
    tiers: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(tiers) < 40:
        status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
        assert status == 200, body
        tiers.append(headers["x-tiermesh-tier"])
        if tiers[-1] == "local" and "cloud" in tiers:
            break
        time.sleep(0.3)
    assert tiers[-1] == "local", tiers
    before = settled(up)
    status, headers, body = chat(up.port, up.keyed(TRIAL_HEADERS), timeout=30)
    assert (status, headers["x-tiermesh-tier"]) == (200, "local"), body
    expect_delta(up, before, lambda d: d == answered("local", fallback=1, **{"reason.budget": 1}))
    (initech,) = [t for t in view(up)["tenants"] if t["name"] == "initech"]
    assert initech["exhausted"] is True
    assert initech["spent_usd"] >= initech["budget_usd"]


def test_a_request_without_a_key_is_one_refusal(up: Up) -> None:
    before = settled(up)
    status, _, _ = chat(up.port, REASONING, timeout=30)
    assert status == 401
    expect_delta(up, before, lambda d: d == {"refused.401": 1})


def test_a_person_sees_it_in_a_browser_and_the_commands_find_the_mesh(up: Up) -> None:
    figures = settled(up)
    document = view(up)
    with headless_chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
        page.goto(dashboard_url(up))
        total = page.locator('[data-figure="total-answers"]')
        expect(total).to_have_text(str(figures["answers"]))
        expect(page.locator('[data-figure="total-fallback"]')).to_have_text(
            str(figures["fallback"])
        )
        for reason in ("budget", "cascade"):
            shown = page.locator(f'[data-figure="reason-{reason}"]')
            expect(shown).to_have_text(str(figures[f"reason.{reason}"]))
        expect(page.locator('[data-figure="refused-401"]')).to_have_text(
            str(figures["refused.401"])
        )
        expect(page.locator('[data-figure="budget-initech"]')).to_have_text("exhausted")
        edge = page.locator("#mesh tr", has_text=EDGE)
        expect(edge).to_contain_text("healthy")
        expect(edge).to_contain_text("verified")
        expect(edge).to_contain_text("listeners ACK")
        expect(page.locator('[data-figure="audit-state"]')).to_contain_text("audit verify: ok")
        revision = str(document["policy"]["revision"])
        expect(page.locator('[data-figure="policy-revision"]')).to_have_text(revision)
        expect(page.locator("#live")).to_have_text("live", timeout=10_000)  # a poll came back
        folder = shots(up)
        page.screenshot(path=str(folder / "dashboard.png"), full_page=True)
        page.locator("#traffic").screenshot(path=str(folder / "dashboard-tier-use.png"))
        page.locator("#mesh").screenshot(path=str(folder / "dashboard-mesh.png"))
        assert problems == []

    env = {**os.environ, **CHILD_ENV, "TIERMESH_STATE_FILE": str(state_file(up.state))}
    env.pop("TIERMESH_AUDIT_DB", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TIERMESH, *args], capture_output=True, text=True, timeout=120,
                              env=env, check=False)  # fmt: skip

    top = run("top", "--once")
    assert top.returncode == 0, top.stderr
    assert "Tier use" in top.stdout
    assert EDGE in top.stdout
    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["addresses"]["dashboard"] == dashboard_url(up)
    audit = run("audit", "verify")
    assert audit.returncode == 0, audit.stderr + audit.stdout
    assert audit.stdout.startswith("ok: ")
