"""Edge node request path: what ext_authz and usage accounting add through a real Envoy.

Three Envoys with the same compiled plan in front of the same OpenAI-like backends
(``tests/integration/budgets/openai_backend.py``: a stream carries its usage chunk only
when the request asks with ``stream_options.include_usage``), set up as ``tiermesh up``
sets up an edge node:

1. **route**: the app listener only;
2. **authz**: + ext_authz (shipped request policy on regorus, durable decision log,
   budget read from the ledger's budget file), as in ``bench/ext_authz.py``;
3. **usage**: + usage accounting: the Lua filter (buffers ``/completions`` request bodies,
   asks streams for usage, scans answers for it, strips the added usage event) and the
   gRPC access log (default 200 ms flush) to a real usage server whose ledger rewrites
   the budget file (fsync + rename) per received batch.

Scenarios 2 and 3 each have their own agent (authz server, decision log, ledger, usage
server on one event loop, as the node agent runs them), so the usage server's work lands
on the loop whose checks it delays, not on scenario 2's. Each request is a chat completion
(the body of ``bench/ext_authz.py``), once plain JSON and once with ``"stream": true``
(an SSE answer of six events written one by one; the client does not ask for usage).

Every iteration sends both kinds through all three Envoys, one request at a time over
keep-alive connections, in an order that rotates per iteration, so all six series see the
same machine noise. *Added* latency is a percentile of a scenario minus the same
percentile of **route** for the same kind. This runs ``--rounds`` times; the headline is
the median over rounds of each added value. Afterwards the usage agent's ledger must hold
exactly the tokens of every request sent through scenario 3 (checked, bounded wait), and
stream answers must not contain the usage event in any scenario.

Bounded by ``--count`` iterations and ``--seconds`` per round. Writes
``bench/results/edge_path.md``.

    .venv/bin/python bench/edge_path.py [--count 2000] [--seconds 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.budgets import openai_backend  # noqa: E402
from tests.integration.budgets.backend import COMPLETION_TOKENS, PROMPT_TOKENS  # noqa: E402
from tests.integration.budgets.harness import BudgetThread  # noqa: E402
from tests.integration.budgets.openai_backend import OpenAIBackend  # noqa: E402
from tests.integration.compiler.conftest import small_catalog  # noqa: E402
from tests.support.xdsthread import XdsThread  # noqa: E402
from tests.unit.compiler.plans import evaluate_plan  # noqa: E402

from ext_authz import (  # noqa: E402
    BODY,
    exchange,
    fsync_probe,
    nodelay_backends,
    start_envoy,
    summary,
    warm_connection,
)
from tiermesh.agents.usage import Prices  # noqa: E402
from tiermesh.controlplane.model import AuthzSettings, UsageSettings  # noqa: E402
from tiermesh.procs.envoy import EnvoyProcess  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "edge_path.md"
TENANT = "acme"
SCENARIOS = ("route", "authz", "usage")
KINDS = ("json", "stream")
BODIES = {"json": BODY, "stream": json.dumps(json.loads(BODY) | {"stream": True}).encode()}
USAGE_EVENT = b'"choices": []'
"""What only the usage event of a stream carries (``openai_backend.stream_events``)."""
TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS


def fetch(connection: http.client.HTTPConnection, kind: str) -> float:
    """One request of ``kind``; checks the answer, returns its latency in seconds."""
    status, answer, latency = exchange(connection, BODIES[kind])
    if status != 200:
        raise RuntimeError(f"{kind}: HTTP {status}: {answer[:200]!r}")
    if kind == "stream" and (USAGE_EVENT in answer or not answer.endswith(b"[DONE]\n\n")):
        raise RuntimeError(f"stream answer has the usage event or no end: {answer[-300:]!r}")
    return latency


def asked_usage(backends: dict[str, OpenAIBackend], connection: Any) -> bool:
    """Whether a stream sent on ``connection`` reached a backend asking for usage."""
    for backend in backends.values():
        backend.received.clear()
    fetch(connection, "stream")
    (received,) = [r for b in backends.values() for r in b.received]
    options = json.loads(received.body).get("stream_options") or {}
    return options.get("include_usage") is True


def settled_tokens(agent: BudgetThread, expected: int | None = None, timeout_s: float = 10) -> int:
    """The ledger's token total for :data:`TENANT` once it equals ``expected`` (or, without
    one, stays the same over two access-log flush intervals)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        tokens = agent.totals(TENANT).tokens
        if tokens == expected or (expected is None and tokens == last):
            return tokens
        last = tokens
        time.sleep(0.4)
    raise RuntimeError(f"ledger at {agent.totals(TENANT).tokens} tokens, expected {expected}")


