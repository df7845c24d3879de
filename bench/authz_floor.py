"""The floor under a decision point: what Envoy's external authorization call costs when
the authz server does nothing (a server in native code and one in Python), and what a
decision point inside Envoy costs when it reads the whole body and decides nothing.

Issue 16 asks the edge path as shipped (ext_authz with PII inspection, request-time
Rego, a durable signed record) for 0.7x a plain Envoy's throughput on this 2-core
machine. Before any decision is made, the check itself costs something: Envoy buffers
the body, calls the server over gRPC (HTTP/2) and waits; the server parses the request
and answers. This benchmark measures that floor, side by side in one run:

- **plain**: a minimal static Envoy (one listener, router, one cluster: the nginx
  upstream), as in ``bench/route_cpu.py`` and ``bench/gateway_overhead.py``;
- **ext_authz, C++ allow-all**: the same Envoy plus the ext_authz filter configured as
  tiermesh compiles it (gRPC v3, raw body up to 64 KiB, route re-matched after the
  check, fail closed with 503) to ``bench/native/authz_noop.cc``, which answers OK
  without reading the request (gRPC's C++ library, callback API);
- **ext_authz, Python allow-all**: the same Envoy config to ``bench/authz_cpu.py``'s
  grpc.aio server that answers OK without deciding or recording (the Python stack the
  shipped authz server runs on);
- **lua**: the plain Envoy plus one Lua filter (built into Envoy) before the router:
  ``handle:body()`` holds the request until its whole body has arrived, ``getBytes``
  copies every byte into Lua, and the request goes on unchanged. No server, no call:
  the cost of an in-Envoy decision point that inspects the body, in Envoy's scripting;
- **module**: the same with an Envoy dynamic module instead, ``bench/native/
  read_body_filter.c`` (a C shared library built by ``bench/_native.py``, loaded into
  the worker, ABI v0.2.0 as Envoy 1.40.0 expects): it holds the headers while the body
  arrives, asks Envoy to buffer it, reads every byte of it (a byte sum), lets it through.
  The cost of native code in Envoy's worker reading the body.

Before measuring, one request goes through each filter row: it must be a 2xx from nginx,
and the filter must have logged the full size of that request's body (and, for the
module, Envoy must not have warned of an ABI mismatch), or the run stops. ``--configs``
picks rows (plain first).

The request body is a 74-byte chat-completions JSON by default (:data:`BODY`).
``--body-bytes N`` sends instead a valid chat-completions JSON of exactly N bytes whose one
user message is padded with plain ASCII words (no digits), to measure what each byte of a
real, KB-sized prompt costs: shipped to the server in the check over gRPC, or copied and
read in Lua or C. N is capped at ext_authz's ``max_request_bytes`` (64 KiB as configured
here and as tiermesh ships it by default), above which the check would carry a truncated
body. Every use of the body (wrk, the paced client, the filters' logged size, the report)
takes the chosen one; ``--out`` picks the results file.

Latency at a fixed rate well below capacity first (``--rate`` on one keep-alive
connection, open loop, ``bench/_gw_load.py``'s paced client; real-time priority when run
as root), then closed-loop load with wrk (``--connections``, one thread) on each Envoy in
turn, both rotated per round; CPU per request is the Envoy process's plus the authz server's (user +
system from ``/proc``), over the requests wrk completed. Every answer must be a 2xx from
nginx (wrk's error count, reported). Nothing here decides anything: these are
measuring sticks, and the numbers say how much of a plain Envoy's throughput is left for
a decision once the call (or the in-Envoy hook and the body read) is paid for.

    .venv/bin/python bench/authz_floor.py [--rounds 5] [--seconds 3] [--connections 16]
        [--rate 500] [--paced-seconds 4] [--configs plain,cpp,cpp-headers,python,lua,module]
        [--body-bytes N] [--out bench/results/authz_floor.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _gw_cpu import cpu_seconds, spent  # noqa: E402
from _gw_envoy import plain_bootstrap  # noqa: E402
from _gw_load import PacedResult, WrkResult, run_paced, run_wrk, wrk_version  # noqa: E402
from _gw_mesh import envoy_version  # noqa: E402
from _gw_upstream import Upstream, nginx_version  # noqa: E402
from _native import build, build_module, stop  # noqa: E402
from authz_cpu import serve_noop  # noqa: E402
from tiermesh.procs.envoy import EnvoyProcess  # noqa: E402
from tiermesh.procs.ports import free_port  # noqa: E402

RESULTS = BENCH / "results" / "authz_floor.md"
BODY = '{"model":"frontier-mini","messages":[{"role":"user","content":"Say ok."}]}'
"""The default request body (74 bytes)."""
MAX_REQUEST_BYTES = 65536
"""ext_authz's ``with_request_body.max_request_bytes`` here: the most body the check packs
(a longer body would go to the server truncated), so the most ``--body-bytes`` allows."""
PAD_TEXT = (
    "please summarise the following notes about the quarterly planning meeting and list "
    "the open questions the team still has about the rollout of the new gateway along "
    "with any risks that were raised during the discussion"
)
"""Plain ASCII words (no digits, nothing that looks like personal data) to pad a prompt."""
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
DYNAMIC_MODULE = (
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
)
MODULE = "read_body_filter"
"""``bench/native/read_body_filter.c``, loaded as ``lib<MODULE>.so``."""
LUA_READ_BODY = """
local logged = false
function envoy_on_request(handle)
  local body = handle:body()
  local n = 0
  if body ~= nil then
    n = body:length()
    if n > 0 then
      body:getBytes(0, n)
    end
  end
  if not logged then
    logged = true
    handle:logWarn("read_body lua: first request body " .. n .. " bytes")
  end
