"""The Workload API server against py-spiffe's own clients, over a real unix socket."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest
from spiffe import WorkloadApiClient, X509Source
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.workloadapi.errors import FetchJwtSvidError

from tests.integration.agent_identity.conftest import Served
from tiermesh.agents.identity import SocketPathError, SvidStore, WorkloadApiServer
from tiermesh.controlplane.identity import TrustBundle, verify_svid

TD = "mesh.example"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def eventually(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_py_spiffe_client_fetches_a_verifiable_svid(served: Served) -> None:
    with WorkloadApiClient(served.server.endpoint, default_timeout=5) as client:
        context = await asyncio.to_thread(client.fetch_x509_context)
        bundles = await asyncio.to_thread(client.fetch_x509_bundles)
    svid = context.default_svid
    assert str(svid.spiffe_id) == "spiffe://mesh.example/node/edge-1"
    bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert bundle is not None
    trust = TrustBundle(TD, tuple(bundle.x509_authorities))
    verified = verify_svid(svid.cert_chain, trust, now=_now())
    assert verified.node_id == "edge-1"
    assert trust == served.ca.bundle()
    assert svid.private_key.public_key() == served.store.require().private_key.public_key()
    from_bundles = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert from_bundles is not None
    assert from_bundles.x509_authorities == set(served.ca.bundle().roots)


def _serves(source: X509Source, serial: int) -> bool:
    return bool(source.get_x509_context().default_svid.leaf.serial_number == serial)


async def test_x509_source_follows_rotations(served: Served) -> None:
    source = await asyncio.to_thread(
        X509Source, socket_path=served.server.endpoint, timeout_in_seconds=5
    )
    try:
        serials = [source.get_x509_context().default_svid.leaf.serial_number]
        assert serials[0] == served.store.require().serial
        for _ in range(2):
            material = await served.rotator.rotate_now()
            await eventually(partial(_serves, source, material.serial))
            svid = source.get_x509_context().default_svid
            verify_svid(svid.cert_chain, served.ca.bundle(), now=_now())
            serials.append(svid.leaf.serial_number)
        assert len(set(serials)) == 3
    finally:
        await asyncio.to_thread(source.close)


async def test_the_bundle_stream_reports_a_ca_rollover(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.server.endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        call = stub.FetchX509Bundles(
            workload_pb2.X509BundlesRequest(), metadata=(("workload.spiffe.io", "true"),)
        )
        first = await call.read()
        assert list(first.bundles) == ["spiffe://mesh.example"]
        await served.rotator.rotate_now()  # same roots: nothing to send
        served.ca.rotate()
        await served.rotator.rotate_now()  # the new SVID arrives with both roots
        second = await asyncio.wait_for(call.read(), 5)
        call.cancel()
    trust = TrustBundle.from_pem(TD, served.store.require().bundle_pem())
    assert len(trust.roots) == 2
    assert len(second.bundles["spiffe://mesh.example"]) > len(
        first.bundles["spiffe://mesh.example"]
    )


async def test_calls_without_the_security_header_are_refused(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.server.endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        for call in (
            stub.FetchX509SVID(workload_pb2.X509SVIDRequest()),
            stub.FetchX509Bundles(workload_pb2.X509BundlesRequest()),
            stub.FetchX509SVID(
                workload_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "yes"),)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "workload.spiffe.io" in (info.value.details() or "")


async def test_jwt_methods_say_they_are_not_implemented(served: Served) -> None:
    with (
        WorkloadApiClient(served.server.endpoint, default_timeout=5) as client,
        pytest.raises(FetchJwtSvidError, match="UNIMPLEMENTED"),
    ):
        await asyncio.to_thread(client.fetch_jwt_svid, {"aud"})
    async with grpc.aio.insecure_channel(served.server.endpoint) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        header = (("workload.spiffe.io", "true"),)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ValidateJWTSVID(
                workload_pb2.ValidateJWTSVIDRequest(audience="a", svid="x"), metadata=header
            )
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "X.509" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=header).read()
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _garbage(path: Path) -> None:
    for payload in (
        b"\x00" * 64,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(payload)
            try:
                while sock.recv(4096):
                    pass
            except TimeoutError:
                pass


async def test_garbage_on_the_socket_does_not_stop_the_server(served: Served) -> None:
    await asyncio.to_thread(_garbage, served.server.socket_path)
    with WorkloadApiClient(served.server.endpoint, default_timeout=5) as client:
        svid = await asyncio.to_thread(client.fetch_x509_svid)
    assert svid.leaf.serial_number == served.store.require().serial


async def test_socket_is_owner_only_and_removed_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file left behind by a crashed agent
    server = WorkloadApiServer(SvidStore(), path)
    await server.start()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    await server.stop()
    assert not path.exists()


async def test_unusable_socket_paths_are_refused(sock_dir: Path) -> None:
    regular = sock_dir / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(SocketPathError, match="not a socket"):
        await WorkloadApiServer(SvidStore(), regular).start()
    assert regular.read_text() == "keep me"
    with pytest.raises(SocketPathError, match="longer than"):
        await WorkloadApiServer(SvidStore(), sock_dir / ("x" * 120)).start()
    with pytest.raises(SocketPathError, match="directory"):
        await WorkloadApiServer(SvidStore(), sock_dir / "missing" / "a.sock").start()


async def test_a_client_waits_for_the_first_svid(sock_dir: Path, served: Served) -> None:
    empty = SvidStore()
    async with (
        WorkloadApiServer(empty, sock_dir / "empty.sock") as server,
        grpc.aio.insecure_channel(server.endpoint) as channel,
    ):
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)  # type: ignore[no-untyped-call]
        call = stub.FetchX509SVID(
            workload_pb2.X509SVIDRequest(), metadata=(("workload.spiffe.io", "true"),)
        )
        pending = asyncio.ensure_future(call.read())
        await asyncio.sleep(0.1)
        assert not pending.done()
        empty.update(served.store.require())
        response = await asyncio.wait_for(pending, 5)
        call.cancel()
    assert response.svids[0].spiffe_id == "spiffe://mesh.example/node/edge-1"
