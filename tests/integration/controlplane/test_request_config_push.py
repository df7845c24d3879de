"""Request settings follow ``policy push`` on a real etcd, reconciler, node API and agent
request policy: a bundle with ``data/request_config.yaml`` setting ``max_request_tokens: 5``
denies a longer request, the reason naming the limit, without an agent restart."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.controlplane.test_request_policy_reload import (
    ADOPTED_WITHIN_S,
    Mesh,
    mesh,  # noqa: F401 - the fixture
)
from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import DecisionRecord

pytestmark = pytest.mark.etcd

LONG_BODY = b'{"messages": [{"role": "user", "content": "' + b"several words " * 20 + b'"}]}'


async def check_long(mesh: Mesh) -> tuple[int, DecisionRecord]:  # noqa: F811
    return await mesh.check(LONG_BODY)


async def test_a_pushed_token_limit_applies_without_a_restart(mesh: Mesh) -> None:  # noqa: F811
    status, _ = await check_long(mesh)
    assert status == 200
    sync = mesh.requests.sync
    assert sync is not None
    swaps = sync.swaps

    pushed = await mesh.push(
        {**policy_files(), "data/request_config.yaml": b"max_request_tokens: 5\n"}
    )
    async with asyncio.timeout(ADOPTED_WITHIN_S):
        while (await check_long(mesh))[0] == 200:  # noqa: ASYNC110 - polling decisions
            await asyncio.sleep(0.02)
    status, record = await check_long(mesh)
    assert status == 403
    assert "exceeds the per-request limit 5" in record.result["reason"]
    assert record.bundle_revision == f"sha256:{pushed.sha256}"
    assert sync.swaps == swaps + 1  # swapped in, not restarted
    assert (await mesh.check())[0] == 200  # a short request still fits
