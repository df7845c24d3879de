"""The node's request policy following the control plane's bundle.

:class:`NodeApiPolicySource` fetches the served bundle's request policy over the node API
(mTLS with the node's SVID; :mod:`tiermesh.controlplane.api.request_policy`).
:class:`PolicySync` holds the engine the :class:`~tiermesh.agents.authz.Authorizer`
decides with and replaces it when the registry session announces another bundle: fetch →
load into a new engine → probe decision (:func:`~tiermesh.agents.authz.build_request_engine`)
→ swap in for the authorizer in one step → close the old engine → new catalog prices for
the usage ledger. A bundle that fails any step is logged with the reason and the policy
serving before keeps serving; it is not fetched again until another bundle is announced.
A fetch that fails (control plane unreachable) is retried with backoff while the
announcement stands.

The policy's ``data.request_config`` is the bundle's settings (``data/request_config.yaml``)
overridden key by key by the node's ``authz.request_config``, so a push changes a setting
on every node that does not set it itself.

The tenant API keys come with the policy (``api_keys``) and are swapped in with it, as are
the catalog's JWT issuers; the setting ``require_credential`` (or ``require_api_key``) of
the merged ``data.request_config`` decides whether a request without a credential is
refused (:mod:`tiermesh.agents.authz.credentials`). A key created or
revoked is announced like a bundle (a new ``etcd_revision``), so it takes effect on the
next fetch, without a restart.

Decisions made with a fetched policy carry ``bundle_revision`` ``sha256:<bundle sha256>``
and ``etcd_revision`` of the bundle (:class:`~tiermesh.controlplane.api.BundleRef`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc

from tiermesh.agents.authz import (
    Authorizer,
    KeyTable,
    PolicyRejected,
    build_request_engine,
    input_references,
    key_table,
    probe_policy,
)
from tiermesh.agents.identity import Backoff, SvidStore
from tiermesh.agents.identity.join_client import NodeApiCallError
from tiermesh.agents.runtime.nodeapi_call import CALL_TIMEOUT_S, call_node_api
from tiermesh.agents.usage import Prices, UsageLedger
from tiermesh.controlplane.api import (
    MAX_REQUEST_POLICY_BYTES,
    REQUEST_POLICY_METHOD,
    BundleRef,
    Catalog,
    RequestPolicyBundle,
    RequestPolicyQuery,
    registry_method_path,
)
from tiermesh.controlplane.api.request_policy import merged_request_config
from tiermesh.rego import JSONValue, PolicyEngine

__all__ = [
    "NodeApiPolicySource",
    "PolicySync",
    "RequestPolicySource",
    "bundle_data",
    "bundle_revision",
    "policy_keys",
]

log = logging.getLogger("tiermesh.agent")


class RequestPolicySource(Protocol):
    """Where the served bundle's request policy comes from."""

    async def fetch(self) -> RequestPolicyBundle | None:
        """The served bundle's request policy; None: the control plane serves none (no
        bundle yet, or one without a request policy). Raises ``NodeApiCallError``
        (unreachable, refused) or ``ValueError`` (an answer that is not the contract)."""
        ...


def bundle_revision(ref: BundleRef) -> str:
    """What decisions made with ``ref``'s policy carry as ``bundle_revision``."""
    return f"sha256:{ref.sha256}"


def bundle_data(
    policy: RequestPolicyBundle, request_config: dict[str, Any]
) -> dict[str, JSONValue]:
    """The policy's data document: ``request_config`` (the bundle's settings overridden key
    by key by ``request_config``, the node's) and ``catalog`` (the bundle's, as the
    compile-time policy sees it)."""
    merged = merged_request_config(policy.request_config, request_config)
    data: dict[str, JSONValue] = {"request_config": dict(merged)}
    if policy.catalog is not None:
        data["catalog"] = policy.catalog.model_dump(mode="json")
    return data


def policy_keys(policy: RequestPolicyBundle, request_config: dict[str, Any]) -> KeyTable:
    """The tenant keys (and the catalog's JWT issuers) ``policy`` authenticates requests
    with, ``required`` per the bundle's settings overridden by ``request_config`` (the
    node's)."""
    merged = merged_request_config(policy.request_config, request_config)
    return key_table(policy.api_keys, merged, policy.catalog)


