"""Envoy CPU per request: the compiled route path beside a plain Envoy, and what costs.

One nginx (``_gw_upstream.py``) per loopback backend of the catalog, one ADS server, and
one real Envoy per config (the same binary, ``--concurrency 1``, as the agent runs it),
all started once:

- ``plain``: a minimal static Envoy: one listener, one route (prefix ``/``), one static
  cluster to the upstream; nothing else.
- ``shipped``: the demo catalog (``policies/data/catalog.yaml``, 216 plan routes) compiled
  for the edge node ``edge-1`` as ``tiermesh up`` registers it (cascade handler, ext_authz)
  by the compiler of this tree, then without its ext_authz filter (``_route_only.py``):
  the compiled route path alone, no usage filter or access log, no mTLS. Its loopback
  backends point at the upstream; the tenants' rate limits are raised (same filter, same
  descriptors) so that the closed loop is not refused.
- with ``--variants``: one config per feature, the shipped config with that one feature
  removed (:data:`VARIANTS`; ``-all`` removes them all), to find what costs, or changed
  to a cheaper shape (:data:`CANDIDATES`, named ``~...``, only by name);
- ``baseline`` (with ``--baseline-dir``): the same as ``shipped`` compiled by another
  tree (e.g. a checkout of ``main``), for before/after in one run.

Each round runs ``wrk`` (closed loop, fixed connections, one thread) against every config
in turn, in a rotated order; each run reads the Envoy process's CPU seconds (utime +
stime from ``/proc/PID/stat``) before and after, and reports CPU µs per request and
req/s. Reported values are medians over rounds with their min-max; ratios are taken per
round against ``plain`` of the same round, then the median. The request is public chat of
tenant ``globex`` (``--tenant``/``--sensitivity``/``--task``), as ext_authz would have
labelled it; every answer must be a 200 from the upstream (errors are counted and fail
the run). Envoy's own counters (requests, health checks, retries, upstream connections,
rate-limited requests) are read from its admin interface at the end.

Writes ``bench/results/route_cpu.md`` (``--out``) and prints it.

    .venv/bin/python bench/route_cpu.py [--rounds 8] [--seconds 4] [--connections 16]
        [--variants none|all|-a,-b] [--baseline-dir DIR --baseline-label TEXT]
        [--tenant T --sensitivity S --task K] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.message import Message

from _gw_cpu import cpu_seconds
from _gw_envoy import plain_bootstrap
from _gw_load import WrkResult, run_wrk, wrk_version
from _gw_mesh import _AdsThread, envoy_version
from _gw_upstream import Upstream, nginx_version
from tiermesh.controlplane.model import names
from tiermesh.controlplane.verify.route_tree import host_routes
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import BootstrapSpec, Snapshot, render_bootstrap, typeurls

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results" / "route_cpu.md"
NODE = "edge-1"
BODY = json.dumps(
    {"model": "frontier-mini", "messages": [{"role": "user", "content": "Say ok."}]},
    separators=(",", ":"),
)
CPU_TARGET = 1.2
"""Issue 16: the compiled route path costs at most this many times a plain Envoy's CPU."""
RATE = {"tokens_per_fill": 1_000_000, "fill_interval_ms": 1000, "max_tokens": 1_000_000}
"""Every tenant's bucket in the measured catalog: the same filter and descriptors as
shipped, too big to refuse the closed loop."""

Resources = dict[str, list[Message]]


# ------------------------------------------------------------------------ the configs


MESSAGES: dict[str, type[Message]] = {
    typeurls.CLUSTER: cluster_pb2.Cluster,
    typeurls.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    typeurls.SECRET: secret_pb2.Secret,
    typeurls.LISTENER: listener_pb2.Listener,
    typeurls.ROUTE: route_pb2.RouteConfiguration,
}


