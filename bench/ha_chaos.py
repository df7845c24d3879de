"""HA chaos run: the demo mesh with 3 etcd members and 2 control-plane replicas under
steady traffic and pushes, through the faults of ``tests/e2e/ha_chaos.py``.

Writes bench/results/ha.md: per fault the time until a push is served, the leader's and
the edge's failover, NACKs, joins/renewals; public requests failed, restricted requests
served off-prem, audit records lost/duplicated; each replica's CPU and memory; and the
scale note (what one replica costs per node, from ``bench/fleet_scale.py``'s figures).
Run from the repository root:

    .venv/bin/python bench/ha_chaos.py [--runs 1] [--state DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from tests.e2e.ha_chaos import (  # noqa: E402
    LEADER_WITHIN_S,
    PUSH_WITHIN_S,
    ChaosReport,
    describe,
    run_chaos,
    summary,
)

from tiermesh.agents.decisionlog import read_spool  # noqa: E402
from tiermesh.demo.mesh import LocalMesh  # noqa: E402
from tiermesh.procs.ports import free_port  # noqa: E402
from tiermesh.xds.bootstrap import ADS_KEEPALIVE_INTERVAL_S, ADS_KEEPALIVE_TIMEOUT_S  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ha.md"

SCALE_NOTE = """\
## Scale note

Every replica watches the same etcd state and compiles every node's snapshot (the
reconcile is not split between replicas: any replica can take any node at any moment,
which is what lets a node move without a new version). What a replica pays per node is
therefore the same as a single control plane's, from `bench/results/fleet_scale.md`
(same machine, one process, real compiler, real ADS streams): **about 165-173 KB of RSS
per connected node** and **0.1-0.3 % of one core idle with 1 000-5 000 nodes
connected**; a policy push that changes every node takes 1.8 s (1 000 nodes) to 7.5 s
(5 000 nodes) to be ACKed everywhere, of which the fan-out is the part that splits
between replicas (each serves only the streams connected to it). Memory does not split:
each replica holds every node's snapshot, so N replicas hold the same N x fleet of
snapshots in total and each one's memory bounds the fleet, about 6 000 nodes per GiB of
replica RSS; N replicas hold as many nodes as one (they add availability, and divide the
stream fan-out and the node API/audit load by N). The replicas' own figures from this
run (few nodes, so mostly the fixed cost) are in the table above.
"""


def _replica_usage(mesh: LocalMesh) -> list[tuple[str, float, float]]:
    """(replica, CPU seconds, RSS MiB) of each running replica process."""
    found = []
    for index, child in enumerate(mesh.planes):
        if child is None:
            continue
        try:
            process = psutil.Process(child.proc.pid)
            times = process.cpu_times()
            found.append(
                (f"cp-{index + 1}", times.user + times.system, process.memory_info().rss / 2**20)
            )
        except psutil.Error:
            continue
    return found


def _missing_where(mesh: LocalMesh, report: ChaosReport) -> list[str]:
    """For decisions missing from the audit: which node's spool holds them, at what seq."""
    lines = []
    wanted = set(report.missing)
    for node in mesh.nodes:
        spool = mesh.state_dir / node.id / "decisions"
        if not spool.is_dir():
            continue
        for stored in read_spool(spool):
            if str(stored.record.decision_id) in wanted:
                lines.append(f"{node.id} seq {stored.record.seq} ({stored.record.decision_id})")
    return lines


async def one_run(state: Path) -> tuple[ChaosReport, list[tuple[str, float, float]], list[str]]:
    mesh = LocalMesh(app_port=free_port(), state_dir=state, ha=True)
    started = time.monotonic()
    await mesh.start(lambda step: print(f"  starting {step}", flush=True))
    print(f"mesh up in {time.monotonic() - started:.0f} s", flush=True)
    try:
        report = await run_chaos(mesh)
        usage = _replica_usage(mesh)
        where = _missing_where(mesh, report) if report.missing else []
        return report, usage, where
    finally:
        await mesh.stop()


