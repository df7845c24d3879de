"""The one place the real compiler gets plugged in.

Everything that compiles for real (the CLI's ``check``, ``push`` and ``diff``, and a
control plane starting a :class:`~tiermesh.controlplane.reconciler.Reconciler`) asks
:func:`default_compiler`. Tests inject their own :class:`Compiler` instead.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, replace

from tiermesh.controlplane.api import BackendPlan, Catalog, Plan, RoutePlan
from tiermesh.controlplane.bundle import Compiler
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.model import (
    AuthzSettings,
    MeshModel,
    MeshTlsSettings,
    NodeSettings,
    backends_hosted_by,
    plan_callers,
    plan_probe_paths,
)
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import Snapshot

__all__ = [
    "DEFAULT_APP_PORT",
    "DEFAULT_CACHE_SIZE",
    "CompileCache",
    "MeshCompiler",
    "default_compiler",
    "offline_compiler",
]

DEFAULT_APP_PORT = 10000
"""The app listener port of a node whose settings are not given."""

DEFAULT_CACHE_SIZE = 128
"""Verified snapshots a :func:`default_compiler` keeps (distinct compile inputs)."""

_OFFLINE_KEY = "offline-check-placeholder"
"""The API key offline checks compile with (see :func:`offline_compiler`)."""
_OFFLINE_AUTHZ_PORT = 10001
"""The ext_authz server port offline checks compile with (see :func:`offline_compiler`)."""


def _credentials_digest(settings: NodeSettings) -> bytes:
    """SHA-256 over the settings' credentials (names and keys, in name order).

    ``NodeSettings`` leaves its credentials out of its hash (so that hashing settings never
    feeds keys anywhere); this digest puts them back into cache keys without holding the
    keys themselves: a rotated key gives another digest, so the node is recompiled and
    gets the new SDS secret."""
    digest = hashlib.sha256()
    for name, key in sorted(settings.credentials.items()):
        for part in (name, key):
            data = part.encode()
            digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


class _Key:
    """(routes, backends, settings, credentials digest, unhealthy backends), hashed once:
    hashing a plan's routes walks all of it."""

    __slots__ = ("_hash", "backends", "credentials", "routes", "settings", "unhealthy")

    def __init__(
        self,
        routes: tuple[RoutePlan, ...],
        backends: tuple[BackendPlan, ...],
        settings: NodeSettings,
        credentials: bytes,
        unhealthy: frozenset[str],
    ) -> None:
        self.routes = routes
        self.backends = backends
        self.settings = settings
        self.credentials = credentials
        self.unhealthy = unhealthy
        self._hash = hash((routes, backends, settings, credentials, unhealthy))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Key):
            return NotImplemented
        return (
            self._hash == other._hash
            and self.credentials == other.credentials
            and self.unhealthy == other.unhealthy
            and (self.routes, self.backends, self.settings)
            == (other.routes, other.backends, other.settings)
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    key: _Key
    snapshot: Snapshot


class CompileCache:
    """Verified snapshots by everything they are compiled from, so that nodes with equal
    inputs share one :class:`~tiermesh.xds.Snapshot` object.

    What a snapshot depends on: the generators read the plan's ``routes`` and
    ``backends``, the node's :class:`NodeSettings` and which of the plan's backends are
    served unhealthy (``MeshModel.unhealthy_backends``), never the node id nor the rest of
    ``plan.node`` (resource names come from catalog names; Envoy tells nodes apart by
    their stream, not by resource names), nor ``violations``/``warnings``; the verifier
    reads the snapshot and the catalog. The key is (routes, backends, settings,
    unhealthy), ``unhealthy`` holding only the plan's own backends (a node reporting
    unhealthy misses the cache only for plans that use its backends); the catalog is
    held once: a different catalog (not equal to the held one) empties the
    cache. Compiling and verifying is a pure function of exactly these, so a snapshot
    found here is the one compiling this node's plan would produce, and it passed the
    verifier against this very catalog when it was stored: serving it is serving a
    verified snapshot. Only successes are stored; a failing input is compiled (and
    fails, naming its node) every time.

    Lookups by content hash the whole plan body (~0.4 ms for 200 routes) and, for a key
    stored by an earlier pass, compare it field by field (~5 ms); plans that share their
    ``routes`` and ``backends`` tuples (as one evaluation pass hands them out) are found
    by identity first, which costs neither.

    Bounded: the least recently used entry goes beyond ``size`` (0: nothing is kept).
    Thread-safe; compiling runs outside the lock, so two threads missing on one key
    both compile it and the later store wins (equal snapshots).
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.size = size
        self.hits = 0
        """Lookups answered from the cache (statistics; reset by :meth:`clear`)."""
        self.misses = 0
        """Lookups that had to compile."""
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        # (id(routes), id(backends), settings, digest, unhealthy) → an entry whose key holds
        # those very tuples (so the ids cannot be reused while the alias lives). A speed-up
        # only.
        self._aliases: dict[tuple[int, int, NodeSettings, bytes, frozenset[str]], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every snapshot, the held catalog and the statistics."""
        with self._lock:
            self._entries.clear()
            self._aliases.clear()
            self._catalog = None
            self.hits = self.misses = 0

    def _use_catalog(self, catalog: Catalog) -> None:
        # Caller holds the lock.
        if catalog is self._catalog:
            return
        if self._catalog is None or catalog != self._catalog:
            self._entries.clear()
            self._aliases.clear()
        self._catalog = catalog

    def get_or_compile(
        self,
        routes: tuple[RoutePlan, ...],
        backends: tuple[BackendPlan, ...],
        settings: NodeSettings,
        catalog: Catalog,
        compile_snapshot: Callable[[], Snapshot],
        *,
        unhealthy: frozenset[str] = frozenset(),
    ) -> Snapshot:
        """The snapshot stored for this input under ``catalog``; on a miss,
        ``compile_snapshot()`` (run outside the lock: it compiles and verifies exactly this
        input), kept under the key the lookup built (hashing a plan's routes walks all of
        it, so once per miss). ``unhealthy``: the names of ``backends`` served unhealthy.
        What ``compile_snapshot`` raises propagates and nothing is stored."""
        digest = _credentials_digest(settings)
        alias = (id(routes), id(backends), settings, digest, unhealthy)
        with self._lock:
            self._use_catalog(catalog)
            entry = self._aliases.get(alias)
            if (
                entry is None
                or entry.key.routes is not routes
                or entry.key.backends is not backends
            ):
                probe = _Key(routes, backends, settings, digest, unhealthy)
                entry = self._entries.get(probe)
                if entry is None:
                    self.misses += 1
                else:
                    if entry.key.routes is not routes or entry.key.backends is not backends:
                        # Equal, not identical (an earlier pass): re-key on these tuples
                        # so that the rest of this pass finds them by identity.
                        del self._entries[entry.key]
                        entry = _Entry(probe, entry.snapshot)
                        self._entries[probe] = entry
                    if len(self._aliases) >= 4 * self.size:
                        self._aliases.clear()
                    self._aliases[alias] = entry
            if entry is not None:
                self._entries.move_to_end(entry.key)
                self.hits += 1
                return entry.snapshot
        snapshot = compile_snapshot()
        if self.size == 0:
            return snapshot
        entry = _Entry(probe, snapshot)
        with self._lock:
            self._use_catalog(catalog)
            self._entries[probe] = entry
            self._entries.move_to_end(probe)
            self._aliases[alias] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return snapshot


def _admitted(
    mesh: MeshTlsSettings, node_id: str, callers: Mapping[str, frozenset[str]]
) -> tuple[str, ...]:
    """:func:`~tiermesh.controlplane.model.admitted_peers` of ``mesh.allowed_peers``,
    found from the node's callers rather than by walking every candidate:
    ``allowed_peers`` is sorted (:class:`MeshTlsSettings` keeps it so), so each caller is
    looked up by bisection, and a node's cost grows with its callers, not with the
    fleet (the registry's candidates are every other non-cloud node)."""
    candidates = mesh.allowed_peers
    prefix = f"spiffe://{mesh.trust_domain}/node/"
    found: list[str] = []
    for caller in callers.get(prefix + node_id, frozenset()):
        if caller == node_id:
            continue
        peer = prefix + caller
        low = bisect.bisect_left(candidates, peer)
        high = bisect.bisect_right(candidates, peer, lo=low)
        found += [peer] * (high - low)
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class _Calls:
    """Who calls whom in one pass's plans (callee SPIFFE ID → caller node ids, and →
    the health-check paths the callers check it on)."""

    callers: Mapping[str, frozenset[str]]
    probes: Mapping[str, frozenset[str]]


class MeshCompiler:
    """The control plane's compiler (see :func:`default_compiler`), for one set of
    unhealthy nodes and one pass's plans.

    Calling it compiles as if every node in :attr:`unhealthy_nodes` (all nodes reporting
    their model server down) were down: the catalog backends they host
    (``Backend.node``) are served with ``UNHEALTHY`` endpoints. :meth:`with_unhealthy_nodes`
    gives the compiler of another set, sharing settings and cache; the reconciler asks
    for it once per reconcile.

    Mesh admission: a node's inbound mTLS listener admits only the peers its settings
    allow (the registry's candidates) whose plans in this pass call it
    (:func:`~tiermesh.controlplane.model.plan_callers`, bound by :meth:`with_plans`, which
    :func:`~tiermesh.controlplane.bundle.evaluate_bundle` calls once every plan is
    known). A compiler not bound to plans knows no caller and admits no peer, so no
    inbound listener is compiled. A plan change that adds or removes a caller changes the
    callee's settings, hence its snapshot: the callee's listener is pushed again.

    Each instance is a pure function of ``(plan, catalog)``, safe from any thread.
    """

    __slots__ = ("_cache", "_calls", "_hosted", "_settings", "unhealthy_nodes")

    def __init__(
        self,
        settings_for: Callable[[str], NodeSettings],
        cache: CompileCache,
        unhealthy_nodes: Set[str] = frozenset(),
        calls: _Calls | None = None,
    ) -> None:
        self._settings = settings_for
        self._cache = cache
        self.unhealthy_nodes: frozenset[str] = frozenset(unhealthy_nodes)
        """Nodes whose backends are served unhealthy."""
        self._calls = calls
        # (catalog, its backends hosted by unhealthy_nodes) of the latest call: one
        # reconcile compiles every node against one catalog.
        self._hosted: tuple[Catalog, frozenset[str]] | None = None

    def with_unhealthy_nodes(self, node_ids: Set[str]) -> MeshCompiler:
        """This compiler for the unhealthy ``node_ids`` (same settings, cache, plans)."""
        if frozenset(node_ids) == self.unhealthy_nodes:
            return self
        return MeshCompiler(self._settings, self._cache, node_ids, self._calls)

    def with_plans(self, plans: Mapping[str, Plan]) -> MeshCompiler:
        """This compiler for one pass whose plans are ``plans`` (same settings, cache and
        unhealthy nodes): each node's inbound listener admits the nodes whose plans call
        it, and has a probe route for each health-check path their plans check it on."""
        calls = _Calls(plan_callers(plans.values()), plan_probe_paths(plans.values()))
        return MeshCompiler(self._settings, self._cache, self.unhealthy_nodes, calls)

    def settings_for(self, node_id: str) -> NodeSettings:
        """``node_id``'s settings, its mesh peers narrowed to the callers of this pass
        (and its probe paths theirs)."""
        settings = self._settings(node_id)
        mesh = settings.mesh
        if mesh is None or not mesh.allowed_peers:
            return settings
        calls = self._calls if self._calls is not None else _Calls({}, {})
        peers = _admitted(mesh, node_id, calls.callers)
        own = f"spiffe://{mesh.trust_domain}/node/{node_id}"
        probes = tuple(sorted(calls.probes.get(own, ()))) if peers else ()
        if (peers, probes) == (mesh.allowed_peers, mesh.probe_paths):
            return settings
        return replace(settings, mesh=replace(mesh, allowed_peers=peers, probe_paths=probes))

    def _unhealthy(self, plan: Plan, catalog: Catalog) -> frozenset[str]:
        """The names of ``plan``'s backends hosted by an unhealthy node."""
        if not self.unhealthy_nodes:
            return frozenset()
        hosted = self._hosted
        if hosted is None or hosted[0] is not catalog:
            hosted = (catalog, backends_hosted_by(catalog, self.unhealthy_nodes))
            self._hosted = hosted
        down = hosted[1]
        if not down:
            return down
        return frozenset(b.name for b in plan.backends if b.name in down)

    def __call__(self, plan: Plan, catalog: Catalog, /) -> Snapshot:
        node_id = plan.node.id
        node_settings = self.settings_for(node_id)
        unhealthy = self._unhealthy(plan, catalog)

        def compile_snapshot() -> Snapshot:
            model = MeshModel.build(
                [plan],
                {node_id: node_settings},
                unhealthy_backends=unhealthy,
                api=catalog.api,
                jwt_issuers=catalog.jwt_issuers,
            )
            return compile_and_verify(model, node_id, catalog)

        return self._cache.get_or_compile(
            plan.routes, plan.backends, node_settings, catalog, compile_snapshot,
            unhealthy=unhealthy,
        )  # fmt: skip


def default_compiler(
    settings_for: Callable[[str], NodeSettings] | None = None,
    *,
    cache: CompileCache | None = None,
) -> MeshCompiler:
    """The control plane's compiler: plan → mesh model → generators → verifier.

    ``settings_for(node_id)`` supplies what the plan does not hold (the node's app
    listener port, trust bundle); by default every node listens on
    :data:`DEFAULT_APP_PORT`. The returned callable is a pure function, safe from any
    thread; it raises ``VerificationError`` (with findings naming route and cluster) when
    the compiled configuration breaks an invariant, and ``ModelError`` when the plan and
    the settings do not fit together. It compiles with every node healthy; a
    :class:`~tiermesh.controlplane.reconciler.Reconciler` binds the nodes that report
    otherwise (:meth:`MeshCompiler.with_unhealthy_nodes`).

    Snapshots are memoized in ``cache`` (default: a fresh :class:`CompileCache` of
    :data:`DEFAULT_CACHE_SIZE` entries; ``CompileCache(0)`` turns it off): nodes whose
    plans differ only in ``node``, ``violations`` or ``warnings`` and whose settings are
    equal get the same snapshot object, compiled and verified once.
    """
    settings = settings_for or (lambda _node_id: NodeSettings(app_port=DEFAULT_APP_PORT))
    return MeshCompiler(settings, cache if cache is not None else CompileCache())


@functools.cache
def _throwaway_bundle() -> str:
    ca = LocalCertificateAuthority.create(CaConfig(trust_domain="offline-check.invalid"))
    return ca.bundle().to_pem().decode()


def offline_compiler(*, cache: CompileCache | None = None) -> Compiler:
    """The compiler for checks away from a running mesh (``tiermesh policy check|diff``,
    and the check ``tiermesh policy push`` runs before it writes).

    Three things the control plane supplies are not there offline, and stand-ins take
    their place: backends with a SPIFFE ID make the compiler emit an SDS secret holding
    the mesh's trust bundle (a throwaway CA's bundle is used), backends with a
    ``credential`` need their API key (a fixed placeholder is used for every secret the
    node's plan names; real keys live only with the control plane), and the node's
    ext_authz server is given a placeholder port, so the plan's routes are compiled and
    verified as on a node that runs the request policy (without one every route would
    collapse into a 503 and nothing would be checked). Only those secrets' bytes and that
    port differ from what the control plane will serve, and the verifier judges routes,
    clusters and endpoints, never certificate or key contents. A key the control plane
    lacks is therefore not found here: the control plane refuses that plan and keeps the
    last good snapshot.
    """
    bundle = _throwaway_bundle()
    memo = cache if cache is not None else CompileCache()

    def compile_node(plan: Plan, catalog: Catalog, /) -> Snapshot:
        named = {b.credential.secret for b in plan.backends if b.credential is not None}
        settings = NodeSettings(
            app_port=DEFAULT_APP_PORT,
            trust_bundle_pem=bundle,
            authz=AuthzSettings(port=_OFFLINE_AUTHZ_PORT),
            credentials=dict.fromkeys(sorted(named), _OFFLINE_KEY),
        )
        return default_compiler(lambda _node_id: settings, cache=memo)(plan, catalog)

    return compile_node
