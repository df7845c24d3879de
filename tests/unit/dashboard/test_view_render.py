"""The dashboard document and its HTML: figures, states, and escaping of outside text."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

from tests.unit.dashboard.helpers import HOSTILE, signed_db, status_document
from tiermesh.controlplane.api import AnswerCounts
from tiermesh.controlplane.audit import AuditStore
from tiermesh.controlplane.dashboard import AuditSummary, AuditWatcher, dashboard_document
from tiermesh.controlplane.dashboard.render import main, page
from tiermesh.controlplane.runtime.traffic import LiveTraffic

NOW = dt.datetime(2026, 12, 6, 18, 0, tzinfo=dt.UTC)
RESULTS = [
    {"allow": True, "tier": "cloud", "sensitivity": "public", "reason": "public reasoning"},
    {
        "allow": True,
        "tier": "local",
        "sensitivity": "restricted",
        "reason": HOSTILE,
        "_tenant": "globex",
    },
    {"allow": False, "sensitivity": "restricted", "reason": "unknown API key"},
]


def _traffic() -> dict[str, object]:
    traffic = LiveTraffic(clock=lambda: NOW)
    traffic.add("edge-1", AnswerCounts(by_tier={"cloud": 2, "local": 1}, first_choice=2,
                                       fallback=1, fallback_reasons={"unavailable": 1},
                                       refused={"401": 1}))  # fmt: skip
    return traffic.document()


async def test_document_shows_nodes_tenants_traffic_and_decisions(tmp_path: Path) -> None:
    db = await signed_db(tmp_path, [dict(r) for r in RESULTS])
    with AuditStore(db) as store:
        audit = await AuditWatcher(store).summary()
    view = dashboard_document(status_document(**_traffic()), audit, now=NOW)

    edge, cloud = view["nodes"]
    assert (edge["svid"], cloud["svid"]) == ("verified", "registered")
    assert {r["type"]: r["state"] for r in edge["xds"]} == {
        "clusters": "ACK",
        "listeners": "NACK",
        "routes": "pending",
    }
    assert (edge["answers"], edge["fallback"]) == (3, 1)
    assert [t["used_pct"] for t in view["tenants"]] == [25.0, 200.0]
    assert view["traffic"]["total"]["fallback_rate"] == 1 / 3
    assert [d["outcome"] for d in view["decisions"]] == ["deny", "allow", "allow"]  # newest first
    assert view["decisions"][1]["tenant"] == "globex"
    assert view["audit"]["ok"] is True
    assert view["audit"]["checked"] == 3
    assert view["policy"]["revision"] == 7


async def test_every_outside_string_is_escaped(tmp_path: Path) -> None:
    db = await signed_db(tmp_path, [dict(r) for r in RESULTS] + [{"allow": True,
                         "_tenant": HOSTILE[:60]}])  # fmt: skip
    with AuditStore(db) as store:
        audit = await AuditWatcher(store).summary()
    status = status_document(**_traffic())
    status["tenants"].append({"name": '"><b>x', "spent_usd": 0, "budget_usd": None})
    html = page(dashboard_document(status, audit, now=NOW))
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert '"><b>x' not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # The only script is the same-origin file; no inline handlers anywhere.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/dashboard.js">']
    assert "onerror=" not in html.replace("onerror=alert(1)&gt;", "")


async def test_a_tampered_chain_shows_as_failed(tmp_path: Path) -> None:
    db = await signed_db(tmp_path, [dict(r) for r in RESULTS])
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE records SET record = replace(record, 'unknown API key', 'fine')")
    with AuditStore(db) as store:
        audit = await AuditWatcher(store).summary()
    view = dashboard_document(status_document(), audit, now=NOW)
    assert view["audit"]["ok"] is False
    assert "audit verify: FAILED" in main(view)


async def test_verification_reruns_only_when_records_arrive_and_the_interval_passed(
    tmp_path: Path,
) -> None:
    db = await signed_db(tmp_path, [dict(RESULTS[0])])
    ticks = [0.0]
    with AuditStore(db) as store:
        watcher = AuditWatcher(store, verify_every_s=5.0, clock=lambda: ticks[0])
        first = await watcher.summary()
        with sqlite3.connect(db) as raw:
            raw.execute("UPDATE records SET record = replace(record, 'public', 'privat')")
        ticks[0] = 10.0
        unchanged = await watcher.summary()  # nothing new arrived: not verified again
        assert (first.ok, unchanged.ok, unchanged.verified_at) == (True, True, first.verified_at)


def test_an_empty_mesh_renders() -> None:
    view = dashboard_document({"nodes": [], "tenants": []}, AuditSummary(), now=NOW)
    text = main(view)
    assert "No node has registered." in text
    assert "No request decision recorded yet." in text
    assert "chain not verified yet" in text


async def test_a_node_shows_when_its_svid_expires(tmp_path: Path) -> None:
    db = await signed_db(tmp_path, [])
    with AuditStore(db) as store:
        audit = await AuditWatcher(store).summary()
    status = status_document(**_traffic())
    status["nodes"][0]["svid_expires_at"] = "2026-12-07T18:00:00+00:00"
    view = dashboard_document(status, audit, now=NOW)
    edge, cloud = view["nodes"]
    assert edge["svid_expires_at"] == "2026-12-07T18:00:00+00:00"
    assert cloud["svid_expires_at"] is None
    html = main(view)
    assert "verified<br><small>until 2026-12-07 18:00 UTC</small>" in html
    assert '<td class="svid registered">registered</td>' in html
