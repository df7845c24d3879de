"""The node's request-time policy: ext_authz server, decision log and its shipper.

:class:`RequestPolicy` starts, in order: the request policy loaded into a regorus engine
and probed (see Where the policy comes from) → the decision log in ``<state_dir>/decisions``
(signed with the node's current SVID) → the authz gRPC server (on the Unix socket
``<state_dir>/authz.sock``, mode 0600, unless ``authz.listen`` names a port) → the usage
server when ``authz.usage_listen`` is set (access logs → tokens and spend per tenant, at
``data.catalog`` prices, into the budget file the authz server reads; :attr:`ledger` is
also what the agent's registry session reports to the control plane and takes mesh-wide
totals from) → the shipper,
which sends the spool to the control plane's audit collector on the node API (mTLS, the
node's SVID). :meth:`RequestPolicy.stop` undoes it in reverse: no new checks, pending
records written, one last shipping attempt, then the shipper is cancelled (unshipped
records stay in the spool and go out after the next start).

Where the policy comes from: the control plane's served bundle (its ``request/*.rego``,
catalog and request settings, with ``data.request_config`` the bundle's settings overridden
key by key by node.yaml's ``authz.request_config``), fetched over the node API at
start; then the :class:`~tiermesh.agents.runtime.policy_sync.PolicySync` follows each
bundle the registry session announces (:meth:`RequestPolicy.announce`), swapping a new
engine in for the authorizer and new prices in for the usage ledger, without a restart. Only
when the control plane serves no bundle or cannot be reached at start, or its bundle's
policy is rejected, does the agent start from ``authz.policy_dir`` (``<policy_dir>/request``,
``<policy_dir>/data/catalog.yaml`` and, if present, ``<policy_dir>/data/request_config.yaml``
merged the same way), if set; a later announcement still replaces it.
With neither the start fails, naming both.

``bundle_revision`` on every decision is ``sha256:<bundle sha256>`` with the bundle's
``etcd_revision`` for a fetched policy, ``sha256:<hex>`` of the files and data (no etcd
revision) for a local one; ``snapshot_version`` is what
:meth:`RequestPolicy.set_snapshot_version` was last told (the agent reads its Envoy's
route version with each load report).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import yaml
from pydantic import ValidationError

from tiermesh.agents.authz import (
    Authorizer,
    DecisionLogSink,
    JsonFileBudgetSource,
    KeyTable,
    PolicyRejected,
    build_request_engine,
    key_table,
    request_policy_modules,
    start_authz_server,
)
from tiermesh.agents.config import AgentConfig, is_unix
from tiermesh.agents.decisionlog import (
    DecisionEntry,
    DecisionLog,
    DecisionLogClosed,
    GrpcShipClient,
    Shipper,
    StoreSigner,
)
from tiermesh.agents.identity import SvidStore
from tiermesh.agents.identity.join_client import NodeApiCallError
from tiermesh.agents.metrics import NodeMetrics
from tiermesh.agents.runtime._sockets import release_socket, start_grpc_on_socket
from tiermesh.agents.runtime.errors import StartFailed
from tiermesh.agents.runtime.policy_sync import (
    NodeApiPolicySource,
    PolicySync,
    RequestPolicySource,
    bundle_data,
    bundle_revision,
    policy_keys,
)
from tiermesh.agents.usage import Prices, UsageLedger, start_usage_server
from tiermesh.controlplane.api import BundleRef, Catalog
from tiermesh.controlplane.api.request_policy import (
    REQUEST_CONFIG_DOCUMENT,
    merged_request_config,
    validate_request_config,
)
from tiermesh.rego import PolicyEngine, RegorusEngine

__all__ = ["RequestPolicy", "policy_data"]

log = logging.getLogger("tiermesh.agent")

_LAST_SHIP_S: Final = 2.0


def policy_data(config: AgentConfig) -> tuple[dict[str, str], dict[str, Any]]:
    """The request policy's modules and data for ``config.authz`` (see the module doc).

    Raises:
        StartFailed: the policy or the catalog cannot be read.
    """
    folder = config.authz.policy_dir
    if folder is None:
        raise StartFailed("the request policy", "authz.policy_dir is not set")
    try:
        modules = request_policy_modules(folder / "request")
        catalog_file = folder / "data" / "catalog.yaml"
        catalog = yaml.safe_load(catalog_file.read_text()) if catalog_file.exists() else None
        settings_file = folder / "data" / f"{REQUEST_CONFIG_DOCUMENT}.yaml"
        settings = (
            validate_request_config(yaml.safe_load(settings_file.read_text()))
            if settings_file.exists()
            else None
        )
    except ValidationError as exc:
        raise StartFailed("the request policy", f"{settings_file}: {exc}") from exc
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise StartFailed("the request policy", str(exc)) from exc
    merged = merged_request_config(settings, config.authz.request_config)
    data: dict[str, Any] = {"request_config": merged}
    if isinstance(catalog, dict):
        data["catalog"] = json.loads(json.dumps(catalog, default=str))
    return modules, data


def _catalog(data: dict[str, Any]) -> Catalog | None:
    """The local policy's catalog, for its JWT issuers; None (no JWT accepted) when it has
    none or it is not a valid catalog."""
    try:
        return Catalog.model_validate(data["catalog"]) if "catalog" in data else None
    except ValidationError as exc:
        log.warning("no JWT issuers from the local catalog, it is not valid: %s", exc)
        return None


def _revision(modules: dict[str, str], data: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + modules[name].encode() + b"\0")
    digest.update(json.dumps(data, sort_keys=True).encode())
    return f"sha256:{digest.hexdigest()[:16]}"


class RequestPolicy:
    """See the module docstring. One event loop (the agent's); ``start`` then ``stop``
    (idempotent, always safe). ``source`` is where served bundles are fetched (default:
    the node API of ``config.control_plane``)."""

    def __init__(
        self,
        config: AgentConfig,
        store: SvidStore,
        *,
        source: RequestPolicySource | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._metrics = metrics
        cp = config.control_plane
        self._source: RequestPolicySource = source or NodeApiPolicySource(
            store, cp.node_api, cp.tls_server_name
        )
        self.sync: PolicySync | None = None
        """Follows announced bundles (None before :meth:`start`)."""
        self._syncing: asyncio.Task[None] | None = None
        self._log: DecisionLog | None = None
        self._server: grpc.aio.Server | None = None
        self._shipper: Shipper | None = None
        self._shipping: asyncio.Task[None] | None = None
        self._authorizer: Authorizer | None = None
        self._usage: grpc.aio.Server | None = None
        self.ledger: UsageLedger | None = None
        """The usage ledger (None before :meth:`start` or without a usage server); use it
        on the agent's event loop only."""
        self.port: int | None = None
        """The authz server's bound port (None before :meth:`start` or on a socket)."""
        self.socket: Path | None = None
        """The authz server's Unix socket (None before :meth:`start` or on a port)."""
        self.usage_port: int | None = None
        """The usage server's bound port (None before :meth:`start`, without one or on a
        socket)."""
        self.usage_socket: Path | None = None
        """The usage server's Unix socket (None before :meth:`start`, without one or on a
        port)."""
        self.catalog: Catalog | None = None
        """The catalog of the policy deciding now (None before :meth:`start`, or when the
        policy's catalog is not a valid one)."""
        self._catalog_listeners: list[Callable[[Catalog], None]] = []

    def on_catalog(self, listener: Callable[[Catalog], None]) -> None:
        """Call ``listener`` with every later bundle's catalog, on the agent's loop."""
        self._catalog_listeners.append(listener)

    def _catalog_changed(self, catalog: Catalog) -> None:
        self.catalog = catalog
        for listener in self._catalog_listeners:
            listener(catalog)

    async def record(self, entry: DecisionEntry) -> None:
        """Append ``entry`` to the node's decision log (signed, chained, shipped).
        Raises ``DecisionLogError`` when the log is not running or the append fails."""
        if self._log is None:
            raise DecisionLogClosed(self._config.decision_dir)
        await self._log.append(entry)

    @property
    def authorizer(self) -> Authorizer:
        """The node's authorizer (after :meth:`start`), for node-local services that decide
        parts of requests it admitted (the batch lane's lines); use it on this loop."""
        assert self._authorizer is not None, "not started"
        return self._authorizer

    def trust_reentry(self, header: str, secret: str) -> None:
        """See :meth:`~tiermesh.agents.authz.Authorizer.trust_reentry` (after :meth:`start`)."""
        assert self._authorizer is not None, "not started"
        self._authorizer.trust_reentry(header, secret)

    async def start(self) -> None:
        """Start every part; raises :class:`StartFailed` (or ``OSError`` for the spool)
        after stopping what started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _initial(
        self,
    ) -> tuple[PolicyEngine, str, BundleRef | None, dict[str, Any], KeyTable, Mapping[str, str]]:
        """The first policy: (engine, revision, served bundle or None, data, tenant keys,
        the engine's modules)."""
        config = self._config
        why: str
        try:
            served = await self._source.fetch()
        except (NodeApiCallError, ValueError) as exc:
            served, why = None, f"unreachable: {exc}"
        else:
            why = "no bundle with a request policy is served"
        if served is not None:
            data = bundle_data(served, dict(config.authz.request_config))
            revision = bundle_revision(served.bundle)
            try:
                engine = await asyncio.to_thread(
                    build_request_engine, RegorusEngine, served.modules, data, revision=revision
                )
            except PolicyRejected as exc:
                why = str(exc)
            else:
                log.info("request policy from bundle revision %d (%s)",
                         served.bundle.revision, revision)  # fmt: skip
                keys = policy_keys(served, dict(config.authz.request_config))
                return engine, revision, served.bundle, data, keys, served.modules
        if config.authz.policy_dir is None:
            raise StartFailed(
                "the request policy",
                f"the control plane's is not usable ({why}) and authz.policy_dir is not set",
            )
        log.warning("request policy from %s: the control plane's is not usable (%s)",
                    config.authz.policy_dir, why)  # fmt: skip
        modules, data = policy_data(config)
        revision = _revision(modules, data)
        try:
            engine = build_request_engine(RegorusEngine, modules, data, revision=revision)
        except PolicyRejected as exc:
            raise StartFailed("the request policy", str(exc)) from exc
        settings = data["request_config"]
        keys = key_table(None, settings if isinstance(settings, dict) else {}, _catalog(data))
        return engine, revision, None, data, keys, modules

    async def _start(self) -> None:
        config = self._config
        engine, revision, served, data, keys, modules = await self._initial()
        self._log = decisions = DecisionLog(config.decision_dir, StoreSigner(self._store))
        try:
            await decisions.start()
        except BaseException:
            engine.close()
            raise
        self._authorizer = Authorizer(
            engine,
            DecisionLogSink(decisions),
            JsonFileBudgetSource(config.budget_file),
            bundle_revision=revision,
            etcd_revision=served.etcd_revision if served is not None else None,
            uninspected_headers=config.authz.uninspected_headers,
            keys=keys,
            modules=modules,
        )
        self.sync = PolicySync(
            self._authorizer,
            engine,
            self._source,
            engine_factory=RegorusEngine,
            request_config=dict(config.authz.request_config),
            current=served,
        )
        authorizer = self._authorizer
        metrics = self._metrics
        observe = metrics.authz.observe if metrics is not None else None
        if metrics is not None:
            metrics.state.spool = decisions
        try:
            if is_unix(config.authz.listen):
                self.socket = config.service_socket("authz", config.authz.listen)
                self._server = await start_grpc_on_socket(
                    lambda address: start_authz_server(authorizer, address, observe), self.socket
                )
            else:
                self._server, self.port = await start_authz_server(
                    authorizer, config.authz.listen, observe
                )
        except RuntimeError as exc:
            raise StartFailed("the authz server", str(exc)) from exc
        if config.authz.usage_listen is not None:
            await self._start_usage(config, data)
            self.sync.ledger = self.ledger
        with contextlib.suppress(ValueError):
            self.catalog = Catalog.model_validate(data.get("catalog"))
        self.sync.on_catalog = self._catalog_changed
        self._syncing = asyncio.create_task(self.sync.run(), name="request-policy-sync")
        cp = config.control_plane
        if cp.audit:
            client = GrpcShipClient(cp.audit, self._store.require, server_name=cp.tls_server_name)
            self._shipper = shipper = Shipper(decisions, client)
            if metrics is not None:
                metrics.state.acknowledged = lambda: shipper.last_acknowledged
            self._shipping = asyncio.create_task(self._shipper.run(), name="decision-shipper")
        else:
            log.warning("no control_plane.audit address: decisions stay in %s", decisions.directory)
        log.info("request policy served on %s", self.socket or f"port {self.port}")

    async def _start_usage(self, config: AgentConfig, data: dict[str, Any]) -> None:
        assert config.authz.usage_listen is not None
        try:
            catalog = Catalog.model_validate(data.get("catalog"))
        except ValueError as exc:
            raise StartFailed("the usage server", f"no usable catalog: {exc}") from exc
        ledger = UsageLedger(config.budget_file, Prices.from_catalog(catalog))
        listen = config.authz.usage_listen
        metrics = self._metrics
        observe = metrics.edge.observe if metrics is not None else None
        if metrics is not None:
            metrics.state.ledger = ledger
        try:
            if is_unix(listen):
                self.usage_socket = config.service_socket("usage", listen)
                self._usage = await start_grpc_on_socket(
                    lambda address: start_usage_server(ledger, address, observe),
                    self.usage_socket,
                )
            else:
                self._usage, self.usage_port = await start_usage_server(ledger, listen, observe)
        except RuntimeError as exc:
            raise StartFailed("the usage server", str(exc)) from exc
        self.ledger = ledger
        where = self.usage_socket or f"port {self.usage_port}"
        log.info("usage accounted on %s into %s", where, ledger.path)

    def announce(self, bundle: BundleRef) -> None:
        """The control plane serves ``bundle`` (from the registry session): follow it."""
        if self.sync is not None:
            self.sync.announce(bundle)

    def set_snapshot_version(self, version: str | None) -> None:
        """Stamp later decisions with the node's route snapshot version."""
        if self._authorizer is not None:
            self._authorizer.snapshot_version = version

    async def stop(self) -> None:
        """Stop serving, flush the log, ship once more (bounded), release everything."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(0.5)
        release_socket(self.socket)
        usage, self._usage = self._usage, None
        if usage is not None:
            await usage.stop(0.5)
        release_socket(self.usage_socket)
        syncing, self._syncing = self._syncing, None
        if syncing is not None:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await syncing
        shipping, self._shipping = self._shipping, None
        if shipping is not None:
            shipping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await shipping
        shipper, self._shipper = self._shipper, None
        if shipper is not None and self._log is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_LAST_SHIP_S):
                    while await shipper.ship_once():
                        pass
        decisions, self._log = self._log, None
        if decisions is not None:
            try:
                await decisions.close()
            except Exception:
                log.exception("closing the decision log failed")
        sync, self.sync = self.sync, None
        if sync is not None:
            sync.close()
