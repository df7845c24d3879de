"""A stand-in for the real compiler + verifier, for tests of the code around it.

It builds a small but consistent snapshot from a plan (one EDS cluster and endpoint set
per planned backend, one loopback listener, one route table with a route per non-empty
chain) and "verifies" one invariant chosen by the test: chains must not reach a backend in
``refused_backends``. Thread-safe and pure, as the ``Compiler`` contract asks.
"""

from __future__ import annotations

from collections.abc import Iterable

from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.xds import Snapshot
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config


class FakeVerificationError(Exception):
    """Carries ``findings`` the way the real ``VerificationError`` does."""

    def __init__(self, findings: list[str]) -> None:
        self.findings = tuple(findings)
        super().__init__("; ".join(findings))


def cluster_name(backend: str) -> str:
    return f"tm-{backend}"


class FakeCompiler:
    """``Compiler`` for tests; counts calls."""

    def __init__(self, refused_backends: Iterable[str] = ()) -> None:
        self.refused_backends = frozenset(refused_backends)
        self.calls = 0

    def __call__(self, plan: Plan, catalog: Catalog, /) -> Snapshot:
        self.calls += 1
        findings = [
            f"route {route.name}: cluster {cluster_name(step.backend)} is refused by the verifier"
            for route in plan.routes
            for step in route.chain
            if step.backend in self.refused_backends
        ]
        if findings:
            raise FakeVerificationError(findings)
        routes_name = f"{plan.node.id}-routes"
        return Snapshot.build(
            clusters=[eds_cluster(cluster_name(b.name)) for b in plan.backends],
            endpoints=[
                load_assignment(cluster_name(b.name), [(b.endpoint.host, b.endpoint.port)])
                for b in plan.backends
            ],
            listeners=[
                http_listener(
                    f"{plan.node.id}-apps",
                    address="127.0.0.1",
                    port=10000,
                    route_config_name=routes_name,
                )
            ],
            routes=[
                route_config(
                    routes_name,
                    [
                        (f"/{route.name}/", cluster_name(route.chain[0].backend))
                        for route in plan.routes
                        if route.chain
                    ],
                )
            ],
        )
