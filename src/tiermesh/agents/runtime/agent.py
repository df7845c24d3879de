"""One node agent: identity, local servers, model server, Envoy and the registry session,
started in order and stopped in reverse.

Start order (each step needs the ones before): ports checked free → the metrics server
(``metrics_listen``, unless ``off``; :mod:`tiermesh.agents.metrics`, fed by the ext_authz
and usage servers, reading Envoy's counters once Envoy runs) → SVID (saved or joined)
→ rotation task → Workload API (unix socket) → local SDS (unix socket) → request policy
(on unless ``authz.enabled: false``, which leaves the node's app listener answering 503:
the served bundle's request policy fetched from the control plane, ext_authz server on
its Unix socket, decision log, shipper; see :mod:`~tiermesh.agents.runtime.requests`) →
cascade handler → batch lane (with ``batch``: :mod:`~tiermesh.agents.runtime.batch`) → Envoy
bootstrap written → model server healthy → Envoy answering its admin port → the batch
worker → registry session accepted (with ``authz_socket``, so the compiled listener checks
every request, ``batch_socket`` when ``batch`` is set, and
``mesh_host``/``mesh_port`` when ``mesh_listen`` is set; the session also carries the usage
ledger's reports, brings back mesh-wide spend and announces new bundles, whose request policy then
replaces the running one).
A failing step raises an :class:`~tiermesh.agents.runtime.errors.AgentError` (or a
model-server error) naming its cause, after everything already started was stopped.

:meth:`NodeAgent.drain` is the graceful stop: goodbye on the session (the control plane
revokes the lease), Envoy's listeners drained, then :meth:`NodeAgent.stop` stops Envoy, the
model server, the request policy (its records flushed and shipped once more), the local
servers and the rotation, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import ipaddress
import logging
import re
import secrets
import socket
from pathlib import Path

from tiermesh.agents.cascade import TOKEN_HEADER, CascadeHandler
from tiermesh.agents.config import AgentConfig, is_unix, split_hostport
from tiermesh.agents.identity import (
    LocalSdsServer,
    SvidRotator,
    SvidStore,
    WorkloadApiServer,
)
from tiermesh.agents.metrics import MetricsUnavailable, NodeMetrics
from tiermesh.agents.models import LlamaServer, smollm2_path, write_tiny_gguf
from tiermesh.agents.models.guard import ModelGuard, VerificationOutcome
from tiermesh.agents.runtime.batch import BatchLane
from tiermesh.agents.runtime.envoy import EnvoySidecar, sds_names, write_bootstrap
from tiermesh.agents.runtime.errors import ControlPlaneUnreachable, PortInUse, StartFailed
from tiermesh.agents.runtime.identity import NodeApiSource, first_identity, svid_files
from tiermesh.agents.runtime.model_trust import node_trust, verification_entry
from tiermesh.agents.runtime.requests import RequestPolicy
from tiermesh.agents.runtime.session import RegistrySession
from tiermesh.controlplane.api import Catalog, ModelAttestation, NodeLoad, NodeRegistration
from tiermesh.modelsig import TrustedSigner

__all__ = ["NodeAgent"]

log = logging.getLogger("tiermesh.agent")

_REGISTER_TIMEOUT_S = 15.0
_RQ_ACTIVE = re.compile(rb"downstream_rq_active: (\d+)")
_ROUTES_VERSION = re.compile(r'rds\.[^:]*\.version_text: "([^"]*)"')
_ROUTES_VERSION_FILTER = "/stats?filter=rds%5C..*%5C.version_text%24"


def _require_free(what: str, address: str) -> None:
    host, port = split_hostport(address)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(what, address) from None
            raise StartFailed(what, f"cannot bind {address}: {exc.strerror}") from exc


async def _start_cascade(config: AgentConfig) -> CascadeHandler:
    """The cascade handler on ``cascade_listen``, started, with a new secret: only this
    handler's step requests match step routes."""
    assert config.cascade_listen is not None
    token = secrets.token_urlsafe(32)
    if is_unix(config.cascade_listen):
        socket_path = config.service_socket("cascade", config.cascade_listen)
        handler = CascadeHandler(config.envoy.app_port, token=token, socket_path=socket_path)
    else:
        host, port = split_hostport(config.cascade_listen)
        handler = CascadeHandler(config.envoy.app_port, host=host, port=port, token=token)
    try:
        await handler.start()
    except RuntimeError as exc:
        raise StartFailed("the cascade handler", str(exc)) from exc
    return handler


