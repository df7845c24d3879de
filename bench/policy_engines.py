"""Evaluations per second of each policy engine on a routing-like decision.

Every engine loads the contract suite's routing fixture
(tests/integration/policy/rego) and evaluates ``data.tiermesh.fixture.routing.plan``
for a rotating set of inputs, single-threaded, until ``--max-evals`` evaluations
or ``--max-seconds`` have passed, whichever comes first. Results go to
bench/results/policy_engines.md as a markdown table.

The ``opa-rest`` row is the REST client against the test-only OPA stand-in
server of tests/ (real OPA Go evaluation, stdlib HTTP server on loopback): it
measures the client and HTTP path, not a production OPA server.

Run from the repository root: ``.venv/bin/python bench/policy_engines.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tiermesh.rego import (  # noqa: E402
    EngineUnavailable,
    JSONValue,
    OpaLibraryEngine,
    OpaRestEngine,
    PolicyEngine,
    RegorusEngine,
)

REGO_DIR = ROOT / "tests" / "integration" / "policy" / "rego"
RESULTS = ROOT / "bench" / "results" / "policy_engines.md"
PATH = "data.tiermesh.fixture.routing.plan"
INPUTS: list[JSONValue] = [
    {"tenant": "acme", "sensitivity": "public", "model": "chat-small"},
    {"tenant": "acme", "sensitivity": "restricted", "model": "chat-small"},
    {"tenant": "globex", "sensitivity": "internal", "model": "chat-large"},
    {"tenant": "nobody", "sensitivity": "public", "model": "chat-large"},
]


@dataclass(frozen=True)
class Row:
    engine: str
    evals: int
    seconds: float
    load_ms: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.evals / self.seconds if self.seconds else 0.0


@contextmanager
def _regorus() -> Iterator[PolicyEngine]:
    engine = RegorusEngine()
    yield engine
    engine.close()


@contextmanager
def _opa() -> Iterator[PolicyEngine]:
    engine = OpaLibraryEngine()
    yield engine
    engine.close()


@contextmanager
def _opa_rest() -> Iterator[PolicyEngine]:
    OpaLibraryEngine().close()  # the stand-in server needs the OPA library
    from tests.integration.policy.opa_test_server import OpaTestServer  # noqa: PLC0415

    with OpaTestServer() as server:
        engine = OpaRestEngine(server.url)
        yield engine
        engine.close()


ENGINES: dict[str, Callable[[], AbstractContextManager[PolicyEngine]]] = {
    "regorus": _regorus,
    "opa": _opa,
    "opa-rest": _opa_rest,
}


def measure(
    name: str,
    open_engine: Callable[[], AbstractContextManager[PolicyEngine]],
    modules: dict[str, str],
    data: dict[str, JSONValue],
    max_evals: int,
    max_seconds: float,
) -> Row:
    with open_engine() as engine:
        started = time.perf_counter()
        engine.load(modules, data)
        load_ms = (time.perf_counter() - started) * 1000
        for doc in INPUTS:  # warm up: first-use compilation, per-thread engines
            engine.evaluate(PATH, doc)
        evals = 0
        started = time.perf_counter()
        deadline = started + max_seconds
        while evals < max_evals:
            for doc in INPUTS:
                engine.evaluate(PATH, doc)
            evals += len(INPUTS)
            if time.perf_counter() >= deadline:
                break
        return Row(name, evals, time.perf_counter() - started, load_ms)


def render(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "# Policy engines: evaluations per second",
        "",
        "Decision: `data.tiermesh.fixture.routing.plan` (routing fixture of the contract",
        "suite: partial sets, comprehensions, a default rule, catalog lookups), four",
        "rotating inputs, one thread, results as whole JSON objects.",
        f"Bounds: at most {args.max_evals} evaluations or {args.max_seconds:g} s per engine.",
        "",
        "| engine | evals | seconds | evals/s | µs/eval | load (ms) | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.evals:
            lines.append(
                f"| {row.engine} | {row.evals} | {row.seconds:.2f} | {row.per_second:,.0f} | "
                f"{1e6 / row.per_second:.1f} | {row.load_ms:.1f} | {row.note} |"
            )
        else:
            lines.append(f"| {row.engine} | - | - | - | - | - | {row.note} |")
    lines += [
        "",
        "`opa-rest` is opa-python-client over HTTP/1.1 keep-alive to the test-only stand-in",
        "server in tests/ (stdlib http.server + the OPA Go engine), not a production OPA",
        "server: it bounds the client and HTTP overhead.",
        "",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. Command: `.venv/bin/python bench/policy_engines.py"
        f" --max-evals {args.max_evals} --max-seconds {args.max_seconds:g}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-evals", type=int, default=200_000)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    modules = {
        f"policies/fixture/{p.name}": p.read_text("utf-8") for p in sorted(REGO_DIR.glob("*.rego"))
    }
    data: dict[str, JSONValue] = json.loads((REGO_DIR / "catalog.json").read_text("utf-8"))
    rows: list[Row] = []
    for name, open_engine in ENGINES.items():
        try:
            row = measure(name, open_engine, modules, data, args.max_evals, args.max_seconds)
        except EngineUnavailable as exc:
            row = Row(name, 0, 0.0, 0.0, note=f"skipped: {exc}")
        print(f"{row.engine:10} {row.per_second:12,.0f} evals/s  {row.note}")
        rows.append(row)
    args.output.write_text(render(rows, args), encoding="utf-8")
    print(f"wrote {args.output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
