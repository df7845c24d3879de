"""The HA chaos scenario: a mesh with 3 etcd members and 2 control-plane replicas under
steady traffic and a policy push every few seconds, through a sequence of faults.

Used by ``tests/e2e/test_ha_chaos.py`` (asserts the targets) and ``bench/ha_chaos.py``
(writes the figures to ``bench/results/ha.md``). Everything is real: the mesh is
:class:`~tiermesh.demo.mesh.LocalMesh` (etcd members, ``tiermesh controlplane run``
replicas, ``tiermesh agent run`` nodes with Envoy and llama.cpp, cloud stand-ins), faults
are signals to those processes' PIDs.

Measured:

- public requests through the edge (local and cloud-routed): every non-200 answer is a
  failure, with its status and the fault it happened in;
- restricted requests through the edge: any answer from a cloud tier is "served off-prem"
  (target: 0);
- each fault's **push served** time: from the fault to the edge Envoy holding the route
  configuration of a bundle pushed right after it (the push itself is retried while etcd
  has no leader); pushes also run every ``push_every_s`` between faults;
- the edge's xDS: which replica it streams from, its config versions and NACK / modified
  counters before and after the replica it streams from dies (a reconnect must change
  neither: no NACK, no re-push);
- joins and SVID renewals by a probe node after each fault (each a new join token);
- audit: every decision id the edge answered with must be in the replicas' databases read
  together (lost: missing; duplicated: copies dropped by the merge).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import re
import signal
import statistics
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.agent_support import chat
from tiermesh.agents.identity.join_client import NodeApiCallError, join, renew
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.audit import AuditQuery, merge_stores, verify_store
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.store import BundleConflict, EtcdStore, StoreError
from tiermesh.demo.mesh import CLOUD_HEADERS, DEMO_HEADERS, TRUST_DOMAIN, LocalMesh
from tiermesh.procs.envoy import admin_request
from tiermesh.procs.etcd_cluster import EtcdCluster

__all__ = ["ChaosReport", "FaultResult", "describe", "run_chaos"]

RESTRICTED = {"x-tiermesh-tenant": "globex", "x-tiermesh-task": "reasoning",
              "x-tiermesh-sensitivity": "restricted"}  # fmt: skip
"""A request globex's plan would send to the cloud were it public."""
LOCAL_TIERS = frozenset({"local", "private"})
PUSH_WITHIN_S = 5.0
"""After every fault, a paused replica included: Envoy leaves a replica that stops
answering its ADS keepalive PINGs within about 3.2 s (``ADS_KEEPALIVE_INTERVAL_S``,
jittered, plus ``ADS_KEEPALIVE_TIMEOUT_S``) and the push is served on the new stream."""


LEADER_WITHIN_S = 8.0
"""A leader killed or paused is replaced within its lease TTL (5 s) and the followers'
one-second retry, plus the time to notice on a loaded machine."""
_PUSH_GIVE_UP_S = 30.0
_TIMEOUT_RE = re.compile(rb"timeout_ms: (\d+)")


@dataclass
class FaultResult:
    """One fault: what it was and how the mesh came through it."""

    name: str
    push_served_s: float | None = None
    """Fault → the edge serving a bundle pushed right after it (None: not within 30 s)."""
    leader_before: str | None = None
    leader_after: str | None = None
    leaders_after: int = 0
    """Replicas that said they lead once the fault was over (one, never two)."""
    leader_moved_s: float | None = None
    """When the fault took the leader: fault → another replica leads."""
    edge_replica_before: int | None = None
    edge_replica_after: int | None = None
    edge_reconnect_s: float | None = None
    """When the edge's replica was the one hit: fault → connected to the other."""
    versions_kept: bool | None = None
    """Edge config versions identical across the reconnect (None: no reconnect)."""
    nacks: int = 0
    """NACKs (``update_rejected``) the edge counted during the fault."""
    config_changes: int = 0
    """Listeners/clusters the edge modified during the fault beyond the pushes' own."""
    join_ok: bool = False
    renew_ok: bool = False