def compile_resources(tree: Path, ports: dict[str, int]) -> Resources:
    """The shipped route-only config as ``tree``'s compiler makes it
    (``_route_cpu_compile.py``, run in a child process with ``tree`` on its path)."""
    script = (BENCH / "_route_cpu_compile.py").read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-", json.dumps(ports), str(APP_PORT_PLACEHOLDER)],
        input=script.encode(),
        capture_output=True,
        timeout=120,
        check=False,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": f"{tree / 'src'}:{tree / 'bench'}:{tree}"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"compiling with {tree} failed:\n{done.stderr.decode()[-3000:]}")
    encoded: dict[str, list[str]] = json.loads(done.stdout)
    return {
        type_url: [MESSAGES[type_url].FromString(base64.b64decode(item)) for item in items]
        for type_url, items in encoded.items()
    }


APP_PORT_PLACEHOLDER = 10000
"""The app port the compiler is given; each Envoy's listener is moved to its own port."""


def _copy(resources: Resources) -> Resources:
    return {type_url: [_clone(m) for m in items] for type_url, items in resources.items()}


def _clone(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _app_listener(resources: Resources) -> listener_pb2.Listener:
    for listener in resources[typeurls.LISTENER]:
        assert isinstance(listener, listener_pb2.Listener)
        if listener.name == names.APP_LISTENER:
            return listener
    raise RuntimeError("no app listener in the compiled config")


def _edit_manager(
    resources: Resources, edit: Callable[[hcm_pb2.HttpConnectionManager], None]
) -> None:
    network = _app_listener(resources).filter_chains[0].filters[0]
    manager = hcm_pb2.HttpConnectionManager()
    network.typed_config.Unpack(manager)
    edit(manager)
    network.typed_config.Pack(manager)


def _routes(resources: Resources) -> Iterator[route_pb2.RouteConfiguration]:
    for config in resources[typeurls.ROUTE]:
        assert isinstance(config, route_pb2.RouteConfiguration)
        if config.name == names.APP_ROUTES:
            yield config


def _clusters(resources: Resources) -> Iterator[cluster_pb2.Cluster]:
    for cluster in resources[typeurls.CLUSTER]:
        assert isinstance(cluster, cluster_pb2.Cluster)
        yield cluster


def _host(resources: Resources) -> rc.VirtualHost:
    (config,) = _routes(resources)
    (host,) = config.virtual_hosts
    return host


def _route_lists(host: rc.VirtualHost) -> Iterator[tuple[Any, rc.RouteList]]:
    """Each route list of ``host`` with where to write it back: the ``routes`` field, or
    each RouteList action of its dispatch tree (at any depth)."""
    if not host.HasField("matcher"):
        yield host, rc.RouteList(routes=host.routes)
        return
    pending = [host.matcher]
    while pending:
        node = pending.pop()
        for on_match in [*node.matcher_tree.exact_match_map.map.values(), node.on_no_match]:
            if on_match.HasField("matcher"):
                pending.append(on_match.matcher)
                continue
            routes = rc.RouteList()
            on_match.action.typed_config.Unpack(routes)
            yield on_match, routes


def _edit_routes(resources: Resources, edit: Callable[[rc.Route], None]) -> None:
    """Apply ``edit`` to every route of the app table, in whichever shape it is."""
    host = _host(resources)
    for owner, routes in _route_lists(host):
        for route in routes.routes:
            edit(route)
        if owner is host:
            del host.routes[:]
            host.routes.extend(routes.routes)
        else:
            owner.action.typed_config.Pack(routes)


def table_size(resources: Resources) -> int:
    """Routes of the app table (each once, however many tenant lists hold it)."""
    return len(host_routes(_host(resources)))


def with_port(resources: Resources, port: int) -> Resources:
    """A copy of ``resources`` whose app listener listens on ``port``."""
    copy = _copy(resources)
    _app_listener(copy).address.socket_address.port_value = port
    return copy


def _matched_route(table: list[rc.Route], request: dict[str, str]) -> rc.Route:
    """The first route of ``table`` whose header matchers (exact / absent only) all hold
    for ``request`` on POST /v1/chat/completions (guard routes skipped by name)."""
    for route in table:
        if route.name.startswith("tiermesh/api"):
            continue
        if not route.match.dynamic_metadata and all(
            _holds(matcher, request) for matcher in route.match.headers
        ):
            return route
    raise RuntimeError(f"no route matches {request}")


def _holds(matcher: Any, request: dict[str, str]) -> bool:
    value = request.get(matcher.name)
    if matcher.HasField("present_match"):
        return (value is not None) == matcher.present_match
    if matcher.string_match.exact:
        return value == matcher.string_match.exact
    raise RuntimeError(f"matcher not modelled by the bench: {matcher}")


def _plain_table(resources: Resources, routes: list[rc.Route]) -> None:
    host = _host(resources)
    host.ClearField("matcher")
    del host.routes[:]
    host.routes.extend(routes)


def _drop_route_table(resources: Resources, request: dict[str, str]) -> None:
    table = host_routes(_host(resources))
    guard = [r for r in table if r.name.startswith("tiermesh/api")]
    _plain_table(resources, [*guard, _matched_route(table, request), table[-1]])


def _undispatched(resources: Resources, request: dict[str, str]) -> None:
    _plain_table(resources, host_routes(_host(resources)))


def _drop_guard(resources: Resources, request: dict[str, str]) -> None:
    table = host_routes(_host(resources))
    _plain_table(resources, [r for r in table if not r.name.startswith("tiermesh/api")])


def _drop_response_headers(resources: Resources, request: dict[str, str]) -> None:
    _host(resources).ClearField("response_headers_to_add")


def _drop_header_removal(resources: Resources, request: dict[str, str]) -> None:
    _edit_routes(resources, lambda route: route.ClearField("request_headers_to_remove"))


def _drop_retries(resources: Resources, request: dict[str, str]) -> None:
    def edit(route: rc.Route) -> None:
        if route.HasField("route"):
            route.route.ClearField("retry_policy")

    _edit_routes(resources, edit)


def _drop_metadata(resources: Resources, request: dict[str, str]) -> None:
    _edit_routes(resources, lambda route: route.ClearField("metadata"))


def _member_cluster(resources: Resources, request: dict[str, str]) -> None:
    """The matched route sends to the member that answers, not the chain's aggregate."""
    name = _matched_route(host_routes(_host(resources)), request).name

    def edit(route: rc.Route) -> None:
        if route.name == name:
            route.route.cluster = ANSWERING_BACKEND
            route.route.retry_policy.ClearField("retry_priority")

    _edit_routes(resources, edit)


def _drop_health_checks(resources: Resources, request: dict[str, str]) -> None:
    for cluster in _clusters(resources):
        cluster.ClearField("health_checks")


def _drop_outlier_detection(resources: Resources, request: dict[str, str]) -> None:
    for cluster in _clusters(resources):
        cluster.ClearField("outlier_detection")


def _drop_rate_limit(resources: Resources, request: dict[str, str]) -> None:
    def edit(manager: hcm_pb2.HttpConnectionManager) -> None:
        kept = [_clone(f) for f in manager.http_filters if "local_ratelimit" not in f.name]
        del manager.http_filters[:]
        manager.http_filters.extend(kept)

    _edit_manager(resources, edit)


def _drop_request_id(resources: Resources, request: dict[str, str]) -> None:
    def edit(manager: hcm_pb2.HttpConnectionManager) -> None:
        manager.generate_request_id.value = False

    _edit_manager(resources, edit)


Variant = Callable[[Resources, dict[str, str]], None]
VARIANTS: dict[str, tuple[str, Variant]] = {
    "-dispatch": ("the same table as one route list (no dispatch)", _undispatched),
    "-table": ("route table cut to the guard, the matched route and the 404", _drop_route_table),
    "-guard": ("API-surface guard routes (regex on :path, :method) removed", _drop_guard),
    "-resp-headers": (
        "virtual host's x-tiermesh-tier / overhead headers removed",
        _drop_response_headers,
    ),
    "-hdr-remove": (
        "routes' request_headers_to_remove (cascade token) removed",
        _drop_header_removal,
    ),
    "-retry": ("retry policies removed", _drop_retries),
    "-metadata": ("route metadata removed", _drop_metadata),
    "-aggregate": (
        "matched route sends to the answering member, not the aggregate",
        _member_cluster,
    ),
    "-health": ("active health checks removed", _drop_health_checks),
    "-outlier": ("outlier detection removed", _drop_outlier_detection),
    "-ratelimit": ("local rate-limit filter removed", _drop_rate_limit),
    "-request-id": ("x-request-id generation off (on in plain too)", _drop_request_id),
}


def _drop_everything(resources: Resources, request: dict[str, str]) -> None:
    """Every removal above at once (the table cut first, so the member route survives)."""
    for name, (_, edit) in VARIANTS.items():
        if name not in ("-all", "-dispatch"):
            edit(resources, request)


VARIANTS["-all"] = ("every removal above at once", _drop_everything)


def _inverted(header: str, match: string_pb2.StringMatcher) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=header, string_match=match, invert_match=True)


