"""Privacy at every node of a running ``tiermesh up``: each node's app listener runs the
request policy (ext_authz) before routing, so whichever node a request enters, personal
data declared public and data declared restricted never reach the cloud, while the same
request without personal data does.

The tenant is ``globex``: its public ``reasoning`` chain starts at the cloud
(``frontier-eu``) on every node, so a node that routed on the caller's label alone would
send the personal data there. Its restricted data may use only the local tier, which only
``edge-1`` has: elsewhere such a request is refused 503 (fail closed).

Fixtures for more tests of the same mesh: ``up`` (the running mesh, one per module) and
``ports`` (every node's app listener port by node id, once every node decides requests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.agent_support import chat_text
from tests.e2e.up_support import Up, cloud_answer, cloud_posts, node_ports, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]

PUBLIC_REASONING = {"x-tiermesh-tenant": "globex", "x-tiermesh-task": "reasoning",
                    "x-tiermesh-sensitivity": "public"}  # fmt: skip
"""A request globex's plan sends to the cloud first, on every node."""
RESTRICTED_REASONING = {**PUBLIC_REASONING, "x-tiermesh-sensitivity": "restricted"}
PII = "Charge card 4111 1111 1111 1111 and mail the receipt to jane.doe@example.com, please."
CLEAN = "What is the capital of France?"
LOCAL_TIERS = {"local", "private"}
REFUSED = b"tiermesh: no backend may serve route globex.restricted."
"""How a node without a tier cleared for globex's restricted data refuses it."""
DECISION = "x-tiermesh-decision-id"
"""Set on every answer the node's request policy decided."""
READY_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-privacy") / "state") as running:
        yield running


def _kept_off_the_cloud(status: int, headers: dict[str, str], body: bytes) -> bool:
    """Answered by a local or private tier, or refused because no tier cleared for the
    data exists on this node; never a cloud answer."""
    if headers.get("x-tiermesh-tier") == "cloud" or b"frontier" in body:
        return False
    if status == 200:
        return headers.get("x-tiermesh-tier") in LOCAL_TIERS
    return status == 503 and body.startswith(REFUSED)


@pytest.fixture(scope="module")
def ports(up: Up) -> dict[str, int]:
    """Every node's app listener port, once each answers a restricted request the way its
    plan says (its listener, routes and request policy are in place)."""
    found = node_ports(up)
    assert {info["tier"] for info in up.mesh["nodes"].values()} == {"local", "private", "cloud"}
    for node, port in found.items():
        deadline = time.monotonic() + READY_WITHIN_S
        last: tuple[int, dict[str, str], bytes] = (0, {}, b"")
        while time.monotonic() < deadline:
            last = chat_text(port, RESTRICTED_REASONING, CLEAN, timeout=30)
            if _kept_off_the_cloud(*last):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"{node} did not serve within {READY_WITHIN_S:g}s; last {last}")
    return found


def _send_checked(up: Up, port: int, headers: dict[str, str], text: str) -> None:
    """Send ``text``; assert the node's request policy decided it, it was kept off the
    cloud and no stand-in received a body."""
    before = cloud_posts(up)
    status, got, body = chat_text(port, headers, text, timeout=30)
    assert got.get(DECISION), (status, got, body)
    assert _kept_off_the_cloud(status, got, body), (status, got, body)
    assert cloud_posts(up) == before


def test_pii_declared_public_stays_off_the_cloud_at_every_node(
    up: Up, ports: dict[str, int]
) -> None:
    for node, port in ports.items():
        try:
            _send_checked(up, port, PUBLIC_REASONING, PII)
        except AssertionError as exc:
            raise AssertionError(f"node {node}: {exc}") from exc


def test_the_same_request_without_pii_reaches_the_cloud_at_every_node(
    up: Up, ports: dict[str, int]
) -> None:
    for node, port in ports.items():
        before = cloud_posts(up)
        headers, body = cloud_answer(up, PUBLIC_REASONING, port=port)
        assert headers.get("x-tiermesh-backend", "").startswith("frontier-"), (node, headers)
        assert headers.get(DECISION), (node, headers)
        assert b"answered by frontier-" in body, (node, body)
        after = cloud_posts(up)
        assert sum(after.values()) > sum(before.values()), (node, before, after)


def test_data_declared_restricted_never_reaches_the_cloud_at_any_node(
    up: Up, ports: dict[str, int]
) -> None:
    for node, port in ports.items():
        try:
            _send_checked(up, port, RESTRICTED_REASONING, CLEAN)
        except AssertionError as exc:
            raise AssertionError(f"node {node}: {exc}") from exc
