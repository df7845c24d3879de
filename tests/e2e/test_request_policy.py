"""The request-time policy and the audit trail in the running mesh (``tiermesh up``): the
edge's ext_authz server sees PII in a body declared public and keeps it on a local tier;
every answer names its decision and tier; the decision reaches the control plane's audit
database, signed and chained, within a bound."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_support import audit_cli, chat_text
from tests.e2e.up_support import CHILD_ENV, Up, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
PUBLIC = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "chat",
          "x-tiermesh-sensitivity": "public"}  # fmt: skip
PII = "Please follow up with jane.doe@example.com about card 4111 1111 1111 1111."
SHIPPED_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-authz") / "state") as running:
        yield running


def _audit_db(up: Up) -> Path:
    return Path(up.mesh["control_plane"]["audit_db"])


def _shipped(up: Up, decision_id: str) -> dict[str, object]:
    deadline = time.monotonic() + SHIPPED_WITHIN_S
    last = ""
    while time.monotonic() < deadline:
        found = audit_cli("query", "--db", str(_audit_db(up)), "--decision-id", decision_id,
                          "--json", env=CHILD_ENV)  # fmt: skip
        lines = [line for line in found.stdout.splitlines() if line.strip()]
        if found.returncode == 0 and lines:
            return dict(json.loads(lines[0]))
        last = found.stdout + found.stderr
        time.sleep(0.3)
    raise AssertionError(
        f"decision {decision_id} not in the audit DB in {SHIPPED_WITHIN_S}s: {last}"
    )


def test_pii_declared_public_is_answered_by_a_local_tier(up: Up) -> None:
    status, headers, body = chat_text(up.port, up.keyed(PUBLIC), PII)
    assert status == 200, body
    assert headers.get("x-tiermesh-tier") in {"local", "private"}, headers
    assert headers.get("x-tiermesh-decision-id"), headers


def test_every_answer_carries_its_decision_id_and_tier(up: Up) -> None:
    seen = set()
    for content in ("hello there", PII, "what is 2 + 2?"):
        status, headers, body = chat_text(up.port, up.keyed(PUBLIC), content)
        assert status == 200, body
        assert headers.get("x-tiermesh-tier"), headers
        seen.add(headers["x-tiermesh-decision-id"])
    assert len(seen) == 3


def test_the_decision_is_shipped_signed_and_the_chain_verifies(up: Up) -> None:
    status, headers, body = chat_text(up.port, up.keyed(PUBLIC), PII)
    assert status == 200, body
    decision_id = headers["x-tiermesh-decision-id"]
    record = _shipped(up, decision_id)
    result = record["result"]
    assert isinstance(result, dict)
    assert result["sensitivity"] == "restricted"
    assert str(record["node_spiffe_id"]).endswith("/node/edge-1")
    assert str(record.get("bundle_revision", "")).startswith("sha256:")
    assert "jane.doe" not in json.dumps(record)
    verified = audit_cli("verify", "--db", str(_audit_db(up)), env=CHILD_ENV)
    assert verified.returncode == 0, verified.stdout + verified.stderr
