"""A batch worker as its own process, for tests that kill one: ``python -m
tests.integration.batch.worker_main NATS_URL TIER UPSTREAM ACK_WAIT_S``."""

from __future__ import annotations

import asyncio
import sys

from tiermesh.agents.batch import BatchWorker, HttpModelClient, JobQueue, QueueSettings


async def main(url: str, tier: str, upstream: str, ack_wait_s: float) -> None:
    queue = await JobQueue.connect(QueueSettings(url=url, ack_wait_s=ack_wait_s))
    model = HttpModelClient(upstream)
    assert tier in ("local", "private", "cloud")
    worker = BatchWorker(queue, tier, model)  # type: ignore[arg-type]
    try:
        await worker.run()
    finally:
        await model.close()
        await queue.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
