"""Small, valid Envoy resource sets for tests."""

from __future__ import annotations

from tiermesh.xds import Snapshot
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config


def mesh(
    backends: dict[str, int],
    *,
    listener_port: int = 10000,
    default: str | None = None,
    header: tuple[str, str] = ("x-served-by-config", "v1"),
) -> Snapshot:
    """One listener routing ``/`` to ``default`` (or the first backend); one EDS cluster per
    backend name → loopback port."""
    names = sorted(backends)
    target = default or names[0]
    return Snapshot.build(
        clusters=[eds_cluster(n) for n in names],
        endpoints=[load_assignment(n, [("127.0.0.1", backends[n])]) for n in names],
        listeners=[
            http_listener("app", address="127.0.0.1", port=listener_port, route_config_name="app")
        ],
        routes=[route_config("app", [("/", target)], response_headers=[header])],
    )
