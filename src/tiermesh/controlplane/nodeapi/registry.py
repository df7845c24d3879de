"""The node registry gRPC service (``tiermesh.node.v1.NodeRegistry``): one Session per node.

The contract (messages, order, status codes) is :mod:`tiermesh.controlplane.api.registry`.
This is the only writer of ``nodes/<node-id>``: agents never hold store credentials, so a
node's SVID decides what lands there.

- The peer's node id comes from the client SVID the mTLS handshake verified (the node port
  of :func:`~tiermesh.controlplane.nodeapi.server.start_node_api`). On the join port there
  is no client certificate and every session is refused with UNAUTHENTICATED. The SVID is
  checked when the stream opens; a connection cannot change its certificate afterwards.
- Ownership rule: ``registration.node_id`` must equal the SVID's node id, and every endpoint
  name must be ``<node-id>`` or ``<node-id>.<name>`` of that same id
  (:func:`~tiermesh.controlplane.api.registry.endpoint_owner`). Anything else is
  PERMISSION_DENIED and a warning log line naming the SPIFFE ID and the claim.
- Lease lifetime: the registration is written under a new lease of ``lease_ttl_s`` seconds
  that a task refreshes every third of the TTL while the stream lives. A session the server
  ends (goodbye, half-close, a refused message) revokes it. A session that is cancelled (the
  client vanished, or this server is stopping) only stops refreshing, so the registration
  expires ``lease_ttl_s`` later — a node that reconnects to any replica within that time
  keeps its routes without a flap. gRPC may end a vanished client's message stream (or
  fail a read or write) before it marks the call cancelled; a stream that ends without a
  goodbye message, or fails, is therefore checked for cancellation for a moment
  (`_vanished`) before it is taken as the node leaving or being refused.
- Load reports are coalesced: at most one store write per ``load_interval_s``, and the
  newest report is the one written.
- Usage reports are applied in the order they arrive, one ``Store.add_usage`` per tenant
  (a tenant whose delta is all zeros is only read), then answered with the mesh-wide
  totals of the reported tenants. Counters are per UTC calendar month: a report is added
  to the month it names (a report of last month sent after the boundary is charged to
  last month), one naming none to the month of ``clock``; the answer names that month.
  The contract has already refused malformed reports (INVALID_ARGUMENT, nothing
  counted). Duplicates: the service remembers, per node, the newest (``epoch``, ``seq``)
  it applied, and answers a report at or below it with ``applied=False`` and the current
  totals, adding nothing. That memory is this
  process's only: a report applied just before the session broke is counted again if
  it is re-sent to another replica or after a restart, and one whose store writes failed
  half-way (UNAVAILABLE) has its first tenants counted again when re-sent. Both
  over-count, which only brings a budget fallback earlier. Exactly once would need the
  counters and a per-node sequence in one store transaction, which ``Store`` does not
  offer.

- Bundle announcements and the request policy: with ``bundles`` (:class:`ServedBundles`,
  the reconciler) every reply names the served bundle, each session has a task that waits
  for the next served bundle and sends it as an extra reply, and ``RequestPolicy`` answers
  with that bundle's request policy (encoded once per bundle). Waiting costs a session no
  store call: the reconciler already watches the bundle. Replies of one session are
  written one at a time. Without ``bundles`` nothing is announced and ``RequestPolicy``
  answers NOT_FOUND.
- Tenant API keys: with ``keys`` (:class:`~tiermesh.controlplane.nodeapi.keys.KeyWatcher`)
  the request policy carries the served key digests, and a key change is announced like a
  bundle change (the announced ref's ``etcd_revision`` moves on; module doc of
  :mod:`tiermesh.controlplane.nodeapi.keys`), so a revoked key is refused on every node
  within a session round trip and a fetch.

Task safety: construct and serve on the event loop that owns ``store``. Each session runs
as its own set of tasks; sessions share nothing but the store and the service's memory of
applied usage reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

import grpc
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from tiermesh.controlplane.api.registry import (
    NODE_REGISTRY_SERVICE,
    SESSION_METHOD,
    AnswerCounts,
    NodeLoad,
    NodeRegistration,
    RegisteredNode,
    SessionMessage,
    SessionReply,
    UsageAck,
    UsageReport,
    UsageTotal,
    usage_month,
)
from tiermesh.controlplane.api.request_policy import REQUEST_POLICY_METHOD, RequestPolicyQuery
from tiermesh.controlplane.identity.ca import Clock, utc_now
from tiermesh.controlplane.identity.peer import peer_spiffe_id
from tiermesh.controlplane.identity.spiffe_id import parse_node_spiffe_id, validate_trust_domain
from tiermesh.controlplane.nodeapi.errors import (
    ClaimRefused,
    NoRequestPolicy,
    PeerNotAuthenticated,
    SessionLost,
    SessionProtocolError,
    UndecodableRequest,
    status_for,
)
from tiermesh.controlplane.nodeapi.keys import NO_KEYS, ServedKeys, ServedKeysSource, announced_ref
from tiermesh.controlplane.nodeapi.policy import RequestPolicies, ServedBundles
from tiermesh.controlplane.store import LeaseExpired, NodeLease, Store, StoreError, keep_alive

__all__ = [
    "DEFAULT_FIRST_MESSAGE_TIMEOUT_S",
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_LOAD_INTERVAL_S",
    "NodeRegistryService",
]

log = logging.getLogger("tiermesh.nodeapi.registry")

DEFAULT_LEASE_TTL_S: Final = 10
"""How long a registration outlives a session that broke without goodbye."""
DEFAULT_LOAD_INTERVAL_S: Final = 1.0
"""Fewest seconds between two load writes of one node."""
DEFAULT_FIRST_MESSAGE_TIMEOUT_S: Final = 10.0
"""How long a new stream may take to send its registration."""

SESSIONS = Gauge("tiermesh_registry_sessions", "Open node registry sessions")
LOAD_WRITES = Counter("tiermesh_registry_load_writes", "Load reports written to the store")
LOAD_REPORTS = Counter("tiermesh_registry_load_reports", "Load reports received")
REFUSED = Counter("tiermesh_registry_refused_sessions", "Registry sessions refused", ["code"])
USAGE_REPORTS = Counter(
    "tiermesh_registry_usage_reports", "Usage reports answered", ["result"]
)  # result: applied | duplicate
ANNOUNCEMENTS = Counter(
    "tiermesh_registry_bundle_announcements", "Bundle changes announced on sessions"
)
POLICY_FETCHES = Counter(
    "tiermesh_registry_request_policy_fetches", "RequestPolicy calls answered", ["code"]
)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    detail: str


Context = grpc.aio.ServicerContext["SessionMessage | _Undecodable", SessionReply]


def _decode(data: bytes) -> SessionMessage | _Undecodable:
    try:
        return SessionMessage.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        return _Undecodable(f"{exc.error_count()} problem(s); {where}: {first['msg']}")


def _decode_query(data: bytes) -> RequestPolicyQuery | _Undecodable:
    try:
        return RequestPolicyQuery.model_validate_json(data)
    except ValidationError as exc:
        return _Undecodable(f"{exc.error_count()} problem(s): {exc.errors()[0]['msg']}")


def _encode(reply: SessionReply) -> bytes:
    return reply.model_dump_json().encode()


_VANISHED_GRACE_S: Final = 0.2


async def _vanished(context: Context) -> bool:
    """Whether the client went away (connection lost, call cancelled) rather than ending the
    session. gRPC can end a vanished client's message stream, or fail a read or write,
    a moment before it marks the call cancelled, so a stream that ended without goodbye
    is given :data:`_VANISHED_GRACE_S` to show which it was."""
    deadline = asyncio.get_running_loop().time() + _VANISHED_GRACE_S
    while not context.cancelled():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@dataclass(frozen=True, slots=True)
class _Goodbye:
    """The node ended the session: with a goodbye message (``said``), or by half-closing
    its side of the stream, which a vanished client can look like (see `_session`)."""

    said: bool


class _Session:
    """One node's live registration: its lease, the stored document, and the load writer."""

    def __init__(
        self,
        service: NodeRegistryService,
        context: Context,
        spiffe_id: str,
        node_id: str,
    ) -> None:
        self._service = service
        self._store = service.store
        self._context = context
        self.spiffe_id = spiffe_id
        self.node_id = node_id
        self.lease: NodeLease | None = None
        self._document: RegisteredNode | None = None
        self._reply: SessionReply | None = None
        self._announced: tuple[int, int] = (0, 0)
        self._pending: NodeLoad | None = None
        self._load_ready = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._reply_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[object]] = []

    def check(self, registration: NodeRegistration) -> None:
        """Raise `ClaimRefused` unless the SVID covers every claim of ``registration``."""
        if registration.node_id != self.node_id:
            raise ClaimRefused(self.spiffe_id, f"node id {registration.node_id!r}")
        foreign = registration.foreign_endpoints()
        if foreign:
            raise ClaimRefused(self.spiffe_id, f"endpoints of other nodes {list(foreign)}")

    def _stored(self, registration: NodeRegistration) -> RegisteredNode:
        previous = self._document
        return RegisteredNode.model_validate(
            {
                **registration.model_dump(),
                # Accepted from older agents, never kept: the secret stays on the node.
                "cascade_token": None,
                "spiffe_id": self.spiffe_id,
                "registered_at": self._service.clock(),
                "load": previous.load if previous else None,
                "load_at": previous.load_at if previous else None,
            }
        )

    async def register(self, registration: NodeRegistration) -> None:
        """Check and write a (re-)registration, then answer it."""
        self.check(registration)
        async with self._write_lock:
            document = self._stored(registration)
            if self.lease is None:
                self.lease = await self._store.register_node(
                    self.node_id, document, self._service.lease_ttl_s
                )
                revision = await self._revision()
            else:
                revision = await self._update(document)
            self._document = document
        log.info(
            "node %s registered (%s, %d endpoint(s), app port %d) lease=%x",
            self.node_id,
            self.spiffe_id,
            len(registration.endpoints),
            registration.app_port,
            self.lease.lease_id,
        )
        served = self._service.bundles.served_bundle if self._service.bundles else None
        keys = self._service.served_keys()
        async with self._reply_lock:
            self._announced = (served.revision if served is not None else 0, keys.revision)
            self._reply = SessionReply(
                node_id=self.node_id,
                spiffe_id=self.spiffe_id,
                lease_ttl_s=self.lease.ttl_s,
                load_interval_s=self._service.load_interval_s,
                revision=revision,
                usage_reports=True,
                answer_reports=self._service.on_answers is not None,
                bundle=announced_ref(served, keys) if served is not None else None,
            )
            await self._context.write(self._reply)

    async def add_usage(self, report: UsageReport) -> None:
        """Add ``report`` to the mesh-wide counters unless it was applied before, then
        answer with the totals of its tenants (module doc: duplicates)."""
        assert self._reply is not None
        ack = await self._service.apply_usage(self.node_id, report)
        async with self._reply_lock:
            await self._context.write(self._reply.model_copy(update={"usage": ack}))

    async def _announce(self, bundles: ServedBundles) -> None:
        """Send a reply naming each newly served bundle or key set, for the session's
        lifetime."""
        while True:
            assert self._reply is not None
            bundle_revision, keys_revision = self._announced
            waits: list[asyncio.Task[object]] = [
                asyncio.create_task(bundles.next_served_bundle(bundle_revision))
            ]
            if self._service.keys is not None:
                waits.append(
                    asyncio.create_task(self._service.keys.next_served_keys(keys_revision))
                )
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            bundle = bundles.served_bundle
            keys = self._service.served_keys()
            self._announced = (bundle.revision if bundle is not None else 0, keys.revision)
            if bundle is None:
                continue
            ref = announced_ref(bundle, keys)
            async with self._reply_lock:
                if ref == self._reply.bundle:
                    continue
                self._reply = self._reply.model_copy(update={"bundle": ref})
                await self._context.write(self._reply)
            ANNOUNCEMENTS.inc()
            log.debug("node %s told of bundle revision %d (etcd revision %d)",
                      self.node_id, ref.revision, ref.etcd_revision)  # fmt: skip

    async def _revision(self) -> int:
        key = f"nodes/{self.node_id}"
        entry = (await self._store.read_prefix(key)).get(key)
        return 0 if entry is None else entry.mod_revision

    async def _update(self, document: RegisteredNode) -> int:
        assert self.lease is not None
        try:
            return await self._store.update_node(self.lease, document)
        except LeaseExpired as exc:
            raise SessionLost(self.node_id, "its lease expired or was superseded") from exc

    def report(self, load: NodeLoad) -> None:
        """Queue ``load``; the writer stores the newest one at its next slot."""
        LOAD_REPORTS.inc()
        self._pending = load
        self._load_ready.set()

    async def _write_loads(self) -> None:
        while True:
            await self._load_ready.wait()
            self._load_ready.clear()
            async with self._write_lock:
                assert self._document is not None
                document = self._document.model_copy(
                    update={"load": self._pending, "load_at": self._service.clock()}
                )
                await self._update(document)
                self._document = document
            LOAD_WRITES.inc()
            await asyncio.sleep(self._service.load_interval_s)

    async def _read(self, requests: AsyncIterator[SessionMessage | _Undecodable]) -> _Goodbye:
        async for message in requests:
            if isinstance(message, _Undecodable):
                raise UndecodableRequest(SESSION_METHOD, message.detail)
            if message.goodbye:
                return _Goodbye(said=True)
            if message.registration is not None:
                await self.register(message.registration)
            elif message.load is not None:
                self.report(message.load)
            elif message.usage is not None:
                await self.add_usage(message.usage)
        return _Goodbye(said=False)  # a half-close is a goodbye too

    async def run(self, requests: AsyncIterator[SessionMessage | _Undecodable]) -> _Goodbye:
        """Serve the session until the node leaves (returns how) or something fails
        (raises)."""
        assert self.lease is not None
        self._tasks = [
            asyncio.create_task(self._read(requests), name=f"registry-read-{self.node_id}"),
            asyncio.create_task(keep_alive(self._store, self.lease), name="registry-lease"),
            asyncio.create_task(self._write_loads(), name=f"registry-load-{self.node_id}"),
        ]
        if self._service.bundles is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._announce(self._service.bundles), name=f"registry-bundle-{self.node_id}"
                )
            )
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if isinstance(exc, LeaseExpired):
                raise SessionLost(self.node_id, "its lease expired or was superseded") from exc
            if exc is not None:
                raise exc
        reader = self._tasks[0]
        ended = reader.result() if reader in done else None
        return ended if isinstance(ended, _Goodbye) else _Goodbye(said=False)

    async def stop(self, *, revoke: bool) -> None:
        """Stop the session's tasks; ``revoke`` deletes the registration now (else it
        expires on its own). Never raises for a store failure (logged)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self.lease is None:
            return
        if not revoke:
            log.info(
                "node %s session lost; registration expires in %d s unless it reconnects",
                self.node_id,
                self.lease.ttl_s,
            )
            return
        try:
            await self._store.revoke_lease(self.lease)
        except StoreError as exc:
            log.warning(
                "node %s: revoking lease failed (%s); it expires on its own", self.node_id, exc
            )
        else:
            log.info("node %s left; registration deleted", self.node_id)


class NodeRegistryService:
    """Serves ``tiermesh.node.v1.NodeRegistry/Session`` (module doc: rules and lifetimes).

    ``store`` is the only place registrations go; ``trust_domain`` is the SVIDs' trust
    domain; ``clock`` stamps ``registered_at``/``load_at``; ``bundles`` says which bundle
    is served (module doc: bundle announcements); ``keys`` which tenant API keys are
    (module doc: tenant API keys); ``on_answers`` takes the answer counts of applied usage
    reports (:attr:`on_answers`). Raises
    ``InvalidTrustDomainError`` for a bad ``trust_domain`` and ValueError for a
    ``lease_ttl_s`` under 2 s (a third of it is the refresh period, etcd's floor is 1 s) or
    a negative interval.
    """

    def __init__(
        self,
        store: Store,
        trust_domain: str,
        *,
        lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
        load_interval_s: float = DEFAULT_LOAD_INTERVAL_S,
        first_message_timeout_s: float = DEFAULT_FIRST_MESSAGE_TIMEOUT_S,
        clock: Clock = utc_now,
        bundles: ServedBundles | None = None,
        keys: ServedKeysSource | None = None,
        on_answers: Callable[[str, AnswerCounts], None] | None = None,
    ) -> None:
        validate_trust_domain(trust_domain)
        if lease_ttl_s < 2:
            raise ValueError(f"lease_ttl_s must be at least 2, got {lease_ttl_s}")
        if load_interval_s < 0 or first_message_timeout_s <= 0:
            raise ValueError("load_interval_s must be >= 0 and first_message_timeout_s > 0")
        self.store = store
        self.trust_domain = trust_domain
        self.lease_ttl_s = lease_ttl_s
        self.load_interval_s = load_interval_s
        self.first_message_timeout_s = first_message_timeout_s
        self.clock: Clock = clock
        self.bundles = bundles
        self.keys = keys
        self.request_policies = RequestPolicies()
        """The encoded request policy of the served bundle (one encoding per bundle)."""
        self.on_answers = on_answers
        """Called (node id, counts) on the event loop with the answer counts of each usage
        report applied (never for a skipped re-send); must not block or raise. None: the
        sessions' replies do not offer ``answer_reports``."""
        self._usage_applied: dict[str, tuple[str, int]] = {}
        self._usage_locks: dict[str, asyncio.Lock] = {}

    async def apply_usage(self, node_id: str, report: UsageReport) -> UsageAck:
        """Add ``report`` (from ``node_id``) to the store's usage counters once per this
        service's memory of it (module doc), and return the answer to send. Raises
        ``StoreError`` if the store fails (tenants before the failing one stay added)."""
        month = report.month if report.month is not None else usage_month(self.clock())
        async with self._usage_locks.setdefault(node_id, asyncio.Lock()):
            last = self._usage_applied.get(node_id)
            duplicate = last is not None and last[0] == report.epoch and report.seq <= last[1]
            totals: dict[str, UsageTotal] = {}
            for tenant, delta in sorted(report.tenants.items()):
                if duplicate or (delta.tokens == 0 and delta.cost_micro == 0):
                    usage = await self.store.get_usage(tenant, month=month)
                else:
                    usage = await self.store.add_usage(
                        tenant, month=month, tokens=delta.tokens, cost_micro=delta.cost_micro
                    )
                totals[tenant] = UsageTotal(tokens=usage.tokens, cost_micro=usage.cost_micro)
            if not duplicate:
                self._usage_applied[node_id] = (report.epoch, report.seq)
                if report.answers is not None and self.on_answers is not None:
                    self.on_answers(node_id, report.answers)
        USAGE_REPORTS.labels("duplicate" if duplicate else "applied").inc()
        log.debug(
            "node %s usage report %s/%d: %d tenant(s)%s",
            node_id,
            report.epoch,
            report.seq,
            len(totals),
            " (duplicate, not added)" if duplicate else "",
        )
        return UsageAck(
            epoch=report.epoch, seq=report.seq, applied=not duplicate, totals=totals, month=month
        )

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register ``Session`` and ``RequestPolicy`` on ``server``."""
        handler = grpc.stream_stream_rpc_method_handler(
            self._session, request_deserializer=_decode, response_serializer=_encode
        )
        policy = grpc.unary_unary_rpc_method_handler(
            self._request_policy,
            request_deserializer=_decode_query,
            response_serializer=lambda data: data,
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    NODE_REGISTRY_SERVICE, {SESSION_METHOD: handler, REQUEST_POLICY_METHOD: policy}
                ),
            )
        )

    def request_policy(self) -> bytes:
        """The served bundle's request policy, encoded. Raises ``NoRequestPolicy`` and
        ``RequestPolicyTooLarge``."""
        bundle = self.bundles.served_bundle if self.bundles is not None else None
        if bundle is None:
            raise NoRequestPolicy("the control plane serves no bundle yet")
        return self.request_policies.encoded(bundle, self.served_keys())

    def served_keys(self) -> ServedKeys:
        """The tenant API keys served now (none without ``keys``)."""
        return self.keys.served_keys if self.keys is not None else NO_KEYS

    async def _request_policy(
        self,
        query: RequestPolicyQuery | _Undecodable,
        context: grpc.aio.ServicerContext[object, bytes],
    ) -> bytes:
        try:
            self._peer(context)  # type: ignore[arg-type]
            if isinstance(query, _Undecodable):
                raise UndecodableRequest(REQUEST_POLICY_METHOD, query.detail)
            answer = self.request_policy()
        except Exception as exc:  # the edge: every error becomes a status
            code, message = status_for(exc)
            POLICY_FETCHES.labels(code.name).inc()
            if code is grpc.StatusCode.INTERNAL:
                log.error("request policy call failed peer=%s", context.peer(), exc_info=exc)
            elif code is not grpc.StatusCode.NOT_FOUND:
                log.warning("request policy call refused peer=%s code=%s: %s",
                            context.peer(), code.name, exc)  # fmt: skip
            await context.abort(code, message)
        POLICY_FETCHES.labels(grpc.StatusCode.OK.name).inc()
        return answer

    def _peer(self, context: Context) -> tuple[str, str]:
        spiffe_id = peer_spiffe_id(context)
        if spiffe_id is None:
            raise PeerNotAuthenticated("no client SVID (use the node port)")
        node_id = parse_node_spiffe_id(spiffe_id, self.trust_domain)
        if node_id is None:
            raise PeerNotAuthenticated(f"{spiffe_id!r} is not a node SVID of {self.trust_domain}")
        return spiffe_id, node_id

    async def _first(
        self, requests: AsyncIterator[SessionMessage | _Undecodable]
    ) -> NodeRegistration:
        try:
            async with asyncio.timeout(self.first_message_timeout_s):
                message = await anext(requests)
        except StopAsyncIteration:
            raise SessionProtocolError("the stream ended before a registration") from None
        except TimeoutError:
            raise SessionProtocolError(
                f"no registration within {self.first_message_timeout_s:g} s"
            ) from None
        if isinstance(message, _Undecodable):
            raise UndecodableRequest(SESSION_METHOD, message.detail)
        if message.registration is None:
            raise SessionProtocolError("the first message must be a registration")
        return message.registration

    async def _session(
        self, requests: AsyncIterator[SessionMessage | _Undecodable], context: Context
    ) -> None:
        session: _Session | None = None
        SESSIONS.inc()
        try:
            ended: _Goodbye | None = None
            failure: Exception | None = None
            try:
                spiffe_id, node_id = self._peer(context)
                session = _Session(self, context, spiffe_id, node_id)
                iterator = aiter(requests)
                await session.register(await self._first(iterator))
                ended = await session.run(iterator)
            except Exception as exc:  # noqa: BLE001 - the edge: every error becomes a status
                failure = exc
            # A goodbye is final; a stream that ended or failed may be a vanished client.
            vanished = not (ended is not None and ended.said) and await _vanished(context)
            if session is not None:
                await session.stop(revoke=not vanished)
            if failure is not None and not vanished:
                await self._refuse(context, failure)
        except asyncio.CancelledError:
            # Cancelled anywhere above (also while checking): keep the lease to expire.
            if session is not None:
                await session.stop(revoke=False)
            raise
        finally:
            SESSIONS.dec()

    async def _refuse(self, context: Context, exc: Exception) -> None:
        code, message = status_for(exc)
        REFUSED.labels(code.name).inc()
        if code is grpc.StatusCode.INTERNAL:
            log.error("node registry session failed peer=%s", context.peer(), exc_info=exc)
        else:
            log.warning(
                "node registry session refused peer=%s code=%s: %s", context.peer(), code.name, exc
            )
        await context.abort(code, message)