end
"""
"""The Lua row's filter: buffer the whole request body (``handle:body()`` holds the request
until it has all arrived), copy every byte of it into Lua (``getBytes``), decide nothing.
The first body's size is logged once (warning level), so the run can check it was read."""
CONFIGS = ("plain", "cpp", "cpp-headers", "python", "lua", "module")


def padded_body(size: int) -> str:
    """A chat-completions JSON of exactly ``size`` bytes: :data:`BODY`'s shape with its one
    user message padded with :data:`PAD_TEXT`, repeated (ASCII, nothing to escape)."""
    prefix = '{"model":"frontier-mini","messages":[{"role":"user","content":"'
    suffix = '"}]}'
    room = size - len(prefix) - len(suffix)
    if room < 0:
        raise ValueError(f"a chat-completions body needs at least {len(prefix + suffix)} bytes")
    text = "Say ok. " + PAD_TEXT
    content = (text + (" " + PAD_TEXT) * (room // len(PAD_TEXT) + 1))[:room].rstrip()
    content += "." * (room - len(content))  # a word cut before a space: end on dots
    body = prefix + content + suffix
    assert len(body.encode()) == size
    return body


# ------------------------------------------------------------------ configs and processes


def authz_bootstrap(
    port: int, admin_port: int, upstream_port: int, authz_port: int, *, body: bool = True
) -> Any:
    """:func:`plain_bootstrap` plus ext_authz (as tiermesh compiles it) to ``authz_port``;
    without ``body``, the check carries the headers only (not what tiermesh ships)."""
    config: dict[str, Any] = {
        "@type": EXT_AUTHZ,
        "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "1s"},
        "transport_api_version": "V3",
        "clear_route_cache": True,
        "failure_mode_allow": False,
        "status_on_error": {"code": 503},
    }
    if body:
        config["with_request_body"] = {
            "max_request_bytes": MAX_REQUEST_BYTES,
            "allow_partial_message": True,
            "pack_as_bytes": True,
        }
    authz = {"name": "envoy.filters.http.ext_authz", "typed_config": config}
    bootstrap = filter_bootstrap(port, admin_port, upstream_port, authz)
    address = {"socket_address": {"address": "127.0.0.1", "port_value": authz_port}}
    bootstrap["static_resources"]["clusters"].append(
        {
            "name": "authz",
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                HTTP_OPTIONS: {
                    "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": "authz",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
            },
        }
    )
    return bootstrap


def filter_bootstrap(
    port: int, admin_port: int, upstream_port: int, http_filter: dict[str, Any]
) -> Any:
    """:func:`plain_bootstrap` with ``http_filter`` first in the chain, before the router."""
    bootstrap = plain_bootstrap(port, admin_port, upstream_port)
    listener = bootstrap["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"].insert(0, http_filter)
    return bootstrap


def lua_filter() -> dict[str, Any]:
    """The Lua filter (built into Envoy) running :data:`LUA_READ_BODY`."""
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": LUA_READ_BODY}},
    }


def module_filter() -> dict[str, Any]:
    """The dynamic-module filter loading :data:`MODULE` by name (Envoy looks for
    ``lib<name>.so`` under ``ENVOY_DYNAMIC_MODULES_SEARCH_PATH``, set before it starts)."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": DYNAMIC_MODULE,
            "dynamic_module_config": {"name": MODULE},
            "filter_name": "read_body",
        },
    }


def check_filter_ran(envoy: EnvoyProcess, port: int, marker: str, body: str) -> None:
    """Send one request through ``envoy`` and fail loudly unless nginx answered 2xx and the
    filter logged ``marker`` with the request body's full size: proof that it ran and read
    the body before anything is measured."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(
            "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        upstream = response.getheader("x-bench-upstream")
    finally:
        connection.close()
    if not 200 <= response.status < 300 or upstream is None:
        raise SystemExit(
            f"{envoy.name}: check request answered {response.status} (upstream header "
            f"{upstream!r}), not a 2xx from nginx; log:\n{envoy.log_tail()}"
        )
    expected = f"{marker}: first request body {len(body.encode())} bytes"
    deadline = time.monotonic() + 15  # Envoy flushes its log file every 10 s
    while expected not in envoy.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{envoy.name}: the filter did not log {expected!r}: it did not run or did "
                f"not read the body; log:\n{envoy.log_tail()}"
            )
        time.sleep(0.05)
    # Lines logged before the marker are in the file by now.
    if "ABI version" in envoy.log_path.read_text(errors="replace"):
        # At warning level Envoy logs the module's ABI version only when it differs.
        raise SystemExit(f"{envoy.name}: module ABI mismatch; log:\n{envoy.log_tail()}")


