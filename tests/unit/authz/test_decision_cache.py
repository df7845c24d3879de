"""The request policy's answers memoized on the input parts it provably reads."""

from __future__ import annotations

import json

import pytest

from tests.unit.authz.conftest import REQUEST_POLICY, Rig
from tiermesh.agents.authz import (
    BudgetState,
    CheckInput,
    DecisionCache,
    build_request_engine,
    input_references,
    request_policy_modules,
)
from tiermesh.rego import RegorusEngine

CONFIG = {"request_config": {"max_request_tokens": 10_000}}


def chat(text: str, **headers: str) -> CheckInput:
    body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
    named = {f"x-tiermesh-{k}": v for k, v in headers.items()}
    return CheckInput("POST", "/v1/chat/completions", named, body)


def test_the_shipped_policy_reads_these_input_parts_only() -> None:
    assert input_references(request_policy_modules(REQUEST_POLICY)) == {
        ("budget", "exhausted"),
        ("findings",),
        ("headers", "sensitivity"),
        ("payload", "encoding"),
        ("payload", "truncated"),
        ("payload", "uninspectable"),
        ("request_findings",),
        ("tenant",),
        ("token_estimate",),
    }


@pytest.mark.parametrize(
    "body",
    [
        "x := input",  # input whole
        'x if input["tenant"] == "a"',  # brackets on input itself
        "x if f(input)\nf(v) if v.tenant",
        'x := object.get(input, "tenant", "")',
        "x if time.now_ns() > input.budget.limit",  # the clock
        "x if rand.intn(input.tenant, 2) == 1",
        "x if { print(input.tenant); true }",
        "x if (",  # not Rego: never cached
    ],
)
def test_a_policy_not_provably_reduced_to_dotted_references_is_not_cached(body: str) -> None:
    assert input_references({"p.rego": f"package p\n{body}\n"}) is None


def test_references_below_an_iteration_or_index_key_the_whole_subtree() -> None:
    policy = (
        "package p\nimport input.a.b as alias\n"
        "x if input.c[_].d == 1\ny if { some f in input.e; f.g }\nz if alias.q\n"
        'w if input.c.k == "input"\n# input whole in a comment\n'
    )
    assert input_references({"p.rego": policy}) == {("a", "b"), ("c",), ("e",)}


def test_the_key_is_the_values_at_the_references_and_absent_differs_from_null() -> None:
    cache = DecisionCache(frozenset({("a", "b"), ("c",)}))
    base = cache.key({"a": {"b": 1, "noise": 2}, "c": [1], "other": "x"})
    assert cache.key({"a": {"b": 1}, "c": [1], "other": "y"}) == base
    assert cache.key({"a": {"b": 2}, "c": [1]}) != base
    assert cache.key({"a": {}, "c": None}) != cache.key({"a": {"b": None}, "c": None})
    assert cache.key({"a": 5, "c": None}) == cache.key({"c": None})  # both absent


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = DecisionCache(frozenset({("a",)}), capacity=2)
    cache.put("1", {"n": 1})
    cache.put("2", {"n": 2})
    assert cache.get("1") == {"n": 1}
    cache.put("3", {"n": 3})
    assert (cache.get("2"), len(cache)) == (None, 2)
    assert cache.get("1") == {"n": 1}
    assert (cache.hits, cache.misses) == (2, 1)


async def test_the_same_features_are_answered_from_the_cache_and_still_recorded(
    rig: Rig,
) -> None:
    first = await rig.authorizer.decide(chat("hello there", tenant="acme", sensitivity="public"))
    # Another body of the same length and findings: the policy cannot tell them apart.
    second = await rig.authorizer.decide(chat("hello world", tenant="acme", sensitivity="public"))
    cache = rig.authorizer.cache
    assert cache is not None
    assert (cache.misses, cache.hits) == (1, 1)
    assert first.decision == second.decision
    assert first.decision_id != second.decision_id
    assert len(rig.sink.entries) == 2
    assert (
        rig.sink.entries[1].result["policy_answer"] == rig.sink.entries[0].result["policy_answer"]
    )
    assert (
        rig.sink.entries[0].input["payload"]["sha256"]
        != rig.sink.entries[1].input["payload"]["sha256"]
    )


