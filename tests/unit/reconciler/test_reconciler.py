"""The reconciler on a MemoryStore: publish all or nothing, keep the last good snapshots."""

from __future__ import annotations

import asyncio

from tests.unit.reconciler.conftest import MONTH, STATIC, Rig
from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import node_registration, policy_files, rego_files
from tiermesh.controlplane.bundle import Stage


async def test_nothing_pushed_is_a_quiet_success(rig: Rig) -> None:
    await rig.reconciler.start()
    result = await rig.settle()
    assert result.ok
    assert result.bundle_revision == 0
    assert rig.cache.keys() == []
    assert rig.reconciler.last_error is None


async def test_a_pushed_bundle_reaches_every_node(rig: Rig) -> None:
    await rig.store.register_node("edge-7", node_registration("edge-7"), ttl_s=30)
    await rig.reconciler.start()
    await rig.settle()
    revision = await rig.push()
    result = await rig.settle()
    assert result.ok, result.errors
    assert result.bundle_revision == revision
    assert set(result.published) == {"edge-7", STATIC.id}
    assert rig.cache.keys() == ["edge-7", STATIC.id]
    assert rig.reconciler.bundle_revision == revision
    assert rig.reconciler.provenance == {"git_commit": f"c{revision}"}
    assert rig.reconciler.bundle_sha256 == result.bundle_sha256
    assert result.duration_s > 0


async def test_an_identical_bundle_publishes_nothing_new(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    await rig.push()
    result = await rig.settle()
    assert result.ok
    assert result.published == ()
    assert rig.versions() == before


async def test_a_rego_syntax_error_is_refused_and_old_snapshots_stay(rig: Rig) -> None:
    good = await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    broken = policy_files()
    broken["routing/routing.rego"] += b"\nthis is not rego {\n"
    await rig.push(broken)
    result = await rig.settle()
    assert not result.ok
    assert rig.versions() == before
    assert rig.reconciler.bundle_revision == good
    error = rig.reconciler.last_error
    assert error is not None
    assert error.bundle_revision == good + 1
    assert any(f.stage is Stage.REGO and f.file == "routing/routing.rego" for f in error.findings)
    assert any(f.line is not None and f.line > 100 for f in error.findings)
    assert "routing/routing.rego:" in str(error)


async def test_a_violation_is_refused(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    files = policy_files()
    # The tenant may use only the local tier and there is no local backend: its public
    # and internal routes have no chain, nothing in the catalog can serve them.
    files["data/catalog.yaml"] = files["data/catalog.yaml"].replace(
        b"allowed_tiers: [private, cloud]\n    restricted_tiers: [private]",
        b"allowed_tiers: [local]\n    restricted_tiers: [local]",
    )
    assert files != policy_files()
    await rig.push(files)
    result = await rig.settle()
    assert not result.ok
    assert rig.versions() == before
    assert rig.reconciler.last_error is not None
    violations = [f for f in rig.reconciler.last_error.findings if f.stage is Stage.VIOLATION]
    assert violations
    assert "no backend for internal data" in violations[0].message
    assert violations[0].file == "data/catalog.yaml"


async def test_a_restricted_route_without_a_cleared_backend_is_published(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    files = policy_files()
    # The only backend cleared for restricted data leaves: restricted routes fail closed
    # (503) by design, which must not hold back the rest of the mesh.
    files["data/catalog.yaml"] = files["data/catalog.yaml"].replace(
        b"max_sensitivity: restricted", b"max_sensitivity: internal"
    )
    await rig.push(files)
    result = await rig.settle()
    assert result.ok, result.errors
    assert rig.versions() != before
    assert rig.reconciler.last_error is None
    assert any("it fails closed (503)" in f.message for f in result.warnings)


async def test_a_verifier_finding_names_route_and_cluster(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    rig.reconciler._compiler = FakeCompiler(refused_backends={"cloud-eu"})
    await rig.push()
    result = await rig.settle()
    assert not result.ok
    assert rig.versions() == before
    message = str(rig.reconciler.last_error)
    assert "route acme.public.chat.*" in message
    assert "cluster tm-cloud-eu" in message


async def test_a_recovering_bundle_clears_the_error(rig: Rig) -> None:
    await rig.push({**rego_files(), "data/catalog.yaml": b"version: v1\n"})
    await rig.reconciler.start()
    first = await rig.settle()
    assert not first.ok
    assert rig.cache.keys() == []
    assert any(f.stage is Stage.CATALOG for f in first.errors)
    await rig.push()
    second = await rig.settle()
    assert second.ok
    assert rig.reconciler.last_error is None
    assert rig.cache.keys() == [STATIC.id]


async def test_a_new_registration_gets_a_snapshot_and_a_gone_one_loses_it(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    lease = await rig.store.register_node("late-1", node_registration("late-1"), ttl_s=30)
    result = await rig.settle()
    assert result.published == ("late-1",)
    assert rig.cache.get_snapshot("late-1") is not None
    await rig.store.revoke_lease(lease)
    result = await rig.settle()
    assert result.removed == ("late-1",)
    assert rig.cache.get_snapshot("late-1") is None
    assert rig.cache.get_snapshot(STATIC.id) is not None


async def test_an_unreadable_registration_is_skipped_not_fatal(rig: Rig) -> None:
    await rig.push()
    await rig.store.register_node("odd-1", b'{"tier": "moon", "region": "x"}', ttl_s=30)
    await rig.store.register_node("liar-1", node_registration("other"), ttl_s=30)
    await rig.reconciler.start()
    result = await rig.settle()
    assert result.ok
    assert result.skipped == ("liar-1", "odd-1")
    assert rig.cache.keys() == [STATIC.id]


async def test_a_burst_of_writes_is_coalesced(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    count = rig.reconciler.reconcile_count
    for i in range(10):
        await rig.push()
        await rig.store.register_node(f"burst-{i}", node_registration(f"burst-{i}"), ttl_s=30)
    result = await rig.settle()
    await asyncio.sleep(0.05)
    assert rig.reconciler.reconcile_count - count == 1
    assert result.events >= 20
    assert len(result.published) == 10
    assert rig.compiler.calls > 0


async def test_store_outage_keeps_snapshots_and_retries(rig: Rig) -> None:
    await rig.push()
    await rig.reconciler.start()
    await rig.settle()
    before = rig.versions()
    rig.store.set_unavailable()
    result = await rig.settle()
    assert not result.ok
    assert result.store_failed
    assert "unavailable" in str(rig.reconciler.last_error)
    assert rig.versions() == before
    rig.store.set_unavailable(False)
    async with asyncio.timeout(10):
        while not (rig.reconciler.last_result and rig.reconciler.last_result.ok):
            rig.clock.advance(0.5)
            await asyncio.sleep(0.01)
    assert rig.reconciler.last_error is None
    assert rig.versions() == before


async def test_spent_budget_reaches_the_policy(rig: Rig) -> None:
    await rig.push()
    await rig.store.add_usage("acme", month=MONTH, cost_micro=150_000_000)
    await rig.reconciler.start()
    result = await rig.settle()
    assert result.ok
    assert any("monthly budget spent" in w.message for w in result.warnings)


async def test_reconcile_now_and_wait_for(rig: Rig) -> None:
    revision = await rig.push()
    result = await rig.reconciler.reconcile_now()
    assert result.ok
    assert result.bundle_revision == revision
    seen = await rig.reconciler.wait_for(lambda r: r.bundle_revision == revision, timeout_s=1)
    assert seen is result