@dataclass
class ChaosReport:
    faults: list[FaultResult] = field(default_factory=list)
    public_sent: int = 0
    public_failed: list[tuple[str, int, str]] = field(default_factory=list)
    """(fault in progress, status, body start) of each failed public request."""
    restricted_sent: int = 0
    restricted_off_prem: int = 0
    restricted_refused: int = 0
    authz_errors: int = 0
    """ext_authz calls the edge's Envoy counted as errors (timeouts included): each is a
    fail-closed 503 with an empty body."""
    decisions: set[str] = field(default_factory=set)
    audit_lost: int = 0
    missing: list[str] = field(default_factory=list)
    """Up to 50 of the lost decision ids."""
    audit_duplicates: int = 0
    audit_conflicts: int = 0
    audit_verified: bool = False
    pushes: int = 0
    pushes_served: list[float] = field(default_factory=list)
    """Push → edge serving it, for the steady pushes between faults."""
    steady_ads_reconnects: int = 0
    """ADS connections the edge's Envoy opened while no fault was in progress (must be 0:
    a healthy replica keeps its Envoys, keepalive PINGs included)."""
    duration_s: float = 0.0


def _edge_admin(mesh: LocalMesh) -> str:
    return str(mesh.state_dir / mesh.edge.id / "envoy-admin.sock")


def edge_route_versions(mesh: LocalMesh) -> tuple[str, ...]:
    status, body = admin_request(_edge_admin(mesh), "/config_dump?resource=dynamic_route_configs")
    if status != 200:
        return ()
    return tuple(sorted(c.get("version_info", "") for c in json.loads(body).get("configs", [])))


def edge_versions(mesh: LocalMesh) -> dict[str, tuple[str, ...]]:
    """Version of every dynamic resource the edge's Envoy holds, by kind."""
    found: dict[str, tuple[str, ...]] = {}
    for kind in ("dynamic_active_clusters", "dynamic_listeners", "dynamic_route_configs"):
        status, body = admin_request(_edge_admin(mesh), f"/config_dump?resource={kind}")
        assert status == 200, body[:200]
        versions = []
        for config in json.loads(body).get("configs", []):
            version = config.get("version_info") or config.get("active_state", {}).get(
                "version_info", ""
            )
            versions.append(f"{config.get('name', '')}@{version}")
        found[kind] = tuple(sorted(versions))
    return found


def edge_counters(mesh: LocalMesh) -> dict[str, int]:
    """NACKs and config changes the edge's Envoy counted so far."""
    status, body = admin_request(_edge_admin(mesh), "/stats?format=json")
    assert status == 200
    totals = {"nacks": 0, "listener_modified": 0, "cluster_modified": 0, "authz_errors": 0,
              "ads_connections": 0}  # fmt: skip
    for stat in json.loads(body).get("stats", []):
        name, value = stat.get("name", ""), stat.get("value")
        if not isinstance(value, int):
            continue
        if name.endswith("update_rejected"):
            totals["nacks"] += value
        elif name.endswith("ext_authz.error"):
            totals["authz_errors"] += value
        elif name == "listener_manager.listener_modified":
            totals["listener_modified"] = value
        elif name == "cluster_manager.cluster_modified":
            totals["cluster_modified"] = value
        elif name == "cluster.tiermesh_xds.upstream_cx_total":
            totals["ads_connections"] = value
    return totals


def replica_status(mesh: LocalMesh, index: int) -> dict[str, Any] | None:
    try:
        url = f"{mesh.replica_admin_url(index)}/status"
        with urllib.request.urlopen(url, timeout=2) as answer:
            document: dict[str, Any] = json.load(answer)
            return document
    except (OSError, ValueError):
        return None


def leader(mesh: LocalMesh, only: int | None = None) -> str | None:
    """The holder the first answering replica (or replica ``only``) names as leader."""
    for index in range(mesh.replicas) if only is None else (only,):
        status = replica_status(mesh, index)
        if status is not None:
            leadership = status.get("leadership") or {}
            if leadership.get("leader"):
                return str(leadership["holder"])
    return None