def _guard_without_regex(resources: Resources, request: dict[str, str]) -> None:
    """The guard's RE2 matchers as the same sets of inverted exact / prefix matchers (a
    route's matchers all hold: "none of these paths" is each path inverted)."""

    def edit(route: rc.Route) -> None:
        if not route.name.startswith("tiermesh/api"):
            return
        kept: list[rc.HeaderMatcher] = []
        for matcher in route.match.headers:
            pattern = matcher.string_match.safe_regex.regex
            if matcher.name == ":method" and pattern:
                methods = pattern.removeprefix("^(?:").removesuffix(")$").split("|")
                kept += [_inverted(":method", string_pb2.StringMatcher(exact=m)) for m in methods]
            elif matcher.name == ":path" and pattern:
                inner = pattern.removeprefix("^(?:").removesuffix(r")(?:\?.*)?$")
                for path in (p.replace("\\.", ".") for p in inner.split("|")):
                    kept.append(_inverted(":path", string_pb2.StringMatcher(exact=path)))
                    kept.append(_inverted(":path", string_pb2.StringMatcher(prefix=f"{path}?")))
            else:
                kept.append(matcher)
        del route.match.headers[:]
        route.match.headers.extend(kept)

    _edit_routes(resources, edit)


def _answer_header(keep: Callable[[str], str | None]) -> Variant:
    """A variant that gives each answer header of the virtual host ``keep(value)`` as its
    value, or drops it when that is None."""

    def variant(resources: Resources, request: dict[str, str]) -> None:
        host = _host(resources)
        kept = []
        for option in host.response_headers_to_add:
            value = keep(option.header.value)
            if value is not None:
                option.header.value = value
                kept.append(_clone(option))
        del host.response_headers_to_add[:]
        host.response_headers_to_add.extend(kept)

    return variant