class NodeApiPolicySource:
    """Fetches over the node API with the store's current SVID, trying ``addresses`` in
    order and moving on only when one is unreachable."""

    def __init__(
        self,
        store: SvidStore,
        addresses: Sequence[str],
        server_name: str,
        *,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._store = store
        self._addresses = tuple(addresses)
        self._server_name = server_name
        self._timeout_s = timeout_s

    async def fetch(self) -> RequestPolicyBundle | None:
        try:
            return await call_node_api(
                self._store,
                self._addresses,
                server_name=self._server_name,
                method=REQUEST_POLICY_METHOD,
                path=registry_method_path(REQUEST_POLICY_METHOD),
                request=RequestPolicyQuery(),
                reply=RequestPolicyBundle.model_validate_json,
                timeout_s=self._timeout_s,
                max_reply_bytes=MAX_REQUEST_POLICY_BYTES,
            )
        except NodeApiCallError as exc:
            if exc.code is grpc.StatusCode.NOT_FOUND:
                return None
            raise


class PolicySync:
    """Owns the request engine the authorizer uses and follows announced bundles (module
    doc).

    Task safety: one event loop (the authorizer's). :meth:`announce` may be called any time
    (it only records the wish); :meth:`run` is one task; :meth:`adopt` may also be awaited
    directly (tests, the start). :meth:`close` closes the engine in use.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        engine: PolicyEngine,
        source: RequestPolicySource,
        *,
        engine_factory: Callable[[], PolicyEngine],
        request_config: dict[str, Any],
        ledger: UsageLedger | None = None,
        current: BundleRef | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._engine = engine
        self._source = source
        self._factory = engine_factory
        self._request_config = dict(request_config)
        self.ledger = ledger
        """The usage ledger whose prices follow the catalog (set it once it exists)."""
        self._backoff = backoff or Backoff(initial=0.5, maximum=10.0)
        self.current = current
        """The bundle the authorizer decides with (None: a policy from local files)."""
        self.rejected: BundleRef | None = None
        """The latest bundle that failed to load or to probe."""
        self.last_error: str | None = None
        """Why the latest fetch or load failed (None after a success)."""
        self.swaps = 0
        """How many times a new policy was swapped in."""
        self.on_catalog: Callable[[Catalog], None] | None = None
        """Called with each swapped-in bundle's catalog (exceptions are logged)."""
        self._wanted: BundleRef | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()

    def announce(self, ref: BundleRef) -> None:
        """The control plane serves ``ref``: fetch it unless it is the one in use or the
        one that was just rejected. Never raises."""
        if ref in (self.current, self.rejected) or ref == self._wanted:
            return
        self._wanted = ref
        self._wake.set()

    async def adopt(self, policy: RequestPolicyBundle) -> bool:
        """Load ``policy`` into a new engine, probe it and swap it in; False (logged, the
        old policy kept) if it is rejected. A policy of the bundle in use (same digest: only
        the tenant keys changed, so the announced ``etcd_revision`` moved) keeps the engine
        and swaps in the keys alone."""
        ref = policy.bundle
        revision = bundle_revision(ref)
        if self.current is not None and (ref.revision, ref.sha256) == (
            self.current.revision,
            self.current.sha256,
        ):
            self._authorizer.use_policy(
                self._engine,
                bundle_revision=revision,
                etcd_revision=ref.etcd_revision,
                keys=policy_keys(policy, self._request_config),
                modules=policy.modules,
            )
            self.current = ref
            self.last_error = None
            log.info("tenant API keys now as of etcd revision %d (%d key(s))",
                     ref.etcd_revision, len(policy.api_keys or ()))  # fmt: skip
            async with self._changed:
                self._changed.notify_all()
            return True
        try:
            engine = await asyncio.to_thread(self._load, policy, revision)
            try:
                # Again on this thread: regorus builds engines per thread, so the first
                # decision after the swap does not pay for parsing the modules.
                probe_policy(engine)
            except PolicyRejected:
                engine.close()
                raise
        except PolicyRejected as exc:
            self.rejected = ref
            self.last_error = str(exc)
            log.error(
                "bundle revision %d (%s) not adopted, still deciding with %s: %s",
                ref.revision,
                revision,
                self._authorizer.bundle_revision,
                exc.reason,
            )
            return False
        old = self._authorizer.use_policy(
            engine,
            bundle_revision=revision,
            etcd_revision=ref.etcd_revision,
            keys=policy_keys(policy, self._request_config),
            modules=policy.modules,
        )
        self._engine = engine
        old.close()
        self.current = ref
        self.last_error = None
        self.swaps += 1
        log.info(
            "request policy now bundle revision %d (%s, etcd revision %d, %d module(s))",
            ref.revision,
            revision,
            ref.etcd_revision,
            len(policy.modules),
        )
        self._new_prices(policy)
        self._new_catalog(policy)
        async with self._changed:
            self._changed.notify_all()
        return True

    def _load(self, policy: RequestPolicyBundle, revision: str) -> PolicyEngine:
        data = bundle_data(policy, self._request_config)
        engine = build_request_engine(self._factory, policy.modules, data, revision=revision)
        input_references(policy.modules)  # parsed here, off the loop, for use_policy's cache
        return engine

    def _new_prices(self, policy: RequestPolicyBundle) -> None:
        if self.ledger is None or policy.catalog is None:
            return
        try:
            self.ledger.replace_prices(Prices.from_catalog(policy.catalog))
        except Exception as exc:  # noqa: BLE001 - accounting never undoes a policy swap
            log.warning("usage prices of bundle revision %d not written: %s",
                        policy.bundle.revision, exc)  # fmt: skip

    def _new_catalog(self, policy: RequestPolicyBundle) -> None:
        if self.on_catalog is None or policy.catalog is None:
            return
        try:
            self.on_catalog(policy.catalog)
        except Exception:
            log.exception("the catalog of bundle revision %d was not taken", policy.bundle.revision)

    async def wait_current(self, predicate: Callable[[BundleRef | None], bool]) -> None:
        """Return once ``predicate(current)`` holds (tests, tools)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.current))

    async def run(self) -> None:
        """Fetch and adopt each announced bundle until cancelled. Never raises otherwise."""
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            wanted = self._wanted
            if wanted is None or wanted in (self.current, self.rejected):
                continue
            try:
                policy = await self._source.fetch()
            except (NodeApiCallError, ValueError) as exc:
                failures += 1
                self.last_error = f"fetching bundle revision {wanted.revision}: {exc}"
                delay = self._backoff.delay(failures)
                log.warning("%s; retrying in %.1fs", self.last_error, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.set()
                continue
            failures = 0
            if policy is None:
                log.warning("bundle revision %d announced but the control plane serves no "
                            "request policy; keeping %s", wanted.revision,
                            self._authorizer.bundle_revision)  # fmt: skip
                self.rejected = wanted
                continue
            if policy.bundle in (self.current, self.rejected):
                continue
            await self.adopt(policy)

    def close(self) -> None:
        """Close the engine in use (after the authorizer stopped deciding)."""
        self._engine.close()
