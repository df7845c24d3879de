"""One control-plane replica: store, CA, node API, ADS, reconciler and admin, started and
stopped as a unit.

Start order (each step needs the one before): etcd client → shared CA
(``EtcdCaStore.create_or_load``) → server certificate issued and written to the data dir,
kept current from then on (:class:`~tiermesh.controlplane.identity.server_rotation.
ServerRotation`) → the listen
addresses are checked → node directory → reconciler → node API (join, renew, registry) →
ADS over mTLS with the SPIFFE node authorizer → audit collector (mTLS, its own port;
records stored in ``<data_dir>/audit.sqlite3``, read by ``tiermesh audit --db``) →
admin → dashboard (when configured; :mod:`tiermesh.controlplane.dashboard`, fed by the
status document, the answer counts nodes report (:class:`LiveTraffic`) and the audit
database). The audit database is opened before the reconciler: every node's evaluated plan
is recorded there, signed with the server key, in the chain ``spiffe://<td>/controlplane``
(``…/controlplane/<replica>`` with ``--replica``;
:class:`~tiermesh.controlplane.audit.PlanRecorder`). After the reconciler, the replica
campaigns for leadership (:mod:`.leadership`): every replica serves; only the leader does
the once-only work (legacy usage adoption, plan records), each of its writes fenced by
etcd. :meth:`ControlPlane.stop` undoes it in reverse. Stopping cancels the open registry
sessions without revoking their leases, so registrations survive a restart for one lease
TTL and nodes reconnect without a flap.

Certificates rotate while the replica runs: the server certificate (one day by default,
``server_cert_ttl_s``) is renewed at two thirds of its life and after every change of the
shared CA, which every replica follows through an etcd watch; each TLS port (ADS, node
API, join, audit collector) presents the new certificate and verifies clients against the
new bundle from its next handshake on, without a restart, while open streams keep theirs.
:meth:`ControlPlane.rotate_ca` rolls the shared CA over from this replica; the status
document's ``identity`` section shows the served certificate and bundle generation.

Plan records are signed with the key of the certificate served at the time.

Known limits: the issuance records of SVIDs a replica signed reach etcd only when that
replica rolls the CA over (a replica adopting another's state keeps its own), so a
retirement saved elsewhere may not wait for them: retire with care.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import logging
import socket
from collections.abc import Awaitable, Sequence
from typing import Any

import grpc

from tiermesh.controlplane.api import usage_month
from tiermesh.controlplane.audit import (
    AuditCollector,
    AuditCollectorServer,
    AuditStore,
    AuditStoreError,
    PlanRecorder,
    start_audit_collector,
)
from tiermesh.controlplane.bundle import BundleOutcome
from tiermesh.controlplane.dashboard import (
    AuditWatcher,
    DashboardError,
    DashboardServer,
    check_bind,
    dashboard_document,
    start_dashboard,
)
from tiermesh.controlplane.identity import (
    CaConfig,
    CaGeneration,
    EtcdCaStore,
    LocalCertificateAuthority,
    ServerFilesError,
    TrustBundle,
)
from tiermesh.controlplane.identity.server_cert import ServerCertificate
from tiermesh.controlplane.identity.server_rotation import ServerRotation
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.identity.xds_auth import spiffe_node_authorizer
from tiermesh.controlplane.metrics import issued_expiries
from tiermesh.controlplane.nodeapi import (
    NodeApiServer,
    NodeIdentityService,
    NodeRegistryService,
    start_node_api,
)
from tiermesh.controlplane.nodeapi.keys import KeyWatcher
from tiermesh.controlplane.reconciler import Reconciler, ReconcileResult, default_compiler
from tiermesh.controlplane.runtime.admin import AdminServer, MetricsServer, start_admin
from tiermesh.controlplane.runtime.config import ControlPlaneConfig, HostPort
from tiermesh.controlplane.runtime.errors import (
    DashboardRefused,
    DataDirError,
    EtcdUnreachable,
    PortInUse,
)
from tiermesh.controlplane.runtime.etcd_reach import EtcdReach
from tiermesh.controlplane.runtime.freeze_guard import FreezeGuard
from tiermesh.controlplane.runtime.leadership import LEADER_KEY, Leadership, replica_holder
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.runtime.status import status_document
from tiermesh.controlplane.runtime.traffic import LiveTraffic
from tiermesh.controlplane.store import EtcdStore, Fence, NotLeader, StoreUnavailable
from tiermesh.rego import RegorusEngine
from tiermesh.xds import AdsServer, SnapshotCache, start_server

__all__ = ["ControlPlane"]

log = logging.getLogger("tiermesh.controlplane")


async def _connect(config: ControlPlaneConfig) -> EtcdStore:
    """One store over every configured member: it follows them for the process's life."""
    store = EtcdStore(config.etcd, root=config.root, timeout_s=config.etcd_timeout_s)
    try:
        await store.connect()
    except StoreUnavailable as exc:
        await store.aclose()
        raise EtcdUnreachable(config.etcd, exc.detail) from exc
    log.info("connected to etcd at %s (members: %s)", store.endpoint, ", ".join(store.endpoints))
    return store


