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

import asyncio
import http.client
import time
from collections.abc import Iterator

import pytest

from tests.e2e.agent_support import chat_text
from tests.e2e.up_support import Up, cloud_answer, cloud_posts, node_ports, running_up
from tiermesh.controlplane.bundle import read_policy_dir
from tiermesh.controlplane.store import EtcdStore

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
            try:
                last = chat_text(port, up.keyed(RESTRICTED_REASONING), CLEAN, timeout=30)
            except OSError:  # the node's Envoy has no listener yet
                time.sleep(0.3)
                continue
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
    status, got, body = chat_text(port, up.keyed(headers), text, timeout=30)
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


# -- an attacker's encodings, buffer boundaries, paths and headers, at every node ----------

SSN = "078-05-1120"
BODY_LIMIT = 64 * 1024
"""Bytes of a body ext_authz reads on the demo nodes (the agent's default)."""


def _answered_off_the_cloud(status: int, headers: dict[str, str], body: bytes) -> bool:
    """As :func:`_kept_off_the_cloud`, but any answer of a local or private tier counts:
    the tiny local model answers some odd bodies (content parts, 64 KiB prompts) with an
    error of its own, which is still the local tier answering."""
    if headers.get("x-tiermesh-tier") in LOCAL_TIERS and b"frontier" not in body:
        return True
    return _kept_off_the_cloud(status, headers, body)


def _raw(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | list[bytes] = b"",
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly this request (a list of chunks goes chunked, with no content-length)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        send = {"content-type": "application/json", **headers}
        if isinstance(body, list):
            connection.request(method, path, body=iter(body), headers=send, encode_chunked=True)
        else:
            connection.request(method, path, body=body, headers=send)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def _chat_bytes(content_json: str) -> bytes:
    """A chat body whose message content is the JSON text ``content_json`` as written."""
    return (
        '{"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": '
        + content_json
        + "}]}"
    ).encode()


ESCAPED_EMAIL = '"mail jane.doe\\u0040example.com the invoice"'
ATTACKS: dict[str, tuple[str, bytes | list[bytes]]] = {
    "a BOM before JSON with an escaped email": (
        "/v1/chat/completions",
        b"\xef\xbb\xbf" + _chat_bytes(ESCAPED_EMAIL),
    ),
    "duplicate content keys, the PII in the first": (
        "/v1/chat/completions",
        b'{"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": '
        b'"card 4111 1111 1111 1111", "content": "hello"}]}',
    ),
    "a card number as a JSON number": (
        "/v1/chat/completions",
        b'{"model": "local", "max_tokens": 4, "seed": 4111111111111111, '
        b'"messages": [{"role": "user", "content": "hello"}]}',
    ),
    "a card split over two content parts": (
        "/v1/chat/completions",
        b'{"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": ['
        b'{"type": "text", "text": "card 4111 1111"}, {"type": "text", "text": "1111 1111"}]}]}',
    ),
    "fullwidth digits": (
        "/v1/chat/completions",
        _chat_bytes('"card \\uff14\\uff11\\uff11\\uff11 1111 1111 1111"'),
    ),
    "an email in base64": (
        "/v1/chat/completions",
        _chat_bytes('"decode and answer: bWFpbCBqYW5lLmRvZUBleGFtcGxlLmNvbQ=="'),
    ),
    "an address spelled with [at] and [dot]": (
        "/v1/chat/completions",
        _chat_bytes('"write to jane.doe [at] example [dot] com"'),
    ),
    "an email in the query string": (
        "/v1/chat/completions?user=jane.doe%40example.com",
        _chat_bytes('"hello"'),
    ),
    "a chunked body whose first 64 KiB are harmless": (
        "/v1/chat/completions",
        [
            part
            for whole in [_chat_bytes('"' + "a" * BODY_LIMIT + " my SSN is " + SSN + '"')]
            for part in (whole[i : i + 16384] for i in range(0, len(whole), 16384))
        ],
    ),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_attackers_encoding_never_reaches_the_cloud_at_any_node(
    up: Up, ports: dict[str, int], attack: str
) -> None:
    path, body = ATTACKS[attack]
    for node, port in ports.items():
        before = cloud_posts(up)
        status, got, answer = _raw(port, "POST", path, up.keyed(PUBLIC_REASONING), body)
        assert got.get(DECISION), (node, status, got, answer)
        assert _answered_off_the_cloud(status, got, answer), (node, status, got, answer)
        assert cloud_posts(up) == before, node


def test_pii_in_a_header_never_reaches_the_cloud_at_any_node(up: Up, ports: dict[str, int]) -> None:
    headers = up.keyed({**PUBLIC_REASONING, "x-customer": "jane.doe@example.com"})
    for node, port in ports.items():
        before = cloud_posts(up)
        status, got, answer = _raw(
            port, "POST", "/v1/chat/completions", headers, _chat_bytes('"hi"')
        )
        assert _kept_off_the_cloud(status, got, answer), (node, status, got, answer)
        assert cloud_posts(up) == before, node


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/assistants", 404),
        ("POST", "/v1/fine_tuning/jobs", 404),
        ("DELETE", "/v1/models", 405),
        ("GET", "/v1/files", 404),  # listing files: not part of the batch lane
    ],
)
def test_a_path_or_method_outside_the_api_is_answered_on_the_node(
    up: Up, ports: dict[str, int], method: str, path: str, status: int
) -> None:
    for node, port in ports.items():
        before = cloud_posts(up)
        got_status, got, answer = _raw(port, method, path, up.keyed(PUBLIC_REASONING), b"")
        assert got_status == status, (node, got_status, answer)
        assert answer.startswith(b"tiermesh: "), (node, answer)
        assert got.get("x-tiermesh-tier") is None, node
        assert cloud_posts(up) == before, node


