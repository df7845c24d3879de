"""One edge node of ``tiermesh up`` in front of backends someone else runs: the target a
peer benchmark drives beside other gateways (``bench/peer_target.py``).

What runs is what ``tiermesh up`` runs for its edge node, through the same code
(:class:`~tiermesh.demo.mesh.LocalMesh`): etcd; the control plane (a child ``tiermesh
controlplane run``, with its audit collector); the shipped policy bundle pushed with
``tiermesh policy push``, with ``require_api_key: true``; one API key per catalog tenant
made with ``tiermesh key create``; and node ``edge-1``'s agent (``tiermesh agent run``)
with the node.yaml ``up`` writes for it: ext_authz running the request-time policy with
its durable, hash-chained, signed decision log shipped to the control plane, usage
accounting from Envoy's access log against the tenant's budget, the cascade handler, and
Envoy. Not run: the private and cloud-gateway nodes, the batch queue, llama.cpp and
model signing: the local and private backends are the harness's.

The cloud stand-ins run too (in this process, idle unless a chain reaches them), so the
node's config is the demo edge's: the same catalog, policy bundle, clusters, secrets and
filters. The catalog differs from the demo's only where the harness's backends are not
the demo's:

- ``edge-smollm`` (tier local, on ``edge-1``) listens on 127.0.0.1:``primary_port`` and
  ``onprem-gpu`` (tier private) on 127.0.0.1:``fallback_port``, both plain HTTP (the demo
  reaches the private backend through its node's mTLS listener);
- no rate limit: a peer benchmark measures the gateway's throughput, not a tenant quota;
- both backends' capacity is :data:`BENCH_CAPACITY` and their circuit breakers
  :data:`BENCH_CIRCUIT_BREAKER` (the shipped edge backend admits one request at a time,
  which is what llama.cpp serves; a fake upstream serves hundreds);
- both backends are health-checked every second (:data:`BENCH_HEALTH_CHECK`; shipped: 5
  and 10 s), so that backends a harness starts after the node are found within a second
  or two, as the route-only benchmark path finds its own.

The measured traffic is :data:`TARGET_HEADERS` (tenant ``acme``, public, task
``classify``), whose chain is ``edge-smollm`` → ``onprem-gpu`` → ``frontier-eu``: the
primary first, the fallback when the primary fails (the cloud stand-in only when both
fail). Both backends may be absent when the node starts: it is
ready (:meth:`EdgeTarget.start` returns) once a request with the tenant's key passes
ext_authz and reaches Envoy's router, answered or not, and serves once they listen.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

import yaml

from tiermesh.demo.catalog import EDGE_BACKEND, PRIVATE_BACKEND, DemoEndpoint
from tiermesh.demo.mesh import LocalMesh, MeshError, MeshNode, Step, ensure_free

__all__ = [
    "BENCH_CAPACITY",
    "BENCH_CIRCUIT_BREAKER",
    "BENCH_HEALTH_CHECK",
    "TARGET_HEADERS",
    "TARGET_MODEL",
    "EdgeTarget",
]

TARGET_HEADERS: Final = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "classify",
}
"""Headers of the measured traffic, less the tenant's key (:meth:`EdgeTarget.headers`)."""
TARGET_MODEL: Final = "smollm2-135m-instruct"
"""The model the requests name: the one both backends serve in the catalog."""
BENCH_CIRCUIT_BREAKER: Final = {
    "max_connections": 256,
    "max_pending": 256,
    "max_requests": 256,
    "max_retries": 64,
}
"""Circuit breaker of both backends (the route-only benchmark path uses the same)."""
BENCH_CAPACITY: Final = 256
"""Concurrent requests each backend is said to serve (caps the breaker's max_requests)."""
BENCH_HEALTH_CHECK: Final = {
    "interval_ms": 1000,
    "timeout_ms": 500,
    "unhealthy_threshold": 2,
    "healthy_threshold": 1,
}
"""Active health-check timing of both backends (the route-only benchmark path's)."""
ROUTER_UNANSWERED: Final = ("no healthy upstream", "upstream connect error")
"""Bodies of Envoy's own 503 when the route's backends do not answer (yet)."""


