"""Following the control plane's bundle on the node, with a fake source: a good bundle is
swapped in for the authorizer (and the ledger's prices), a bad one keeps the old policy
serving and says why, an unreachable control plane is retried."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.unit.reconciler.policyfiles import SMALL_CATALOG
from tiermesh.agents.authz import (
    Authorizer,
    CheckInput,
    MemorySink,
    StaticBudgetSource,
    build_request_engine,
)
from tiermesh.agents.identity import Backoff
from tiermesh.agents.identity.join_client import NodeApiCallError
from tiermesh.agents.runtime.policy_sync import PolicySync, bundle_revision
from tiermesh.agents.usage import Prices, Usage, UsageLedger
from tiermesh.controlplane.api import (
    ApiKeyEntry,
    BundleRef,
    RequestPolicyBundle,
    new_api_key,
    parse_catalog,
)
from tiermesh.rego import RegorusEngine

POLICIES = Path(__file__).resolve().parents[3] / "policies"
SHIPPED = (POLICIES / "request" / "request.rego").read_text()
CATALOG = parse_catalog(SMALL_CATALOG)
STRICT = SHIPPED + '\n_denials contains "bundle b denies everything" if true\n'
UNDEFINED = SHIPPED.replace("\ndecision := {", "\n_unused := {")
BROKEN = SHIPPED + "\nthis is not rego\n"


def ref(revision: int) -> BundleRef:
    return BundleRef(revision=revision, sha256=f"{revision:064x}", etcd_revision=100 + revision)


def policy(revision: int, source: str = SHIPPED, price: float = 0.003) -> RequestPolicyBundle:
    catalog = CATALOG.model_copy(
        update={
            "backends": tuple(
                b.model_copy(update={"cost_per_1k_tokens": b.cost_per_1k_tokens.model_copy(
                    update={"input": price})}) if b.name == "cloud-eu" else b
                for b in CATALOG.backends
            )
        }
    )  # fmt: skip
    return RequestPolicyBundle(
        bundle=ref(revision), modules={"request/request.rego": source}, catalog=catalog
    )


class FakeSource:
    """Answers with ``served``; raises ``failures`` times first."""

    def __init__(self, served: RequestPolicyBundle | None) -> None:
        self.served = served
        self.failures = 0
        self.calls = 0

    async def fetch(self) -> RequestPolicyBundle | None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise NodeApiCallError("RequestPolicy", grpc.StatusCode.UNAVAILABLE, "down")
        return self.served


@dataclass
class Node:
    authorizer: Authorizer
    sink: MemorySink
    sync: PolicySync
    source: FakeSource
    ledger: UsageLedger

    async def decide(self) -> tuple[str, str | None, int | None]:
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        headers = {"x-tiermesh-tenant": "acme", "x-tiermesh-sensitivity": "public"}
        verdict = await self.authorizer.decide(CheckInput("POST", "/v1/chat", headers, body))
        entry = self.sink.entries[-1]
        return verdict.outcome, entry.bundle_revision, entry.etcd_revision


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    first = policy(1)
    data = {"request_config": {}, "catalog": CATALOG.model_dump(mode="json")}
    engine = build_request_engine(RegorusEngine, first.modules, data)
    sink = MemorySink()
    authorizer = Authorizer(
        engine, sink, StaticBudgetSource({}), bundle_revision=bundle_revision(first.bundle),
        etcd_revision=first.bundle.etcd_revision,
    )  # fmt: skip
    ledger = UsageLedger(tmp_path / "budget.json", Prices.from_catalog(CATALOG))
    source = FakeSource(first)
    sync = PolicySync(
        authorizer, engine, source, engine_factory=RegorusEngine, request_config={},
        ledger=ledger, current=first.bundle, backoff=Backoff(initial=0.01, maximum=0.02),
    )  # fmt: skip
    yield Node(authorizer, sink, sync, source, ledger)
    sync.close()


async def test_a_good_bundle_is_swapped_in_and_stamps_later_decisions(node: Node) -> None:
    assert await node.decide() == ("allow", bundle_revision(ref(1)), 101)
    assert await node.sync.adopt(policy(2, STRICT))
    assert await node.decide() == ("deny", bundle_revision(ref(2)), 102)
    assert node.sync.current == ref(2)
    assert node.sync.swaps == 1
    assert node.sink.entries[-1].result["reason"] == "bundle b denies everything"


@pytest.mark.parametrize(
    ("source", "why"),
    [(BROKEN, "RegoParseError"), (UNDEFINED, "is undefined")],
)
async def test_a_bad_bundle_keeps_the_old_policy_and_says_why(
    node: Node, caplog: pytest.LogCaptureFixture, source: str, why: str
) -> None:
    with caplog.at_level(logging.ERROR, logger="tiermesh.agent"):
        assert not await node.sync.adopt(policy(2, source))
    assert await node.decide() == ("allow", bundle_revision(ref(1)), 101)
    assert node.sync.rejected == ref(2)
    assert node.sync.current == ref(1)
    assert why in caplog.text
    assert "bundle revision 2" in caplog.text
    assert why in (node.sync.last_error or "")


async def test_an_announced_bundle_is_fetched_once_and_a_rejected_one_not_again(
    node: Node,
) -> None:
    running = asyncio.create_task(node.sync.run())
    try:
        node.sync.announce(ref(1))  # the one in use: nothing to fetch
        node.source.served = policy(2, STRICT)
        node.sync.announce(ref(2))
        async with asyncio.timeout(5):
            await node.sync.wait_current(lambda current: current == ref(2))
        assert (await node.decide())[0] == "deny"
        calls = node.source.calls
        node.source.served = policy(3, BROKEN)
        node.sync.announce(ref(3))
        async with asyncio.timeout(5):
            while node.sync.rejected != ref(3):  # noqa: ASYNC110 - the sync has no event for it
                await asyncio.sleep(0.01)
        node.sync.announce(ref(3))
        await asyncio.sleep(0.05)
        assert node.source.calls == calls + 1
        assert await node.decide() == ("deny", bundle_revision(ref(2)), 102)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_an_unreachable_control_plane_is_retried(node: Node) -> None:
    running = asyncio.create_task(node.sync.run())
    try:
        node.source.failures = 2
        node.source.served = policy(2, STRICT)
        node.sync.announce(ref(2))
        async with asyncio.timeout(5):
            await node.sync.wait_current(lambda current: current == ref(2))
        assert node.source.calls == 3
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_the_ledger_prices_follow_the_catalog_and_keep_totals(node: Node) -> None:
    node.ledger.record([Usage("acme", "cloud-eu", 1000, 0)])
    assert node.ledger.totals("acme").cost_micro == 3000
    assert await node.sync.adopt(policy(2, price=1.0))
    node.ledger.record([Usage("acme", "cloud-eu", 1000, 0)])
    assert node.ledger.totals("acme").cost_micro == 3000 + 1_000_000
    document = json.loads(node.ledger.path.read_text())
    month = node.ledger.month
    assert document["acme"] == {"spent_usd": 1.003, "limit_usd": 100.0, "month": month}


async def test_a_key_change_of_the_bundle_in_use_swaps_only_the_keys(node: Node) -> None:
    key, parsed = new_api_key()
    entry = ApiKeyEntry(id=parsed.key_id, tenant="acme", sha256=parsed.digest)
    keyed = policy(1).model_copy(
        update={
            "bundle": ref(1).model_copy(update={"etcd_revision": 150}),
            "api_keys": (entry,),
            "request_config": {"require_api_key": True},
        }
    )
    assert await node.sync.adopt(keyed)
    assert node.sync.swaps == 0, "the engine was kept"
    assert node.sync.current == keyed.bundle
    assert node.authorizer.keys.required
    assert await node.decide() == ("deny", bundle_revision(ref(1)), 150)  # no key: 401
    assert node.sink.entries[-1].result["status"] == 401

    revoked = keyed.model_copy(
        update={
            "bundle": ref(1).model_copy(update={"etcd_revision": 151}),
            "api_keys": (entry.model_copy(update={"revoked": True}),),
        }
    )
    assert await node.sync.adopt(revoked)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    verdict = await node.authorizer.decide(
        CheckInput("POST", "/v1/chat", {"authorization": f"Bearer {key}"}, body)
    )
    assert json.loads(verdict.denial_body())["reason"] == "revoked API key"