CANDIDATES: dict[str, tuple[str, Variant]] = {
    "~guard-exact": (
        "the guard with inverted exact / prefix matchers instead of RE2",
        _guard_without_regex,
    ),
    "~tier-static": (
        "x-tiermesh-tier a constant, not %UPSTREAM_METADATA%",
        _answer_header(lambda v: "edge" if "UPSTREAM_METADATA" in v else v),
    ),
    "~no-overhead-hdr": (
        "the overhead header removed, the tier header kept",
        _answer_header(lambda v: None if "COMMON_DURATION" in v else v),
    ),
}
"""Cheaper shapes that keep what a feature does (or nearly: the constant tier header is
only a measuring stick), measured beside ``shipped`` with ``--variants``; not in ``all``."""
ANSWERING_BACKEND = "frontier-eu"
"""The backend that answers the measured request (the first chain member with hosts)."""


# ---------------------------------------------------------------------- measurement


@dataclass(slots=True)
class Run:
    """One wrk run against one config."""

    wrk: WrkResult
    cpu_s: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.wrk.requests if self.wrk.requests else float("inf")


@dataclass(slots=True)
class Target:
    """One config served by one Envoy."""

    name: str
    description: str
    port: int
    envoy: EnvoyProcess
    routes: int
    runs: list[Run] = field(default_factory=list)

    def median(self, what: Callable[[Run], float]) -> float:
        return float(statistics.median(what(run) for run in self.runs))

    def spread(self, what: Callable[[Run], float]) -> tuple[float, float]:
        values = [what(run) for run in self.runs]
        return min(values), max(values)