def _path(socket: Path | None) -> str | None:
    """A socket's absolute path as registered."""
    return None if socket is None else str(socket.absolute())


def _mesh_listen(config: AgentConfig) -> tuple[str, int] | None:
    """The inbound mTLS address to register (``mesh_listen``: its host as an IP address, a
    name resolved once here; port 0: a free one, probed on that host and left for Envoy to
    bind), or None: no mesh listener or no model server."""
    if config.mesh_listen is None:
        return None
    if config.model_server.kind != "llama_cpp":
        log.warning("mesh_listen is set but the node has no model server; not registered")
        return None
    host, port = split_hostport(config.mesh_listen)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        address = str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)[0][4][0])
    if port:
        _require_free("the mesh listener", config.mesh_listen)
        return address, port
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        probe.bind((address, 0))
        return address, int(probe.getsockname()[1])


class NodeAgent:
    """The agent of one node (see the module docstring). Use from one event loop;
    ``start`` then ``drain``/``stop`` (``stop`` is idempotent and always safe)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = SvidStore(files=svid_files(config))
        self.rotator: SvidRotator | None = None
        self.workload_api: WorkloadApiServer | None = None
        self.sds: LocalSdsServer | None = None
        self.model: LlamaServer | None = None
        self.model_guard: ModelGuard | None = None
        """Verifies the model file's signature before and while ``model`` serves it."""
        self.envoy: EnvoySidecar | None = None
        self.session: RegistrySession | None = None
        self.requests: RequestPolicy | None = None
        self.cascade: CascadeHandler | None = None
        self.batch: BatchLane | None = None
        self.bootstrap_path: Path | None = None
        self.metrics: NodeMetrics | None = None
        """The node's metrics (None when ``metrics_listen`` is ``off``); its ``url`` is
        where ``/metrics`` is served once started."""
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every part (module docstring); on failure stop what started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (config.state_dir / "logs").mkdir(exist_ok=True)
        if config.envoy.run:
            if config.envoy_admin_socket is None:
                _require_free("the Envoy admin", config.envoy.admin_address)
            _require_free("the app listener", f"127.0.0.1:{config.envoy.app_port}")
        if config.model_server.kind == "llama_cpp":
            _require_free("the model server", config.model_server.listen)
        mesh = _mesh_listen(config)
        model_path = self._model_path()
        self._start_metrics()

        material = await first_identity(config, now=dt.datetime.now(dt.UTC))
        self.store.update(material)
        cp = config.control_plane
        self.rotator = SvidRotator(
            self.store,
            NodeApiSource(self.store, cp.node_api, cp.tls_server_name),
            node_id=config.node.id,
        )
        self._tasks.append(asyncio.create_task(self.rotator.run(), name="svid-rotation"))
        self.workload_api = WorkloadApiServer(self.store, config.workload_socket)
        await self.workload_api.start()
        self.sds = LocalSdsServer(self.store, f"unix:{config.sds_socket}", names=sds_names(config))
        await self.sds.start()
        if config.authz.enabled:
            self.requests = RequestPolicy(config, self.store, metrics=self.metrics)
            await self.requests.start()
        else:
            log.warning(
                "authz.enabled is false: this node's app listener answers every request 503"
            )
        await self._start_services()
        self.bootstrap_path = write_bootstrap(config)

        if model_path is not None:
            host, port = split_hostport(config.model_server.listen)
            self.model = LlamaServer(
                model_path,
                host=host,
                port=port,
                n_threads=config.model_server.n_threads,
                n_ctx=config.model_server.n_ctx,
                alias=config.model_server.model_alias,
                workdir=config.state_dir / "logs",
                ready_timeout_s=config.model_server.ready_timeout_s,
            )
            self.model_guard = self._guard(self.model, model_path)
            await self.model_guard.start()
        if config.envoy.run:
            self.envoy = EnvoySidecar(config, self.bootstrap_path)
            await self.envoy.start()
            if self.metrics is not None:
                self.metrics.watch_envoy(self.envoy.admin)
        if self.batch is not None:
            self.batch.start_worker()

        requests, cascade = self.requests, self.cascade
        registration = NodeRegistration(
            node_id=config.node.id,
            tier=config.node.tier,
            region=config.node.region,
            residency=config.node.residency,
            app_port=config.envoy.app_port,
            endpoints=config.registered_endpoints(),
            labels=config.node.labels,
            authz_port=requests.port if requests is not None else None,
            authz_socket=_path(requests.socket if requests is not None else None),
            usage_port=requests.usage_port if requests is not None else None,
            usage_socket=_path(requests.usage_socket if requests is not None else None),
            cascade_port=cascade.port if cascade is not None and cascade.port else None,
            cascade_socket=_path(cascade.socket_path if cascade is not None else None),
            batch_socket=_path(self.batch.socket if self.batch is not None else None),
            mesh_port=None if mesh is None else mesh[1],
            mesh_host=None if mesh is None else mesh[0],
        )
        self.session = RegistrySession(
            self.store,
            registration,
            addresses=cp.node_api,
            server_name=cp.tls_server_name,
            measure=self.measure_load,
            interval_s=config.load_interval_s,
            usage=self.requests.ledger if self.requests is not None else None,
            on_bundle=self.requests.announce if self.requests is not None else None,
        )
        self._tasks.append(asyncio.create_task(self.session.run(), name="registry-session"))
        try:
            await self.session.wait_registered(_REGISTER_TIMEOUT_S)
        except TimeoutError:
            why = self.session.last_error or "no reply"
            raise ControlPlaneUnreachable("the registry session", [why]) from None

    async def _start_services(self) -> None:
        """The cascade handler and the batch lane, both after the request policy."""
        config = self.config
        if config.cascade_listen is not None:
            self.cascade = await _start_cascade(config)
            if self.requests is not None and self.cascade.token is not None:
                # Its step requests re-enter the app listener without the caller's key; ext_authz
                # recognises them and names their step to the routes.
                self.requests.trust_reentry(TOKEN_HEADER, self.cascade.token)
        if config.batch is not None:
            if self.requests is None:
                raise StartFailed("the batch lane", "it needs authz (each line is decided)")
            self.batch = BatchLane(config, config.batch)
            requests = self.requests
            await self.batch.start(
                requests.authorizer, lambda: requests.catalog, ledger=requests.ledger
            )

    def _trust(self, catalog: Catalog | None) -> tuple[tuple[TrustedSigner, ...], bool]:
        model = self.config.model_server
        try:
            return node_trust(
                catalog,
                self.config.node.id,
                trusted_keys=model.trusted_keys,
                require_signature=model.require_signature,
            )
        except ValueError as exc:
            raise StartFailed("the model server", str(exc)) from None

    def _guard(self, server: LlamaServer, model_path: Path) -> ModelGuard:
        """The model server behind its signature check (see
        :mod:`~tiermesh.agents.models.guard`), trusting what the catalog names for this
        node's backends; a new bundle's catalog replaces the trust."""
        requests = self.requests
        signers, required = self._trust(requests.catalog if requests is not None else None)
        guard = ModelGuard(
            server,
            model_path,
            signers=signers,
            required=required,
            signature=self.config.model_server.signature,
            on_outcome=self._record_verification,
            poll_interval_s=self.config.model_server.verify_interval_s,
        )
        if requests is not None:

            def follow(catalog: Catalog) -> None:
                try:
                    new_signers, new_required = self._trust(catalog)
                except StartFailed as exc:
                    log.error("model signers of the new catalog not taken: %s", exc)
                    return
                guard.set_trust(new_signers, required=new_required)

            requests.on_catalog(follow)
        return guard

    async def _record_verification(self, outcome: VerificationOutcome) -> None:
        """A signed ``model_verification`` record in the decision log (when it runs)."""
        if self.requests is None:
            log.info("model verification (no decision log): %s", outcome.to_json())
            return
        await self.requests.record(verification_entry(outcome))

    def _model_attestation(self) -> ModelAttestation | None:
        guard = self.model_guard
        last = guard.last if guard is not None else None
        if last is None:
            return None
        return ModelAttestation(
            outcome=last.outcome, digest=last.digest, signer=last.signer, reason=last.reason
        )

    def _start_metrics(self) -> None:
        listen = self.config.metrics_listen
        if listen == "off":
            return
        self.metrics = NodeMetrics()
        try:
            url = self.metrics.serve(*split_hostport(listen))
        except MetricsUnavailable as exc:
            raise StartFailed("the metrics server", str(exc)) from exc
        self.metrics.state.svid_expiry = self._svid_expiry
        log.info("metrics served on %s", url)

    def _svid_expiry(self) -> dt.datetime | None:
        current = self.store.current
        return None if current is None else current.not_after

    def _model_path(self) -> Path | None:
        model = self.config.model_server
        if model.kind == "none":
            return None
        if model.model == "tiny":
            folder = self.config.state_dir / "models"
            folder.mkdir(exist_ok=True)
            return write_tiny_gguf(folder / "tiny.gguf")
        if model.model == "smollm2":
            return smollm2_path()
        return Path(model.model)

    async def measure_load(self) -> NodeLoad:
        """The node's load now: health from the model server's supervisor, requests in
        flight from Envoy's app listener, queue depth (requests waiting for the model) and
        tokens/s (completion tokens over the server's last 10 s) from the model server's
        ``/tiermesh/load``; 0 when it does not answer within a second. Also refreshes the
        route version later decisions are stamped with."""
        healthy = True
        queue_depth, tokens_per_s = 0, 0.0
        if self.model is not None:
            status = self.model.status
            healthy = status is not None and status.healthy
            if self.model_guard is not None:
                healthy = healthy and self.model_guard.serving
            served = await self.model.read_load()
            if served is not None:
                queue_depth, tokens_per_s = served.queue_depth, served.tokens_per_s
        in_flight = 0
        if self.envoy is not None:
            stats = await self.envoy.admin_get(
                "/stats?filter=%5Ehttp%5C.tiermesh_app%5C.downstream_rq_active%24"
            )
            found = _RQ_ACTIVE.search(stats.encode())
            in_flight = int(found.group(1)) if found else 0
            if self.requests is not None:
                versions = _ROUTES_VERSION.search(
                    await self.envoy.admin_get(_ROUTES_VERSION_FILTER)
                )
                self.requests.set_snapshot_version(versions.group(1) if versions else None)
        return NodeLoad(
            in_flight=in_flight,
            queue_depth=queue_depth,
            tokens_per_s=tokens_per_s,
            healthy=healthy,
            model=self._model_attestation(),
        )

    async def drain(self) -> None:
        """Graceful stop: goodbye, Envoy drained, then :meth:`stop`."""
        session = self.session
        if session is not None:
            session.leave()
            run = next((t for t in self._tasks if t.get_name() == "registry-session"), None)
            if run is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(run), 5.0)
        if self.envoy is not None:
            await self.envoy.drain()
        await self.stop()

    async def stop(self) -> None:
        """Stop everything that started, newest first. Idempotent; logs failures."""
        tasks, self._tasks = self._tasks, []
        for task in reversed(tasks):
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        envoy, self.envoy = self.envoy, None
        guard, self.model_guard = self.model_guard, None
        model, self.model = self.model, None
        cascade, self.cascade = self.cascade, None
        batch, self.batch = self.batch, None
        requests, self.requests = self.requests, None
        sds, self.sds = self.sds, None
        workload, self.workload_api = self.workload_api, None
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.stop()
        # The guard stops its watch, then the model server (it owns it while it runs).
        for name, part in (("Envoy", envoy), ("model server", guard or model),
                           ("cascade handler", cascade), ("batch lane", batch),
                           ("request policy", requests), ("SDS", sds),
                           ("Workload API", workload)):  # fmt: skip
            if part is None:
                continue
            try:
                await part.stop()
            except Exception:
                log.exception("stopping the %s failed", name)
