"""The demo's policy bundle: the shipped ``policies/`` with the catalog's backend endpoints
pointed at where the demo's processes actually listen.

Only ``endpoint`` (and, for the private backend, ``node``; for the cloud stand-ins,
``credential``) changes, plus the monthly budgets given in ``budgets`` (the demo gives
one tenant a budget a few cloud answers spend, to show the budget fallback); tiers,
aliases and tasks stay as shipped. One resilience value is raised: a circuit breaker with
``max_pending: 0`` becomes 1, because Envoy counts a request waiting for its first HTTP/1
connection as pending, so 0 overflows every request to that backend (seen with Envoy 1.40).
The demo's private backend is reached through its node's inbound mTLS listener (its
``spiffe_id`` becomes the node's); a backend moved to plain HTTP loses its ``spiffe_id``;
the cloud stand-ins keep TLS.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "EDGE_BACKEND",
    "PRIVATE_BACKEND",
    "SHIPPED_POLICIES",
    "DemoEndpoint",
    "demo_catalog",
    "write_demo_policies",
]

SHIPPED_POLICIES: Final = Path(__file__).resolve().parents[3] / "policies"
"""The repository's ``policies/`` (the demo runs from a source checkout)."""

EDGE_BACKEND: Final = "edge-smollm"
PRIVATE_BACKEND: Final = "onprem-gpu"


@dataclass(frozen=True, slots=True)
class DemoEndpoint:
    """Where one catalog backend listens in the demo, and on which node it runs."""

    port: int
    tls: bool = False
    node: str | None = None
    host: str = "127.0.0.1"
    credential: str | None = None
    """The secret name of the backend's API key (``credential: {secret: …}`` in the
    catalog); the key itself goes to the control plane, never into the catalog."""
    spiffe_id: str | None = None
    """The SPIFFE ID the backend must present (with ``tls``: a node's mTLS listener)."""


def demo_catalog(
    shipped: Mapping[str, Any],
    endpoints: Mapping[str, DemoEndpoint],
    budgets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """A copy of ``shipped`` (the parsed catalog) with each named backend's endpoint moved
    and each tenant of ``budgets`` given that ``monthly_budget_usd``.

    Raises ``KeyError`` naming a backend of ``endpoints`` or a tenant of ``budgets`` the
    catalog lacks.
    """
    catalog = yaml.safe_load(yaml.safe_dump(dict(shipped)))
    backends = {backend["name"]: backend for backend in catalog["backends"]}
    for name, where in endpoints.items():
        backend = backends[name]
        backend["endpoint"] = {"host": where.host, "port": where.port, "tls": where.tls}
        if where.node is not None:
            backend["node"] = where.node
        if where.credential is not None:
            backend["credential"] = {"secret": where.credential}
        if where.spiffe_id is not None:
            backend["spiffe_id"] = where.spiffe_id
        if not where.tls:
            backend.pop("spiffe_id", None)
    tenants = {tenant["name"]: tenant for tenant in catalog["tenants"]}
    for name, usd in (budgets or {}).items():
        tenants[name]["monthly_budget_usd"] = usd
    for backend in catalog["backends"]:
        breaker = (backend.get("resilience") or {}).get("circuit_breaker") or {}
        if breaker.get("max_pending") == 0:
            breaker["max_pending"] = 1
    return dict(catalog)


def write_demo_policies(
    target: Path,
    endpoints: Mapping[str, DemoEndpoint],
    *,
    budgets: Mapping[str, float] | None = None,
    shipped: Path = SHIPPED_POLICIES,
) -> Path:
    """Copy ``shipped`` to ``target`` (must not exist) with :func:`demo_catalog` as its
    ``data/catalog.yaml``; returns ``target``."""
    shutil.copytree(shipped, target)
    path = target / "data" / "catalog.yaml"
    catalog = demo_catalog(yaml.safe_load(path.read_text()), endpoints, budgets)
    path.write_text(
        "# Written by `tiermesh up`: the shipped catalog, endpoints moved to the demo's ports.\n"
        + yaml.safe_dump(catalog, sort_keys=False)
    )
    return target
