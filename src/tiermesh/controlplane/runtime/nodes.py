"""The control plane's view of registered nodes, and the per-node compiler settings it feeds.

:class:`NodeDirectory` follows ``nodes/`` in the store (one watch) and keeps every node's
:class:`~tiermesh.controlplane.api.RegisteredNode`; status reads it, and
:meth:`NodeDirectory.settings_for` gives the compiler each node's app port, the mesh's
trust bundle and the operator's cloud API keys.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import ValidationError

from tiermesh.controlplane.api import RegisteredNode
from tiermesh.controlplane.model import (
    AuthzSettings,
    BatchSettings,
    CascadeSettings,
    MeshTlsSettings,
    NodeSettings,
    UsageSettings,
)
from tiermesh.controlplane.reconciler import NODES_PREFIX
from tiermesh.controlplane.reconciler.wiring import DEFAULT_APP_PORT
from tiermesh.controlplane.store import EventKind, Store, StoreError, WatchCompacted
from tiermesh.tasks import cancel_and_wait

__all__ = ["NodeDirectory"]

log = logging.getLogger("tiermesh.controlplane.nodes")
_FETCH_TIMEOUT_S = 10.0
DEFAULT_MESH_HOST = "0.0.0.0"
"""Where the inbound mTLS listener of a registration without ``mesh_host`` (an agent older
than the field) binds: every address, as before the field existed."""


@dataclass(frozen=True, slots=True)
class _Candidates:
    """The mesh candidates of one set of registrations (see
    :meth:`NodeDirectory.mesh_callers`): their SPIFFE IDs, sorted, and the SPIFFE ID of
    each node that is one."""

    peers: tuple[str, ...]
    by_node: Mapping[str, str]

    def without(self, node_id: str) -> tuple[str, ...]:
        """The candidates other than ``node_id``'s own entry."""
        own = self.by_node.get(node_id)
        if own is None:
            return self.peers
        index = bisect.bisect_left(self.peers, own)
        return self.peers[:index] + self.peers[index + 1 :]


def _decode(node_id: str, value: bytes) -> RegisteredNode | None:
    try:
        return RegisteredNode.model_validate_json(value)
    except ValidationError:
        log.warning("registration of node %r is not a RegisteredNode; default settings", node_id)
        return None


