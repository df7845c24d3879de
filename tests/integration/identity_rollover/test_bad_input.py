"""Bad input the identity issue lists, where the existing suites leave a gap: renewals with a
malformed, foreign, CA-requesting or oversized CSR issue nothing and the node API keeps
renewing; oversized and undecodable messages on the Workload API socket are refused and
the agent keeps serving. (Malformed/foreign/CA CSRs at Join, oversized Joins and raw garbage
on the Workload API socket are covered in tests/unit/nodeapi and
tests/integration/agent_identity.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from spiffe._proto import workload_pb2, workload_pb2_grpc

from tests.unit.agent_identity.casource import CaSource, make_ca
from tests.unit.nodeapi.conftest import ControlPlane
from tests.unit.nodeapi.conftest import cp as cp  # noqa: PLC0414 - shares the fixture
from tests.unit.nodeapi.test_node_api import csr_with, joined, new_key, raw_call
from tiermesh.agents.identity import SvidRotator, SvidStore, WorkloadApiServer
from tiermesh.agents.identity.join_client import renew
from tiermesh.controlplane.api.join import MAX_REQUEST_BYTES, RENEW_METHOD, RenewRequest
from tiermesh.controlplane.identity import NodeIdentity

HEADER = (("workload.spiffe.io", "true"),)
FETCH_SVID = "/SpiffeWorkloadAPI/FetchX509SVID"


async def test_bad_renewals_issue_nothing_and_renewal_keeps_working(cp: ControlPlane) -> None:
    chain, key, _ = await joined(cp)
    other = x509.UniformResourceIdentifier(NodeIdentity(cp.ca.trust_domain, "edge-2").spiffe_id)
    good = csr_with(new_key())
    cases = [
        (RenewRequest(csr_pem="-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"), "INVALID_ARGUMENT"),
        (RenewRequest(csr_pem=good[:200]), "INVALID_ARGUMENT"),
        (RenewRequest(csr_pem=csr_with(new_key(), other)), "PERMISSION_DENIED"),
        (RenewRequest(csr_pem=csr_with(new_key(), ca=True)), "PERMISSION_DENIED"),
    ]
    before = cp.issued()
    for request, expected in cases:
        code, _ = await raw_call(
            cp, RENEW_METHOD, request.model_dump_json().encode(), client=(chain, key)
        )
        assert code.name == expected, request.csr_pem[:60]
    code, _ = await raw_call(cp, RENEW_METHOD, b"x" * (MAX_REQUEST_BYTES + 1), client=(chain, key))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert cp.issued() == before, "a refused renewal issued a certificate"

    renewed, _ = await renew(
        cp.api.node_target, chain, key, new_key(), trust_bundle_pem=cp.bundle_pem,
        server_name=cp.server_name,
    )  # fmt: skip
    assert cp.issued() == before + 1
    assert renewed != chain


@pytest.fixture
async def workload_api(sock_dir: Path) -> AsyncIterator[tuple[SvidStore, WorkloadApiServer]]:
    store = SvidStore()
    await SvidRotator(store, CaSource(make_ca())).rotate_now()
    server = WorkloadApiServer(store, sock_dir / "agent.sock")
    await server.start()
    try:
        yield store, server
    finally:
        await server.stop()


async def _raw_fetch(endpoint: str, payload: bytes) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = channel.unary_stream(FETCH_SVID)(payload, metadata=HEADER, timeout=5)
        try:
            async for _ in call:
                return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_oversized_and_undecodable_workload_api_requests_are_refused(
    workload_api: tuple[SvidStore, WorkloadApiServer],
) -> None:
    store, server = workload_api
    assert await _raw_fetch(server.endpoint, b"\x00" * (8 * 1024 * 1024)) is (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    garbage = await _raw_fetch(server.endpoint, b"\xff\xff\xff garbage")
    assert garbage is not grpc.StatusCode.OK, garbage

    async with grpc.aio.insecure_channel(server.endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        call = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=5)
        response = await call.read()
        call.cancel()
    assert response.svids[0].x509_svid == store.require().chain_der()
