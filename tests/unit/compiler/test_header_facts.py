"""The verifier's per-matcher memo (:class:`HeaderFacts`) answers what
:func:`may_match` and :func:`exact_value` answer, for every combination of matchers,
whether a matcher is met the first time or again."""

from __future__ import annotations

import itertools

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from tiermesh.controlplane.generators.routes import restricted_matcher
from tiermesh.controlplane.verify.matching import HeaderFacts, exact_value, may_match

SENSITIVITY = "x-tiermesh-sensitivity"
TENANT = "x-tiermesh-tenant"
VALUES = ("restricted", None, "internal", "public")


def _string(name: str, **kwargs: object) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(**kwargs))


MATCHERS = [
    _string(SENSITIVITY, exact="public"),
    _string(SENSITIVITY, exact="internal"),
    _string("X-Tiermesh-Sensitivity", exact="internal"),  # names compare case-blind
    _string(SENSITIVITY, exact="PUBLIC", ignore_case=True),
    restricted_matcher(),
    _string(SENSITIVITY, safe_regex=regex_pb2.RegexMatcher(regex="(")),  # broken: may match
    rc.HeaderMatcher(name=SENSITIVITY, present_match=False),
    rc.HeaderMatcher(name=SENSITIVITY, exact_match="public", invert_match=True),
    _string(TENANT, exact="acme"),
    _string(TENANT, exact="globex"),
    _string(TENANT, exact="acme", ignore_case=True),  # pins nothing
    rc.HeaderMatcher(name=TENANT, exact_match="initech"),
    rc.HeaderMatcher(name=TENANT, exact_match="acme", invert_match=True),
    _string("x-tiermesh-task", exact="chat"),
]


def test_header_facts_answer_as_may_match_and_exact_value() -> None:
    facts = HeaderFacts(SENSITIVITY, VALUES, TENANT)
    combinations = [
        list(combination)
        for size in range(4)
        for combination in itertools.permutations(MATCHERS, size)
    ]
    assert len(combinations) > 2000
    for _round in range(2):  # judged, then from the memo
        for headers in combinations:
            expected = (
                tuple(may_match(headers, SENSITIVITY, value) for value in VALUES),
                exact_value(headers, TENANT),
            )
            assert facts.of(headers) == expected, headers
    # Some combinations tell the values apart and pin tenants: the check is not vacuous.
    answers = {facts.of(headers) for headers in combinations}
    assert len({allowed for allowed, _ in answers}) > 4
    assert {pinned for _, pinned in answers} == {None, "acme", "globex", "initech"}
