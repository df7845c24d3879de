"""The compiled snapshot in a real Envoy (SotW): routing, failover, hedging, fail-closed."""

from __future__ import annotations

import pytest

from tests.integration.compiler.conftest import HEDGE_MS, Mesh
from tiermesh.controlplane.generators.routes import unmatched_body

pytestmark = pytest.mark.envoy


def headers(
    sensitivity: str | None, task: str | None = None, model: str | None = None
) -> dict[str, str]:
    found = {"x-tiermesh-tenant": "acme"}
    for key, value in (("sensitivity", sensitivity), ("task", task), ("model", model)):
        if value is not None:
            found[f"x-tiermesh-{key}"] = value
    return found


@pytest.mark.parametrize(
    ("sensitivity", "task", "route"),
    [
        ("public", "classify", "acme.public.classify.*"),
        ("public", "reasoning", "acme.public.reasoning.*"),
        ("internal", None, "acme.internal.*.*"),
        ("restricted", "reasoning", "acme.restricted.reasoning.*"),
    ],
)
def test_requests_land_on_the_first_backend_of_their_route(
    mesh: Mesh, sensitivity: str, task: str | None, route: str
) -> None:
    first = mesh.chain(route)[0]
    reply = mesh.request(headers(sensitivity, task))
    assert (reply.status, reply.backend) == (200, first)
    expected_tier = {"edge": "local", "gpu": "private", "cloud": "cloud"}[first]
    assert reply.tier == expected_tier


def test_a_request_without_sensitivity_is_routed_as_restricted(mesh: Mesh) -> None:
    restricted = mesh.chain("acme.restricted.reasoning.*")
    assert "cloud" not in restricted
    assert mesh.request(headers(None, "reasoning")).backend == restricted[0]
    for name in restricted:
        mesh.backends[name].stop()
    reply = mesh.request(headers(None, "reasoning"))
    assert reply.status == 503
    assert mesh.backends["cloud"].models == []


def test_a_request_no_route_matches_is_told_why(mesh: Mesh) -> None:
    """The request policy lets an unknown tenant through (it has no catalog here), and the
    route table's catch-all names why nothing matched."""
    reply = mesh.request({"x-tiermesh-tenant": "nobody", "x-tiermesh-sensitivity": "public"})
    assert (reply.status, reply.backend, reply.body) == (404, None, unmatched_body())
    assert all(backend.models == [] for backend in mesh.backends.values())


def test_a_request_without_a_tenant_is_refused_by_the_request_policy(mesh: Mesh) -> None:
    reply = mesh.request({"x-tiermesh-sensitivity": "public"})
    assert (reply.status, reply.backend) == (403, None)
    assert "x-tiermesh-tenant is missing" in reply.body
    assert all(backend.models == [] for backend in mesh.backends.values())


def test_an_unknown_sensitivity_label_is_routed_as_restricted(mesh: Mesh) -> None:
    """The request policy replaces a label it does not know with ``restricted``."""
    reply = mesh.request(headers("secret", "reasoning"))
    assert (reply.status, reply.backend) == (200, mesh.chain("acme.restricted.reasoning.*")[0])
    assert mesh.backends["cloud"].models == []


def test_a_dead_first_backend_moves_traffic_down_the_chain(mesh: Mesh) -> None:
    chain = mesh.chain("acme.public.classify.*")
    assert len(chain) >= 3
    mesh.backends[chain[0]].stop()
    assert [mesh.request(headers("public", "classify")).backend for _ in range(5)] == [chain[1]] * 5
    mesh.backends[chain[1]].stop()
    assert mesh.request(headers("public", "classify")).backend == chain[2]


def test_restricted_traffic_with_its_backends_down_gets_503_never_the_cloud(mesh: Mesh) -> None:
    chain = mesh.chain("acme.restricted.classify.*")
    assert chain == ["edge", "gpu"]
    for name in chain:
        mesh.backends[name].stop()
    replies = [mesh.request(headers("restricted", "classify")) for _ in range(3)]
    assert [r.status for r in replies] == [503] * 3
    assert all(r.backend is None for r in replies)
    assert mesh.backends["cloud"].models == []


def test_a_late_first_byte_moves_on_to_the_next_step_after_the_hedge(mesh: Mesh) -> None:
    chain = mesh.chain("acme.public.classify.*")
    slow_s = 2.0
    mesh.backends[chain[0]].delay_s = slow_s
    reply = mesh.request(headers("public", "classify"))
    assert reply.backend == chain[1]
    # Served by the next step after the hedge deadline and before the slow first step
    # would have answered (a tighter bound only measures how busy the 2 cores are).
    assert HEDGE_MS / 1000 <= reply.elapsed_s < slow_s


def test_the_hedge_deadline_stops_once_response_headers_arrived(mesh: Mesh) -> None:
    chain = mesh.chain("acme.public.classify.*")
    mesh.backends[chain[0]].body_delay_s = 3 * HEDGE_MS / 1000
    reply = mesh.request(headers("public", "classify"))
    assert (reply.status, reply.backend, reply.body) == (200, chain[0], chain[0])
    assert reply.elapsed_s >= 3 * HEDGE_MS / 1000
