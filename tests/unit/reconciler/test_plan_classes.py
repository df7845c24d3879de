"""Plans shared per node class equal the plans evaluating the policy per node gives; a
policy that reads more of the node id than the class contract allows is evaluated per
node."""

from __future__ import annotations

from tests.unit.reconciler.policyfiles import POLICY_DIR, rego_files
from tiermesh.controlplane.api import NodeInfo, Tier
from tiermesh.controlplane.bundle import evaluate_bundle, evaluate_plan
from tiermesh.controlplane.bundle.plan_classes import CLASS_NODE_ID, ProbeMemo, named_strings
from tiermesh.rego import JSONValue, RegorusEngine, Undefined


def demo_files() -> dict[str, bytes]:
    files = rego_files()
    files["data/catalog.yaml"] = (POLICY_DIR / "data" / "catalog.yaml").read_bytes()
    return files


CLASSES: list[tuple[Tier, str, tuple[str, ...]]] = [
    ("local", "eu-west", ("eu",)),
    ("local", "eu-west", ()),
    ("private", "us-east", ()),
    ("cloud", "eu-west", ("eu",)),
]
FLEET = [
    NodeInfo(id=f"node-{i:02d}", tier=tier, region=region, residency=residency)
    for i, (tier, region, residency) in enumerate(CLASSES * 4)
] + [NodeInfo(id="edge-1", tier="local", region="eu-west", residency=("eu",))]
"""Four classes of four nodes, and edge-1, which the demo catalog names (edge-smollm)."""


class IdReadingEngine(RegorusEngine):
    """A policy that reads the node id beyond the contract: its plans carry the id in a
    form the class's stand-in cannot be swapped for."""

    def evaluate(self, path: str, input: JSONValue = None) -> JSONValue | Undefined:
        result = super().evaluate(path, input)
        if isinstance(result, dict) and isinstance(input, dict):
            node = input["node"]
            assert isinstance(node, dict)
            warnings = result.get("warnings")
            assert isinstance(warnings, list)
            result["warnings"] = [*warnings, f"seen by {str(node['id']).upper()}"]
        return result


def per_node(engine: RegorusEngine) -> dict[str, object]:
    plans: dict[str, object] = {}
    for node in FLEET:
        plan, findings = evaluate_plan(engine, node)
        assert not findings, findings
        plans[node.id] = plan
    return plans


def test_shared_plans_are_the_plans_of_evaluating_each_node() -> None:
    engine = RegorusEngine()
    try:
        outcome = evaluate_bundle(demo_files(), engine, nodes=FLEET)
        assert outcome.ok, outcome.errors
        assert outcome.planner is not None
        summary = outcome.planner.classes.summary()
        # Four shared classes: each evaluated for its first member and for the class;
        # edge-1 alone, as the data names it.
        assert summary == {
            "classes_shared": 4,
            "classes_per_node": 0,
            "evaluations": 9,
            "shared_plans": 12,
        }
        assert dict(outcome.plans) == per_node(engine)
        # The demo policy echoes the node id in its warnings: swapped in, never the stand-in.
        warned = [w for w in outcome.warnings if "node-05" in w.message]
        assert warned
        assert all(CLASS_NODE_ID not in w.message for w in outcome.warnings)
    finally:
        engine.close()


def test_a_policy_reading_the_id_otherwise_is_evaluated_per_node() -> None:
    engine = IdReadingEngine()
    try:
        outcome = evaluate_bundle(demo_files(), engine, nodes=FLEET)
        assert outcome.ok, outcome.errors
        assert outcome.planner is not None
        summary = outcome.planner.classes.summary()
        assert summary["classes_shared"] == 0
        assert summary["classes_per_node"] == 4
        assert summary["shared_plans"] == 0
        assert dict(outcome.plans) == per_node(engine)
    finally:
        engine.close()


def test_named_strings_are_every_key_and_string_value() -> None:
    data: dict[str, JSONValue] = {"catalog": {"backends": [{"node": "edge-1", "port": 1}]}}
    assert named_strings(data) == frozenset({"catalog", "backends", "node", "edge-1", "port"})


def test_a_probe_memo_spares_later_passes_of_the_same_code_the_check() -> None:
    memo = ProbeMemo()
    first, second = RegorusEngine(), RegorusEngine()
    try:
        outcome = evaluate_bundle(demo_files(), first, nodes=FLEET, probe_memo=memo)
        assert outcome.planner is not None
        assert outcome.planner.classes.evaluations == 9
        files = demo_files()
        files["data/catalog.yaml"] = files["data/catalog.yaml"].replace(
            b"port: 9102", b"port: 9109"
        )
        again = evaluate_bundle(files, second, nodes=FLEET, probe_memo=memo)
        assert again.ok, again.errors
        assert again.planner is not None
        # Once per class, and edge-1; the plans are still those of each node.
        assert again.planner.classes.evaluations == 5
        assert dict(again.plans) == per_node(second)
        assert dict(again.plans) != dict(outcome.plans)
    finally:
        first.close()
        second.close()
