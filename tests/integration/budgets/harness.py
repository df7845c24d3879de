"""ext_authz (budget from the budget file) and the usage server (writing that file) on one
background event loop, so tests can drive Envoy with blocking calls."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc

from tests.integration.authz.harness import POLICY_DIR, REQUEST_CONFIG
from tests.unit.decisionlog.helpers import identity_for, new_ca
from tiermesh.agents.authz import (
    Authorizer,
    DecisionLogSink,
    JsonFileBudgetSource,
    load_request_policy,
    start_authz_server,
)
from tiermesh.agents.decisionlog import DecisionLog, StaticSigner
from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.usage import Prices, TenantUsage, UsageLedger, start_usage_server
from tiermesh.rego import RegorusEngine


class BudgetThread:
    """Authz server, its decision log, the usage ledger and the access-log server.
    ``close`` releases everything and joins the thread."""

    def __init__(self, state: Path, prices: Prices, metrics: NodeMetrics | None = None) -> None:
        self.metrics = metrics
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.budget_file = state / "budget.json"
        self.ledger = UsageLedger(self.budget_file, prices)
        self.spool = state / "spool"
        self.servers: list[grpc.aio.Server] = []
        self.authz_port = 0
        self.usage_port = 0
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def totals(self, tenant: str) -> TenantUsage:
        async def read() -> TenantUsage:
            return self.ledger.totals(tenant)

        result: TenantUsage = self.run(read())
        return result

    async def _start(self) -> None:
        self.engine = RegorusEngine()
        load_request_policy(self.engine, POLICY_DIR, {"request_config": REQUEST_CONFIG})
        self.log = DecisionLog(self.spool, StaticSigner(identity_for(new_ca())))
        await self.log.start()
        authorizer = Authorizer(
            self.engine, DecisionLogSink(self.log), JsonFileBudgetSource(self.budget_file)
        )
        metrics = self.metrics
        if metrics is not None:
            metrics.state.ledger = self.ledger
            metrics.state.spool = self.log
        server, self.authz_port = await start_authz_server(
            authorizer, observer=metrics.authz.observe if metrics else None
        )
        self.servers.append(server)
        server, self.usage_port = await start_usage_server(
            self.ledger, observer=metrics.edge.observe if metrics else None
        )
        self.servers.append(server)

    def close(self) -> None:
        async def close() -> None:
            for server in self.servers:
                await server.stop(None)
            await self.log.close()
            self.engine.close()

        try:
            self.run(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
