"""Batch input parsing and the tier rules of job classes (pure)."""

from __future__ import annotations

import json

import pytest

from tiermesh.agents.batch import InvalidBatchInput, parse_lines
from tiermesh.controlplane.api.batch import (
    classes_for_tier,
    job_class,
    job_subject,
    tier_may_run,
    tiers_of_class,
)

ENDPOINT = "/v1/chat/completions"


def _line(custom_id: object = "a", **changes: object) -> str:
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"x": 1}}
    line.update(changes)
    return json.dumps(line)


def test_lines_are_numbered_and_blank_lines_skipped() -> None:
    content = f"{_line('a')}\n\n{_line('b')}\n".encode()
    lines = parse_lines(content, ENDPOINT)
    assert [(x.line, x.custom_id) for x in lines] == [(0, "a"), (1, "b")]
    assert lines[1].raw == _line("b").encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file: holds no request"),
        (b"\xff", "file: not UTF-8"),
        (b"{", "line 1: not JSON"),
        (b"[1]", "line 1: not a JSON object"),
        (_line(7).encode(), "line 1: custom_id must be a string"),
        (f"{_line('a')}\n{_line('a')}".encode(), "line 2: custom_id 'a' is not unique"),
        (_line(method="GET").encode(), "line 1: method must be 'POST'"),
        (_line(url="/v1/embeddings").encode(), "line 1: url must be the batch's endpoint"),
        (_line(body=[1]).encode(), "line 1: body must be a JSON object"),
        (json.dumps({"custom_id": "a"}).encode(), "line 1: missing 'method'"),
    ],
)
def test_bad_input_is_refused_naming_the_line(content: bytes, message: str) -> None:
    with pytest.raises(InvalidBatchInput, match=message.replace("(", r"\(")):
        parse_lines(content, ENDPOINT)


def test_an_endpoint_outside_the_batch_surface_is_refused() -> None:
    with pytest.raises(InvalidBatchInput, match="endpoint: must be one of"):
        parse_lines(_line().encode(), "/v1/models")


def test_job_classes_and_the_tiers_that_take_them() -> None:
    every = ("local", "private", "cloud")
    assert job_class("public", every, ("local",)) == "cloud"
    assert job_class("internal", every, ("local",)) == "cloud"
    assert job_class("restricted", every, ("local",)) == "local"
    assert job_class("restricted", every, ("local", "private")) == "private"
    assert job_class("restricted", every, every) == "private"  # never cloud
    # a tenant not allowed the cloud (or private) tier: its public lines stay below it
    assert job_class("public", ("local", "private"), ("local",)) == "private"
    assert job_class("public", ("local", "cloud"), ("local",)) == "local"
    assert job_class("restricted", ("local",), ("local", "private")) == "local"
    # no class fits a tenant without the local tier
    assert job_class("public", ("cloud",), ()) is None
    assert job_class("restricted", every, ()) is None
    assert classes_for_tier("local") == ("local", "private", "cloud")
    assert classes_for_tier("private") == ("private", "cloud")
    assert classes_for_tier("cloud") == ("cloud",)
    assert tiers_of_class("private") == ("local", "private")
    assert job_subject("private", "batch_1") == "tiermesh.jobs.private.batch_1"


@pytest.mark.parametrize(
    ("tier", "sensitivity", "allowed", "may"),
    [
        ("cloud", "public", ("local", "private", "cloud"), True),
        ("cloud", "restricted", ("local", "private", "cloud"), False),
        ("cloud", "internal", ("local", "private"), False),
        ("private", "restricted", ("local", "private"), True),
        ("private", "restricted", ("local",), False),
        ("local", "restricted", ("local",), True),
        ("local", "secret", ("local",), False),
        ("edge", "public", ("edge",), False),
    ],
)
def test_a_worker_re_checks_each_job_fail_closed(
    tier: str, sensitivity: str, allowed: tuple[str, ...], may: bool
) -> None:
    assert tier_may_run(tier, sensitivity, allowed) is may