async def _adopt_legacy_usage(store: EtcdStore, fence: Fence) -> None:
    """Fold usage counters kept before budgets were per month into this month's, so an
    upgrade in the middle of a month does not hand every tenant a fresh budget. Leader
    work: each move is fenced (`NotLeader` once the term is over)."""
    month = usage_month(dt.datetime.now(dt.UTC))
    for usage in await store.adopt_legacy_usage(month=month, fence=fence):
        log.warning(
            "usage counter of tenant %s from before monthly budgets added to %s: now %d tokens,"
            " $%.6f",
            usage.tenant,
            month,
            usage.tokens,
            usage.cost_micro / 1e6,
        )


def _check_free(what: str, address: HostPort) -> None:
    """Fail with a clear `PortInUse` before gRPC's own, vaguer bind error."""
    if address.port == 0:
        return
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError as exc:
            detail = "address already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise PortInUse(what, str(address), detail) from exc


async def _all(steps: Sequence[Awaitable[object]]) -> None:
    """Await ``steps`` side by side; the first failure is raised once every one ended."""
    for outcome in await asyncio.gather(*steps, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _seconds(value: float | None) -> dt.timedelta | None:
    return None if value is None else dt.timedelta(seconds=value)


def _check_ports(config: ControlPlaneConfig) -> None:
    """Every port the replica will bind is free (a clear error before anything starts)."""
    for what, address in (
        ("ADS (--listen)", config.ads),
        ("the node API (--node-api)", config.node_api),
        ("joins (--join)", config.join),
        ("the admin server (--admin)", config.admin),
        ("the audit collector", config.audit),
        *((("the dashboard (--dashboard)", config.dashboard),) if config.dashboard else ()),
        *((("the metrics server (--metrics)", config.metrics),) if config.metrics else ()),
    ):
        _check_free(what, address)


class ControlPlane:
    """One replica. ``await start()`` brings everything up or raises (leaving nothing
    running): `EtcdUnreachable`, `PortInUse`, `DataDirError`, identity errors
    (``WrongPassphraseError``, ``InvalidCaConfigError`` for another trust domain).
    ``await stop()`` is idempotent. Use from one event loop.
    """

    def __init__(self, config: ControlPlaneConfig) -> None:
        self.config = config
        self.addresses: dict[str, str] = {}
        self._store: EtcdStore | None = None
        self._identity: ServerRotation | None = None
        self._freeze = FreezeGuard(resettle=self._reconcile_all, on_release=self._notify_streams)
        self._cache = SnapshotCache(serving=self._freeze.serving)
        self._ads: AdsServer | None = None
        self._ads_server: grpc.aio.Server | None = None
        self._reach: EtcdReach | None = None
        self._node_api: NodeApiServer | None = None
        self._directory: NodeDirectory | None = None
        self._reconciler: Reconciler | None = None
        self._keys: KeyWatcher | None = None
        self._admin: AdminServer | None = None
        self._metrics: MetricsServer | None = None
        self._audit_store: AuditStore | None = None
        self._audit: AuditCollectorServer | None = None
        self._plans: PlanRecorder | None = None
        self.traffic = LiveTraffic()
        """Answer counts the nodes report (the status document's ``traffic``)."""
        self._dashboard: DashboardServer | None = None
        self._audit_watch: AuditWatcher | None = None
        self._leadership: Leadership | None = None

    @property
    def reconciler(self) -> Reconciler:
        assert self._reconciler is not None, "not started"
        return self._reconciler

    @property
    def ca(self) -> LocalCertificateAuthority:
        """The CA this replica issues with now (it follows the shared CA in etcd)."""
        assert self._identity is not None, "not started"
        return self._identity.ca.current

    async def rotate_ca(self) -> CaGeneration:
        """Roll the shared CA over from this replica; every replica follows (module doc).
        Returns the new signing generation. Raises ``CaStateConflict`` or ``StoreError``."""
        assert self._identity is not None, "not started"
        return await self._identity.rotate_ca()

    async def start(self) -> None:
        """Start every part (module doc); on failure, stop what started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        if config.dashboard is not None:
            try:  # before anything starts: an unsafe dashboard is a configuration error
                check_bind(config.dashboard.host, config.dashboard.port, config.dashboard_token)
            except DashboardError as exc:
                raise DashboardRefused(str(exc)) from exc
        self._store = store = await _connect(config)
        self._identity = identity = await self._start_identity(store)
        certificate, bundle, ca = identity.certificate, identity.bundle, identity.ca
        _check_ports(config)

        self._directory = NodeDirectory(
            store,
            bundle.to_pem().decode(),
            on_settings_changed=self._resettle,
            on_node_settings_changed=self._resettle_node,
            credentials=config.credentials,
            trust_domain=config.trust_domain,
        )
        await self._directory.start()
        compiler = default_compiler(self._directory.settings_for)
        try:
            self._audit_store = AuditStore(config.data_dir / "audit.sqlite3")
        except AuditStoreError as exc:
            raise DataDirError(str(config.data_dir), str(exc)) from exc
        self._plans = PlanRecorder(
            self._audit_store,
            chain_id=certificate.spiffe_id + (f"/{config.replica}" if config.replica else ""),
            trust_domain=config.trust_domain,
            key=certificate.private_key,
            chain=(certificate.certificate, certificate.intermediate),
        )
        self._reconciler = Reconciler(
            store,
            RegorusEngine,
            compiler,
            self._cache,
            debounce_s=config.debounce_s,
            on_plans=self._record_plans,
            freeze_heap=config.freeze_heap,
        )
        await self._reconciler.start()
        self._leadership = Leadership(
            store,
            holder=replica_holder(config.replica),
            ttl_s=config.leader_ttl_s,
            on_elected=self._elected,
        )
        await self._leadership.start()

        self._keys = KeyWatcher(store)
        await self._keys.start()
        registry = NodeRegistryService(
            store,
            config.trust_domain,
            lease_ttl_s=config.lease_ttl_s,
            load_interval_s=config.load_interval_s,
            bundles=self._reconciler,
            keys=self._keys,
            on_answers=self.traffic.add,
        )
        try:
            self._node_api = await start_node_api(
                NodeIdentityService(ca, JoinTokens(store), svid_ttl=_seconds(config.svid_ttl_s)),
                credentials=identity.credentials,
                host=config.node_api.host,
                join_port=config.join.port,
                node_port=config.node_api.port,
                registry=registry,
            )
        except RuntimeError as exc:
            raise PortInUse("the node API", f"{config.node_api} / {config.join}", str(exc)) from exc
        if config.join.host != config.node_api.host:
            log.warning("--join host %s ignored: both node API ports bind %s",
                        config.join.host, config.node_api.host)  # fmt: skip

        self._ads = AdsServer(self._cache, authorize=spiffe_node_authorizer(config.trust_domain))
        try:
            self._ads_server, ads_port = await self._start_ads(str(config.ads))
        except RuntimeError as exc:
            raise PortInUse("ADS (--listen)", str(config.ads), str(exc)) from exc

        try:
            self._audit = await start_audit_collector(
                AuditCollector(self._audit_store, ca.bundle),
                credentials=identity.credentials,
                host=config.audit.host,
                port=config.audit.port,
            )
        except RuntimeError as exc:
            raise PortInUse("the audit collector", str(config.audit), str(exc)) from exc

        try:
            self._admin = await start_admin(config.admin.host, config.admin.port, self.status)
        except OSError as exc:
            raise PortInUse("the admin server (--admin)", str(config.admin), str(exc)) from exc

        self.addresses = {
            "ads": str(HostPort(config.ads.host, ads_port)),
            "node_api": self._node_api.node_target,
            "join": self._node_api.join_target,
            "admin": self._admin.url,
            "audit": str(HostPort(config.audit.host, self._audit.port)),
        }
        await self._start_optional(config)
        self._reach = EtcdReach(
            lambda: store.get(LEADER_KEY), on_cut_off=self._shed_ads, on_back=self._etcd_back
        )
        await self._reach.start()
        await self._freeze.start()
        log.info("control plane for %s serving %s", config.trust_domain, self.addresses)

    async def _start_ads(self, address: str) -> tuple[grpc.aio.Server, int]:
        assert self._ads is not None, "started in order"
        assert self._identity is not None, "started in order"
        return await start_server(
            self._ads,
            address,
            credentials=self._identity.credentials.server_credentials(),
            # Envoys ping every ADS_KEEPALIVE_INTERVAL_S to notice a frozen replica
            # (replaces the server's 10 s default: see server_options).
            options=[("grpc.http2.min_ping_interval_without_data_ms", 500)],
        )

    async def _shed_ads(self, _detail: str) -> None:
        """Cut off from etcd (:mod:`.etcd_reach`): end every ADS stream, so the nodes
        reconnect and Envoy's round robin takes them to another replica; then serve new
        streams again at once on the same address."""
        server, self._ads_server = self._ads_server, None
        if server is None:
            return
        await server.stop(0)
        try:
            self._ads_server, _ = await self._start_ads(self.addresses["ads"])
        except RuntimeError:
            log.exception("ADS could not listen again on %s", self.addresses["ads"])

    async def _etcd_back(self) -> None:
        """etcd answers again: reconcile everything from what it holds now."""
        self._resettle()

    async def _start_identity(self, store: EtcdStore) -> ServerRotation:
        """The shared CA, and the server certificate and bundle that follow it."""
        config = self.config
        ca_store = EtcdCaStore(store, config.ca_passphrase)
        ca_config = CaConfig(config.trust_domain)
        identity = ServerRotation(
            store,
            ca_store,
            ca_config,
            await ca_store.create_or_load(ca_config),
            data_dir=config.data_dir,
            ttl=dt.timedelta(seconds=config.server_cert_ttl_s),
            extra_dns_names=config.server_dns_names,
            on_bundle_changed=self._bundle_changed,
            on_renewed=self._certificate_renewed,
        )
        try:
            await identity.start()
        except ServerFilesError as exc:
            raise DataDirError(exc.folder, exc.detail) from exc
        return identity

    async def _start_optional(self, config: ControlPlaneConfig) -> None:
        """The dashboard and the metrics server, each when configured."""
        if config.dashboard is not None:
            assert self._audit_store is not None, "the audit store opens first"
            await self._start_dashboard(config.dashboard, self._audit_store)
        if config.metrics is not None:
            self._start_metrics(config.metrics)

    def _start_metrics(self, address: HostPort) -> None:
        try:
            self._metrics = MetricsServer(address.host, address.port)
        except OSError as exc:
            raise PortInUse("the metrics server (--metrics)", str(address), str(exc)) from exc
        self.addresses["metrics"] = self._metrics.url

    async def _start_dashboard(self, address: HostPort, audit: AuditStore) -> None:
        self._audit_watch = AuditWatcher(audit)
        try:
            self._dashboard = await start_dashboard(
                address.host, address.port, self.dashboard_view, token=self.config.dashboard_token
            )
        except DashboardError as exc:
            raise DashboardRefused(str(exc)) from exc
        except OSError as exc:
            raise PortInUse("the dashboard (--dashboard)", str(address), str(exc)) from exc
        self.addresses["dashboard"] = self._dashboard.url

    def _certificate_renewed(self, certificate: ServerCertificate) -> None:
        if self._plans is not None:
            chain = (certificate.certificate, certificate.intermediate)
            self._plans.use_signer(certificate.private_key, chain)

    def _bundle_changed(self, bundle: TrustBundle) -> None:
        if self._directory is not None:
            self._directory.set_trust_bundle(bundle.to_pem().decode())

    @property
    def leadership(self) -> Leadership:
        assert self._leadership is not None, "not started"
        return self._leadership

    async def _elected(self, fence: Fence) -> None:
        """Start-of-term leader work (:mod:`.leadership`); none once `stop` has begun (a
        term can start while the parts stopped before leadership stop)."""
        if self._store is None:
            return
        await _adopt_legacy_usage(self._store, fence)
        self._resettle()  # a full reconcile: plans changed while another replica led

    async def _record_plans(self, result: ReconcileResult, outcome: BundleOutcome) -> None:
        """Leader work: plans are recorded once, by the replica whose fenced mark of this
        reconcile etcd took."""
        fence = None if self._leadership is None else self._leadership.fence
        if fence is None or self._plans is None or self._reconciler is None:
            return
        assert self._store is not None, "not started"
        mark = f'{{"reconcile": {result.number}, "etcd_revision": {result.etcd_revision}}}'
        try:
            await self._store.put_fenced(fence, "leader/plans", mark.encode())
        except NotLeader:
            log.warning("not recording plans of reconcile %d: no longer the leader",
                        result.number)  # fmt: skip
            return
        await self._plans.record(result, outcome, self._reconciler.published)

    def _resettle_node(self, node_id: str) -> None:
        if self._reconciler is not None:
            self._reconciler.settings_changed(node_id)

    async def _reconcile_all(self) -> None:
        """A full reconcile, awaited (:mod:`.freeze_guard`)."""
        if self._reconciler is not None:
            await self._reconciler.reconcile_now()

    def _notify_streams(self) -> None:
        self._cache.notify_all()

    def _resettle(self) -> None:
        """:meth:`_reconcile_all`, not awaited."""
        task = asyncio.create_task(self._reconcile_all(), name="resettle")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def status(self) -> dict[str, Any]:
        """The status document (:mod:`~tiermesh.controlplane.runtime.status`); call on the
        control plane's event loop."""
        assert self._ads is not None, "not started"
        assert self._directory is not None, "not started"
        document = status_document(
            trust_domain=self.config.trust_domain,
            addresses=self.addresses,
            registrations=self._directory.nodes,
            xds=self._ads.status.all(),
            cache=self._cache,
            reconciler=self.reconciler,
            svid_expiry=issued_expiries(),
        )
        document["traffic"] = self.traffic.document()
        if self._leadership is not None:
            document["leadership"] = self._leadership.document()
        if self._identity is not None:
            document["identity"] = self._identity.status()
        if self._reach is not None:
            document["etcd"] = self._reach.document()
        document["freeze"] = self._freeze.document()
        return document

    async def dashboard_view(self) -> dict[str, Any]:
        """The dashboard's document (:func:`~tiermesh.controlplane.dashboard.dashboard_document`);
        call on the control plane's event loop."""
        assert self._audit_watch is not None, "no dashboard"
        audit = await self._audit_watch.summary()
        return dashboard_document(self.status(), audit, now=dt.datetime.now(dt.UTC))

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then :meth:`stop`."""
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop everything that started, newest first. Idempotent; never raises for a part
        that fails to stop (logged)."""
        reach, self._reach = self._reach, None
        if reach is not None:
            await reach.aclose()
        await self._freeze.aclose()
        dashboard, self._dashboard = self._dashboard, None
        admin, self._admin = self._admin, None
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.close()
        node_api, self._node_api = self._node_api, None
        ads_server, self._ads_server = self._ads_server, None
        audit, self._audit = self._audit, None
        leadership, self._leadership = self._leadership, None
        reconciler, self._reconciler = self._reconciler, None
        keys, self._keys = self._keys, None
        directory, self._directory = self._directory, None
        identity = self._identity  # kept: ``ca`` stays readable after a stop
        store, self._store = self._store, None
        # The gRPC servers drain side by side: each waits out the whole grace for its
        # long-lived streams, and a node moves to another replica only once its stream
        # ends, so one after another would hold every Envoy three graces. ADS streams
        # never finish on their own: they end at once, and the Envoys move now.
        servers = [
            server.stop(grace)
            for server, grace in ((node_api, grace_s), (ads_server, 0.0), (audit, grace_s))
            if server is not None
        ]
        steps: list[tuple[str, Any]] = [
            ("dashboard", dashboard.aclose() if dashboard else None),
            ("admin", admin.aclose() if admin else None),
            ("node API, ADS and audit collector", _all(servers) if servers else None),
            ("leadership", leadership.aclose() if leadership else None),
            ("reconciler", reconciler.aclose() if reconciler else None),
            ("API key watch", keys.aclose() if keys else None),
            ("node directory", directory.aclose() if directory else None),
            ("server certificate rotation", identity.aclose() if identity else None),
            ("etcd client", store.aclose() if store else None),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await step
            except Exception:
                log.exception("stopping the %s failed", name)
        audit_store, self._audit_store = self._audit_store, None
        if audit_store is not None:
            audit_store.close()