class NodeDirectory:
    """Live registrations by node id.

    ``credentials`` (secret name → API key) go unchanged into every node's settings; the
    directory never logs them.

    ``trust_domain`` enables node-to-node mTLS for nodes that register ``mesh_port``
    (:meth:`settings_for`); None: never compiled.

    ``on_settings_changed`` is called (on the event loop) when a node's app or authz port
    changes after it was first seen, so a reconcile that raced the change can be redone,
    and (with ``trust_domain``) when a node appears, leaves or changes tier or SPIFFE ID,
    since that changes whom every mesh listener admits (:meth:`mesh_callers`). With
    ``on_node_settings_changed`` those calls name the node instead (its own settings
    changed, or whether it is a mesh candidate: only the listeners of the nodes its plan
    calls can admit it differently); ``on_settings_changed`` is then called only after a
    reload (a failed watch), when any node may have changed.

    Cost: the registrations are scanned for mesh candidates once per change of them
    (:attr:`candidate_builds` counts it), and each node's settings are built once per
    change and then returned as the same object, so a reconcile asking for every node's
    settings costs time linear in the nodes, not quadratic.

    Task and thread safety: :meth:`start`, :meth:`aclose` and :attr:`nodes` belong to the
    event loop that owns ``store``. :meth:`settings_for` may be called from any other
    thread (the reconciler's worker): it reads under a lock, and on a miss fetches
    the registrations through the loop (it must never be called on the loop itself).
    """

    def __init__(
        self,
        store: Store,
        trust_bundle_pem: str,
        *,
        on_settings_changed: Callable[[], None] = lambda: None,
        on_node_settings_changed: Callable[[str], None] | None = None,
        retry_s: float = 1.0,
        credentials: Mapping[str, str] | None = None,
        trust_domain: str | None = None,
    ) -> None:
        self._store = store
        self._trust_domain = trust_domain
        self._bundle = trust_bundle_pem
        self._credentials: Mapping[str, str] = MappingProxyType(dict(credentials or {}))
        self._on_changed = on_settings_changed
        self._on_node_changed = on_node_settings_changed
        self._retry_s = retry_s
        self._nodes: dict[str, RegisteredNode | None] = {}
        self._lock = threading.Lock()
        # Derived from _nodes and _bundle, dropped (under the lock) whenever either changes.
        self._candidates: _Candidates | None = None
        self._settings: dict[str, NodeSettings] = {}
        self._generation = 0
        self.candidate_builds = 0
        """Times the registrations were scanned for mesh candidates (statistics)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def nodes(self) -> Mapping[str, RegisteredNode | None]:
        """Node id → its registration (None: present but not in the registry's shape)."""
        with self._lock:
            return MappingProxyType(dict(self._nodes))

    async def start(self) -> None:
        """Read every registration, then follow changes. Raises ``StoreUnavailable``."""
        self._loop = asyncio.get_running_loop()
        revision = await self._reload()
        self._task = asyncio.create_task(self._follow(revision), name="node-directory")

    async def aclose(self) -> None:
        """Stop following. Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait([task])

    def set_trust_bundle(self, trust_bundle_pem: str) -> None:
        """Hand ``trust_bundle_pem`` to every node's settings from now on (a CA rollover),
        then ``on_settings_changed``: every node's snapshot is compiled again. Call on the
        event loop."""
        with self._lock:
            if trust_bundle_pem == self._bundle:
                return
            self._bundle = trust_bundle_pem
            self._forget_derived()
        self._on_changed()

    def _forget_derived(self) -> None:
        # Caller holds the lock.
        self._candidates = None
        self._settings = {}
        self._generation += 1

    def settings_for(self, node_id: str) -> NodeSettings:
        """The compiler settings of ``node_id``: its registered app port (else
        ``DEFAULT_APP_PORT``), its ext_authz server (:class:`AuthzSettings` on loopback when
        the registration carries ``authz_socket`` or ``authz_port``, the socket first;
        none otherwise), its access-log server (:class:`UsageSettings` when it carries
        ``usage_socket`` or ``usage_port``), its cascade handler (:class:`CascadeSettings`
        when it carries ``cascade_socket`` or ``cascade_port``), its batch service
        (:class:`BatchSettings` when it carries ``batch_socket``), its inbound mTLS listener
        (:class:`MeshTlsSettings` when it carries ``mesh_port``, on ``mesh_host`` or else
        :data:`DEFAULT_MESH_HOST`, has a model server endpoint and the directory knows the
        trust domain; its ``allowed_peers`` are the candidates of :meth:`mesh_callers`,
        which the compiler narrows to the nodes whose plans call it), the trust bundle and
        the credentials given at construction. Call from a worker thread."""
        with self._lock:
            cached = self._settings.get(node_id)
            if cached is not None:
                return cached
            known = node_id in self._nodes
        if not known and self._loop is not None:
            fetch = asyncio.run_coroutine_threadsafe(self._store.list_nodes(), self._loop)
            records = fetch.result(timeout=_FETCH_TIMEOUT_S)
            self._replace({record.node_id: record.registration for record in records})
        with self._lock:
            generation = self._generation
            document = self._nodes.get(node_id)
            bundle_pem = self._bundle
            candidates = self._current_candidates() if document is not None else None
        settings = self._build_settings(document, bundle_pem, candidates)
        with self._lock:
            if self._generation == generation:
                self._settings[node_id] = settings
        return settings

    def _build_settings(
        self,
        document: RegisteredNode | None,
        bundle_pem: str,
        candidates: _Candidates | None,
    ) -> NodeSettings:
        port = document.app_port if document is not None else DEFAULT_APP_PORT
        authz: AuthzSettings | None = None
        usage: UsageSettings | None = None
        cascade: CascadeSettings | None = None
        batch: BatchSettings | None = None
        if document is not None:
            if document.batch_socket is not None:
                batch = BatchSettings(socket=document.batch_socket)
            if document.authz_socket is not None:
                authz = AuthzSettings(socket=document.authz_socket)
            elif document.authz_port is not None:
                authz = AuthzSettings(port=document.authz_port)
            if document.usage_socket is not None:
                usage = UsageSettings(socket=document.usage_socket)
            elif document.usage_port is not None:
                usage = UsageSettings(port=document.usage_port)
            if document.cascade_socket is not None:
                cascade = CascadeSettings(socket=document.cascade_socket)
            elif document.cascade_port is not None:
                cascade = CascadeSettings(port=document.cascade_port)
        return NodeSettings(
            app_port=port,
            trust_bundle_pem=bundle_pem,
            authz=authz,
            usage=usage,
            cascade=cascade,
            batch=batch,
            mesh=None
            if document is None or candidates is None
            else self._mesh(document, candidates),
            credentials=self._credentials,
        )

    def _current_candidates(self) -> _Candidates:
        # Caller holds the lock.
        if self._candidates is None:
            self._candidates = self._scan(self._nodes)
        return self._candidates

    def _scan(self, nodes: Mapping[str, RegisteredNode | None]) -> _Candidates:
        """The mesh candidates among ``nodes`` (see :meth:`mesh_callers`)."""
        self.candidate_builds += 1
        if self._trust_domain is None:
            return _Candidates((), {})
        prefix = f"spiffe://{self._trust_domain}/"
        by_node = {
            other: node.spiffe_id
            for other, node in nodes.items()
            if node is not None and node.tier != "cloud" and node.spiffe_id.startswith(prefix)
        }
        return _Candidates(tuple(sorted(by_node.values())), by_node)

    def mesh_callers(
        self, node_id: str, nodes: Mapping[str, RegisteredNode | None]
    ) -> tuple[str, ...]:
        """SPIFFE IDs that may be admitted to ``node_id``'s inbound mTLS listener: every
        other registered node of the trust domain that is not of the ``cloud`` tier.

        These are candidates, an upper bound: the compiler
        (:class:`~tiermesh.controlplane.reconciler.wiring.MeshCompiler`) sees every
        node's plan before it compiles any, and admits only the candidates whose plans
        have a backend pinned to this node's SPIFFE ID
        (:func:`~tiermesh.controlplane.model.admitted_peers`). A cloud gateway must never
        reach a local or private model server, whatever a plan says, so it is never a
        candidate. Registrations not in the registry's shape (None) are never admitted."""
        return self._scan(nodes).without(node_id)

    def _mesh(self, node: RegisteredNode, candidates: _Candidates) -> MeshTlsSettings | None:
        if node.mesh_port is None or self._trust_domain is None:
            return None
        model = next((e for e in node.endpoints if not e.tls), None)
        if model is None:
            log.warning("node %s registered mesh_port without a model server", node.node_id)
            return None
        return MeshTlsSettings(
            inbound_port=node.mesh_port,
            inbound_address=node.mesh_host or DEFAULT_MESH_HOST,
            model_port=model.port,
            trust_domain=self._trust_domain,
            model_host=_model_host(model.host),
            allowed_peers=candidates.without(node.node_id),
        )

    def _replace(self, records: Mapping[str, bytes]) -> None:
        decoded = {node_id: _decode(node_id, value) for node_id, value in records.items()}
        with self._lock:
            self._nodes = decoded
            self._forget_derived()

    async def _reload(self) -> int:
        snapshot = await self._store.read_prefix(NODES_PREFIX)
        self._replace({e.key.removeprefix(NODES_PREFIX): e.value for e in snapshot.entries})
        return snapshot.revision

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async with self._store.watch(NODES_PREFIX, after_revision=revision) as events:
                    async for event in events:
                        revision = event.revision
                        self._apply(event.kind, event.key.removeprefix(NODES_PREFIX), event.value)
            except (WatchCompacted, StoreError) as exc:
                log.warning("node watch failed (%s); reloading in %.1f s", exc, self._retry_s)
                await asyncio.sleep(self._retry_s)
                with contextlib.suppress(StoreError):
                    revision = await self._reload()
                    self._on_changed()

    def _apply(self, kind: EventKind, node_id: str, value: bytes) -> None:
        with self._lock:
            before = self._nodes.get(node_id)
            if kind is EventKind.DELETE:
                self._nodes.pop(node_id, None)
                after = None
            else:
                after = _decode(node_id, value)
                self._nodes[node_id] = after
            self._forget_derived()
        if self._trust_domain is not None and _caller(before) != _caller(after):
            # The callers every mesh listener admits changed (see mesh_callers).
            log.info("mesh callers changed with node %s", node_id)
            self._changed(node_id)
            return
        if before is None or after is None:
            return
        if _ports(before) != _ports(after):
            log.info("node %s moved its ports %s → %s", node_id, _ports(before), _ports(after))
            self._changed(node_id)

    def _changed(self, node_id: str) -> None:
        if self._on_node_changed is not None:
            self._on_node_changed(node_id)
        else:
            self._on_changed()


def _model_host(host: str) -> str:
    """The model server's address as the node's own Envoy reaches it: a specific IP
    address as registered; a host name or an unspecified address: loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if address.is_unspecified else str(address)


def _caller(node: RegisteredNode | None) -> tuple[str, str] | None:
    """What of a registration decides whether other nodes' mesh listeners admit it."""
    return None if node is None else (node.spiffe_id, node.tier)


def _ports(node: RegisteredNode) -> tuple[object, ...]:
    """What of a registration goes into its :class:`NodeSettings` (and may be logged):
    everything but the cascade token, which :meth:`NodeDirectory._apply` compares apart."""
    model = next(((e.host, e.port) for e in node.endpoints if not e.tls), None)
    return (node.app_port, node.authz_port, node.usage_port, node.cascade_port,
            node.mesh_port, node.mesh_host, model, node.authz_socket, node.usage_socket,
            node.cascade_socket, node.batch_socket)  # fmt: skip