@contextlib.contextmanager
def server(command: list[str]) -> Iterator[tuple[int, int]]:
    """Run an allow-all server that prints its port (alone or after a word) and serves
    until its standard input ends; yields (pid, port). Killed if it has not gone within
    10 s of that."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.split() or not line.split()[-1].isdigit():
            raise RuntimeError(f"{command[0]} did not start: {line!r}")
        yield process.pid, int(line.split()[-1])
    finally:
        stop(process)


@dataclass
class Target:
    name: str
    what: str
    port: int
    envoy_pid: int
    server_pid: int | None
    runs: list[tuple[WrkResult, float, float]] = field(default_factory=list)
    """(wrk, Envoy CPU s, server CPU s) per round."""
    paced: list[PacedResult] = field(default_factory=list)
    """One fixed-rate run per round."""

    def envoy_us(self) -> list[float]:
        """Envoy's CPU µs per completed request, per round."""
        return [e * 1e6 / max(1, r.requests) for r, e, _ in self.runs]

    def server_us(self) -> list[float]:
        """The authz server's CPU µs per completed request, per round (0 without one)."""
        return [s * 1e6 / max(1, r.requests) for r, _, s in self.runs]


def measure(targets: list[Target], args: argparse.Namespace, body: str) -> None:
    def once(target: Target, seconds: float) -> tuple[WrkResult, float, float]:
        pids = [target.envoy_pid, *([target.server_pid] if target.server_pid else [])]
        before = cpu_seconds(pids)
        result = run_wrk(
            f"http://127.0.0.1:{target.port}/v1/chat/completions",
            connections=args.connections,
            seconds=seconds,
            body=body,
            headers={"content-type": "application/json"},
        )
        used = spent(before, cpu_seconds(pids))
        return result, used[target.envoy_pid], used.get(target.server_pid or 0, 0.0)

    for target in targets:
        once(target, 1.0)
    for number in range(args.rounds):
        order = [targets[(number + i) % len(targets)] for i in range(len(targets))]
        for target in order:
            paced = run_paced(
                target.port,
                rate=args.rate,
                seconds=args.paced_seconds,
                count=int(args.rate * args.paced_seconds),
                body=body,
                headers={"content-type": "application/json"},
                realtime=os.geteuid() == 0,
            )
            target.paced.append(paced)
            print(
                f"  paced {number + 1}/{args.rounds} {target.name:<12} p50 "
                f"{paced.p50_us / 1000:.3f} ms  p99 {paced.p99_us / 1000:.3f} ms  "
                f"errors {paced.errors}",
                flush=True,
            )
    for number in range(args.rounds):
        order = [targets[(number + i) % len(targets)] for i in range(len(targets))]
        for target in order:
            run = once(target, args.seconds)
            target.runs.append(run)
            result, envoy, served = run
            per = 1e6 / max(1, result.requests)
            print(
                f"  round {number + 1}/{args.rounds} {target.name:<8} {result.rps:8.0f} req/s  "
                f"Envoy {envoy * per:6.1f} µs  server {served * per:6.1f} µs  "
                f"errors {result.errors}",
                flush=True,
            )


