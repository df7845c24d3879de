"""The reconciler: store events → debounce → one evaluation → every node's snapshot.

Watches the bundle, the node registrations and the usage counters, coalesces bursts of
events, evaluates the current bundle for every node on a worker thread, and publishes the
snapshots all at once, or none: a bundle that fails anywhere is refused and the last good
snapshots keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol, Self, runtime_checkable

from tiermesh.controlplane.api import NodeInfo, TenantUsage, usage_month
from tiermesh.controlplane.bundle import (
    BundleOutcome,
    Compiler,
    Finding,
    PlanAwareCompiler,
    Stage,
    compile_findings,
    evaluate_bundle,
)
from tiermesh.controlplane.bundle.evaluate import NodePlanner, load_engine, with_usage
from tiermesh.controlplane.bundle.plan_classes import ClassKey, ProbeMemo, class_key
from tiermesh.controlplane.metrics import note_reconcile
from tiermesh.controlplane.model import plan_callers
from tiermesh.controlplane.reconciler.clock import Clock, MonotonicClock
from tiermesh.controlplane.reconciler.heap import FrozenHeap
from tiermesh.controlplane.reconciler.incremental import (
    FleetState,
    Replanned,
    callee_node_id,
    fleet_state,
    health_touched,
    mesh_touched,
)
from tiermesh.controlplane.reconciler.registration import (
    InvalidRegistration,
    Registration,
    read_registration,
    registration_digest,
)
from tiermesh.controlplane.reconciler.results import ReconcileError, ReconcileResult
from tiermesh.controlplane.store import (
    Bundle,
    EventKind,
    JsonScalar,
    NodeRecord,
    Store,
    StoreError,
    WatchCompacted,
    WatchEvent,
)
from tiermesh.controlplane.store import Snapshot as PrefixSnapshot
from tiermesh.rego import PolicyEngine, PolicyError
from tiermesh.tasks import cancel_and_wait
from tiermesh.xds import Snapshot

__all__ = [
    "BUNDLE_PREFIX",
    "NODES_PREFIX",
    "USAGE_PREFIX",
    "HealthAwareCompiler",
    "PlansHook",
    "Reconciler",
    "SnapshotSink",
]

BUNDLE_PREFIX: Final = "bundle/"
NODES_PREFIX: Final = "nodes/"
USAGE_PREFIX: Final = "usage/"
_MICRO: Final = 1_000_000

log = logging.getLogger(__name__)


class SnapshotSink(Protocol):
    """Where snapshots go: `tiermesh.xds.SnapshotCache` fits. Called on the event loop."""

    def set_snapshot(self, key: str, snapshot: Snapshot) -> bool: ...

    def clear_snapshot(self, key: str) -> None: ...


@runtime_checkable
class HealthAwareCompiler(Compiler, Protocol):
    """A :class:`Compiler` that can compile with some nodes reported unhealthy
    (:class:`~tiermesh.controlplane.reconciler.wiring.MeshCompiler` is one)."""

    def with_unhealthy_nodes(self, node_ids: frozenset[str], /) -> Compiler:
        """The compiler that serves the backends hosted by ``node_ids`` as unhealthy."""
        ...


PlansHook = Callable[[ReconcileResult, BundleOutcome], Awaitable[None]]
"""Called after every reconcile whose bundle was evaluated (published or refused) with the
result and the evaluation (every node's plan); awaited under the reconcile lock, after the
snapshots were set. What it raises is logged and ignored."""


def _spent_usd(value: bytes) -> float | None:
    """USD spent according to one usage counter's JSON; None when it is unreadable."""
    try:
        cost_micro = int(json.loads(value)["cost_micro"])
    except (ValueError, KeyError, TypeError):
        return None
    return max(cost_micro, 0) / _MICRO


def _usage_tenant(key: str, month: str) -> str | None:
    """The tenant of usage counter ``key`` (``usage/<month>/<tenant>``) when the counter is
    of ``month``; None for another month's counter or a key of another shape."""
    counter_month, _, tenant = key.removeprefix(USAGE_PREFIX).partition("/")
    return tenant if counter_month == month and tenant and "/" not in tenant else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _usage(entries: Sequence[tuple[str, bytes]], month: str) -> dict[str, TenantUsage]:
    usage: dict[str, TenantUsage] = {}
    for key, value in entries:
        tenant = _usage_tenant(key, month)
        if tenant is None:
            continue
        spent = _spent_usd(value)
        if spent is None:
            log.warning("usage counter of tenant %r is unreadable; counted as 0", tenant)
            continue
        usage[tenant] = TenantUsage(spent_usd=spent)
    return usage


class Reconciler:
    """Keeps ``cache`` equal to what the store's bundle compiles to, for every node.

    Nodes: every registration in the store (decoded by
    :func:`~tiermesh.controlplane.reconciler.registration.node_from_registration`; an
    unreadable one is skipped and logged) plus ``static_nodes`` (a registration with the
    same id wins). Data: the bundle's documents, with ``data.usage`` read from the store's
    usage counters at each reconcile (see Usage events for which changes trigger one).

    Health: a registration whose latest load report says ``healthy: false`` puts its node
    in the unhealthy set, read at each reconcile with the registrations; a
    :class:`HealthAwareCompiler` compiles with it (every node's Envoy then gets the
    backends hosted by those nodes as ``UNHEALTHY`` endpoints), any other compiler
    ignores it. A load report that leaves the set as it was compiles to the same
    snapshots: same versions, nothing published.

    Each reconcile loads the bundle into a fresh engine from ``engine_factory`` and runs
    ``compiler`` for each node on the reconciler's own worker thread (so engines that
    must stay on one thread, like regorus, are fine). Snapshots are set only when every
    node planned, compiled and verified without an error (plan violations count as errors
    unless ``refuse_violations`` is False); otherwise nothing is set, the findings are
    logged and kept in :attr:`last_error`, and the previous snapshots keep serving.
    Snapshots of nodes that disappeared are cleared after a successful reconcile.

    Node events: a ``nodes/`` event that leaves the registration as reconciles read it
    (:func:`~tiermesh.controlplane.reconciler.registration.registration_digest`: all of
    it but the load report, of which only ``healthy`` counts) is dropped before the
    debounce and counted in :attr:`unchanged_node_events`: agents report load about once
    a second, and a reconcile evaluates the policy for every node. New registrations,
    deletes and any other change (identity, health, ports, endpoints, an unreadable
    document) go on as events. The digests compared against are those of the ``nodes/``
    snapshot the watch started from (:meth:`start`, and the resync after a compacted
    watch), kept up to date by the watch's own events.

    Node events alone (a join, a leave, a health flip, new ports) are reconciled
    incrementally once a full reconcile has succeeded: the changed registrations are
    read from the events themselves (no store read), only the nodes whose plan input
    changed are planned (from their node class's plan when it shares one, see
    :mod:`~tiermesh.controlplane.bundle.plan_classes`, with the engine the full
    reconcile loaded, kept for this), and only the nodes the change touches are
    compiled, verified and set (:mod:`~tiermesh.controlplane.reconciler.incremental`:
    the changed nodes, the callees whose mesh callers or probe paths changed, and with a
    :class:`HealthAwareCompiler` the users of backends hosted by a node whose health
    flipped); every other snapshot is the one a full reconcile would give, so it stays.
    The result lists every node, as a full one does; ``on_plans`` sees only the touched
    nodes. A bundle event, a month boundary, a compacted or failed watch, a refused
    reconcile, a budget crossing together with node events, and :meth:`reconcile_now`
    make the next reconcile full. Usage counters are those the latest full reconcile or
    budget crossing read (for the shipped policy nothing else of them matters).

    Usage events: nodes report spend every few seconds, so a ``usage/<month>/<tenant>``
    change of the current month (other months' changes are dropped and counted as
    unchanged) schedules a reconcile only when it moves the tenant across its catalog
    ``monthly_budget_usd`` in either direction (a counter reset or delete moves it back)
    compared with what the latest reconcile read; every other change is dropped before the
    debounce and counted in :attr:`unchanged_usage_events`, crossings in
    :attr:`budget_crossings`. Once a full reconcile has succeeded, a crossing is
    reconciled without one: the current month's counters are read, a fresh engine is
    loaded with them, each node class's plan is evaluated once (a node planned alone,
    once), and only the members of the classes whose plan changed (and the nodes planned
    alone) are planned, compiled, verified and set again, with the callees whose mesh
    callers changed; a class whose plan is the same keeps every member's plan and
    snapshot untouched, so the cost grows with the classes, not the nodes. The test
    mirrors the shipped policy
    (``policies/budget/budget.rego``: ``exhausted(tenant)`` is ``spent >=
    monthly_budget_usd`` with ``spent`` = ``cost_micro / 10^6``, 0 without a counter); a
    bundle whose policy reads ``data.usage`` differently gets its usage changes only with
    the next reconcile something else triggers. Budgets come from the catalog of the
    latest evaluated bundle (none before the first reconcile, which reads usage anyway).
    Reconciles for any other reason read all current counters.

    Month boundaries: counters are per UTC calendar month (``usage/<YYYY-MM>/<tenant>``,
    see :func:`~tiermesh.controlplane.api.usage_month`) and ``data.usage`` is the current
    month's, by ``wall_clock``. Every ``month_check_s`` (on ``clock``) the reconciler
    checks whether the month changed since the latest reconcile read the counters, and
    if so schedules one: spend starts at zero, so tenants whose budget was spent last
    month get their normal chains back. Past months' counters stay in the store.

    Debounce: the first event starts a quiet period of ``debounce_s``; every further
    event restarts it, but a reconcile starts at most ``max_delay_s`` after the first.
    Events during a reconcile cause one more reconcile after it. Store outages and
    compacted watches are retried every ``retry_s``.

    ``on_plans`` (see :data:`PlansHook`) sees each evaluation, e.g. to audit the plans.

    Heap: with ``freeze_heap``, what is alive after each successful reconcile (plans,
    snapshots, the server's streams) is kept out of later full garbage collections
    (:class:`~tiermesh.controlplane.reconciler.heap.FrozenHeap`; process-wide, so for
    the one control plane of a process); :meth:`aclose` unfreezes it.

    Task safety: use from the event loop that owns ``store`` and ``cache``; one
    :meth:`start` per instance. :meth:`aclose` stops the watches and the loop.
    """

    def __init__(
        self,
        store: Store,
        engine_factory: Callable[[], PolicyEngine],
        compiler: Compiler,
        cache: SnapshotSink,
        *,
        debounce_s: float = 0.1,
        max_delay_s: float | None = None,
        clock: Clock | None = None,
        static_nodes: Sequence[NodeInfo] = (),
        refuse_violations: bool = True,
        retry_s: float = 1.0,
        on_plans: PlansHook | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        month_check_s: float = 60.0,
        freeze_heap: bool = False,
    ) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0, got {debounce_s}")
        self._store = store
        self._engine_factory = engine_factory
        self._compiler = compiler
        self._cache = cache
        self._debounce_s = debounce_s
        self._max_delay_s = max_delay_s if max_delay_s is not None else max(1.0, 10 * debounce_s)
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._static_nodes = tuple(static_nodes)
        self._refuse_violations = refuse_violations
        self._retry_s = retry_s
        self._on_plans = on_plans
        self._wall_clock = wall_clock
        self._month_check_s = month_check_s
        self._usage_month = usage_month(wall_clock())
        self._outcome: BundleOutcome | None = None
        self._unhealthy: frozenset[str] = frozenset()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reconcile")
        self._events = 0
        self._node_digests: dict[str, bytes] = {}
        self._unchanged_node_events = 0
        self._budgets: dict[str, float] = {}
        self._exhausted: frozenset[str] = frozenset()
        self._spent: dict[str, float] = {}
        self._unchanged_usage_events = 0
        self._budget_crossings = 0
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._published: dict[str, str] = {}
        self._count = 0
        self._serving_revision = 0
        self._serving_sha256 = ""
        self._serving_provenance: Mapping[str, JsonScalar] = MappingProxyType({})
        self._served_bundle: Bundle | None = None
        self._full = True
        self._node_changes: dict[str, bytes | None] = {}
        # node id → (registration, what it reads as), of the latest full read.
        self._registrations: dict[str, tuple[bytes, Registration]] = {}
        self._settings_changed: set[str] = set()
        self._usage_changed = False
        self._fleet: FleetState | None = None
        self._probe_memo = ProbeMemo()
        self._incremental_count = 0
        self._heap = FrozenHeap() if freeze_heap else None
        self.last_error: ReconcileError | None = None
        """Why the latest reconcile was refused; None once one succeeds."""
        self.last_result: ReconcileResult | None = None
        """The latest reconcile, successful or not."""

    # -- state ------------------------------------------------------------------------------

    @property
    def bundle_revision(self) -> int:
        """Revision of the bundle whose snapshots are served (0: none yet)."""
        return self._serving_revision

    @property
    def bundle_sha256(self) -> str:
        return self._serving_sha256

    @property
    def provenance(self) -> Mapping[str, JsonScalar]:
        """Provenance of the served bundle (git commit, author, dirty flag, pusher)."""
        return self._serving_provenance

    @property
    def served_bundle(self) -> Bundle | None:
        """The bundle whose snapshots are served (None: none yet), as first read: its
        ``etcd_revision`` is the store revision of the reconcile that first published it
        (later reconciles of the same bundle leave it as it is)."""
        return self._served_bundle

    async def next_served_bundle(self, after_revision: int) -> Bundle:
        """The served bundle once its revision differs from ``after_revision`` (at once if
        it already does). Many tasks may wait; each reconcile wakes them. Cancel to stop."""
        async with self._done:
            while self._served_bundle is None or self._served_bundle.revision == after_revision:
                await self._done.wait()
            return self._served_bundle

    @property
    def reconcile_count(self) -> int:
        return self._count

    @property
    def incremental_count(self) -> int:
        """Reconciles that re-planned only the nodes node events touched (see Node
        events), since construction."""
        return self._incremental_count

    @property
    def unchanged_node_events(self) -> int:
        """``nodes/`` events dropped because they changed nothing a reconcile reads (load
        reports with health unchanged), since :meth:`start`."""
        return self._unchanged_node_events

    @property
    def unchanged_usage_events(self) -> int:
        """``usage/`` events dropped because they moved no tenant across its budget, since
        :meth:`start`."""
        return self._unchanged_usage_events

    @property
    def budget_crossings(self) -> int:
        """``usage/`` events that moved a tenant across its budget (each schedules a
        reconcile), since :meth:`start`."""
        return self._budget_crossings

    @property
    def budgets(self) -> Mapping[str, float]:
        """Tenant → ``monthly_budget_usd`` in the catalog of the latest evaluated bundle."""
        return MappingProxyType(dict(self._budgets))

    @property
    def tenant_spend(self) -> Mapping[str, float]:
        """Tenant → USD spent: the counters the latest reconcile read, updated by every
        ``usage/`` event since (an unreadable counter is left out, as reconciles do)."""
        return MappingProxyType(dict(self._spent))

    @property
    def exhausted_tenants(self) -> frozenset[str]:
        """Tenants whose spend had reached their budget at the latest reconcile."""
        return self._exhausted

    @property
    def published(self) -> Mapping[str, str]:
        """Node id → version of the snapshot this reconciler set for it."""
        return MappingProxyType(dict(self._published))

    # -- lifetime ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start watching from the current store revision and schedule a first reconcile.

        Returns at once: the first reconcile runs in the background (see
        :meth:`wait_for`). Raises ``StoreUnavailable`` if the store cannot be read.
        """
        if self._tasks:
            raise RuntimeError("reconciler already started")
        bundle_rev = (await self._store.read_prefix(BUNDLE_PREFIX)).revision
        nodes = await self._store.read_prefix(NODES_PREFIX)
        self._remember_nodes(nodes)
        usage_rev = (await self._store.read_prefix(USAGE_PREFIX)).revision
        self._wake.set()
        self._tasks = [
            asyncio.create_task(self._loop(), name="reconcile-loop"),
            asyncio.create_task(
                self._watch(BUNDLE_PREFIX, bundle_rev, changes=self._needs_full),
                name="watch-bundle",
            ),
            asyncio.create_task(
                self._watch(
                    NODES_PREFIX,
                    nodes.revision,
                    changes=self._node_changed,
                    resync=self._remember_nodes,
                ),
                name="watch-nodes",
            ),
            asyncio.create_task(
                self._watch(USAGE_PREFIX, usage_rev, changes=self._usage_crossed),
                name="watch-usage",
            ),
            asyncio.create_task(self._month_boundaries(), name="month-boundaries"),
        ]

    async def aclose(self) -> None:
        """Stop watching and reconciling. Idempotent; snapshots already set stay set."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self._drop_fleet()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._heap is not None:
            self._heap.release()

    # -- waiting ----------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[ReconcileResult], bool], *, timeout_s: float = 10.0
    ) -> ReconcileResult:
        """Wait until a reconcile's result satisfies ``predicate`` (the latest one counts).

        Raises ``TimeoutError`` after ``timeout_s`` (real seconds).
        """
        async with asyncio.timeout(timeout_s), self._done:
            while self.last_result is None or not predicate(self.last_result):
                await self._done.wait()
            return self.last_result

    # -- event handling ---------------------------------------------------------------------

    def _poke(self) -> None:
        self._events += 1
        self._wake.set()

    def settings_changed(self, node_id: str | None = None) -> None:
        """Schedule a reconcile because compiler settings changed outside the store's
        registrations as the reconciler read them: of ``node_id`` alone (its snapshot and
        those of the nodes its plan calls over the mesh, whose listeners admit it, are
        compiled again; the next reconcile stays incremental when it may), or of every
        node (None: a full reconcile). Call on the event loop."""
        if node_id is None:
            self._full = True
        else:
            self._settings_changed.add(node_id)
        self._poke()

    def _needs_full(self, _event: WatchEvent) -> bool:
        """A bundle event: the next reconcile plans every node."""
        self._full = True
        return True

    def _drop_fleet(self) -> None:
        """Forget the incremental state (the next reconcile is full); closes its engine."""
        fleet, self._fleet = self._fleet, None
        if fleet is not None:
            fleet.engine.close()

    def _remember_nodes(self, nodes: PrefixSnapshot) -> None:
        """Start comparing node events against ``nodes`` (read at the watch's revision)."""
        self._full = True
        self._node_digests = {
            entry.key: registration_digest(entry.value) for entry in nodes.entries
        }

    def _node_changed(self, event: WatchEvent) -> bool:
        """Whether ``event`` changes what a reconcile reads of its node; remembers it."""
        node_id = event.key.removeprefix(NODES_PREFIX)
        if event.kind is EventKind.DELETE:
            self._node_digests.pop(event.key, None)
            self._node_changes[node_id] = None
            return True
        digest = registration_digest(event.value)
        if self._node_digests.get(event.key) == digest:
            self._unchanged_node_events += 1
            return False
        self._node_digests[event.key] = digest
        self._node_changes[node_id] = event.value
        return True

    async def _month_boundaries(self) -> None:
        """Poke the loop once ``wall_clock`` is in another month than the latest reconcile
        read the counters of (class doc: Month boundaries)."""
        while True:
            await self._clock.sleep(self._month_check_s)
            if usage_month(self._wall_clock()) != self._usage_month:
                log.info("a new usage month began; reconciling with its counters")
                self._full = True
                self._poke()

    def _usage_crossed(self, event: WatchEvent) -> bool:
        """Whether ``event`` moves its tenant across its budget compared with the latest
        reconcile (class doc: Usage events)."""
        tenant = _usage_tenant(event.key, usage_month(self._wall_clock()))
        if tenant is None:
            self._unchanged_usage_events += 1
            return False
        budget = self._budgets.get(tenant)
        read = None if event.kind is EventKind.DELETE else _spent_usd(event.value)
        spent = read or 0.0
        if read is None:
            self._spent.pop(tenant, None)
        else:
            self._spent[tenant] = read
        if budget is not None and (spent >= budget) != (tenant in self._exhausted):
            self._budget_crossings += 1
            self._usage_changed = True
            log.info(
                "tenant %s: spend %.6f USD %s its budget of %g USD; reconciling",
                tenant,
                spent,
                "reached" if spent >= budget else "is back under",
                budget,
            )
            return True
        self._unchanged_usage_events += 1
        return False

    def _note_budgets(
        self, outcome: BundleOutcome | None, usage: Mapping[str, TenantUsage]
    ) -> None:
        """Remember the budgets of ``outcome``'s catalog (kept when it has none) and which
        tenants ``usage`` exhausts, for :meth:`_usage_crossed`."""
        if outcome is not None and outcome.documents.catalog is not None:
            self._budgets = {
                t.name: float(t.monthly_budget_usd) for t in outcome.documents.catalog.tenants
            }
        self._spent = {tenant: spent.spent_usd for tenant, spent in usage.items()}
        self._exhausted = frozenset(
            tenant
            for tenant, spent in usage.items()
            if tenant in self._budgets and spent.spent_usd >= self._budgets[tenant]
        )

    async def _watch(
        self,
        prefix: str,
        after_revision: int,
        *,
        changes: Callable[[WatchEvent], bool] | None = None,
        resync: Callable[[PrefixSnapshot], None] | None = None,
    ) -> None:
        """Poke the loop for every event under ``prefix`` that ``changes`` (default: all);
        after a compacted watch, re-read the prefix, hand it to ``resync`` and poke."""
        revision = after_revision
        while True:
            try:
                async with self._store.watch(prefix, after_revision=revision) as events:
                    async for event in events:
                        revision = event.revision
                        if changes is None or changes(event):
                            self._poke()
            except WatchCompacted:
                log.warning("watch on %s compacted; resyncing", prefix)
                self._full = True
                with contextlib.suppress(StoreError):
                    current = await self._store.read_prefix(prefix)
                    revision = current.revision
                    if resync is not None:
                        resync(current)
                self._poke()
            except StoreError as exc:
                log.warning(
                    "watch on %s failed (%s); retrying in %.1f s", prefix, exc, self._retry_s
                )
                await self._clock.sleep(self._retry_s)
                self._full = True
                self._poke()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            seen = self._events
            first = self._clock.now()
            while self._debounce_s > 0:
                await self._clock.sleep(self._debounce_s)
                if self._events == seen or self._clock.now() - first >= self._max_delay_s:
                    break
                seen = self._events
            self._wake.clear()
            coalesced = self._events
            self._events = 0
            result = await self._run(coalesced, incremental=True)
            if result.store_failed:
                await self._clock.sleep(self._retry_s)
                self._wake.set()

    # -- one reconcile ----------------------------------------------------------------------

    async def reconcile_now(self, *, events: int = 0) -> ReconcileResult:
        """Reconcile once, now (serialised with the background loop); returns the result.

        Never raises for a bad bundle or an unreachable store: see the result and
        :attr:`last_error`.
        """
        return await self._run(events, incremental=False)

    async def _run(self, events: int, *, incremental: bool) -> ReconcileResult:
        """One reconcile under the lock: of the node changes gathered since the latest
        one when ``incremental`` and the fleet state allows it (class doc: Node events),
        else full."""
        async with self._lock:
            self._count += 1
            started_at = self._clock.now()
            began = time.perf_counter()
            heap = self._heap
            try:
                with heap.hold() if heap is not None else contextlib.nullcontext():
                    result = await self._dispatch(
                        self._count, incremental=incremental, started_at=started_at,
                        began=began, events=events,
                    )  # fmt: skip
                    if result.ok and heap is not None:
                        heap.settle()
            except BaseException:
                self._full = True
                raise
            if not result.ok:
                self._full = True
            note_reconcile(result.ok, result.duration_s)
            outcome, self._outcome = self._outcome, None
            if self._on_plans is not None and outcome is not None:
                try:
                    await self._on_plans(result, outcome)
                except Exception:
                    log.exception("the plans hook failed for reconcile %d", result.number)
            self.last_result = result
            if result.ok:
                self.last_error = None
            else:
                self.last_error = ReconcileError(result.bundle_revision, result.errors)
                log.error("%s", self.last_error)
        async with self._done:
            self._done.notify_all()
        return result

    async def _dispatch(
        self, number: int, *, incremental: bool, started_at: float, began: float, events: int
    ) -> ReconcileResult:
        """The reconcile ``_run`` does: full, after a budget crossing, or of node events."""
        fleet = self._fleet if incremental and not self._full else None
        if (
            fleet is not None
            and self._usage_changed
            and (
                self._node_changes
                or self._settings_changed
                or usage_month(self._wall_clock()) != self._usage_month
            )
        ):
            fleet = None  # spend and nodes changed together, or a new month: full
        if fleet is None:
            self._full = False
            self._node_changes = {}
            self._settings_changed = set()
            self._usage_changed = False
            return await self._reconcile(number, started_at, began, events)
        self._incremental_count += 1
        if self._usage_changed:
            self._usage_changed = False
            return await self._reconcile_usage(
                fleet, number, started_at=started_at, began=began, events=events
            )
        changes, self._node_changes = self._node_changes, {}
        settings, self._settings_changed = self._settings_changed, set()
        return await self._reconcile_nodes(
            fleet, number, started_at=started_at, began=began, events=events,
            changes=changes, settings=settings,
        )  # fmt: skip

    async def _read_state(
        self,
    ) -> tuple[Bundle, list[NodeInfo], list[str], dict[str, TenantUsage], frozenset[str]]:
        bundle = await self._store.get_bundle()
        records = await self._store.list_nodes()
        month = usage_month(self._wall_clock())
        usage_snapshot = await self._store.read_prefix(f"{USAGE_PREFIX}{month}/")
        nodes = {node.id: node for node in self._static_nodes}
        skipped: list[str] = []
        unhealthy: set[str] = set()
        # A registration read as before is not decoded again (a push re-reads every one).
        known, self._registrations = self._registrations, {}
        for record in records:
            cached = known.get(record.node_id)
            if cached is not None and cached[0] == record.registration:
                registration = cached[1]
            else:
                try:
                    registration = read_registration(record)
                except InvalidRegistration as exc:
                    log.warning("%s; the node gets no snapshot", exc)
                    skipped.append(record.node_id)
                    continue
            self._registrations[record.node_id] = (record.registration, registration)
            nodes[record.node_id] = registration.node
            if not registration.healthy:
                unhealthy.add(record.node_id)
        usage = _usage([(entry.key, entry.value) for entry in usage_snapshot.entries], month)
        self._usage_month = month
        return bundle, [nodes[n] for n in sorted(nodes)], skipped, usage, frozenset(unhealthy)

    def _note_health(self, unhealthy: frozenset[str]) -> None:
        before, self._unhealthy = self._unhealthy, unhealthy
        for node in sorted(unhealthy - before):
            log.warning("node %s reports unhealthy; its backends are served UNHEALTHY", node)
        for node in sorted(before - unhealthy):
            log.info("node %s no longer reports unhealthy", node)

    def _evaluate(
        self,
        files: Mapping[str, bytes],
        nodes: Sequence[NodeInfo],
        usage: Mapping[str, TenantUsage],
        unhealthy: frozenset[str],
    ) -> tuple[BundleOutcome, PolicyEngine]:
        """The evaluation, and its engine still loaded (the caller closes it)."""
        engine = self._engine_factory()
        try:
            outcome = evaluate_bundle(
                files,
                engine,
                nodes=nodes,
                compiler=self._bound_compiler(unhealthy),
                usage=usage,
                refuse_violations=self._refuse_violations,
                probe_memo=self._probe_memo,
            )
        except BaseException:
            engine.close()
            raise
        return outcome, engine

    def _bound_compiler(self, unhealthy: frozenset[str]) -> Compiler:
        compiler: Compiler = self._compiler
        if isinstance(compiler, HealthAwareCompiler):
            compiler = compiler.with_unhealthy_nodes(unhealthy)
        return compiler

    async def _reconcile(
        self, number: int, started_at: float, began: float, events: int
    ) -> ReconcileResult:
        self._outcome = None
        try:
            bundle, nodes, skipped, usage, unhealthy = await self._read_state()
        except StoreError as exc:
            return ReconcileResult(
                number, False, 0, "", 0, (), errors=(Finding(Stage.READ, f"store: {exc}"),),
                started_at=started_at, duration_s=time.perf_counter() - began, events=events,
                store_failed=True,
            )  # fmt: skip
        node_ids = tuple(node.id for node in nodes)
        base = ReconcileResult(
            number, True, bundle.revision, bundle.sha256, bundle.etcd_revision, node_ids,
            skipped=tuple(skipped), started_at=started_at, events=events,
            provenance=MappingProxyType(dict(bundle.provenance)),
            unhealthy=tuple(sorted(unhealthy)),
        )  # fmt: skip
        self._note_health(unhealthy)

        def result(ok: bool, **changes: Any) -> ReconcileResult:
            return replace(base, ok=ok, duration_s=time.perf_counter() - began, **changes)

        if bundle.revision == 0:
            self._budgets = {}
            self._note_budgets(None, usage)
            return result(True)
        loop = asyncio.get_running_loop()
        self._drop_fleet()
        try:
            outcome, engine = await loop.run_in_executor(
                self._executor, self._evaluate, bundle.files, nodes, usage, unhealthy
            )
        except PolicyError as exc:
            self._note_budgets(None, usage)
            return result(False, errors=(Finding(Stage.REGO, f"policy engine: {exc}"),))
        self._outcome = outcome
        self._note_budgets(outcome, usage)
        missing = [node for node in node_ids if node not in outcome.snapshots]
        if not outcome.ok or missing or outcome.planner is None:
            engine.close()
            if not outcome.ok:
                return result(False, errors=outcome.errors, warnings=outcome.warnings)
            finding = Finding(Stage.COMPILE, f"no snapshot compiled for nodes {missing}")
            return result(False, errors=(finding,), warnings=outcome.warnings)
        self._fleet = fleet_state(
            bundle, usage, engine, outcome, unhealthy=unhealthy, skipped=skipped
        )
        published = [
            node for node in node_ids if self._cache.set_snapshot(node, outcome.snapshots[node])
        ]
        for node in node_ids:
            self._published[node] = outcome.snapshots[node].version
        removed = sorted(set(self._published) - set(node_ids))
        for node in removed:
            self._cache.clear_snapshot(node)
            del self._published[node]
        self._serving_revision = bundle.revision
        self._serving_sha256 = bundle.sha256
        self._serving_provenance = bundle.provenance
        served = self._served_bundle
        if served is None or (served.revision, served.sha256) != (bundle.revision, bundle.sha256):
            self._served_bundle = bundle
        return result(
            True, published=tuple(published), removed=tuple(removed), warnings=outcome.warnings
        )

    # -- node events alone -------------------------------------------------------------------

    def _apply_changes(
        self, fleet: FleetState, changes: Mapping[str, bytes | None]
    ) -> tuple[dict[str, NodeInfo], frozenset[str], set[str], list[NodeInfo]]:
        """The nodes, unhealthy set and skipped registrations after ``changes`` (node id →
        registration, None: deleted), read as :meth:`_read_state` reads them; and the
        nodes whose plan input changed or that have no plan yet."""
        static = {node.id: node for node in self._static_nodes}
        nodes = dict(fleet.nodes)
        unhealthy = set(fleet.unhealthy)
        skipped = set(fleet.skipped)
        replan: list[NodeInfo] = []
        for node_id, value in changes.items():
            unhealthy.discard(node_id)
            skipped.discard(node_id)
            nodes.pop(node_id, None)
            if node_id in static:
                nodes[node_id] = static[node_id]
            if value is not None:
                try:
                    registration = read_registration(NodeRecord(node_id, value, 0, 0))
                except InvalidRegistration as exc:
                    log.warning("%s; the node gets no snapshot", exc)
                    skipped.add(node_id)
                else:
                    nodes[node_id] = registration.node
                    if not registration.healthy:
                        unhealthy.add(node_id)
            node = nodes.get(node_id)
            if node is not None and (
                node_id not in fleet.plans or fleet.nodes.get(node_id) != node
            ):
                replan.append(node)
        return nodes, frozenset(unhealthy), skipped, replan

    def _replan(
        self,
        fleet: FleetState,
        nodes: Mapping[str, NodeInfo],
        unhealthy: frozenset[str],
        replan: Sequence[NodeInfo],
        touched: Set[str],
        *,
        planner: NodePlanner | None = None,
    ) -> Replanned:
        """Plan ``replan`` (with ``planner``, default the fleet's) and compile every node
        the change touches (module :mod:`~tiermesh.controlplane.reconciler.incremental`);
        on the worker thread."""
        planner = planner if planner is not None else fleet.planner
        plans = {node_id: plan for node_id, plan in fleet.plans.items() if node_id in nodes}
        errors: list[Finding] = []
        warnings: dict[str, tuple[Finding, ...]] = {}
        for node in replan:
            planned = planner.plan(node)
            errors += planned.errors
            warnings[node.id] = planned.warnings
            if planned.plan is not None:
                plans[node.id] = planned.plan
            else:
                plans.pop(node.id, None)
        mesh, callers, probes = mesh_touched(fleet.callers, fleet.probes, plans.values())
        recompile = (set(touched) | mesh) & nodes.keys()
        if isinstance(self._compiler, HealthAwareCompiler):
            recompile |= health_touched(fleet.catalog, plans, unhealthy ^ fleet.unhealthy)
        compiler = self._bound_compiler(unhealthy)
        if isinstance(compiler, PlanAwareCompiler):
            compiler = compiler.with_plans(MappingProxyType(plans))
        snapshots: dict[str, Snapshot] = {}
        if not errors:
            for node_id in sorted(recompile):
                plan = plans.get(node_id)
                if plan is None:
                    continue
                try:
                    snapshots[node_id] = compiler(plan, fleet.catalog)
                except Exception as exc:  # noqa: BLE001 - any compiler failure is a finding
                    errors += [
                        Finding(Stage.COMPILE, message, node=node_id)
                        for message in compile_findings(exc)
                    ]
        return Replanned(plans, snapshots, tuple(errors), warnings, callers, probes)

    async def _reconcile_nodes(
        self,
        fleet: FleetState,
        number: int,
        *,
        started_at: float,
        began: float,
        events: int,
        changes: Mapping[str, bytes | None],
        settings: Set[str] = frozenset(),
    ) -> ReconcileResult:
        """Re-plan and recompile only what ``changes`` touch, and recompile the nodes of
        ``settings`` and their callees (class doc: Node events)."""
        nodes, unhealthy, skipped, replan = self._apply_changes(fleet, changes)
        self._note_health(unhealthy)
        loop = asyncio.get_running_loop()
        touched = set(changes) | set(settings)
        for node_id in settings:
            plan = fleet.plans.get(node_id)
            if plan is not None:
                touched |= {
                    callee
                    for spiffe in plan_callers([plan])
                    if (callee := callee_node_id(spiffe)) is not None
                }
        replanned = await loop.run_in_executor(
            self._executor, self._replan, fleet, nodes, unhealthy, replan, frozenset(touched)
        )
        return self._publish_replanned(
            fleet, replanned, nodes=nodes, unhealthy=unhealthy, skipped=skipped,
            replan=replan, planner=fleet.planner, number=number, started_at=started_at,
            began=began, events=events,
        )  # fmt: skip

    def _publish_replanned(
        self,
        fleet: FleetState,
        replanned: Replanned,
        *,
        nodes: Mapping[str, NodeInfo],
        unhealthy: frozenset[str],
        skipped: set[str],
        replan: Sequence[NodeInfo],
        planner: NodePlanner,
        number: int,
        started_at: float,
        began: float,
        events: int,
    ) -> ReconcileResult:
        """Set the snapshots ``replanned`` compiled (all or none) and bring ``fleet`` up
        to date with it; the result of the reconcile."""
        bundle = fleet.bundle
        node_ids = tuple(sorted(nodes))
        warnings = {**fleet.warnings, **replanned.warnings}
        outcome_ids = sorted(replanned.snapshots.keys() | {node.id for node in replan})
        self._outcome = BundleOutcome(
            planner.documents,
            tuple(nodes[node_id] for node_id in outcome_ids if node_id in nodes),
            MappingProxyType({n: replanned.plans[n] for n in outcome_ids if n in replanned.plans}),
            MappingProxyType(replanned.snapshots),
            replanned.errors,
            tuple(w for node_id in outcome_ids for w in warnings.get(node_id, ())),
            True,
        )
        all_warnings = fleet.other_warnings + tuple(
            w for node_id in node_ids for w in warnings.get(node_id, ())
        )
        base = ReconcileResult(
            number, True, bundle.revision, bundle.sha256, bundle.etcd_revision, node_ids,
            skipped=tuple(sorted(skipped)), started_at=started_at, events=events,
            provenance=MappingProxyType(dict(bundle.provenance)),
            unhealthy=tuple(sorted(unhealthy)), warnings=all_warnings,
        )  # fmt: skip
        missing = [n for n in node_ids if n not in replanned.plans]
        if replanned.errors or missing:
            errors = replanned.errors or (
                Finding(Stage.COMPILE, f"no snapshot compiled for nodes {missing}"),
            )
            return replace(base, ok=False, errors=errors, duration_s=time.perf_counter() - began)
        published = [
            node_id
            for node_id, snapshot in sorted(replanned.snapshots.items())
            if self._cache.set_snapshot(node_id, snapshot)
        ]
        for node_id, snapshot in replanned.snapshots.items():
            self._published[node_id] = snapshot.version
        removed = sorted(set(self._published) - set(node_ids))
        for node_id in removed:
            self._cache.clear_snapshot(node_id)
            del self._published[node_id]
        fleet.nodes = dict(nodes)
        fleet.unhealthy = unhealthy
        fleet.skipped = skipped
        fleet.plans = replanned.plans
        fleet.snapshots = {
            **{n: s for n, s in fleet.snapshots.items() if n in nodes},
            **replanned.snapshots,
        }
        fleet.warnings = {n: w for n, w in warnings.items() if n in nodes}
        fleet.callers, fleet.probes = replanned.callers, replanned.probes
        return replace(
            base,
            published=tuple(published),
            removed=tuple(removed),
            duration_s=time.perf_counter() - began,
        )

    # -- a budget crossing ---------------------------------------------------------------

    def _replan_usage(
        self, fleet: FleetState, usage: Mapping[str, TenantUsage]
    ) -> tuple[Replanned, NodePlanner | None, list[NodeInfo]]:
        """Plan the fleet against ``usage`` (class doc: Usage events), on the worker
        thread: each node class's plan is evaluated once, and only the members of classes
        whose plan changed (and nodes that plan alone) are planned and compiled again.
        The planner holds a fresh engine loaded with ``usage``; on errors it is closed and
        None is returned."""
        documents = with_usage(fleet.planner.documents, usage)
        engine = self._engine_factory()
        try:
            problems = load_engine(engine, documents)
            if problems:
                engine.close()
                return Replanned({}, {}, tuple(problems), {}, {}, {}), None, []
            planner = NodePlanner(
                engine,
                documents,
                fleet.catalog,
                refuse_violations=self._refuse_violations,
                probe_memo=self._probe_memo,
            )
            before = fleet.planner.classes
            groups: dict[ClassKey, list[NodeInfo]] = {}
            replan: list[NodeInfo] = []
            for node in fleet.nodes.values():
                if before.template_of(node) is None:
                    replan.append(node)  # planned alone: planned again
                else:
                    groups.setdefault(class_key(node), []).append(node)
            for members in groups.values():
                first = members[0]
                planner.plan(first)  # settles the class in this pass
                if planner.classes.template_of(first) != before.template_of(first):
                    replan += members
            replanned = self._replan(
                fleet,
                fleet.nodes,
                fleet.unhealthy,
                replan,
                frozenset(node.id for node in replan),
                planner=planner,
            )
        except BaseException:
            engine.close()
            raise
        if replanned.errors:
            engine.close()
            return replanned, None, replan
        return replanned, planner, replan

    async def _reconcile_usage(
        self, fleet: FleetState, number: int, *, started_at: float, began: float, events: int
    ) -> ReconcileResult:
        """Re-plan after a budget crossing: the current month's counters, every class
        evaluated once, only the classes whose plan changed planned, compiled and set
        again (class doc: Usage events)."""
        try:
            usage_snapshot = await self._store.read_prefix(f"{USAGE_PREFIX}{self._usage_month}/")
        except StoreError as exc:
            bundle = fleet.bundle
            return ReconcileResult(
                number, False, bundle.revision, bundle.sha256, bundle.etcd_revision, (),
                errors=(Finding(Stage.READ, f"store: {exc}"),), started_at=started_at,
                duration_s=time.perf_counter() - began, events=events, store_failed=True,
            )  # fmt: skip
        entries = [(entry.key, entry.value) for entry in usage_snapshot.entries]
        usage = _usage(entries, self._usage_month)
        loop = asyncio.get_running_loop()
        try:
            replanned, planner, replan = await loop.run_in_executor(
                self._executor, self._replan_usage, fleet, usage
            )
        except PolicyError as exc:
            replanned = Replanned(
                {}, {}, (Finding(Stage.REGO, f"policy engine: {exc}"),), {}, {}, {}
            )
            planner, replan = None, []
        result = self._publish_replanned(
            fleet, replanned, nodes=fleet.nodes, unhealthy=fleet.unhealthy,
            skipped=fleet.skipped, replan=replan,
            planner=planner if planner is not None else fleet.planner, number=number,
            started_at=started_at, began=began, events=events,
        )  # fmt: skip
        if result.ok and planner is not None:
            fleet.engine.close()
            fleet.engine, fleet.planner, fleet.usage = planner.engine, planner, usage
            self._note_budgets(None, usage)
        elif planner is not None:
            planner.engine.close()
        return result
