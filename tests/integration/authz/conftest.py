"""A real Envoy with the compiled config of a node that runs the authz server."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.authz.harness import AuthzThread
from tests.integration.compiler.conftest import NODE, small_catalog
from tests.integration.compiler.tierbackend import TierBackend
from tests.support.xdsthread import XdsThread
from tests.unit.compiler.plans import evaluate_plan
from tiermesh.agents.authz import BudgetState, StaticBudgetSource
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.model import AuthzSettings, MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, render_bootstrap

MAX_BODY = 16 * 1024


@dataclass
class Reply:
    status: int
    backend: str | None
    tier: str | None
    decision_id: str | None
    body: str


@dataclass
class AuthzMesh:
    backends: dict[str, TierBackend]
    plan: Plan
    listener: int
    authz: AuthzThread
    spool: Path
    catalog: Catalog

    def chain(self, route: str) -> list[str]:
        (match,) = [r for r in self.plan.routes if r.name == route]
        return [step.backend for step in match.chain]

    def reached(self) -> int:
        """Requests the backends got (health checks excluded)."""
        return sum(len(b.models) for b in self.backends.values())

    def send(self, headers: dict[str, str], body: bytes) -> Reply:
        return post_chat(self.listener, headers, body)


def post_chat(listener: int, headers: dict[str, str], body: bytes) -> Reply:
    """POST ``body`` to the app listener's chat completions; any status is a reply."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{listener}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return _reply(int(response.status), response.headers, response.read())
    except urllib.error.HTTPError as exc:
        try:
            return _reply(exc.code, exc.headers, exc.read())
        finally:
            exc.close()


def _reply(status: int, headers: object, body: bytes) -> Reply:
    get = headers.get  # type: ignore[attr-defined]
    return Reply(
        status,
        get("x-tiermesh-backend"),
        get("x-tiermesh-tier"),
        get("x-tiermesh-decision-id"),
        body.decode(errors="replace"),
    )


def wait_routes_served(
    listener: int, headers: dict[str, str], served: Callable[[int], bool], limit_s: float = 10
) -> None:
    """Poll a chat POST with ``headers`` until ``served(status)``: Envoy has the routes."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if served(post_chat(listener, headers, chat("probe")).status):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"routes not served within {limit_s:g} s")


def chat(text: str, **extra: object) -> bytes:
    messages = [{"role": "user", "content": text}]
    return json.dumps({"model": "m", "messages": messages, **extra}).encode()


def local_only_restricted(catalog: Catalog) -> Catalog:
    """``acme``'s restricted data may use only the local tier (so "restricted" is visible
    as "landed on the local backend")."""
    tenants = [t.model_copy(update={"restricted_tiers": ("local",)}) for t in catalog.tenants]
    return catalog.model_copy(update={"tenants": tuple(tenants)})


@pytest.fixture
def authz_mesh(tmp_path: Path) -> Iterator[AuthzMesh]:
    with run_authz_mesh(tmp_path) as mesh:
        yield mesh


@contextlib.contextmanager
def run_authz_mesh(
    tmp_path: Path, adjust: Callable[[Catalog], Catalog] = local_only_restricted
) -> Iterator[AuthzMesh]:
    """Backends, the authz server and Envoy on the small catalog passed through
    ``adjust``; routes served before it yields."""
    backends = {name: TierBackend(name) for name in ("edge", "gpu", "cloud")}
    budget = StaticBudgetSource({"acme": BudgetState.of(1, 100)})
    spool = tmp_path / "spool"
    authz = AuthzThread(spool, budget, MAX_BODY)
    xds = XdsThread()
    try:
        catalog = adjust(small_catalog({n: b.port for n, b in backends.items()}))
        plan = evaluate_plan(catalog)
        listener = free_port()
        settings = NodeSettings(
            app_port=listener, authz=AuthzSettings(port=authz.port, max_body_bytes=MAX_BODY)
        )
        model = MeshModel.build([plan], {NODE: settings}, jwt_issuers=catalog.jwt_issuers)
        xds.set_snapshot(NODE, compile_and_verify(model, NODE, catalog))
        spec = BootstrapSpec(
            node_id=NODE, xds_host="127.0.0.1", xds_port=xds.port, admin_port=free_port()
        )
        with EnvoyProcess(render_bootstrap(spec), workdir=tmp_path, name=NODE) as envoy:
            envoy.wait_ready(timeout=20)
            mesh = AuthzMesh(backends, plan, listener, authz, spool, catalog)
            probe = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
            wait_routes_served(listener, probe, lambda status: status == 200)
            for backend in backends.values():
                backend.models.clear()
                backend.requests.clear()
            yield mesh
    finally:
        xds.close()
        authz.close()
        for backend in backends.values():
            backend.stop()
