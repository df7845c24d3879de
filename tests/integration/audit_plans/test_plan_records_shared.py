"""Recording a fleet's plans serialises each node class's route table once, and the
records are byte for byte what recording plan by plan gave: digests, stored plans, hashes
and signatures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.audit_plans.conftest import recorder_for
from tests.unit.decisionlog.helpers import new_ca
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import NodeInfo, Plan, record_hash, signature_valid
from tiermesh.controlplane.audit import AuditStore, plan_digest, recorded_plan
from tiermesh.controlplane.bundle import Finding, Stage, evaluate_bundle
from tiermesh.controlplane.reconciler import ReconcileResult
from tiermesh.rego import RegorusEngine

Tier = Literal["local", "private", "cloud"]

CLASSES: tuple[tuple[Tier, str, tuple[str, ...]], ...] = (
    ("local", "eu-west", ("eu",)),
    ("private", "eu-west", ()),
    ("cloud", "us-east", ()),
)
FLEET = tuple(
    NodeInfo(id=f"node-{index:03d}", tier=tier, region=region, residency=residency)
    for index in range(24)
    for tier, region, residency in [CLASSES[index % len(CLASSES)]]
)


def fleet_outcome() -> Any:
    """:data:`FLEET` evaluated with the repository's policies."""
    engine = RegorusEngine()
    try:
        evaluated = evaluate_bundle(policy_files(), engine, nodes=FLEET)
    finally:
        engine.close()
    assert evaluated.ok, evaluated.errors
    return evaluated


@pytest.fixture
def outcome() -> Any:
    return fleet_outcome()


def count_full_dumps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts :meth:`Plan.model_dump` calls that serialise a whole plan."""
    calls = [0]
    original = Plan.model_dump

    def counted(self: Plan, **kwargs: Any) -> dict[str, Any]:
        if not kwargs.get("exclude"):
            calls[0] += 1
        return original(self, **kwargs)

    monkeypatch.setattr(Plan, "model_dump", counted)
    return calls


async def test_each_class_route_table_is_serialised_once(
    tmp_path: Path, outcome: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = {(id(p.routes), id(p.backends)) for p in outcome.plans.values()}
    assert len(bodies) < len(FLEET)  # the classes share their plans' bodies
    store = AuditStore(tmp_path / "audit.sqlite3")
    recorder = recorder_for(new_ca(), store)
    result = ReconcileResult(1, True, 3, "ab" * 32, 7, tuple(node.id for node in FLEET))
    full_dumps = count_full_dumps(monkeypatch)
    try:
        records = await recorder.record(result, outcome, {})
        stored = dict(store.plan_bodies())
        assert full_dumps[0] == len(bodies)
        monkeypatch.undo()
        assert len(stored) == len(bodies)  # each class's body once, not once per member
        whole = {r.decision_id: recorded_plan(r.result, store.plan_body) for r in records}
    finally:
        store.close()

    assert len(records) == len(FLEET)
    key = recorder._signer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    for record in records:
        node = record.node_spiffe_id.rsplit("/", 1)[-1]
        plan = outcome.plans[node]
        assert record.result["plan_sha256"] == plan_digest(plan)
        assert whole[record.decision_id] == plan.model_dump(mode="json")
        assert "routes" not in record.result["plan"]
        assert record.result["plan_body_sha256"] in stored
        assert record.hash == record_hash(record)
        assert signature_valid(record, key.public_key())


async def test_a_refused_reconcile_names_each_nodes_errors_in_order(
    tmp_path: Path, outcome: Any
) -> None:
    findings = tuple(
        Finding(Stage.PLAN, f"problem {index}", node=None if index % 4 == 0 else node.id)
        for index, node in enumerate(FLEET * 2)
    )
    store = AuditStore(tmp_path / "audit.sqlite3")
    recorder = recorder_for(new_ca(), store)
    result = ReconcileResult(
        1, False, 3, "ab" * 32, 7, tuple(node.id for node in FLEET), errors=findings
    )
    try:
        records = await recorder.record(result, outcome, {})
    finally:
        store.close()
    for record in records:
        node = record.node_spiffe_id.rsplit("/", 1)[-1]
        expected = [str(f) for f in findings if f.node in (None, node)][:20]
        assert record.result["errors"] == expected
        assert record.result["outcome"] == "refused"