def _cell(value: float | None, bound: float | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    return f"**{text}**" if bound is not None and value > bound else text


def render(runs: list[tuple[ChaosReport, list[tuple[str, float, float]], list[str]]]) -> str:
    load = os.getloadavg()
    out = [
        "# HA chaos: 3 etcd members, 2 control-plane replicas, the demo mesh",
        "",
        "`bench/ha_chaos.py` (scenario: `tests/e2e/ha_chaos.py`, the same one the e2e suite",
        "`tests/e2e/test_ha_chaos.py` asserts). `tiermesh up --ha`'s mesh (etcd x3,",
        "`controlplane run --replica cp-1/cp-2`, edge/private/cloud-gateway agents with Envoy",
        "and llama.cpp, cloud stand-ins) on loopback. Steady traffic through the edge: a",
        "public request every 0.1 s (alternately local and cloud-routed) and a restricted one",
        "every 0.2 s; a bundle push (the local tier's route timeout + 1 ms) every 3 s between",
        "faults, and one right after each fault. `push served`: from the fault to the edge's",
        "Envoy holding the new routes. `leader moved` / `edge moved`: from the fault to",
        "another replica leading / to the edge streaming from the other replica (only when",
        "the fault hit that replica). Faults are signals to the real processes' PIDs.",
        f"Envoy pings its ADS replica every {ADS_KEEPALIVE_INTERVAL_S:g} s and leaves it after"
        f" {ADS_KEEPALIVE_TIMEOUT_S:g} s without an answer; the agent's registry session pings"
        " every 1 s and leaves after 2 s. The pause stands for a frozen host; a replica cut"
        " off from etcd while its nodes still reach it is a test of its own"
        " (`tests/integration/controlplane/test_replica_pause.py`: it ends its ADS streams"
        " after 3 s without an answer from etcd, and its Envoy is on the other replica"
        " within 6 s).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, shared with other work; load"
        f" average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min).",
        f"Targets: push served <= {PUSH_WITHIN_S:g} s after each fault; leader replaced <="
        f" {LEADER_WITHIN_S:g} s (lease TTL 5 s); 0 restricted off-prem; 0 audit records lost.",
        "",
    ]
    for number, (report, usage, where) in enumerate(runs, 1):
        out += [
            f"## Run {number} ({report.duration_s:.0f} s)",
            "",
            "| fault | push served (s) | leader moved (s) | edge moved (s) | edge versions kept |"
            " NACKs | join / renew | leaders after |",
            "|---|---:|---:|---:|---|---:|---|---:|",
        ]
        for f in report.faults:
            kept = "-" if f.versions_kept is None else ("yes" if f.versions_kept else "**no**")
            out.append(
                f"| {f.name} | {_cell(f.push_served_s, PUSH_WITHIN_S)} |"
                f" {_cell(f.leader_moved_s, LEADER_WITHIN_S)} |"
                f" {_cell(f.edge_reconnect_s, PUSH_WITHIN_S)} | {kept} | {f.nacks} |"
                f" {'ok' if f.join_ok else '**failed**'} / {'ok' if f.renew_ok else '**failed**'}"
                f" | {f.leaders_after} |"
            )
        failed = len(report.public_failed)
        out += [
            "",
            f"- public requests: {report.public_sent} sent, **{failed} failed**"
            + (
                " ("
                + "; ".join(f"{s} in '{fault}'" for fault, s, _ in report.public_failed[:8])
                + ")"
                if failed
                else ""
            ),
            f"- restricted requests: {report.restricted_sent} sent, **{report.restricted_off_prem}"
            f" served off-prem**, {report.restricted_refused} refused",
            f"- ext_authz errors (timeouts included) counted by the edge's Envoy:"
            f" {report.authz_errors} (each a fail-closed 503 with an empty body)",
            f"- pushes: {report.pushes}; steady ones served in {summary(report.pushes_served)}",
            f"- ADS connections the edge's Envoy opened with no fault in progress:"
            f" **{report.steady_ads_reconnects}**",
            f"- audit: {len(report.decisions)} decisions answered, **{report.audit_lost} lost**,"
            f" {report.audit_duplicates} duplicate copies dropped by the merge,"
            f" {report.audit_conflicts} conflicts, chains verified across both databases:"
            f" {'yes' if report.audit_verified else '**no**'}",
        ]
        if where:
            out.append("- missing decisions found in the nodes' spools: " + "; ".join(where[:10]))
        out.append(
            "- replicas at the end: "
            + ", ".join(f"{name} {cpu:.1f} CPU s, {rss:.0f} MiB RSS" for name, cpu, rss in usage)
        )
        out.append("")
    out += _summary(runs)
    out.append(SCALE_NOTE)
    return "\n".join(out)


def _summary(
    runs: list[tuple[ChaosReport, list[tuple[str, float, float]], list[str]]],
) -> list[str]:
    """Across runs: each fault's push time (median / max), and which targets were met."""
    reports = [report for report, _, _ in runs]
    by_fault: dict[str, list[float | None]] = {}
    for report in reports:
        for fault in report.faults:
            key = re.sub(r" \(cp-\d\)", "", fault.name)
            by_fault.setdefault(key, []).append(fault.push_served_s)
    out = [
        f"## Across the {len(reports)} runs",
        "",
        "| fault | push served: median / max (s) | over the bound |",
        "|---|---:|---:|",
    ]
    for name, values in by_fault.items():
        served = [v for v in values if v is not None]
        late = sum(1 for v in values if v is None or v > PUSH_WITHIN_S)
        middle = f"{statistics.median(served):.2f} / {max(served):.2f}" if served else "-"
        out.append(f"| {name} | {middle} | {late} of {len(values)} |")
    steady = [v for report in reports for v in report.pushes_served]
    failed = sum(len(r.public_failed) for r in reports)
    sent = sum(r.public_sent for r in reports)
    authz = sum(r.authz_errors for r in reports)
    off_prem = sum(r.restricted_off_prem for r in reports)
    lost = sum(r.audit_lost for r in reports)
    late_total = sum(
        1
        for r in reports
        for f in r.faults
        if f.push_served_s is None or f.push_served_s > PUSH_WITHIN_S
    )
    faults = sum(len(r.faults) for r in reports)
    slow_leader = sum(
        1 for r in reports for f in r.faults if (f.leader_moved_s or 0) > LEADER_WITHIN_S
    )
    kept = [f.versions_kept for r in reports for f in r.faults if f.versions_kept is not None]
    nacks = sum(f.nacks for r in reports for f in r.faults)
    spurious = sum(r.steady_ads_reconnects for r in reports)

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    out += [
        "",
        f"- steady pushes (no fault): {summary(steady)}; the bound is {PUSH_WITHIN_S:g} s, so"
        " on this machine a fault's push has that much less headroom than on a quiet one.",
        f"- push served <= {PUSH_WITHIN_S:g} s after each fault: {verdict(late_total == 0)}"
        f" ({late_total} of {faults} over).",
        f"- leader replaced <= {LEADER_WITHIN_S:g} s: {verdict(slow_leader == 0)}.",
        f"- edge reconnects to the other replica with the same versions and no NACK:"
        f" {verdict(all(kept) and nacks == 0)} ({len(kept)} reconnects, {nacks} NACKs).",
        f"- a healthy replica keeps the edge (ADS reconnects with no fault in progress):"
        f" {verdict(spurious == 0)} ({spurious}).",
        f"- public requests failed: {failed} of {sent} ({verdict(failed == 0)}); ext_authz errors"
        f" counted by the edge's Envoy over the same runs: {authz}.",
        f"- restricted requests served off-prem: {off_prem} ({verdict(off_prem == 0)}).",
        f"- audit records lost: {lost} ({verdict(lost == 0)}).",
        "",
    ]
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--state", type=Path, default=None, help="keep the mesh state here")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = []
    base = args.state or Path(tempfile.mkdtemp(prefix="ha-chaos-"))
    try:
        for number in range(args.runs):
            result = await one_run(base / f"run-{number + 1}")
            print(describe(result[0]), flush=True)
            runs.append(result)
    finally:
        if args.state is None:
            shutil.rmtree(base, ignore_errors=True)
    args.out.write_text(render(runs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
