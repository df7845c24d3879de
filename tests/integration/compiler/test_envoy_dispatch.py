"""A route table dispatched by tenant (generators/dispatch.py) in a real Envoy, behind the
real request policy: every tenant's requests land where the plan says, restricted data
never reaches the cloud, and what matches no tenant's route is told why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.compiler.conftest import Mesh, serving
from tiermesh.controlplane.generators.routes import unmatched_body
from tiermesh.controlplane.model import names

pytestmark = pytest.mark.envoy

TENANTS = ("acme", "globex", "initech")


@pytest.fixture
def dispatched(tmp_path: Path) -> Iterator[Mesh]:
    with serving(tmp_path, tenants=tuple({"name": t} for t in TENANTS[1:])) as mesh:
        yield mesh


def _served_host(mesh: Mesh) -> dict[str, Any]:
    """The app route table's virtual host as Envoy holds it (its config dump, JSON)."""
    dump = mesh.envoy.admin_json("/config_dump?resource=dynamic_route_configs")
    for entry in dump["configs"]:
        config = entry["route_config"]
        if config["name"] == names.APP_ROUTES:
            (host,) = config["virtual_hosts"]
            return dict(host)
    raise AssertionError("Envoy holds no app route table")


def _headers(tenant: str, sensitivity: str | None, task: str = "classify") -> dict[str, str]:
    found = {"x-tiermesh-tenant": tenant, "x-tiermesh-task": task}
    if sensitivity is not None:
        found["x-tiermesh-sensitivity"] = sensitivity
    return found


def _list_sizes(node: dict[str, Any]) -> list[int]:
    """Sizes of every route list under a dispatch node of Envoy's config dump."""
    entries = [*node["matcher_tree"]["exact_match_map"]["map"].values(), node["on_no_match"]]
    sizes: list[int] = []
    for entry in entries:
        if "matcher" in entry:
            sizes += _list_sizes(entry["matcher"])
        else:
            sizes.append(len(entry["action"]["typed_config"]["routes"]))
    return sizes


def test_envoy_serves_one_route_list_per_tenant(dispatched: Mesh) -> None:
    host = _served_host(dispatched)
    assert "routes" not in host
    tree = host["matcher"]
    assert sorted(tree["matcher_tree"]["exact_match_map"]["map"]) == sorted(TENANTS)
    assert sum(_list_sizes(tree)) >= 64


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize(
    ("sensitivity", "task"),
    [("public", "classify"), ("public", "reasoning"), ("restricted", "reasoning")],
)
def test_each_tenants_requests_land_on_their_routes_first_backend(
    dispatched: Mesh, tenant: str, sensitivity: str, task: str
) -> None:
    first = dispatched.chain(f"{tenant}.{sensitivity}.{task}.*")[0]
    reply = dispatched.request(_headers(tenant, sensitivity, task))
    assert (reply.status, reply.backend) == (200, first)


@pytest.mark.parametrize("tenant", TENANTS)
def test_restricted_data_of_every_tenant_never_reaches_the_cloud(
    dispatched: Mesh, tenant: str
) -> None:
    restricted = dispatched.chain(f"{tenant}.restricted.reasoning.*")
    assert "cloud" not in restricted
    for name in restricted:
        dispatched.backends[name].stop()
    for sensitivity in ("restricted", None, "secret"):
        reply = dispatched.request(_headers(tenant, sensitivity, "reasoning"))
        assert reply.status == 503, sensitivity
    assert dispatched.backends["cloud"].models == []


def test_a_tenant_no_list_names_gets_the_unmatched_answer(dispatched: Mesh) -> None:
    reply = dispatched.request(_headers("nobody", "public"))
    assert (reply.status, reply.backend, reply.body) == (404, None, unmatched_body())
    assert all(backend.models == [] for backend in dispatched.backends.values())


def test_the_api_surface_guard_holds_in_every_list(dispatched: Mesh) -> None:
    for tenant in (*TENANTS, "nobody"):
        reply = dispatched.request(_headers(tenant, "public"), path="/v1/files")
        assert reply.status == 404, tenant
        assert "this path is not an API this mesh serves" in reply.body, tenant
    assert all(backend.models == [] for backend in dispatched.backends.values())
