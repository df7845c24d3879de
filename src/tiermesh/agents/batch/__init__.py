"""The batch lane: the OpenAI Batch API shape on the edge, run from NATS JetStream.

- :class:`JobQueue` — the durable state on JetStream: the job stream (work queue, one
  durable consumer per job class), batch records, results (written once), files.
- :func:`parse_lines` / :class:`LineDecider` — a batch's lines, each decided like a
  request (:class:`AuthorizerDecider`: floor, request policy, decision log).
- :class:`BatchService` — create files and batches, show, cancel, serve result files.
- :class:`GivenUpJobs` — fails the line of a job delivered ``max_deliver`` times without
  an outcome, so its batch completes.
- :class:`BatchWorker` — a tier's worker: pulls only the job classes its tier may run,
  re-checks each job's tier (fail closed), yields to interactive load, writes each result
  once, acknowledges after.
- :func:`batch_app` / :class:`BatchHttpServer` — ``/v1/files`` and ``/v1/batches`` over
  HTTP on a Unix socket, behind the node's Envoy.

Every error derives from :class:`BatchError`.
"""

from __future__ import annotations

from tiermesh.agents.batch.errors import (
    BatchError,
    BatchNotFound,
    BatchStateConflict,
    FileNotFound,
    InvalidBatchInput,
    QueueUnavailable,
)
from tiermesh.agents.batch.given_up import MAX_DELIVERIES_ADVISORY, GivenUpJobs
from tiermesh.agents.batch.http import SOCKET_MODE, BatchHttpServer, batch_app
from tiermesh.agents.batch.lines import (
    MAX_LINES,
    AuthorizerDecider,
    BatchLine,
    LineDecider,
    LineDecision,
    parse_lines,
)
from tiermesh.agents.batch.queue import FileMeta, JobQueue, QueueSettings, consumer_name
from tiermesh.agents.batch.service import (
    CATALOG_DEFAULTS,
    LOCAL_ONLY,
    BatchService,
    BatchView,
    TenantTiers,
    error_file_id,
    output_file_id,
)
from tiermesh.agents.batch.worker import (
    BatchWorker,
    HttpModelClient,
    InteractiveLoad,
    LoadSample,
    ModelAnswer,
    ModelClient,
)

__all__ = [
    "CATALOG_DEFAULTS",
    "LOCAL_ONLY",
    "MAX_DELIVERIES_ADVISORY",
    "MAX_LINES",
    "SOCKET_MODE",
    "AuthorizerDecider",
    "BatchError",
    "BatchHttpServer",
    "BatchLine",
    "BatchNotFound",
    "BatchService",
    "BatchStateConflict",
    "BatchView",
    "BatchWorker",
    "FileMeta",
    "FileNotFound",
    "GivenUpJobs",
    "HttpModelClient",
    "InteractiveLoad",
    "InvalidBatchInput",
    "JobQueue",
    "LineDecider",
    "LineDecision",
    "LoadSample",
    "ModelAnswer",
    "ModelClient",
    "QueueSettings",
    "QueueUnavailable",
    "TenantTiers",
    "batch_app",
    "consumer_name",
    "error_file_id",
    "output_file_id",
    "parse_lines",
]