def edge_on(mesh: LocalMesh, index: int) -> bool:
    """Whether replica ``index`` says the edge's Envoy streams ADS from it."""
    status = replica_status(mesh, index)
    return any(
        node["id"] == mesh.edge.id and node.get("xds", {}).get("connected")
        for node in (status or {}).get("nodes", [])
    )


def edge_replica(mesh: LocalMesh) -> int | None:
    """The replica the edge's Envoy streams ADS from (None: none says so)."""
    return next((i for i in range(mesh.replicas) if edge_on(mesh, i)), None)


def _wait(check: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(OSError, AssertionError, ValueError):
            if check():
                return time.monotonic() - started
        time.sleep(step_s)
    return None


class _Traffic:
    """Public and restricted requests through the edge, in two threads."""

    def __init__(self, mesh: LocalMesh, report: ChaosReport) -> None:
        self.mesh = mesh
        self.report = report
        self.fault = "steady"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._public, daemon=True),
            threading.Thread(target=self._restricted, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _note(self, headers: dict[str, str]) -> None:
        decision = headers.get("x-tiermesh-decision-id") or headers.get("X-Tiermesh-Decision-Id")
        if decision:
            with self._lock:
                self.report.decisions.add(decision)

    def _public(self) -> None:
        port = self.mesh.edge.app_port
        sent = 0
        while not self._stop.is_set() and sent < 100_000:
            which = CLOUD_HEADERS if sent % 2 else DEMO_HEADERS
            status, headers, body = chat(port, self.mesh.with_key(dict(which)), timeout=30)
            sent += 1
            self._note(headers)
            with self._lock:
                self.report.public_sent += 1
                if status != 200:
                    self.report.public_failed.append(
                        (self.fault, status, body[:120].decode(errors="replace"))
                    )
            time.sleep(0.1)

    def _restricted(self) -> None:
        port = self.mesh.edge.app_port
        sent = 0
        while not self._stop.is_set() and sent < 100_000:
            status, headers, body = chat(port, self.mesh.with_key(dict(RESTRICTED)), timeout=30)
            sent += 1
            self._note(headers)
            tier = headers.get("x-tiermesh-tier") or headers.get("X-Tiermesh-Tier")
            with self._lock:
                self.report.restricted_sent += 1
                if (status == 200 and tier not in LOCAL_TIERS) or b"frontier" in body:
                    self.report.restricted_off_prem += 1
                elif status != 200:
                    self.report.restricted_refused += 1
            time.sleep(0.2)


class _Pusher:
    """Bundle pushes straight to etcd (each a new route timeout for the local tier), and
    the time until the edge's Envoy serves them."""

    def __init__(self, mesh: LocalMesh, store: EtcdStore) -> None:
        self.mesh = mesh
        self.store = store
        self.count = 0

    async def push(self, give_up_s: float = _PUSH_GIVE_UP_S) -> None:
        """One push, retried while the store cannot take it."""
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                bundle = await self.store.get_bundle()
                files = dict(bundle.files)
                catalog = files["data/catalog.yaml"]
                current = int(_TIMEOUT_RE.search(catalog).group(1))  # type: ignore[union-attr]
                files["data/catalog.yaml"] = _TIMEOUT_RE.sub(
                    f"timeout_ms: {current + 1}".encode(), catalog, count=1
                )
                await self.store.push_bundle(
                    files, expected_revision=bundle.revision, provenance={"source": "ha-chaos"}
                )
                self.count += 1
                return
            except (StoreError, BundleConflict):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def push_and_wait(self, started: float) -> float | None:
        """Push, then wait for the edge's routes to change; seconds since ``started``."""
        before = await asyncio.to_thread(edge_route_versions, self.mesh)
        await self.push()
        waited = await asyncio.to_thread(
            _wait, lambda: edge_route_versions(self.mesh) not in ((), before), _PUSH_GIVE_UP_S
        )
        return None if waited is None else time.monotonic() - started


class _Probe:
    """A node that joins and renews its SVID through any replica that answers."""

    def __init__(self, mesh: LocalMesh, store: EtcdStore) -> None:
        self.mesh = mesh
        self.tokens = JoinTokens(store)
        self.count = 0

    async def join_and_renew(self) -> tuple[bool, bool]:
        self.count += 1
        node = f"probe-{self.count}"
        try:
            token = await self.tokens.create(node, dt.timedelta(minutes=5))
        except StoreError:
            return False, False
        bundle = (self.mesh.state_dir / "controlplane" / "bundle.pem").read_bytes()
        name = control_plane_dns_name(TRUST_DOMAIN)
        key = ec.generate_private_key(ec.SECP256R1())
        chain: bytes | None = None
        for ports in self.mesh.replica_ports:
            with contextlib.suppress(NodeApiCallError):
                chain, bundle = await join(
                    f"127.0.0.1:{ports['join']}",
                    token,
                    key,
                    trust_bundle_pem=bundle,
                    server_name=name,
                    timeout_s=3,
                )
                break
        if chain is None:
            return False, False
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        for ports in self.mesh.replica_ports:
            with contextlib.suppress(NodeApiCallError):
                await renew(
                    f"127.0.0.1:{ports['node']}",
                    chain,
                    key_pem,
                    key,
                    trust_bundle_pem=bundle,
                    server_name=name,
                    timeout_s=3,
                )
                return True, True
        return True, False


async def _fault(
    mesh: LocalMesh,
    report: ChaosReport,
    traffic: _Traffic,
    pusher: _Pusher,
    probe: _Probe,
    name: str,
    inject: Callable[[], Awaitable[None]],
    recover: Callable[[], Awaitable[None]],
    *,
    replica: int | None = None,
) -> FaultResult:
    """Inject a fault (on control-plane ``replica``, if it hits one), then at once push and
    wait, side by side, for the push to be served, for another replica to lead (when the
    leader was hit) and for the edge to stream from the other replica (when its replica was
    hit); probe a join and a renewal; recover. The result is appended to ``report``."""
    result = FaultResult(name)
    result.leader_before = await asyncio.to_thread(leader, mesh)
    result.edge_replica_before = await asyncio.to_thread(edge_replica, mesh)
    versions = await asyncio.to_thread(edge_versions, mesh)
    counters = await asyncio.to_thread(edge_counters, mesh)
    traffic.fault = name
    started = time.monotonic()
    await inject()

    async def since(check: Callable[[], bool]) -> float | None:
        took = await asyncio.to_thread(_wait, check, _PUSH_GIVE_UP_S, 0.1)
        return None if took is None else time.monotonic() - started

    async def nothing() -> None:
        return None

    other = None if replica is None else 1 - replica
    old = result.leader_before
    leader_hit = other is not None and _replica_of(mesh, old) == replica
    edge_hit = other is not None and result.edge_replica_before == replica
    result.push_served_s, result.leader_moved_s, result.edge_reconnect_s = await asyncio.gather(
        pusher.push_and_wait(started),
        since(lambda: leader(mesh, only=other) not in (None, old)) if leader_hit else nothing(),
        since(lambda: edge_on(mesh, other)) if edge_hit and other is not None else nothing(),
    )
    result.join_ok, result.renew_ok = await probe.join_and_renew()
    after = await asyncio.to_thread(edge_counters, mesh)
    result.nacks = after["nacks"] - counters["nacks"]
    await recover()
    # Versions across the reconnect: compare kinds the push did not touch.
    now = await asyncio.to_thread(edge_versions, mesh)
    if result.edge_reconnect_s is not None:
        result.versions_kept = (
            now["dynamic_active_clusters"] == versions["dynamic_active_clusters"]
            and now["dynamic_listeners"] == versions["dynamic_listeners"]
        )
    result.config_changes = (after["listener_modified"] - counters["listener_modified"]) + (
        after["cluster_modified"] - counters["cluster_modified"]
    )
    await asyncio.to_thread(_wait, lambda: leader(mesh) is not None, 15, 0.1)
    result.leader_after = await asyncio.to_thread(leader, mesh)
    result.leaders_after = sum(
        [bool(await asyncio.to_thread(leader, mesh, i)) for i in range(mesh.replicas)]
    )
    result.edge_replica_after = await asyncio.to_thread(edge_replica, mesh)
    traffic.fault = "steady"
    report.faults.append(result)
    return result


def _in_thread(function: Callable[..., object], *args: object) -> Callable[[], Awaitable[None]]:
    """A fault step: ``function(*args)`` (blocking) run on a worker thread."""

    async def step() -> None:
        await asyncio.to_thread(function, *args)

    return step


def _replica_of(mesh: LocalMesh, holder: str | None) -> int:
    """Index of the replica whose holder value is ``holder`` (``cp-<n>/…``)."""
    if holder and holder.startswith("cp-"):
        return int(holder.split("/", 1)[0].removeprefix("cp-")) - 1
    return 0


async def run_chaos(
    mesh: LocalMesh, *, push_every_s: float = 3.0, steady_s: float = 6.0, pause_s: float = 8.0
) -> ChaosReport:
    """Run the fault sequence on a started ``mesh`` (``ha``, 2 replicas); the report."""
    assert isinstance(mesh.etcd, EtcdCluster), "the chaos run needs the 3-member etcd"
    assert mesh.replicas == 2, "the chaos run needs two control-plane replicas"
    cluster = mesh.etcd
    report = ChaosReport()
    traffic = _Traffic(mesh, report)
    began = time.monotonic()
    authz_before = (await asyncio.to_thread(edge_counters, mesh))["authz_errors"]
    async with EtcdStore(mesh.etcd_endpoint, root=mesh.root) as store:
        pusher, probe = _Pusher(mesh, store), _Probe(mesh, store)

        async def steady() -> None:
            """Pushes every ``push_every_s`` for ``steady_s``, once the edge has settled
            on a replica after the last fault."""
            await asyncio.to_thread(_wait, lambda: edge_replica(mesh) is not None, 15, 0.1)
            before = (await asyncio.to_thread(edge_counters, mesh))["ads_connections"]
            until = time.monotonic() + steady_s
            while time.monotonic() < until:
                served = await pusher.push_and_wait(time.monotonic())
                if served is not None:
                    report.pushes_served.append(served)
                await asyncio.sleep(push_every_s)
            after = (await asyncio.to_thread(edge_counters, mesh))["ads_connections"]
            report.steady_ads_reconnects += after - before

        fault = functools.partial(_fault, mesh, report, traffic, pusher, probe)

        traffic.start()
        try:
            await steady()
            # 1. the leader replica dies.
            victim = _replica_of(mesh, await asyncio.to_thread(leader, mesh))

            await fault(
                f"kill the leader replica (cp-{victim + 1})",
                _in_thread(mesh.stop_replica, victim, signal.SIGKILL),
                _in_thread(mesh.start_replica, victim),
                replica=victim,
            )
            await steady()
            # 2. the replica the edge streams from dies (if it is not the leader now).
            target = await asyncio.to_thread(edge_replica, mesh)
            if target is not None:
                await fault(
                    f"kill the edge's replica (cp-{target + 1})",
                    _in_thread(mesh.stop_replica, target, signal.SIGKILL),
                    _in_thread(mesh.start_replica, target),
                    replica=target,
                )
                await steady()
            # 3. an etcd member that is not the leader, then 4. the etcd leader.
            etcd_leader = await asyncio.to_thread(cluster.wait_for_leader)
            follower = (etcd_leader + 1) % 3
            await fault(
                "kill an etcd member (follower)",
                _in_thread(cluster.kill, follower),
                _in_thread(cluster.restart, follower),
            )
            await steady()
            etcd_leader = await asyncio.to_thread(cluster.wait_for_leader)
            await fault(
                "kill the etcd leader",
                _in_thread(cluster.kill, etcd_leader),
                _in_thread(cluster.restart, etcd_leader),
            )
            await steady()
            # 5. partition: the edge's replica is stopped (SIGSTOP) and resumed.
            paused = await asyncio.to_thread(edge_replica, mesh)
            paused = 0 if paused is None else paused
            child = mesh.planes[paused]
            assert child is not None

            stopped_at = [0.0]

            async def pause() -> None:
                child.proc.send_signal(signal.SIGSTOP)
                stopped_at[0] = time.monotonic()

            async def resume() -> None:
                await asyncio.sleep(max(0.0, stopped_at[0] + pause_s - time.monotonic()))
                child.proc.send_signal(signal.SIGCONT)

            await fault(
                f"SIGSTOP the edge's replica (cp-{paused + 1}) for {pause_s:g} s",
                pause,
                resume,
                replica=paused,
            )
            await steady()
            # 6. everything restarted one by one.
            # (measured while each is down; it is started again before the next)
            for index in range(mesh.replicas):
                await fault(
                    f"restart replica cp-{index + 1}",
                    _in_thread(mesh.stop_replica, index),  # SIGTERM: a graceful stop
                    _in_thread(mesh.start_replica, index),
                    replica=index,
                )
            for index in range(3):
                await fault(
                    f"restart etcd member {index}",
                    _in_thread(cluster.stop, index),
                    _in_thread(cluster.restart, index),
                )
            await steady()
        finally:
            traffic.stop()
        report.pushes = pusher.count
        authz_after = (await asyncio.to_thread(edge_counters, mesh))["authz_errors"]
        report.authz_errors = authz_after - authz_before
    report.duration_s = time.monotonic() - began
    await asyncio.to_thread(_settle_audit, mesh, report)
    return report


def _audit_ids(paths: list[Path]) -> tuple[set[str], int, int, bool]:
    store, merged = merge_stores([p for p in paths if p.is_file()])
    with store:
        ids = {str(r.record.decision_id) for r in store.query(AuditQuery(limit=10_000_000))}
        ok = verify_store(store).ok
    return ids, merged.duplicates, len(merged.conflicts), ok


def _settle_audit(mesh: LocalMesh, report: ChaosReport, timeout_s: float = 60.0) -> None:
    """Wait (bounded) for the agents to ship every decision; then count."""
    deadline = time.monotonic() + timeout_s
    while True:
        ids, duplicates, conflicts, ok = _audit_ids(mesh.audit_dbs)
        missing = report.decisions - ids
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    report.audit_lost = len(missing)
    report.missing = sorted(missing)[:50]
    report.audit_duplicates = duplicates
    report.audit_conflicts = conflicts
    report.audit_verified = ok


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"median {statistics.median(values):.2f} s, min {min(values):.2f}, max {max(values):.2f}"
        f" (n={len(values)})"
    )