# ------------------------------------------------------------------ report


def _med(values: list[float]) -> float:
    return float(statistics.median(values))


def report(targets: list[Target], args: argparse.Namespace, load: str, body: str) -> str:
    plain = targets[0]
    size = len(body.encode())
    lines = [
        "# The floor under a decision point: ext_authz to a server that does nothing, and "
        f"in-Envoy filters that read the body ({size:,} B request body)",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/authz_floor.py` "
        f"({args.rounds} rounds x {args.seconds:g} s per Envoy, wrk -t1 -c{args.connections}, "
        "closed loop, Envoys in a rotated order each round). Method: the script's docstring.",
        "",
        "| config | what | req/s, median (min-max) | x plain req/s (per round) "
        "| Envoy CPU µs/req | server CPU µs/req | total CPU µs/req | x plain CPU | p50 ms "
        "| errors |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        rps = [r.rps for r, _, _ in target.runs]
        ratios = [a[0].rps / b[0].rps for a, b in zip(target.runs, plain.runs, strict=True)]
        envoy, served = target.envoy_us(), target.server_us()
        total = [a + b for a, b in zip(envoy, served, strict=True)]
        cpu_ratio = [a / b for a, b in zip(total, plain.envoy_us(), strict=True)]
        lines.append(
            f"| `{target.name}` | {target.what} | {_med(rps):,.0f} ({min(rps):,.0f}-"
            f"{max(rps):,.0f}) | {_med(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {_med(envoy):.1f} | {_med(served):.1f} | {_med(total):.1f} "
            f"| {_med(cpu_ratio):.2f} | {_med([r.p50_us for r, _, _ in target.runs]) / 1000:.3f} "
            f"| {sum(r.errors for r, _, _ in target.runs)} |"
        )
    lines += [
        "",
        f"At a fixed rate well below capacity ({args.rate:g} req/s on one keep-alive connection, "
        f"{args.paced_seconds:g} s per round, open loop from the scheduled send time; the client "
        f"{'at real-time priority' if os.geteuid() == 0 else 'at normal priority'}): latency, "
        "and what each config adds over plain in the same round (median over rounds):",
        "",
        "| config | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        added50 = [
            (a.p50_us - b.p50_us) / 1000 for a, b in zip(target.paced, plain.paced, strict=True)
        ]
        added99 = [
            (a.p99_us - b.p99_us) / 1000 for a, b in zip(target.paced, plain.paced, strict=True)
        ]
        lines.append(
            f"| `{target.name}` | {_med([p.p50_us for p in target.paced]) / 1000:.3f} "
            f"| {_med([p.p99_us for p in target.paced]) / 1000:.3f} "
            f"| {_med(added50):+.3f} | {_med(added99):+.3f} "
            f"| {sum(p.errors for p in target.paced)} |"
        )
    plain_envoy = _med(plain.envoy_us())
    lines += ["", "Envoy's own CPU per request caps its one worker's throughput whatever the"]
    lines += ["server costs (1 s / Envoy CPU per request, as a share of plain's cap):", ""]
    for target in targets[1:]:
        envoy_us = _med(target.envoy_us())
        where = (
            "with a free server and a free second core"
            if target.server_pid
            else "(the filter runs on that worker: nothing else to add)"
        )
        lines.append(
            f"- `{target.name}`: Envoy {envoy_us:.1f} µs against plain's {plain_envoy:.1f} µs: "
            f"at most {plain_envoy / envoy_us:.2f}x plain req/s {where}."
        )
    lines += [
        "",
        "Issue 16's target for the whole edge path is >= 0.7x plain req/s, so at most",
        "~1.43x plain's CPU per request in all on a CPU-bound machine (1/0.7).",
        "",
        "## Setup",
        "",
        f"- Envoy {envoy_version()}, `--concurrency 1`; upstream nginx {nginx_version()}; "
        f"load {wrk_version()}.",
        f"- Request: `POST /v1/chat/completions`, {size:,} B JSON body ("
        + (
            "the default: one short user message"
            if body == BODY
            else f"`--body-bytes {size}`: one user message padded with plain ASCII words"
        )
        + ").",
        f"- Machine: {os.cpu_count()} CPUs, shared; load average (1/5/15 min) at start and "
        f"end: {load}.",
    ]
    return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--serve-python"]:
        serve_noop()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=500.0, help="fixed-rate phase, req/s")
    parser.add_argument("--paced-seconds", type=float, default=4.0)
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help=f"results file, replaced (default: {RESULTS})"
    )
    parser.add_argument(
        "--body-bytes",
        type=int,
        default=None,
        help="request body size: a chat-completions JSON padded to exactly this many bytes, "
        f"at most {MAX_REQUEST_BYTES} (ext_authz's max_request_bytes) (default: the fixed "
        f"{len(BODY.encode())}-byte body)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated rows to measure, plain first (default: all: {','.join(CONFIGS)})",
    )
    args = parser.parse_args(argv)
    if min(args.rounds, args.connections) < 1 or min(args.seconds, args.rate) <= 0:
        parser.error("--rounds, --seconds, --connections and --rate must be positive")
    if args.body_bytes is None:
        body = BODY
    elif args.body_bytes > MAX_REQUEST_BYTES:
        parser.error(
            f"--body-bytes {args.body_bytes}: above ext_authz's max_request_bytes "
            f"({MAX_REQUEST_BYTES}) as configured here, the check would carry a truncated body"
        )
    else:
        try:
            body = padded_body(args.body_bytes)
        except ValueError as error:
            parser.error(f"--body-bytes {args.body_bytes}: {error}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs or configs[0] != "plain" or len(set(configs)) != len(configs):
        parser.error(
            f"--configs: distinct names from {', '.join(CONFIGS)}, plain first "
            f"(unknown: {', '.join(unknown) or 'none'})"
        )
    start_load = load_average()
    native = build("authz_noop") if {"cpp", "cpp-headers"} & set(configs) else None
    if "module" in configs:
        os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(build_module(MODULE).parent)
    workdir = Path(tempfile.mkdtemp(prefix="tiermesh-authz-floor-"))
    upstream = Upstream(free_port(), "upstream")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        stack.callback(upstream.close)
        upstream.start()
        cpp = stack.enter_context(server([str(native)])) if native is not None else None
        python = (
            stack.enter_context(
                server([sys.executable, str(Path(__file__).resolve()), "--serve-python"])
            )
            if "python" in configs
            else None
        )
        targets: list[Target] = []
        for name in configs:
            port, admin = free_port(), free_port()
            pid: int | None = None
            marker: str | None = None
            if name == "plain":
                what = "minimal static Envoy (one listener, router, one cluster)"
                bootstrap = plain_bootstrap(port, admin, upstream.port)
            elif name in ("cpp", "cpp-headers", "python"):
                served = python if name == "python" else cpp
                assert served is not None
                pid, authz_port = served
                what = {
                    "cpp": "+ ext_authz to a C++ server that allows everything",
                    "cpp-headers": "the same, the check without the body (not shipped: PII "
                    "inspection needs it)",
                    "python": "+ ext_authz to a grpc.aio server that allows everything",
                }[name]
                bootstrap = authz_bootstrap(
                    port, admin, upstream.port, authz_port, body=name != "cpp-headers"
                )
            elif name == "lua":
                what = "+ a Lua filter that buffers and reads the whole body, decides nothing"
                bootstrap = filter_bootstrap(port, admin, upstream.port, lua_filter())
                marker = "read_body lua"
            else:
                what = (
                    "+ a dynamic module (C) that buffers and reads the whole body, decides nothing"
                )
                bootstrap = filter_bootstrap(port, admin, upstream.port, module_filter())
                marker = "read_body filter"
            envoy = EnvoyProcess(bootstrap, workdir=workdir / name, name=f"floor-{name}")
            stack.callback(envoy.stop)
            envoy.start()
            envoy.wait_ready(timeout=30)
            assert envoy.pid is not None
            if marker is not None:
                check_filter_ran(envoy, port, marker, body)
            targets.append(Target(name, what, port, envoy.pid, pid))
        time.sleep(0.5)
        measure(targets, args, body)
    text = report(targets, args, f"{start_load}; {load_average()}", body)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    errors = sum(r.errors for t in targets for r, _, _ in t.runs)
    errors += sum(p.errors for t in targets for p in t.paced)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
