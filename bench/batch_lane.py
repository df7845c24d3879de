"""The batch lane: jobs/s, and what a running batch does to interactive latency.

One real llama.cpp server (the tiny test GGUF, ``write_tiny_gguf``; one request at a
time, one thread) serves both an interactive client and a batch worker; one real
nats-server (JetStream, file store) holds the queue. The batch lane runs as an agent runs
it: :class:`BatchService` deciding every line with the shipped request policy on regorus
(decisions in memory), a :class:`BatchWorker` of the local tier calling the model server
directly and yielding to interactive requests (the server's ``/tiermesh/load``).

The interactive client is a closed loop in its own process (one request in flight, a
think time between requests, keep-alive), POSTing chat completions of ``max_tokens``
tokens to the model server. Each round measures, in this order:

1. **interactive alone**: ``--requests`` requests, no batch;
2. **interactive + batch**: a batch of ``--jobs`` lines (same size of answer) is submitted
   (lines accepted per second: decided and stored), then the same series runs while the
   batch runs; jobs/s over the batch from submission to its last result;
3. **batch alone**: another batch of ``--jobs`` lines, no interactive load (jobs/s).

A round's p99 change is (2) over (1); the headline is the median over ``--rounds``.
Bounded: every wait has a deadline. Writes ``bench/results/batch_lane.md``.

    .venv/bin/python bench/batch_lane.py [--rounds 3] [--requests 200] [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.integration.batch.support import real_decider  # noqa: E402

from tiermesh.agents.batch import (  # noqa: E402
    BatchService,
    BatchWorker,
    HttpModelClient,
    JobQueue,
    QueueSettings,
)
from tiermesh.agents.models import LlamaServer, write_tiny_gguf  # noqa: E402
from tiermesh.agents.runtime.batch import ModelServerLoad  # noqa: E402
from tiermesh.procs.nats import NatsServer  # noqa: E402

RESULT = ROOT / "bench" / "results" / "batch_lane.md"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _body(text: str, max_tokens: int) -> dict[str, object]:
    return {
        "model": "tiny",
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    }


class Interactive(threading.Thread):
    """``count`` requests one after another with ``think_s`` between; latencies in ms."""

    def __init__(self, port: int, count: int, think_s: float, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.think_s, self.max_tokens = port, count, think_s, max_tokens
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        deadline = time.monotonic() + 600
        for i in range(self.count):
            if time.monotonic() > deadline:
                break
            body = json.dumps(_body(f"interactive {i}", self.max_tokens)).encode()
            started = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
                )
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            if ok:
                self.latencies.append(elapsed)
            else:
                self.errors += 1
            time.sleep(self.think_s)
        conn.close()


def _jsonl(count: int, max_tokens: int, tag: str) -> bytes:
    lines = [
        {
            "custom_id": f"{tag}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": _body(f"batch {tag} {i}", max_tokens),
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def _submit(
    service: BatchService, count: int, max_tokens: int, tag: str
) -> tuple[str, float, float]:
    """Submit a batch: its id, when it was submitted and its lines accepted per second
    (each decided and stored by JetStream)."""
    file = await service.create_file("acme", _jsonl(count, max_tokens, tag), filename="b.jsonl")
    started = time.perf_counter()
    view = await service.create_batch(
        "acme", input_file_id=file.id, endpoint="/v1/chat/completions", declared="public"
    )
    return view.record.id, started, count / (time.perf_counter() - started)


async def _finish(service: BatchService, batch_id: str, started: float, count: int) -> float:
    """Wait for a batch; jobs/s from its submission to its last result."""
    view = await service.batch("acme", batch_id)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        view = await service.batch("acme", batch_id)
        if view.status == "completed":
            break
        await asyncio.sleep(0.05)
    if view.status != "completed" or view.counts.completed != count:
        raise SystemExit(f"batch {batch_id} did not complete: {view.to_json()}")
    return count / (time.perf_counter() - started)


async def _interactive(port: int, args: argparse.Namespace) -> Interactive:
    """A series from a client in its own process (as an app is): it does not share this
    process's interpreter lock with the batch lane."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        str(port),
        "--requests",
        str(args.requests),
        "--think-ms",
        str(args.think_ms),
        "--max-tokens",
        str(args.max_tokens),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 900)
    found = json.loads(out)
    client = Interactive(port, 0, 0, 0)
    client.latencies, client.errors = found["latencies"], found["errors"]
    return client


def _client_main(args: argparse.Namespace) -> None:
    client = Interactive(args.client, args.requests, args.think_ms / 1000, args.max_tokens)
    client.run()
    print(json.dumps({"latencies": client.latencies, "errors": client.errors}))


