"""``tiermesh policy check`` and push refuse a request policy that would lower a request's
sensitivity, even when its author changed the bundle's own Rego tests to match."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.policy_cli.conftest import invoke, read_bundle
from tiermesh.procs.etcd import EtcdServer

# The author's mistake: trust the caller's label and never look at the findings.
ECHO = """package tiermesh.request

level := input.headers.sensitivity if {
\tinput.headers.sensitivity in {"public", "internal", "restricted"}
} else := "public"

decision := {
\t"allow": true,
\t"sensitivity": level,
\t"budget_exhausted": false,
\t"reason": "as declared",
\t"headers": {"x-tiermesh-sensitivity": level},
}
"""
ECHO_TEST = """package tiermesh.request_test

import data.tiermesh.request

test_the_label_is_kept if {
\td := request.decision with input as {"headers": {"sensitivity": "public"}}
\td.sensitivity == "public"
}
"""
# Handles findings, but routes with a header that disagrees with its own decision.
DISAGREES = """package tiermesh.request

decision := {
\t"allow": true,
\t"sensitivity": "restricted",
\t"budget_exhausted": false,
\t"reason": "always restricted",
\t"headers": {"x-tiermesh-sensitivity": "public"},
}
"""
# Restricts findings but lowers a declared restricted label to internal.
LOWERS = """package tiermesh.request

level := "restricted" if count(input.findings) > 0
else := "restricted" if count(input.request_findings) > 0
else := "restricted" if input.payload.truncated
else := "restricted" if input.payload.encoding != "utf-8"
else := "restricted" if input.payload.uninspectable
else := "restricted" if not input.headers.sensitivity in {"public", "internal", "restricted"}
else := "internal" if input.headers.sensitivity == "restricted"
else := input.headers.sensitivity

decision := {
\t"allow": true,
\t"sensitivity": level,
\t"budget_exhausted": false,
\t"reason": "r",
\t"headers": {"x-tiermesh-sensitivity": level},
}
"""


def _with_request_policy(policy_dir: Path, policy: str, tests: str | None) -> None:
    folder = policy_dir / "request"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.rego"):
        old.unlink()
    (folder / "request.rego").write_text(policy)
    if tests is not None:
        (folder / "request_test.rego").write_text(tests)


def test_the_shipped_request_policy_holds_every_property(policy_dir: Path) -> None:
    assert (policy_dir / "request" / "request.rego").is_file()
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code == 0, result.output
    assert "property" not in result.output


@pytest.mark.parametrize(
    ("policy", "tests", "property_named"),
    [
        (ECHO, ECHO_TEST, "personal data or an uninspectable body must make a request restricted"),
        (ECHO, ECHO_TEST, "a missing or unknown label must make a request restricted"),
        (DISAGREES, None, "headers must carry x-tiermesh-sensitivity equal to"),
        (LOWERS, None, "a request's declared label must never be lowered"),
    ],
)
def test_a_policy_that_lowers_sensitivity_is_refused_naming_the_property(
    policy_dir: Path, policy: str, tests: str | None, property_named: str
) -> None:
    _with_request_policy(policy_dir, policy, tests)
    assert invoke("policy", "test", str(policy_dir)).exit_code == 0, "the bundle's tests pass"
    result = invoke("policy", "check", str(policy_dir))
    assert result.exit_code != 0
    assert property_named in result.output
    assert "request/request.rego" in result.output


def test_push_refuses_it_and_keeps_the_stored_bundle(
    policy_dir: Path, etcd_server: EtcdServer, root: str
) -> None:
    pushed = invoke(
        "policy", "push", str(policy_dir), "--etcd", etcd_server.endpoint, "--root", root
    )
    assert pushed.exit_code == 0, pushed.output
    _with_request_policy(policy_dir, ECHO, ECHO_TEST)
    refused = invoke(
        "policy", "push", str(policy_dir), "--etcd", etcd_server.endpoint, "--root", root
    )
    assert refused.exit_code != 0
    assert "request policy property broken" in refused.output
    stored = read_bundle(etcd_server.endpoint, root)
    assert stored.revision == 1
    assert stored.files["request/request.rego"] != ECHO.encode()