async def test_personal_data_misses_the_clean_answer_and_is_restricted(rig: Rig) -> None:
    await rig.authorizer.decide(chat("write to me at home", tenant="acme", sensitivity="public"))
    verdict = await rig.authorizer.decide(
        chat("write to a@example.com", tenant="acme", sensitivity="public")
    )
    assert verdict.set_headers["x-tiermesh-sensitivity"] == "restricted"
    assert rig.authorizer.cache is not None
    assert rig.authorizer.cache.hits == 0


async def test_a_budget_crossing_changes_the_next_decision(rig: Rig) -> None:
    request = chat("hello there", tenant="acme", sensitivity="public")
    assert "x-tiermesh-budget" not in (await rig.authorizer.decide(request)).set_headers
    assert "x-tiermesh-budget" not in (await rig.authorizer.decide(request)).set_headers
    rig.budget.set("acme", BudgetState.of(100, 100))
    verdict = await rig.authorizer.decide(request)
    assert verdict.set_headers["x-tiermesh-budget"] == "exhausted"
    assert verdict.decision["budget_exhausted"] is True


async def test_a_policy_push_changes_the_next_decision(rig: Rig) -> None:
    request = chat("hello there", tenant="acme", sensitivity="public")
    assert (await rig.authorizer.decide(request)).outcome == "allow"
    modules = request_policy_modules(REQUEST_POLICY)
    (name,) = modules
    pushed = {name: modules[name].replace("allow if count(_denials) == 0", "allow := false")}
    engine = build_request_engine(RegorusEngine, pushed, CONFIG, revision="b2")
    try:
        rig.authorizer.use_policy(engine, bundle_revision="b2", modules=pushed)
        verdict = await rig.authorizer.decide(request)
        assert (verdict.outcome, verdict.status) == ("deny", 403)
        assert rig.sink.entries[-1].bundle_revision == "b2"
    finally:
        rig.authorizer.use_policy(rig.engine, bundle_revision=None)
        engine.close()


async def test_a_catalog_change_changes_the_next_decision(rig: Rig) -> None:
    request = chat("hello there", tenant="acme", sensitivity="public")
    assert (await rig.authorizer.decide(request)).outcome == "allow"
    modules = request_policy_modules(REQUEST_POLICY)
    catalog = {**CONFIG, "catalog": {"tenants": [{"name": "globex"}]}}
    engine = build_request_engine(RegorusEngine, modules, catalog, revision="b3")
    try:
        rig.authorizer.use_policy(engine, bundle_revision="b3", modules=modules)
        verdict = await rig.authorizer.decide(request)
        assert verdict.outcome == "deny"
        assert "unknown tenant acme" in verdict.decision["reason"]
    finally:
        rig.authorizer.use_policy(rig.engine, bundle_revision=None)
        engine.close()


async def test_without_modules_every_request_is_evaluated(rig: Rig) -> None:
    rig.authorizer.use_policy(rig.engine, bundle_revision=None)
    assert rig.authorizer.cache is None
    request = chat("hello there", tenant="acme", sensitivity="public")
    first = await rig.authorizer.decide(request)
    second = await rig.authorizer.decide(request)
    assert first.decision == second.decision


async def test_an_answer_that_is_no_decision_is_never_cached(rig: Rig) -> None:
    policy = {
        "p.rego": "package tiermesh.request\n"
        'decision := {"allow": true, "sensitivity": "public", "budget_exhausted": false,'
        ' "reason": "r", "headers": {}} if input.tenant == "acme"\n'
    }
    engine = RegorusEngine()  # not probed: a plain request gets no decision either
    engine.load(policy, {})
    try:
        rig.authorizer.use_policy(engine, bundle_revision="b4", modules=policy)
        request = chat("hello there", tenant="other", sensitivity="public")
        for _ in range(2):
            assert (await rig.authorizer.decide(request)).status == 503
        cache = rig.authorizer.cache
        assert cache is not None
        assert (cache.hits, cache.misses, len(cache)) == (0, 2, 0)
        assert cache.references == (("tenant",),)
    finally:
        rig.authorizer.use_policy(rig.engine, bundle_revision=None)
        engine.close()


def test_the_references_of_a_set_of_modules_are_parsed_once() -> None:
    modules = request_policy_modules(REQUEST_POLICY)
    first = input_references(modules)
    assert first is not None
    assert input_references(dict(reversed(list(modules.items())))) is first
