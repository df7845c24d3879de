"""The node's batch lane as one part of the agent: :class:`BatchLane`.

Started after the request policy (its lines are decided by the node's authorizer) and
before the registry session (which registers ``batch_socket``): connects to JetStream and
serves ``/v1/files`` and ``/v1/batches`` on its Unix socket, and fails the lines of jobs
JetStream gave up on (:class:`~tiermesh.agents.batch.GivenUpJobs`). Once the model server is up,
:meth:`BatchLane.start_worker` runs (with ``worker``) a worker of the node's tier that
calls the node's model server and yields to its interactive requests. ``stop`` ends the
worker after the job in hand, closes the server, then the connection; idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tiermesh.agents.authz import Authorizer
from tiermesh.agents.batch import (
    LOCAL_ONLY,
    AuthorizerDecider,
    BatchError,
    BatchHttpServer,
    BatchService,
    BatchWorker,
    GivenUpJobs,
    HttpModelClient,
    JobQueue,
    LoadSample,
    QueueSettings,
    TenantTiers,
)
from tiermesh.agents.config import AgentConfig, BatchConfig
from tiermesh.agents.models.load import LOAD_PATH, LoadReport
from tiermesh.agents.runtime.errors import StartFailed
from tiermesh.agents.usage import Usage, UsageLedger
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.api.batch import JobRecord

__all__ = ["BatchLane", "ModelServerLoad"]

log = logging.getLogger("tiermesh.agent")


class ModelServerLoad:
    """:class:`~tiermesh.agents.batch.InteractiveLoad` read from a model server's
    ``/tiermesh/load`` (:class:`~tiermesh.agents.models.load.LoadReport`); None when it
    does not answer well within a second."""

    def __init__(self, base_url: str) -> None:
        self._url = base_url.rstrip("/") + LOAD_PATH
        self._session: aiohttp.ClientSession | None = None

    async def sample(self) -> LoadSample | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        try:
            async with self._session.get(self._url) as response:
                report = LoadReport.from_json(await response.read())
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return LoadSample(report.in_flight, report.completion_tokens_total)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class BatchLane:
    """See the module docstring. One event loop (the agent's, the authorizer's)."""

    def __init__(self, config: AgentConfig, settings: BatchConfig) -> None:
        self._config = config
        self._settings = settings
        self.queue: JobQueue | None = None
        self.server: BatchHttpServer | None = None
        self.worker: BatchWorker | None = None
        self._given_up: GivenUpJobs | None = None
        self._model: HttpModelClient | None = None
        self._load: ModelServerLoad | None = None
        self._running: asyncio.Task[None] | None = None
        self._ledger: UsageLedger | None = None
        self._catalog: Callable[[], Catalog | None] = lambda: None

    @property
    def socket(self) -> Path:
        listen = self._settings.listen
        return self._config.service_socket("batch", listen)

    def _model_url(self) -> str | None:
        if self._settings.model_url is not None:
            return self._settings.model_url
        if self._config.model_server.kind == "llama_cpp":
            return f"http://{self._config.model_server.listen}"
        return None

    async def start(
        self,
        authorizer: Authorizer,
        catalog: Callable[[], Catalog | None] = lambda: None,
        ledger: UsageLedger | None = None,
    ) -> None:
        """Raises :class:`StartFailed` when JetStream or the socket is not usable.
        ``catalog`` gives the node's current catalog (tenants' tiers); a tenant it does
        not name, or no catalog, may use the local tier only. ``ledger`` is the node's
        usage ledger: the worker charges each answered line's tokens to its tenant there,
        priced as the catalog's backend on this node (None: nothing is charged)."""
        self._ledger, self._catalog = ledger, catalog

        def tenant_tiers(tenant: str) -> TenantTiers:
            found = catalog()
            entry = next((t for t in found.tenants if t.name == tenant), None) if found else None
            if entry is None:
                return LOCAL_ONLY
            return TenantTiers(allowed=entry.allowed_tiers, restricted=entry.restricted_tiers)

        settings = self._settings
        queue_settings = QueueSettings(
            url=settings.nats_url,
            ack_wait_s=settings.ack_wait_s,
            max_deliver=settings.max_deliver,
            max_file_bytes=settings.max_file_bytes,
        )
        try:
            self.queue = await JobQueue.connect(queue_settings)
            service = BatchService(
                self.queue,
                AuthorizerDecider(authorizer),
                tenant_tiers=tenant_tiers,
            )
            self.server = BatchHttpServer(
                service, self.socket, max_upload_bytes=settings.max_file_bytes
            )
            await self.server.start()
            self._given_up = GivenUpJobs(self.queue)
            await self._given_up.start()
        except (BatchError, OSError) as exc:
            await self.stop()
            raise StartFailed("the batch lane", str(exc)) from exc

    def start_worker(self) -> None:
        """With ``worker``, start this node's worker (once its model server answers); a
        node with no model to call runs none. Call after :meth:`start`."""
        settings = self._settings
        assert self.queue is not None, "not started"
        model_url = self._model_url()
        if settings.worker and model_url is not None:
            self._model = HttpModelClient(model_url)
            if settings.yield_to_interactive and self._config.model_server.kind == "llama_cpp":
                self._load = ModelServerLoad(f"http://{self._config.model_server.listen}")
            self.worker = BatchWorker(
                self.queue,
                self._config.node.tier,
                self._model,
                load=self._load,
                charge=None if self._ledger is None else self._charge,
            )
            self._running = asyncio.create_task(self.worker.run(), name="batch-worker")
        elif settings.worker:
            log.warning("batch.worker is set but the node has no model server: no worker")

    def _backend(self) -> str | None:
        """The catalog backend this node's model server is (first one naming the node)."""
        found = self._catalog()
        node = self._config.node.id
        return next((b.name for b in found.backends if b.node == node), None) if found else None

    async def _charge(self, job: JobRecord, prompt_tokens: int, completion_tokens: int) -> None:
        ledger = self._ledger
        if ledger is None:
            return
        usage = Usage(job.tenant, self._backend(), prompt_tokens, completion_tokens)
        # The ledger fsyncs its budget file: off the loop that answers ext_authz.
        await asyncio.to_thread(ledger.record, [usage])

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._running is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._running, timeout=self._settings.ack_wait_s)
            self._running = None
        self.worker = None
        for closing in (self.server, self._model, self._load):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await (
                        closing.stop() if isinstance(closing, BatchHttpServer) else closing.close()
                    )
        self.server = self._model = self._load = None
        if self._given_up is not None:
            await self._given_up.stop()
            self._given_up = None
        if self.queue is not None:
            await self.queue.close()
            self.queue = None