# -- a request policy that lowers sensitivity, written past `policy check` -----------------

MARKER_TASK = "e2e-lowering-policy"
LOWERING = """package tiermesh.request

# A mistaken author: trust the caller's label, ignore the findings; deny one marker task
# so a test can tell when the nodes run this policy.
level := input.headers.sensitivity if {
\tinput.headers.sensitivity in {"public", "internal", "restricted"}
} else := "public"

default allow := true

allow := false if input.headers.task == "e2e-lowering-policy"

decision := {
\t"allow": allow,
\t"sensitivity": level,
\t"budget_exhausted": false,
\t"reason": "lowering policy",
\t"headers": {"x-tiermesh-sensitivity": level},
}
"""
ADOPTED_WITHIN_S = 45.0


def _push_past_the_checks(up: Up, files: dict[str, bytes]) -> None:
    """Write ``files`` as the served bundle straight into etcd, as a bug or someone with
    etcd access could, without ``tiermesh policy push``'s checks."""

    async def write() -> None:
        etcd = up.mesh["etcd"]
        async with EtcdStore(etcd["endpoint"], root=etcd["root"]) as store:
            current = await store.get_bundle()
            await store.push_bundle(files, expected_revision=current.revision)

    asyncio.run(write())


def test_a_request_policy_that_lowers_sensitivity_cannot_send_pii_to_the_cloud(
    up: Up, ports: dict[str, int]
) -> None:
    files = dict(read_policy_dir(up.state / "policies", provenance=False).files)
    files = {name: data for name, data in files.items() if not name.startswith("request/")}
    files["request/request.rego"] = LOWERING.encode()
    _push_past_the_checks(up, files)
    marker = {**PUBLIC_REASONING, "x-tiermesh-task": MARKER_TASK}
    for node, port in ports.items():
        deadline = time.monotonic() + ADOPTED_WITHIN_S
        while chat_text(port, up.keyed(marker), CLEAN, timeout=30)[0] != 403:
            assert time.monotonic() < deadline, f"{node} did not adopt the pushed policy"
            time.sleep(0.3)
    for node, port in ports.items():
        try:
            _send_checked(up, port, PUBLIC_REASONING, PII)
        except AssertionError as exc:
            raise AssertionError(f"node {node} under the lowering policy: {exc}") from exc
