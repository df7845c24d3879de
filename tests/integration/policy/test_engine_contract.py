"""One contract, every engine: regorus, the OPA library, and OPA over REST."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tiermesh.rego import (
    UNDEFINED,
    EngineClosed,
    JSONValue,
    PolicyEngine,
    PolicyEvalError,
    RegoCompileError,
    RegoParseError,
)

PLAN = "data.tiermesh.fixture.routing.plan"
NO_ROUTE: JSONValue = {"allow": False, "reason": "no_route"}

DECISIONS: list[tuple[str, JSONValue, JSONValue]] = [
    (
        "public traffic may burst to the cloud",
        {"tenant": "acme", "sensitivity": "public"},
        {
            "allow": True,
            "chain": ["edge", "private", "cloud"],
            "fail_closed": False,
            "timeouts_ms": {"edge": 2000, "private": 5000, "cloud": 30000},
            "tags": ["cloud-eligible", "tenant:acme"],
        },
    ),
    (
        "internal traffic stays off the cloud",
        {"tenant": "acme", "sensitivity": "internal"},
        {
            "allow": True,
            "chain": ["edge", "private"],
            "fail_closed": False,
            "timeouts_ms": {"edge": 2000, "private": 5000},
            "tags": ["tenant:acme"],
        },
    ),
    (
        "restricted traffic is local only and fails closed",
        {"tenant": "acme", "sensitivity": "restricted"},
        {
            "allow": True,
            "chain": ["edge"],
            "fail_closed": True,
            "timeouts_ms": {"edge": 2000},
            "tags": ["restricted", "tenant:acme"],
        },
    ),
    (
        "a tenant without cloud permission",
        {"tenant": "globex", "sensitivity": "public"},
        {
            "allow": True,
            "chain": ["edge", "private"],
            "fail_closed": False,
            "timeouts_ms": {"edge": 2000, "private": 5000},
            "tags": ["tenant:globex"],
        },
    ),
    ("an unknown tenant gets the default", {"tenant": "nobody", "sensitivity": "public"}, NO_ROUTE),
    ("an unknown sensitivity gets the default", {"tenant": "acme", "sensitivity": "x"}, NO_ROUTE),
    ("no input at all gets the default", None, NO_ROUTE),
]

MISC = {
    "policies/misc/misc.rego": (
        "package misc\n\n"
        "nothing := null\n\n"
        'looks_undefined := "<undefined>"\n\n'
        'only_for_admins if input.role == "admin"\n\n'
        "boom := 1 / 0 if input.explode\n"
    )
}


@pytest.fixture
def loaded(
    engine: PolicyEngine, routing_modules: dict[str, str], catalog: dict[str, JSONValue]
) -> PolicyEngine:
    engine.load({**routing_modules, **MISC}, catalog)
    return engine


@pytest.mark.parametrize(
    ("input_doc", "expected"),
    [pytest.param(i, e, id=name) for name, i, e in DECISIONS],
)
def test_decision_table(loaded: PolicyEngine, input_doc: JSONValue, expected: JSONValue) -> None:
    assert loaded.evaluate(PLAN, input_doc) == expected


def test_partial_set_is_a_sorted_array(loaded: PolicyEngine) -> None:
    got = loaded.evaluate(
        "data.tiermesh.fixture.routing.eligible", {"tenant": "acme", "sensitivity": "public"}
    )
    assert got == ["cloud", "edge", "private"]


def test_data_documents_are_readable(loaded: PolicyEngine) -> None:
    assert loaded.evaluate("data.catalog.tenants.globex") == {"allow_cloud": False}


def test_undefined_is_a_sentinel_distinct_from_null(loaded: PolicyEngine) -> None:
    assert loaded.evaluate("data.misc.only_for_admins", {"role": "dev"}) is UNDEFINED
    assert loaded.evaluate("data.misc.only_for_admins", {"role": "admin"}) is True
    assert loaded.evaluate("data.misc.no_such_rule") is UNDEFINED
    assert loaded.evaluate("data.no_such_package.rule") is UNDEFINED
    assert loaded.evaluate("data.misc.nothing") is None
    assert loaded.evaluate("data.misc.looks_undefined") == "<undefined>"


def test_an_input_does_not_leak_into_the_next_evaluation(loaded: PolicyEngine) -> None:
    assert loaded.evaluate("data.misc.only_for_admins", {"role": "admin"}) is True
    assert loaded.evaluate("data.misc.only_for_admins") is UNDEFINED


def test_eval_error_names_the_rule_location(loaded: PolicyEngine) -> None:
    with pytest.raises(PolicyEvalError) as caught:
        loaded.evaluate("data.misc.boom", {"explode": True})
    location = caught.value.location
    assert location is not None
    assert (location.file, location.line) == ("policies/misc/misc.rego", 9)
    assert "policies/misc/misc.rego:9:" in str(caught.value)


def test_malformed_path_is_refused(loaded: PolicyEngine) -> None:
    with pytest.raises(PolicyEvalError, match=r"data\.<package>\.<rule>"):
        loaded.evaluate("data.misc[0]")


def test_rego_tests_report_pass_and_fail(loaded: PolicyEngine) -> None:
    results = {r.name: r for r in loaded.run_tests()}
    assert {name: r.passed for name, r in results.items()} == {
        "test_restricted_stays_on_the_edge": True,
        "test_unknown_tenant_gets_no_route": True,
        "test_deliberately_wrong": False,
    }
    wrong = results["test_deliberately_wrong"]
    assert wrong.file == "policies/fixture/routing_test.rego"
    assert wrong.path == "data.tiermesh.fixture.routing_test.test_deliberately_wrong"
    assert wrong.error is None


BAD_SYNTAX = "package broken\n\nallow if {\n\tinput.x ==\n}\n"
V0_SYNTAX = "package old\n\nallow {\n\ttrue\n}\n"
UNSAFE = "package unsafe\n\nallow if {\n\tx > 1\n}\n"


@pytest.mark.parametrize(
    ("source", "error", "lines"),
    [
        pytest.param(BAD_SYNTAX, RegoParseError, {4, 5}, id="syntax"),
        pytest.param(V0_SYNTAX, RegoParseError, {3}, id="rego-v0-body"),
        pytest.param(UNSAFE, RegoCompileError, {4}, id="unsafe-var"),
    ],
)
def test_rejected_module_gives_file_and_line_and_keeps_the_old_set(
    loaded: PolicyEngine,
    routing_modules: dict[str, str],
    source: str,
    error: type[RegoParseError],
    lines: set[int],
) -> None:
    name = "policies/routing/routing.rego"
    with pytest.raises(error) as caught:
        loaded.load({**routing_modules, name: source})
    assert type(caught.value) is error
    assert caught.value.file == name
    assert caught.value.line in lines
    assert str(caught.value).startswith(f"{name}:{caught.value.line}: ")
    assert loaded.evaluate(PLAN, {"tenant": "nobody"}) == NO_ROUTE


def test_load_replaces_modules_and_data(engine: PolicyEngine) -> None:
    engine.load({"a.rego": "package one\n\nx := data.d.v\n"}, {"d": {"v": 1}})
    assert engine.evaluate("data.one.x") == 1
    engine.load({"b.rego": "package two\n\ny := 2\n"}, {"e": {"w": 3}})
    assert engine.evaluate("data.one.x") is UNDEFINED
    assert engine.evaluate("data.d") is UNDEFINED
    assert engine.evaluate("data.two.y") == 2
    assert engine.evaluate("data.e.w") == 3
    engine.load({"b.rego": "package two\n\ny := 3\n"}, {"e": {"w": 3}})
    assert engine.evaluate("data.two.y") == 3


def test_empty_engine_has_everything_undefined(engine: PolicyEngine) -> None:
    assert engine.evaluate("data.anything.at_all") is UNDEFINED
    assert engine.run_tests() == []


def test_concurrent_evaluations_agree(loaded: PolicyEngine) -> None:
    name, input_doc, expected = DECISIONS[0]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: loaded.evaluate(PLAN, input_doc), range(40)))
    assert results == [expected] * 40, name


def test_closed_engine_refuses_calls(engine: PolicyEngine) -> None:
    engine.close()
    engine.close()
    with pytest.raises(EngineClosed):
        engine.evaluate("data.x.y")
    with pytest.raises(EngineClosed):
        engine.load({})
