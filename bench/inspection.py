"""Request inspection on the ext_authz server: what reading a request the way any upstream
could read it costs, per request, before the policy runs.

Times :func:`~tiermesh.agents.authz.inspect_body` (JSON parse with duplicate keys and
number literals, decoded forms, joins of split strings, Unicode forms, the detectors) and
:func:`~tiermesh.agents.authz.floor.inspect_request` (path, query, header values) on the
shapes of body a node sees: a small chat, a 1 KB chat with PII, a 64 KiB chat, 64 KiB of
plain text and a 64 KiB body of code-like text full of escape markers. Each case runs for
at most ``--count`` calls or ``--seconds``; reports p50 and p99 in microseconds. Writes
``bench/results/inspection.md``.

    .venv/bin/python bench/inspection.py [--count 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from tiermesh.agents.authz import inspect_body  # noqa: E402
from tiermesh.agents.authz.floor import inspect_request  # noqa: E402
from tiermesh.agents.authz.normalize import warm  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "inspection.md"
LIMIT = 64 * 1024
HEADERS = {
    "content-type": "application/json",
    "user-agent": "openai-python/1.99.0",
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "reasoning",
    "accept": "application/json",
    "x-stainless-lang": "python",
}


def chat(*texts: str) -> bytes:
    messages = [{"role": "user", "content": text} for text in texts]
    return json.dumps({"model": "local", "max_tokens": 64, "messages": messages}).encode()


def cases() -> dict[str, bytes]:
    prose = "The quarterly report covers revenue, churn and the roadmap for next year. "
    return {
        "chat, 120 B": chat("What is the capital of France?"),
        "chat with PII, 1 KB": chat(
            prose * 12,
            "Mail jane.doe@example.com, card 4111 1111 1111 1111, phone +44 20 7946 0958.",
        ),
        "chat, 64 KiB": chat(prose * 850)[:LIMIT],
        "plain text, 64 KiB": (prose * 900).encode()[:LIMIT],
        "code with escapes, 64 KiB": (
            'printf("%d\\n", x); s = "a\\u0041" & b; url = "/a?x=1&y=%20" ' * 1100
        ).encode()[:LIMIT],
    }


def timed(call: Callable[[], object], count: int, seconds: float) -> tuple[int, float, float]:
    for _ in range(20):
        call()
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while len(samples) < count and time.monotonic() < deadline:
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return len(samples), statistics.median(samples) * 1e6, p99 * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    warm()
    rows = []
    for name, body in cases().items():
        declared = len(body) if len(body) < LIMIT else None
        call = functools.partial(inspect_body, body, max_bytes=LIMIT, declared_length=declared)
        calls, p50, p99 = timed(call, args.count, args.seconds)
        rows.append(f"| body: {name} | {len(body)} | {calls} | {p50:.0f} | {p99:.0f} |")
    path = "/v1/chat/completions?stream=false&user=u-12345"
    calls, p50, p99 = timed(lambda: inspect_request(path, HEADERS), args.count, args.seconds)
    rows.append(f"| path, query and {len(HEADERS)} headers | - | {calls} | {p50:.0f} | {p99:.0f} |")
    text = "\n".join(
        [
            "# Request inspection",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.system()}. One thread; the "
            "detectors' Unicode table built before timing. Bodies inspected with the "
            f"default limit ({LIMIT} bytes); a content-length is declared where the body "
            "fits under it.",
            "",
            "| what | bytes | calls | p50 us | p99 us |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