def _check_answer(port: int, headers: dict[str, str]) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=BODY.encode(),
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return f"{response.status} {response.headers.get('x-bench-upstream')}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read()[:200]!r}"
    except OSError as exc:
        return str(exc)


def wait_answering(target: Target, headers: dict[str, str], upstream: str, timeout: float) -> None:
    """Wait until the target answers the measured request from ``upstream`` (health checks
    and the chain settle after start)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = _check_answer(target.port, headers)
        if last == f"200 {upstream}":
            return
        time.sleep(0.1)
    raise RuntimeError(f"{target.name}: the measured request got {last!r}, not 200 from {upstream}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- the run


@dataclass(slots=True)
class Bench:
    """Everything one run starts; :meth:`close` stops it all by PID and removes temp dirs."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tiermesh-rcpu-")))
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    ads: _AdsThread | None = None
    targets: list[Target] = field(default_factory=list)

    def start_upstreams(self, backends: list[str]) -> dict[str, int]:
        for backend in backends:
            upstream = Upstream(free_port(), backend)
            self.upstreams[backend] = upstream
            upstream.start()
        return {name: upstream.port for name, upstream in self.upstreams.items()}

    def add_envoy(
        self, name: str, description: str, bootstrap: dict[str, Any], routes: int, port: int
    ) -> Target:
        envoy = EnvoyProcess(bootstrap, workdir=self.workdir / name, name=name)
        target = Target(name, description, port, envoy, routes)
        self.targets.append(target)
        envoy.start()
        envoy.wait_ready(timeout=30)
        return target

    def add_compiled(self, name: str, description: str, resources: Resources) -> Target:
        if self.ads is None:
            self.ads = _AdsThread()
        port = free_port()
        snapshot = Snapshot.from_resources(with_port(resources, port))
        self.ads.set_snapshot(name, snapshot)
        spec = BootstrapSpec(
            node_id=name, xds_host="127.0.0.1", xds_port=self.ads.port, admin_port=free_port()
        )
        routes = table_size(resources)
        return self.add_envoy(name, description, render_bootstrap(spec), routes, port)

    def close(self) -> None:
        for target in self.targets:
            with contextlib.suppress(Exception):
                target.envoy.stop()
        if self.ads is not None:
            with contextlib.suppress(Exception):
                self.ads.close()
        for upstream in self.upstreams.values():
            upstream.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def measure(bench: Bench, headers: dict[str, str], args: argparse.Namespace) -> None:
    def once(target: Target, seconds: float) -> Run:
        pid = target.envoy.pid
        assert pid is not None
        before = cpu_seconds([pid])[pid]
        result = run_wrk(
            f"http://127.0.0.1:{target.port}/v1/chat/completions",
            connections=args.connections,
            seconds=seconds,
            body=BODY,
            headers=headers,
        )
        return Run(result, cpu_seconds([pid])[pid] - before)

    for target in bench.targets:
        once(target, args.warmup)
    count = len(bench.targets)
    for number in range(args.rounds):
        order = [bench.targets[(number + i) % count] for i in range(count)]
        for target in order:
            run = once(target, args.seconds)
            target.runs.append(run)
            print(
                f"  round {number + 1}/{args.rounds} {target.name:<14} "
                f"{run.cpu_us_per_request:7.1f} µs CPU/req  {run.wrk.rps:8.0f} req/s  "
                f"p50 {run.wrk.p50_us / 1000:6.3f} ms  errors {run.wrk.errors}  "
                f"load {load_average()}",
                flush=True,
            )