def one_round(
    connections: dict[str, http.client.HTTPConnection], count: int, seconds: float
) -> dict[str, dict[str, Any]]:
    samples: dict[tuple[str, str], list[float]] = {(s, k): [] for s in SCENARIOS for k in KINDS}
    order = [(s, k) for k in KINDS for s in SCENARIOS]
    deadline = time.perf_counter() + seconds
    for index in range(count):
        if time.perf_counter() > deadline:
            break
        shift = index % len(order)
        for scenario, kind in order[shift:] + order[:shift]:
            samples[scenario, kind].append(fetch(connections[scenario], kind))
    return {f"{s}/{k}": summary(values) for (s, k), values in samples.items()}


def added(result: dict[str, Any], scenario: str, kind: str, key: str) -> float:
    return float(result[f"{scenario}/{kind}"][key] - result[f"route/{kind}"][key])


def agent_state(workdir: Path, name: str, prices: Prices) -> BudgetThread:
    """An agent whose budget file already holds :data:`TENANT` (so both ext_authz
    scenarios read the same known budget, with or without a ledger write yet)."""
    state = workdir / name
    state.mkdir()
    budget = {TENANT: {"spent_usd": 0.0, "limit_usd": prices.budgets[TENANT]}}
    (state / "budget.json").write_text(json.dumps(budget), encoding="utf-8")
    return BudgetThread(state, prices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nodelay_backends(openai_backend._Server)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tiermesh-bench-edge-") as tmp:
        workdir = Path(tmp)
        backends = {name: OpenAIBackend(name) for name in ("edge", "gpu", "cloud")}
        catalog = small_catalog({n: b.port for n, b in backends.items()})
        prices = Prices.from_catalog(catalog)
        plan = evaluate_plan(catalog)
        agents: dict[str, BudgetThread] = {}
        started: list[tuple[XdsThread, EnvoyProcess]] = []
        connections: dict[str, http.client.HTTPConnection] = {}
        try:
            agents["authz"] = agent_state(workdir, "agent-authz", prices)
            agents["usage"] = agent_state(workdir, "agent-usage", prices)
            filters: dict[str, tuple[AuthzSettings | None, UsageSettings | None]] = {
                "route": (None, None),
                "authz": (AuthzSettings(port=agents["authz"].authz_port), None),
                "usage": (
                    AuthzSettings(port=agents["usage"].authz_port),
                    UsageSettings(port=agents["usage"].usage_port),
                ),
            }
            listeners = {}
            for scenario, (authz, usage) in filters.items():
                xds, envoy, listeners[scenario] = start_envoy(
                    workdir, f"envoy-{scenario}", plan, authz, usage
                )
                started.append((xds, envoy))
            for scenario, port in listeners.items():
                connections[scenario] = warm_connection(port, BODIES["json"])
                for _ in range(50):
                    fetch(connections[scenario], "stream")
            asked = {s: asked_usage(backends, c) for s, c in connections.items()}
            if asked != {"route": False, "authz": False, "usage": True}:
                raise RuntimeError(f"include_usage added where it should not be: {asked}")
            disk = [fsync_probe(workdir)]
            rounds = []
            accounted = 0
            for _ in range(args.rounds):
                before = settled_tokens(agents["usage"])
                result = one_round(connections, args.count, args.seconds)
                sent = sum(result[f"usage/{k}"]["requests"] for k in KINDS)
                settled_tokens(agents["usage"], before + sent * TOKENS)
                accounted += sent * TOKENS
                rounds.append(result)
                for backend in backends.values():
                    backend.received.clear()
            disk.append(fsync_probe(workdir))
            records = {name: agent.log.next_seq for name, agent in agents.items()}
        finally:
            for connection in connections.values():
                connection.close()
            for xds, envoy in started:
                envoy.stop()
                xds.close()
            for agent in agents.values():
                agent.close()
            for backend in backends.values():
                backend.stop()
    report(rounds, disk, records, (load_before, os.getloadavg()), accounted)


def report(
    rounds: list[dict[str, Any]],
    disk: list[dict[str, float]],
    records: dict[str, int],
    loads: tuple[tuple[float, ...], tuple[float, ...]],
    accounted: int,
) -> None:
    def median_added(scenario: str, kind: str, key: str) -> float:
        return statistics.median(added(r, scenario, kind, key) for r in rounds)

    def load(values: tuple[float, ...]) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    per_round = [
        f"| {index} | {kind} | {result[f'route/{kind}']['requests']} | "
        + " | ".join(
            f"{result[f'{s}/{kind}']['p50_ms']:.2f} / {result[f'{s}/{kind}']['p99_ms']:.2f}"
            for s in SCENARIOS
        )
        + " |"
        for index, result in enumerate(rounds, 1)
        for kind in KINDS
    ]

    def spread(scenario: str, kind: str) -> str:
        return " / ".join(f"{added(r, scenario, kind, 'p99_ms'):+.2f}" for r in rounds)

    def usage_alone(kind: str, key: str) -> float:
        return statistics.median(
            added(r, "usage", kind, key) - added(r, "authz", kind, key) for r in rounds
        )

    def usage_spread(kind: str) -> str:
        return " / ".join(
            f"{added(r, 'usage', kind, 'p99_ms') - added(r, 'authz', kind, 'p99_ms'):+.2f}"
            for r in rounds
        )

    headline = [
        f"| {kind} | {scenario} | {median_added(scenario, kind, 'p50_ms'):+.2f} "
        f"| {median_added(scenario, kind, 'p99_ms'):+.2f} | {spread(scenario, kind)} |"
        for kind in KINDS
        for scenario in SCENARIOS[1:]
    ]
    usage_only = [
        f"| {kind} | {usage_alone(kind, 'p50_ms'):+.2f} | {usage_alone(kind, 'p99_ms'):+.2f} "
        f"| {usage_spread(kind)} |"
        for kind in KINDS
    ]
    lines = [
        "# Edge node request path: route, + ext_authz, + usage accounting",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.system()}; load average (1/5/15 min) "
        f"before {load(loads[0])}, after {load(loads[1])}. Body {len(BODIES['json'])} bytes "
        f'(chat with one email), {len(BODIES["stream"])} with `"stream": true`; the stream '
        "answer is six SSE events in separate writes. Three Envoys (1 worker each), same plan "
        "and backends; the client, both agents (authz server, decision log, usage server and "
        "ledger on one event loop each) and the backends share one Python process (the GIL). "
        f"Decision records written: {records['authz']} (authz agent), {records['usage']} "
        f"(usage agent). Usage ledger: {accounted} tokens accounted in the rounds, exactly "
        f"{TOKENS} per request sent through the usage Envoy. Method: `bench/edge_path.py` "
        "docstring.",
        "",
        "## Added latency vs route only (median over rounds)",
        "",
        "| request | scenario | added p50 ms | added p99 ms | rounds' added p99 ms |",
        "|---|---|---:|---:|---|",
        *headline,
        "",
        "Usage accounting alone: per round, usage minus authz; median over rounds.",
        "",
        "| request | added p50 ms | added p99 ms | rounds' added p99 ms |",
        "|---|---:|---:|---|",
        *usage_only,
        "",
        "## Per round, p50 / p99 ms",
        "",
        "| round | request | requests each | route | + authz | + authz + usage |",
        "|---:|---|---:|---:|---:|---:|",
        *per_round,
        "",
        "Disk, bare write + fdatasync of a 1.5 KB line in the agents' directory: "
        + "; ".join(
            f"{when} p50 {d['p50_ms']:.2f} ms / p99 {d['p99_ms']:.2f} ms"
            for when, d in zip(("before", "after"), disk, strict=True)
        )
        + ".",
        "",
        "What usage accounting puts on the request path: the Lua filter buffers the request",
        'body of every `/completions` POST (up to 64 KiB) and scans it for `"stream": true`;',
        "for a stream it rewrites the body (Envoy then resets `content-length`), and on the",
        "answer it scans every chunk for `usage` and holds incomplete SSE events until their",
        "end. The access log is off the path: Envoy sends entries after the answer, batched",
        "every 200 ms, and the usage server's ledger write (JSON, fsync, rename of the budget",
        "file) runs on the agent's event loop, where it can delay a concurrent ext_authz check",
        "by one fsync; ext_authz then re-reads the changed budget file on its next check.",
        "",
    ]
    text = "\n".join(lines)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