class EdgeTarget(LocalMesh):
    """See the module docstring. ``await start(step)``, then ``await stop()`` (always
    safe, idempotent; removes the temporary state dir). One event loop."""

    def __init__(
        self,
        *,
        primary_port: int,
        fallback_port: int,
        app_port: int,
        state_dir: Path | None = None,
    ) -> None:
        for name, port in (("primary", primary_port), ("fallback", fallback_port)):
            if not 0 < port < 65536:
                raise MeshError(f"{name} port {port} is not a TCP port (1-65535)")
        if primary_port == fallback_port:
            raise MeshError(f"primary and fallback are both on port {primary_port}")
        super().__init__(app_port=app_port, state_dir=state_dir)
        self.primary_port = primary_port
        self.fallback_port = fallback_port
        self.nodes = [MeshNode("edge-1", "local", ("eu",), app_port, None)]

    def headers(self) -> dict[str, str]:
        """Every header the measured requests carry: :data:`TARGET_HEADERS` and the
        tenant's API key (``authorization: Bearer tmk_…``)."""
        return self.with_key(dict(TARGET_HEADERS))

    async def _start(self, step: Step) -> None:
        ensure_free(self.edge.app_port, "app listener")
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        step("etcd")
        await self._start_etcd()
        step("cloud stand-ins")
        self._start_standins()
        step("control plane")
        await self._start_plane()
        step("policy bundle, tenant API keys and join token")
        await self._push_policies()
        step("edge agent: identity, ext_authz, usage, Envoy")
        await self._start_agents()
        step("edge app listener routing")
        await asyncio.to_thread(self._wait_routing)

    def _onbox_endpoints(self) -> dict[str, DemoEndpoint]:
        return {
            EDGE_BACKEND: DemoEndpoint(self.primary_port, node=self.edge.id),
            PRIVATE_BACKEND: DemoEndpoint(self.fallback_port),
        }

    def _write_policies(self) -> Path:
        written = super()._write_policies()
        path = written / "data" / "catalog.yaml"
        path.write_text(
            "# Written by bench/peer_target.py: the demo catalog, its on-box backends at the\n"
            "# harness's ports, no rate limit.\n"
            + yaml.safe_dump(peer_catalog(yaml.safe_load(path.read_text())), sort_keys=False)
        )
        return written

    def _wait_routing(self) -> None:
        """Wait until a keyed request passes ext_authz and reaches Envoy's router."""
        self._wait_serving(self.headers(), _routed, "route")


def _routed(status: int, detail: str) -> bool:
    """Whether an answer came from a backend or from Envoy's router finding none."""
    return status == 200 or (status == 503 and detail.startswith(ROUTER_UNANSWERED))


def peer_catalog(demo: dict[str, Any]) -> dict[str, Any]:
    """``demo`` (the parsed demo catalog) without rate limits and with the bench capacity,
    circuit breaker and health checks on both on-box backends (module docstring);
    ``demo`` itself is not changed."""
    catalog = yaml.safe_load(yaml.safe_dump(demo))
    catalog.setdefault("defaults", {})["rate_limit"] = None
    for tenant in catalog["tenants"]:
        tenant.pop("rate_limit", None)
    for backend in catalog["backends"]:
        if backend["name"] in (EDGE_BACKEND, PRIVATE_BACKEND):
            backend["capacity"] = BENCH_CAPACITY
            resilience = backend.setdefault("resilience", {})
            resilience["circuit_breaker"] = dict(BENCH_CIRCUIT_BREAKER)
            resilience["health_check"] = dict(BENCH_HEALTH_CHECK)
    return dict(catalog)
