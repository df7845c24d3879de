"""Rate limits in a real Envoy: a tenant's limit is one token bucket across all of its
routes on the node, and other tenants' buckets are their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.compiler.conftest import Mesh, serving

pytestmark = pytest.mark.envoy

BUCKET = 3
"""Requests a limited tenant may send before its bucket is empty (no refill in a test)."""
LIMIT = {"max_tokens": BUCKET, "tokens_per_fill": 1, "fill_interval_ms": 3_600_000}


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Mesh]:
    tenants = (
        {"name": "globex", "rate_limit": LIMIT},
        {"name": "probe"},  # unlimited: readiness probes spend no one's bucket
    )
    tenants = ({"name": "acme", "rate_limit": LIMIT}, *tenants)
    with serving(tmp_path, tenants=tenants, probe_tenant="probe") as mesh:
        yield mesh


def ask(mesh: Mesh, tenant: str, sensitivity: str, task: str | None = None) -> int:
    headers = {"x-tiermesh-tenant": tenant, "x-tiermesh-sensitivity": sensitivity}
    if task is not None:
        headers["x-tiermesh-task"] = task
    return mesh.request(headers).status


def test_one_bucket_per_tenant_across_its_routes(limited: Mesh) -> None:
    routes = {r.name for r in limited.plan.routes if r.match.tenant == "acme"}
    assert {"acme.public.classify.*", "acme.internal.*.*"} <= routes
    # The first route spends acme's whole bucket ...
    assert [ask(limited, "acme", "public", "classify") for _ in range(BUCKET)] == [200] * BUCKET
    # ... so acme's other route is limited too: the bucket is the tenant's, not the route's.
    assert ask(limited, "acme", "internal") == 429
    assert ask(limited, "acme", "public", "classify") == 429
    # Another tenant with the same limit has a bucket of its own, and an unlimited one none.
    assert [ask(limited, "globex", "internal") for _ in range(BUCKET)] == [200] * BUCKET
    assert ask(limited, "globex", "public") == 429
    assert [ask(limited, "probe", "internal") for _ in range(2 * BUCKET)] == [200] * (2 * BUCKET)