def _ratio(
    target: Target, plain: Target, what: Callable[[Run], float]
) -> tuple[float, float, float]:
    ratios = [what(a) / what(b) for a, b in zip(target.runs, plain.runs, strict=True)]
    return float(statistics.median(ratios)), min(ratios), max(ratios)


STAT_SUFFIXES = {
    "health checks": ".health_check.attempt",
    "retries": ".upstream_rq_retry",
    "upstream connections": ".upstream_cx_total",
    "rate limited": ".http_local_rate_limit.rate_limited",
}
"""Envoy counters summed over every stat name ending so, per target, for the report."""


def envoy_counters(target: Target) -> dict[str, int]:
    """Sums of :data:`STAT_SUFFIXES` and the downstream requests, from Envoy's admin."""
    totals = dict.fromkeys([*STAT_SUFFIXES, "requests"], 0)
    for line in target.envoy.admin_text("/stats?usedonly").splitlines():
        name, _, value = line.partition(": ")
        if not value.strip().isdigit():
            continue
        downstream = name.startswith("http.") and name.endswith(".downstream_rq_total")
        if downstream and not name.startswith("http.admin."):
            totals["requests"] += int(value)
        for label, suffix in STAT_SUFFIXES.items():
            if name.endswith(suffix):
                totals[label] += int(value)
    return totals


