"""The authz server with a real decision log, on its own event-loop thread, so tests can
drive Envoy with blocking calls."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc

from tests.unit.decisionlog.helpers import identity_for, new_ca
from tiermesh.agents.authz import (
    Authorizer,
    DecisionLogSink,
    KeyTable,
    StaticBudgetSource,
    load_request_policy,
    request_policy_modules,
    start_authz_server,
)
from tiermesh.agents.decisionlog import DecisionLog, StaticSigner
from tiermesh.rego import RegorusEngine

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies" / "request"
REQUEST_CONFIG = {"max_request_tokens": 10_000}


class AuthzThread:
    """Engine, durable decision log and gRPC server on one background loop; the policy's
    answers are memoized unless ``decision_cache`` is False.

    ``stop_server`` takes the server down (the port then refuses connections); ``close``
    releases everything and joins the thread.
    """

    def __init__(
        self,
        spool: Path,
        budget: StaticBudgetSource,
        max_body_bytes: int,
        *,
        decision_cache: bool = True,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.budget = budget
        self.spool = spool
        self.max_body_bytes = max_body_bytes
        self.modules = request_policy_modules(POLICY_DIR) if decision_cache else None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.run(self._start())

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    async def _start(self) -> None:
        self.engine = RegorusEngine()
        load_request_policy(self.engine, POLICY_DIR, {"request_config": REQUEST_CONFIG})
        self.log = DecisionLog(self.spool, StaticSigner(identity_for(new_ca())))
        await self.log.start()
        self.authorizer = Authorizer(
            self.engine,
            DecisionLogSink(self.log),
            self.budget,
            max_body_bytes=self.max_body_bytes,
            modules=self.modules,
        )
        self.server, self.port = await start_authz_server(self.authorizer)

    def use_keys(self, keys: KeyTable) -> None:
        """Authenticate later requests with ``keys`` (as a fetched policy would)."""

        async def swap() -> None:
            self.authorizer.use_policy(
                self.engine, bundle_revision=None, keys=keys, modules=self.modules
            )

        self.run(swap())

    def trust_reentry(self, header: str, secret: str) -> None:
        """Take requests carrying ``secret`` in ``header`` for the node's own (a cascade
        handler's step requests), as the agent does."""
        self.authorizer.trust_reentry(header, secret)

    def stop_server(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                await self.server.stop(None)
                self.server = None

        self.run(stop())

    def close(self) -> None:
        async def close() -> None:
            if self.server is not None:
                await self.server.stop(None)
            await self.log.close()
            self.engine.close()

        try:
            self.run(close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
