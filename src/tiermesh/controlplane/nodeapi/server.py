"""The node identity gRPC service (``tiermesh.node.v1.NodeIdentity``): Join and Renew.

One ``grpc.aio`` server listens on two TLS ports with the same handlers:

- the *join* port: server-authenticated TLS only. grpcio's server credentials either
  demand a client certificate or never ask for one (``require_client_auth=False`` sends no
  CertificateRequest), so a node without an SVID needs a port of its own. ``Renew`` is
  refused here with UNAUTHENTICATED because no client SVID can be present.
- the *node* port: mutual TLS; the handshake verifies the client chain against the trust
  bundle. ``Join`` is served here too (a node may re-join with a token).

Messages are the JSON contracts of :mod:`tiermesh.controlplane.api.join`. Requests over
``MAX_REQUEST_BYTES`` are refused by gRPC itself (RESOURCE_EXHAUSTED). Every refusal is a
status code from :func:`~tiermesh.controlplane.nodeapi.errors.status_for` and one warning
log line; nothing is issued, and the server keeps serving.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc
from pydantic import BaseModel, ValidationError

from tiermesh.controlplane.api.join import (
    JOIN_METHOD,
    MAX_REQUEST_BYTES,
    NODE_IDENTITY_SERVICE,
    RENEW_METHOD,
    JoinRequest,
    RenewRequest,
    SvidResponse,
)
from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.ca import CertificateAuthority, Clock, IssuedSvid, utc_now
from tiermesh.controlplane.identity.csr import check_csr, load_csr
from tiermesh.controlplane.identity.live_credentials import LiveCredentials
from tiermesh.controlplane.identity.peer import peer_chain_pem
from tiermesh.controlplane.identity.server_cert import ServerCertificate
from tiermesh.controlplane.identity.spiffe_id import NodeIdentity
from tiermesh.controlplane.identity.tokens import JoinTokens
from tiermesh.controlplane.identity.verify import verify_svid
from tiermesh.controlplane.metrics import note_issued
from tiermesh.controlplane.nodeapi.errors import (
    PeerNotAuthenticated,
    UndecodableRequest,
    status_for,
)
from tiermesh.controlplane.nodeapi.registry import NodeRegistryService

__all__ = ["NodeApiServer", "NodeIdentityService", "start_node_api"]

log = logging.getLogger("tiermesh.nodeapi")

Context = grpc.aio.ServicerContext[object, bytes]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class _Undecodable:
    detail: str


def _decoder(model: type[M]) -> Callable[[bytes], M | _Undecodable]:
    def decode(data: bytes) -> M | _Undecodable:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            return _Undecodable(f"{exc.error_count()} problem(s): {exc.errors()[0]['msg']}")

    return decode


def _encode(response: SvidResponse) -> bytes:
    return response.model_dump_json().encode()


class NodeIdentityService:
    """Issues SVIDs to joining and renewing nodes.

    Construct and serve it on one event loop; handlers run there (signing is ~0.2 ms of
    CPU, done inline). ``clock`` is the time peer SVIDs are re-verified at; ``svid_ttl``
    overrides the CA's default leaf lifetime.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        tokens: JoinTokens,
        *,
        clock: Clock = utc_now,
        svid_ttl: dt.timedelta | None = None,
    ) -> None:
        self._ca = ca
        self._tokens = tokens
        self._clock = clock
        self._ttl = svid_ttl

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register ``Join`` and ``Renew`` on ``server``."""
        handlers = {
            JOIN_METHOD: grpc.unary_unary_rpc_method_handler(
                self._join,
                request_deserializer=_decoder(JoinRequest),
                response_serializer=_encode,
            ),
            RENEW_METHOD: grpc.unary_unary_rpc_method_handler(
                self._renew,
                request_deserializer=_decoder(RenewRequest),
                response_serializer=_encode,
            ),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(NODE_IDENTITY_SERVICE, handlers),)
        )

    async def join(self, request: JoinRequest) -> IssuedSvid:
        """Trade a join token for an SVID. The CSR is checked before the token is consumed,
        so a bad CSR does not burn the token.

        Raises:
            JoinTokenError (subclasses), CsrRejectedError (subclasses), CaExpiredError,
            StoreError.
        """
        node_id = await self._tokens.peek(request.token)
        csr = request.csr_pem.encode()
        check_csr(load_csr(csr), NodeIdentity(self._ca.trust_domain, node_id))
        consumed = await self._tokens.consume(request.token)
        issued = self._ca.issue(csr, consumed, ttl=self._ttl)
        note_issued(issued.node_id, issued.certificate.not_valid_after_utc.timestamp(), "join")
        return issued

    def renew(self, request: RenewRequest, peer_chain: bytes | None) -> IssuedSvid:
        """A fresh SVID for the node that ``peer_chain`` (the client's verified TLS chain)
        names. The chain is verified again against the current bundle at ``clock()``.

        Raises:
            PeerNotAuthenticated, SvidVerificationError (subclasses), CsrRejectedError
            (subclasses; a CSR naming another node is CsrIdentityMismatchError),
            CaExpiredError.
        """
        if peer_chain is None:
            raise PeerNotAuthenticated("no client certificate (use the node port)")
        verified = verify_svid(peer_chain, self._ca.bundle(), now=self._clock())
        if verified.node_id is None:
            raise PeerNotAuthenticated(f"{verified.spiffe_id!r} is not a node SVID")
        issued = self._ca.issue(request.csr_pem.encode(), verified.node_id, ttl=self._ttl)
        note_issued(issued.node_id, issued.certificate.not_valid_after_utc.timestamp(), "renew")
        return issued

    async def _join(self, request: JoinRequest | _Undecodable, context: Context) -> SvidResponse:
        try:
            if isinstance(request, _Undecodable):
                raise UndecodableRequest(JOIN_METHOD, request.detail)
            issued = await self.join(request)
        except Exception as exc:  # noqa: BLE001 - the edge: every error becomes a status
            await self._refuse(JOIN_METHOD, context, exc)
        return self._respond(JOIN_METHOD, context, issued)

    async def _renew(self, request: RenewRequest | _Undecodable, context: Context) -> SvidResponse:
        try:
            if isinstance(request, _Undecodable):
                raise UndecodableRequest(RENEW_METHOD, request.detail)
            issued = self.renew(request, peer_chain_pem(context))
        except Exception as exc:  # noqa: BLE001 - the edge: every error becomes a status
            await self._refuse(RENEW_METHOD, context, exc)
        return self._respond(RENEW_METHOD, context, issued)

    def _respond(self, method: str, context: Context, issued: IssuedSvid) -> SvidResponse:
        log.info(
            "node api %s issued %s serial=%x until %s peer=%s",
            method,
            issued.spiffe_id,
            issued.serial,
            issued.not_after.isoformat(),
            context.peer(),
        )
        return SvidResponse(
            svid_chain_pem=issued.chain_pem().decode(),
            bundle_pem=self._ca.bundle().to_pem().decode(),
            spiffe_id=issued.spiffe_id,
            expires_at=issued.not_after,
        )

    async def _refuse(self, method: str, context: Context, exc: Exception) -> NoReturn:
        code, message = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("node api %s failed peer=%s", method, context.peer())
        else:
            log.warning(
                "node api %s refused peer=%s code=%s: %s", method, context.peer(), code.name, exc
            )
        await context.abort(code, message)


@dataclass(frozen=True, slots=True)
class NodeApiServer:
    """A started node API server and its two bound ports. Stop it with :meth:`stop`."""

    server: grpc.aio.Server
    host: str
    join_port: int
    node_port: int

    @property
    def join_target(self) -> str:
        """``host:join_port`` (TLS, no client certificate)."""
        return f"{self.host}:{self.join_port}"

    @property
    def node_target(self) -> str:
        """``host:node_port`` (mutual TLS)."""
        return f"{self.host}:{self.node_port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds."""
        await self.server.stop(grace)


async def start_node_api(
    service: NodeIdentityService,
    *,
    certificate: ServerCertificate | None = None,
    bundle: TrustBundle | None = None,
    credentials: LiveCredentials | None = None,
    host: str = "127.0.0.1",
    join_port: int = 0,
    node_port: int = 0,
    registry: NodeRegistryService | None = None,
) -> NodeApiServer:
    """Start ``service`` on a join port (TLS) and a node port (mTLS trusting ``bundle``).

    ``registry``, if given, is served too (its sessions need the node port's client SVID).
    Keepalive pings find dead peers of long-lived registry sessions. Port 0 picks a free
    one. Both ports follow ``credentials`` (a new certificate or bundle applies from the
    next handshake on); without it they serve ``certificate`` and trust ``bundle``.

    Raises:
        RuntimeError: a port cannot be bound (grpcio's error).
        ValueError: neither ``credentials`` nor ``certificate`` and ``bundle`` are given.
    """
    live = LiveCredentials.given(credentials, certificate, bundle)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            # Agents ping their registry session every second to notice a frozen replica
            # (tiermesh.agents.runtime.session.SESSION_KEEPALIVE); without this the server
            # would answer such pings with GOAWAY (too many pings).
            ("grpc.http2.min_ping_interval_without_data_ms", 500),
        ]
    )
    service.add_to(server)
    if registry is not None:
        registry.add_to(server)
    bound_join = server.add_secure_port(
        f"{host}:{join_port}", live.server_credentials(require_client_auth=False)
    )
    bound_node = server.add_secure_port(f"{host}:{node_port}", live.server_credentials())
    await server.start()
    return NodeApiServer(server, host, bound_join, bound_node)