def report(
    bench: Bench,
    args: argparse.Namespace,
    headers: dict[str, str],
    loads: list[str],
    counters: dict[str, dict[str, int]],
) -> str:
    plain = bench.targets[0]
    cpu: Callable[[Run], float] = lambda run: run.cpu_us_per_request  # noqa: E731
    rps: Callable[[Run], float] = lambda run: run.wrk.rps  # noqa: E731
    lines = [
        "# Envoy CPU per request: the compiled route path beside a plain Envoy",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/route_cpu.py` "
        f"({args.rounds} rounds x {args.seconds:g} s per config, wrk -t1 -c{args.connections}, "
        f"closed loop; configs in a rotated order each round).",
        "",
        "| config | what | routes | CPU µs/request, median (min-max) "
        "| x plain CPU, median (min-max) | req/s, median (min-max) | x plain req/s | p50 ms "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target in bench.targets:
        low, high = target.spread(cpu)
        rlow, rhigh = target.spread(rps)
        ratio, ratio_low, ratio_high = _ratio(target, plain, cpu)
        rps_ratio = _ratio(target, plain, rps)[0]
        lines.append(
            f"| `{target.name}` | {target.description} | {target.routes} "
            f"| {target.median(cpu):.1f} ({low:.1f}-{high:.1f}) "
            f"| {ratio:.2f} ({ratio_low:.2f}-{ratio_high:.2f}) "
            f"| {target.median(rps):,.0f} ({rlow:,.0f}-{rhigh:,.0f}) | {rps_ratio:.2f} "
            f"| {target.median(lambda run: run.wrk.p50_us) / 1000:.3f} "
            f"| {sum(run.wrk.errors for run in target.runs)} |"
        )
    by_name = {target.name: target for target in bench.targets}
    shipped = by_name["shipped"]
    ratio = _ratio(shipped, plain, cpu)[0]
    verdict = "met" if ratio <= CPU_TARGET else "not met"
    lines += [
        "",
        f"Result of this run: `shipped` costs {ratio:.2f}x a plain Envoy's CPU per request "
        f"(median of per-round ratios; target <= {CPU_TARGET}x: {verdict}) and serves "
        f"{_ratio(shipped, plain, rps)[0]:.2f}x its req/s.",
    ]
    if "baseline" in by_name:
        change = _ratio(shipped, by_name["baseline"], cpu)
        lines.append(
            f"Against `baseline` in the same rounds: {change[0]:.2f}x its CPU per request "
            f"(per-round {change[1]:.2f}-{change[2]:.2f}), "
            f"{_ratio(shipped, by_name['baseline'], rps)[0]:.2f}x its req/s."
        )
    lines += [
        "",
        "Envoy's own counters over the whole run (warm-up included), per config:",
        "",
        "| config | requests | " + " | ".join(STAT_SUFFIXES) + " |",
        "|---|---|" + "---|" * len(STAT_SUFFIXES),
    ]
    for target in bench.targets:
        found = counters[target.name]
        values = " | ".join(f"{found[label]:,}" for label in STAT_SUFFIXES)
        lines.append(f"| `{target.name}` | {found['requests']:,} | {values} |")
    request = ", ".join(f"`{k}: {v}`" for k, v in headers.items())
    lines += [
        "",
        "## Setup",
        "",
        f"- Request: `POST /v1/chat/completions` with {request} (as ext_authz labels public "
        f"chat of tenant `{headers['x-tiermesh-tenant']}`), {len(BODY)} B JSON body; "
        f"answered by the nginx of backend `{ANSWERING_BACKEND}` (the first member of the "
        "route's chain with hosts: `onprem-gpu`'s DNS name does not resolve here).",
        "- CPU: utime + stime of each Envoy process from `/proc/PID/stat` around each wrk "
        "run, divided by the requests wrk completed. The ratio columns are per-round ratios "
        "to `plain` (same round), then the median.",
        f"- Envoy {envoy_version()}, `--concurrency 1`; upstream {nginx_version()} (one "
        f"process per backend); load {wrk_version().splitlines()[0] if wrk_version() else 'wrk'}.",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; "
        f"load average (1/5/15 min) at start, per round and at the end: {', '.join(loads)}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variants", default="none", help="none, all, or names from VARIANTS")
    parser.add_argument(
        "--baseline-dir", type=Path, help="another checkout: its compiler as `baseline`"
    )
    parser.add_argument("--baseline-label", help="what the baseline is, for the report")
    parser.add_argument("--tenant", default="globex")
    parser.add_argument("--sensitivity", default="public")
    parser.add_argument("--task", default="chat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.connections < 1:
        parser.error("--rounds, --seconds and --connections must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variants == "all":
        chosen = list(VARIANTS)
    elif args.variants == "none":
        chosen = []
    else:
        chosen = [v.strip() for v in args.variants.split(",")]
        unknown = [v for v in chosen if v not in VARIANTS and v not in CANDIDATES]
        if unknown:
            known = ", ".join([*VARIANTS, *CANDIDATES])
            raise SystemExit(f"unknown variants {unknown}; known: {known}")
    headers = {
        "x-tiermesh-tenant": args.tenant,
        "x-tiermesh-sensitivity": args.sensitivity,
        "x-tiermesh-task": args.task,
    }
    loads = [load_average()]
    bench = Bench()
    try:
        ports = bench.start_upstreams(["edge-smollm", "frontier-eu", "frontier-us"])
        answering = bench.upstreams[ANSWERING_BACKEND].port
        plain_port = free_port()
        bench.add_envoy(
            "plain",
            "minimal static Envoy: one listener, one route, one cluster",
            plain_bootstrap(plain_port, free_port(), answering),
            1,
            plain_port,
        )
        if args.baseline_dir is not None:
            before = compile_resources(args.baseline_dir.resolve(), ports)
            label = args.baseline_label or f"as compiled by `{args.baseline_dir}`"
            bench.add_compiled("baseline", label, before)
        shipped = compile_resources(REPO, ports)
        bench.add_compiled("shipped", "route-only config as compiled by this tree", shipped)
        for name in chosen:
            description, edit = VARIANTS[name] if name in VARIANTS else CANDIDATES[name]
            resources = _copy(shipped)
            edit(resources, headers)
            bench.add_compiled(name, description, resources)
        for target in bench.targets:
            wait_answering(target, headers, ANSWERING_BACKEND, timeout=30)
        measure(bench, headers, args)
        loads.append(load_average())
        counters = {target.name: envoy_counters(target) for target in bench.targets}
        text = report(bench, args, headers, loads, counters)
    finally:
        bench.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    errors = sum(run.wrk.errors for target in bench.targets for run in target.runs)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