def describe(report: ChaosReport) -> str:
    """The report as plain lines (printed by the suite, for a person reading CI output)."""
    lines = [
        f"duration {report.duration_s:.0f} s; public {report.public_sent} sent,"
        f" {len(report.public_failed)} failed; restricted {report.restricted_sent} sent,"
        f" {report.restricted_off_prem} off-prem, {report.restricted_refused} refused;"
        f" ext_authz errors at the edge {report.authz_errors}",
        f"pushes {report.pushes}; steady push served: {summary(report.pushes_served)};"
        f" edge ADS reconnects with no fault in progress {report.steady_ads_reconnects}",
        f"audit: {len(report.decisions)} decisions, {report.audit_lost} lost,"
        f" {report.audit_duplicates} duplicate copies, {report.audit_conflicts} conflicts,"
        f" chains verified: {report.audit_verified}",
    ]
    for fault in report.faults:
        lines.append(
            f"- {fault.name}: push served {fault.push_served_s}, edge replica"
            f" {fault.edge_replica_before}->{fault.edge_replica_after} reconnect"
            f" {fault.edge_reconnect_s} versions kept {fault.versions_kept}, nacks {fault.nacks},"
            f" config changes {fault.config_changes}, join {fault.join_ok} renew {fault.renew_ok},"
            f" leader {fault.leader_before} -> {fault.leader_after}"
            f" (moved in {fault.leader_moved_s}; {fault.leaders_after} leading after)"
        )
    lines.extend(f"  failed: {failure}" for failure in report.public_failed[:20])
    return "\n".join(lines)
