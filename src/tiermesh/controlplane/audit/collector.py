"""The audit collector gRPC service (``tiermesh.audit.v1.Collector/Ship``).

Served over mutual TLS only (the handshake verifies the node's SVID against the trust
bundle). For each :class:`~tiermesh.controlplane.api.ShipRequest` it checks, before storing
anything:

1. the connection carries a verified client SVID (else UNAUTHENTICATED);
2. every record names that SVID's SPIFFE ID (else PERMISSION_DENIED — a node may ship only
   its own decisions; logged as a warning with the peer and the claimed ID);
3. every record's ``hash`` matches its content, and every record is vouched for by a
   signature that verifies with the connection's client certificate or with one of the
   request's ``signer_chains_pem`` — each of which must chain to the trust bundle, name
   the same SPIFFE ID, and have been valid when the record was made (within ``skew``) —
   else INVALID_ARGUMENT naming the record that failed.

How records are vouched for: the batch is cut into *runs*, records that link (each one's
``seq`` is the previous one's + 1 and its ``prev_hash`` the previous one's ``hash``). A
record's hash covers its ``prev_hash``, so a run's last record, once its own hash and
signature check, vouches for every record before it in the run: changing any of them
changes a hash that a later, signed record covers. So the signatures of a run's last and
first records are verified; when the same signer made both (a node's SVID rotates
forward only, so every record between was signed with it too), the records between are
not verified one by one, and each is stored as that signer's and must fall within its
validity. A run whose ends have different signers (a rotation inside the batch) has every
record verified. A shipment of one node's chain is thus checked with two ECDSA
verifications instead of one per record (the signatures stay on the records: ``tiermesh
audit verify`` still checks each one).

Then the batch is stored in one durable transaction, deduplicated by ``decision_id``, and
only then acknowledged. Verification and the database run on worker threads; the
collector itself is bound to the event loop of the server it was added to.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pydantic import ValidationError

from tiermesh.controlplane.api.decision import (
    AUDIT_SERVICE,
    MAX_SHIP_BYTES,
    SHIP_METHOD,
    DecisionRecord,
    ShipRequest,
    ShipResponse,
    record_hash,
    signature_valid_for_hash,
)
from tiermesh.controlplane.audit.errors import (
    ForeignRecord,
    NodeNotAuthenticated,
    RecordRejected,
    UndecodableShipment,
    status_for,
)
from tiermesh.controlplane.audit.store import AuditStore
from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.errors import SvidVerificationError
from tiermesh.controlplane.identity.live_credentials import LiveCredentials
from tiermesh.controlplane.identity.peer import peer_chain_pem, peer_spiffe_id
from tiermesh.controlplane.identity.server_cert import ServerCertificate
from tiermesh.controlplane.identity.verify import verify_svid

__all__ = [
    "AuditCollector",
    "AuditCollectorServer",
    "Signer",
    "linked_runs",
    "start_audit_collector",
]

log = logging.getLogger("tiermesh.audit")

Context = grpc.aio.ServicerContext[object, bytes]


@dataclass(frozen=True, slots=True)
class Signer:
    """A certificate records may be verified with."""

    fingerprint: str
    chain_pem: str
    certificate: x509.Certificate

    @classmethod
    def from_chain(cls, chain: Sequence[x509.Certificate]) -> Signer:
        leaf = chain[0]
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain).decode()
        return cls(leaf.fingerprint(hashes.SHA256()).hex(), pem, leaf)


def _decode(data: bytes) -> ShipRequest | UndecodableShipment:
    try:
        return ShipRequest.model_validate_json(data)
    except ValidationError as exc:
        return UndecodableShipment(f"{exc.error_count()} problem(s): {exc.errors()[0]['msg']}")


def _encode(response: ShipResponse) -> bytes:
    return response.model_dump_json().encode()


def linked_runs(records: Sequence[DecisionRecord]) -> list[tuple[int, int]]:
    """(first, last) indexes (inclusive) of the maximal runs of ``records`` in which each
    record links to the one before it: ``seq`` one more and ``prev_hash`` its ``hash``."""
    runs: list[tuple[int, int]] = []
    first = 0
    for index in range(1, len(records)):
        before, record = records[index - 1], records[index]
        if record.seq != before.seq + 1 or record.prev_hash != before.hash:
            runs.append((first, index - 1))
            first = index
    if records:
        runs.append((first, len(records) - 1))
    return runs


def _signer_of(record: DecisionRecord, candidates: list[Signer]) -> Signer:
    """The candidate whose key verifies ``record``'s signature (its hash already checked),
    moved to the front (the next record is most likely signed by it too).

    Raises:
        RecordRejected: none does.
    """
    for index, signer in enumerate(candidates):
        if signature_valid_for_hash(record, signer.certificate.public_key()):
            if index:
                candidates.insert(0, candidates.pop(index))
            return signer
    raise RecordRejected(
        str(record.decision_id), "signature verifies with none of the node's SVIDs"
    )


class AuditCollector:
    """Verifies and stores shipped records (see the module docstring).

    ``bundle`` returns the current trust bundle (the CA's, e.g. ``ca.bundle``); ``skew`` is
    how far a record's timestamp may lie outside its signer's validity (node clocks drift).
    """

    def __init__(
        self,
        store: AuditStore,
        bundle: Callable[[], TrustBundle],
        *,
        skew: dt.timedelta = dt.timedelta(minutes=5),
    ) -> None:
        self._store = store
        self._bundle = bundle
        self._skew = skew

    def add_to(self, server: grpc.aio.Server) -> None:
        """Register ``Ship`` on ``server``."""
        handler = grpc.unary_unary_rpc_method_handler(
            self._ship, request_deserializer=_decode, response_serializer=_encode
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(AUDIT_SERVICE, {SHIP_METHOD: handler}),)
        )

    async def ship(self, request: ShipRequest, peer_spiffe: str, peer_chain: bytes) -> ShipResponse:
        """Check ``request`` as shipped by the verified peer and store it.

        Raises:
            ForeignRecord, RecordRejected, AuditStoreError.
        """
        for record in request.records:
            if record.node_spiffe_id != peer_spiffe:
                raise ForeignRecord(peer_spiffe, record.node_spiffe_id, str(record.decision_id))
        pairs, signers = await asyncio.to_thread(self._verify, request, peer_spiffe, peer_chain)
        accepted, duplicates = await asyncio.to_thread(self._store.insert, pairs, signers)
        return ShipResponse(accepted=accepted, duplicates=duplicates)

    def _verify(
        self, request: ShipRequest, peer_spiffe: str, peer_chain: bytes
    ) -> tuple[list[tuple[DecisionRecord, str]], dict[str, str]]:
        records = request.records
        candidates = [Signer.from_chain(x509.load_pem_x509_certificates(peer_chain))]
        for chain_pem in request.signer_chains_pem:
            candidates.append(self._shipped_signer(chain_pem, peer_spiffe, records[0]))
        for record in records:
            if record_hash(record) != record.hash:
                raise RecordRejected(str(record.decision_id), "hash does not match its content")
        signed_by: list[Signer | None] = [None] * len(records)
        for first, last in linked_runs(records):
            head = _signer_of(records[last], candidates)
            signed_by[last] = head
            if first == last:
                continue
            tail = _signer_of(records[first], candidates)
            signed_by[first] = tail
            for index in range(first + 1, last):
                signed_by[index] = head if tail is head else _signer_of(records[index], candidates)
        pairs: list[tuple[DecisionRecord, str]] = []
        used: dict[str, str] = {}
        for record, signer in zip(records, signed_by, strict=True):
            assert signer is not None
            cert = signer.certificate
            if not (
                cert.not_valid_before_utc - self._skew
                <= record.timestamp
                <= cert.not_valid_after_utc + self._skew
            ):
                raise RecordRejected(
                    str(record.decision_id), "made outside its signer's validity period"
                )
            pairs.append((record, signer.fingerprint))
            used[signer.fingerprint] = signer.chain_pem
        return pairs, used

    def _shipped_signer(self, chain_pem: str, peer_spiffe: str, record: DecisionRecord) -> Signer:
        try:
            certs = x509.load_pem_x509_certificates(chain_pem.encode())
            verify_svid(
                certs,
                self._bundle(),
                now=certs[0].not_valid_before_utc,
                expected_spiffe_id=peer_spiffe,
            )
        except (ValueError, SvidVerificationError) as exc:
            raise RecordRejected(
                str(record.decision_id), f"a signer chain is refused: {exc}"
            ) from exc
        return Signer.from_chain(certs)

    async def _ship(
        self, request: ShipRequest | UndecodableShipment, context: Context
    ) -> ShipResponse:
        try:
            if isinstance(request, UndecodableShipment):
                raise request
            peer = peer_spiffe_id(context)
            chain = peer_chain_pem(context)
            if peer is None or chain is None:
                raise NodeNotAuthenticated("no verified client SVID on the connection")
            response = await self.ship(request, peer, chain)
        except Exception as exc:  # noqa: BLE001 - the edge: every error becomes a status
            await self._refuse(context, exc)
        log.debug(
            "audit: stored %d records (%d duplicates) from %s",
            response.accepted,
            response.duplicates,
            peer,
        )
        return response

    async def _refuse(self, context: Context, exc: Exception) -> NoReturn:
        code, message = status_for(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("audit Ship failed peer=%s", context.peer())
        else:
            log.warning("audit Ship refused peer=%s code=%s: %s", context.peer(), code.name, exc)
        await context.abort(code, message)


@dataclass(frozen=True, slots=True)
class AuditCollectorServer:
    """A started collector and its bound port. Stop it with :meth:`stop`."""

    server: grpc.aio.Server
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving; in-flight calls get ``grace`` seconds."""
        await self.server.stop(grace)


async def start_audit_collector(
    collector: AuditCollector,
    *,
    certificate: ServerCertificate | None = None,
    bundle: TrustBundle | None = None,
    credentials: LiveCredentials | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AuditCollectorServer:
    """Serve ``collector`` on an mTLS port (port 0 picks a free one) that follows
    ``credentials``, or else presents ``certificate`` and trusts ``bundle``.

    Raises:
        RuntimeError: the port cannot be bound (grpcio's error).
        ValueError: neither ``credentials`` nor ``certificate`` and ``bundle`` are given.
    """
    live = LiveCredentials.given(credentials, certificate, bundle)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_SHIP_BYTES),
        ]
    )
    collector.add_to(server)
    bound = server.add_secure_port(f"{host}:{port}", live.server_credentials())
    await server.start()
    return AuditCollectorServer(server, host, bound)
