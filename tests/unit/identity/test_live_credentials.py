"""Ports built on LiveCredentials present a new certificate and trust a new bundle from the
next handshake on, without a restart, and leave open connections alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from tests.support.server_tls import accepts, presented
from tests.support.svids import issue_svid

from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.identity.live_credentials import LiveCredentials
from tiermesh.controlplane.identity.server_cert import issue_server_certificate

TD = "mesh.example"
ECHO = "/tiermesh.test.v1.Echo/Echo"


def _echo(request: bytes, _context: object) -> bytes:
    return request


@dataclass
class Ports:
    live: LiveCredentials
    mutual: int
    server_only: int


@pytest.fixture
def ca() -> LocalCertificateAuthority:
    return LocalCertificateAuthority.create(CaConfig(TD))


@pytest.fixture
async def ports(ca: LocalCertificateAuthority) -> AsyncIterator[Ports]:
    live = LiveCredentials(issue_server_certificate(ca, now=dt.datetime.now(dt.UTC)), ca.bundle())
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tiermesh.test.v1.Echo", {"Echo": handler}),)
    )
    mutual = server.add_secure_port("127.0.0.1:0", live.server_credentials())
    server_only = server.add_secure_port(
        "127.0.0.1:0", live.server_credentials(require_client_auth=False)
    )
    await server.start()
    try:
        yield Ports(live, mutual, server_only)
    finally:
        await server.stop(0)


def channel(port: int, roots: bytes, client: tuple[bytes, bytes]) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(roots, client[1], client[0])
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options)


async def test_new_handshakes_get_the_new_certificate_and_roots(
    ports: Ports, ca: LocalCertificateAuthority
) -> None:
    first = ports.live.current.certificate
    old_svid = issue_svid(ca, "edge-1")
    roots = ca.bundle().to_pem()
    assert (await asyncio.to_thread(presented, ports.mutual, roots, old_svid)).serial_number == (
        first.certificate.serial_number
    )
    async with channel(ports.mutual, roots, old_svid) as open_before:
        echo = open_before.unary_unary(ECHO)
        assert await echo(b"before", timeout=5) == b"before"

        # The CA rolls over: an SVID of the new generation is refused until the port
        # trusts the new bundle.
        ca.rotate()
        new_svid = issue_svid(ca, "edge-2")
        both = ca.bundle().to_pem()
        assert not await accepts(ports.mutual, both, new_svid, TD)

        second = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
        assert ports.live.update(second, ca.bundle()).version == 2
        for port, client in ((ports.mutual, new_svid), (ports.server_only, None)):
            shown = await asyncio.to_thread(presented, port, both, client)
            assert shown.serial_number == second.certificate.serial_number
        assert await accepts(ports.mutual, both, new_svid, TD)
        assert await accepts(ports.mutual, both, old_svid, TD)  # overlap: both CAs
        # The connection made before the swap keeps working on its own handshake.
        assert await echo(b"after", timeout=5) == b"after"

        # The old root leaves the bundle: new handshakes with an old SVID are refused,
        # the open connection is not cut.
        old = ca.generations[0]
        ca.retire(old.id, force=True)
        third = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
        ports.live.update(third, ca.bundle())
        assert not await accepts(ports.mutual, both, old_svid, TD)
        assert await accepts(ports.mutual, both, new_svid, TD)
        assert await echo(b"still", timeout=5) == b"still"


async def test_many_handshakes_after_one_update_all_see_it(
    ports: Ports, ca: LocalCertificateAuthority
) -> None:
    """Each port gets a version once; every later handshake keeps it (no flip-flop)."""
    roots = ca.bundle().to_pem()
    second = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
    ports.live.update(second, ca.bundle())
    svid = issue_svid(ca, "edge-1")
    serials = {
        (await asyncio.to_thread(presented, port, roots, svid)).serial_number
        for port in (ports.mutual, ports.server_only)
        for _ in range(5)
    }
    assert serials == {second.certificate.serial_number}


def test_given_needs_credentials_or_both_parts(ca: LocalCertificateAuthority) -> None:
    certificate = issue_server_certificate(ca, now=dt.datetime.now(dt.UTC))
    live = LiveCredentials(certificate, ca.bundle())
    assert LiveCredentials.given(live, None, None) is live
    made = LiveCredentials.given(None, certificate, ca.bundle())
    assert made.current.certificate is certificate
    with pytest.raises(ValueError, match="give credentials"):
        LiveCredentials.given(None, certificate, None)
