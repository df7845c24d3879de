"""What the batch lane's integration tests share: a model stand-in on a thread, the real
request policy as the line decider, a worker in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tiermesh.agents.authz import Authorizer, MemorySink, StaticBudgetSource, load_request_policy
from tiermesh.agents.batch import LOCAL_ONLY, AuthorizerDecider, TenantTiers
from tiermesh.procs.ports import LOOPBACK
from tiermesh.rego import RegorusEngine

ROOT = Path(__file__).resolve().parents[3]
POLICY_DIR = ROOT / "policies" / "request"


class ModelStandin:
    """An OpenAI-shaped chat endpoint on a loopback thread. Counts requests per
    ``custom`` marker (the first user message), answers after ``delay_s`` (per marker
    through ``delays``), and reports its requests in flight at ``/tiermesh/load``."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.headers: list[dict[str, str]] = []
        self.delays: dict[str, float] = {}
        self.delay_s = 0.0
        self.in_flight = 0
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                report = {
                    "in_flight": standin.in_flight,
                    "queue_depth": 0,
                    "tokens_per_s": 0.0,
                    "completion_tokens_total": sum(standin.seen.values()),
                }
                body = json.dumps(report).encode()
                self._send(200, body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = json.loads(raw)
                marker = str(request["messages"][-1]["content"])
                with standin.lock:
                    standin.seen[marker] += 1
                    standin.headers.append({k.lower(): v for k, v in self.headers.items()})
                    standin.in_flight += 1
                try:
                    time.sleep(standin.delays.get(marker, standin.delay_s))
                    answer = {
                        "object": "chat.completion",
                        "choices": [{"message": {"role": "assistant", "content": f"re {marker}"}}],
                        "usage": {"completion_tokens": 1},
                    }
                    self._send(200, json.dumps(answer).encode())
                finally:
                    with standin.lock:
                        standin.in_flight -= 1

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def real_decider() -> tuple[AuthorizerDecider, MemorySink, RegorusEngine]:
    """The shipped request policy on regorus deciding lines; decisions kept in memory."""
    engine = RegorusEngine()
    load_request_policy(engine, POLICY_DIR, {"request_config": {"max_request_tokens": 10_000}})
    sink = MemorySink()
    authorizer = Authorizer(engine, sink, StaticBudgetSource({}))
    return AuthorizerDecider(authorizer), sink, engine


ACME_TIERS = TenantTiers(allowed=("local", "private", "cloud"), restricted=("local", "private"))
"""acme's tiers in the shipped catalog: restricted data may use the on-prem GPU."""


def acme_tiers(tenant: str) -> TenantTiers:
    """The shipped catalog's acme; any other tenant the local tier only."""
    return ACME_TIERS if tenant == "acme" else LOCAL_ONLY


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def chat_line(custom_id: str, text: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": [{"role": "user", "content": text}]},
    }


def start_worker_process(
    nats_url: str, tier: str, upstream: str, ack_wait_s: float
) -> subprocess.Popen[bytes]:
    """A worker in a child process (``tests.integration.batch.worker_main``)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.batch.worker_main",
            nats_url,
            tier,
            upstream,
            str(ack_wait_s),
        ],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