async def main(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tiermesh-bench-batch-"))
    model = LlamaServer(write_tiny_gguf(workdir / "tiny.gguf"), alias="tiny", workdir=workdir)
    await model.start()
    decider, _, engine = real_decider()
    rounds: list[dict[str, float]] = []
    try:
        with NatsServer() as nats_server:
            queue = await JobQueue.connect(QueueSettings(url=nats_server.url, ack_wait_s=30))
            service = BatchService(queue, decider)
            base = f"http://127.0.0.1:{model.port}"
            client, load = HttpModelClient(base), ModelServerLoad(base)
            worker = BatchWorker(queue, "local", client, load=load, fetch_timeout_s=0.2)
            running = asyncio.create_task(worker.run())
            try:
                warm = Interactive(model.port, 20, 0, args.max_tokens)
                warm.start()
                warm.join(60)
                for r in range(args.rounds):
                    alone = await _interactive(model.port, args)
                    mixed_id, mixed_at, accepted = await _submit(
                        service, args.jobs, args.max_tokens, f"r{r}a"
                    )
                    mixed = await _interactive(model.port, args)
                    mixed_jobs = await _finish(service, mixed_id, mixed_at, args.jobs)
                    solo_id, solo_at, _ = await _submit(
                        service, args.jobs, args.max_tokens, f"r{r}b"
                    )
                    solo_jobs = await _finish(service, solo_id, solo_at, args.jobs)
                    row = {
                        "accepted": accepted,
                        "alone_p50": _pct(alone.latencies, 0.5),
                        "alone_p99": _pct(alone.latencies, 0.99),
                        "mixed_p50": _pct(mixed.latencies, 0.5),
                        "mixed_p99": _pct(mixed.latencies, 0.99),
                        "mixed_jobs": mixed_jobs,
                        "solo_jobs": solo_jobs,
                        "errors": alone.errors + mixed.errors,
                        "paused_s": worker.paused_s,
                    }
                    row["p99_change"] = (row["mixed_p99"] / row["alone_p99"] - 1) * 100
                    rounds.append(row)
                    print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
            finally:
                worker.stop()
                await asyncio.wait_for(running, 30)
                await client.close()
                await load.close()
                await queue.close()
    finally:
        engine.close()
        await model.stop()
    _write(args, rounds)


def _write(args: argparse.Namespace, rounds: list[dict[str, float]]) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    lines = [
        "# Batch lane: jobs/s and interactive latency while a batch runs",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, nats-server 2.9 (JetStream, file store). Upstream: the "
        "tiny test GGUF on llama.cpp (`llama-cpp-python[server]`, one request at a time, one "
        "thread), called directly by both the interactive client and the batch worker. "
        f"Interactive: one client, closed loop, {args.requests} requests per series, "
        f"{args.think_ms} ms think time, max_tokens {args.max_tokens}. Batch: {args.jobs} "
        "lines of the same size per batch, each decided by the shipped request policy "
        "(regorus, decisions kept in memory), one local-tier worker that pulls a job only "
        "once the model server has been free of interactive requests for 0.5 s. The "
        "interactive series starts once the batch is accepted. Jobs/s run from submission to "
        "the batch's last result. Written by `bench/batch_lane.py`.",
        "",
        "| round | interactive p50 alone | p50 with batch | p99 alone | p99 with batch | "
        "p99 change | lines accepted/s | jobs/s with interactive | jobs/s batch alone |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r['alone_p50']:.1f} ms | {r['mixed_p50']:.1f} ms | "
            f"{r['alone_p99']:.1f} ms | {r['mixed_p99']:.1f} ms | {r['p99_change']:+.1f} % | "
            f"{r['accepted']:.0f} | {r['mixed_jobs']:.1f} | {r['solo_jobs']:.1f} |"
        )
    lines += [
        f"| **median** | {med('alone_p50'):.1f} ms | {med('mixed_p50'):.1f} ms | "
        f"{med('alone_p99'):.1f} ms | {med('mixed_p99'):.1f} ms | "
        f"**{med('p99_change'):+.1f} %** | {med('accepted'):.0f} | {med('mixed_jobs'):.1f} | "
        f"{med('solo_jobs'):.1f} |",
        "",
        "Each median is taken per column (the p99 change's median is over the rounds' own "
        "changes, not the change of the two medians).",
        f"Target: interactive p99 with a batch running within +10 % of p99 alone. Interactive "
        f"errors: {sum(int(r['errors']) for r in rounds)}.",
        "",
    ]
    RESULT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--think-ms", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--client", type=int, default=0, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.client:
        _client_main(parsed)
    else:
        asyncio.run(main(parsed))
