"""What a control-plane TLS port presents to a new handshake, and whether it accepts a
client SVID: a fresh connection each time, so nothing is reused from an earlier one."""

from __future__ import annotations

import socket
import ssl
import tempfile
from pathlib import Path

import grpc
from cryptography import x509

from tiermesh.controlplane.api.join import control_plane_dns_name

__all__ = ["accepts", "presented"]

_PROBE_METHOD = "/tiermesh.test.v1.Probe/Nothing"


def presented(
    port: int, roots: bytes, client: tuple[bytes, bytes] | None = None
) -> x509.Certificate:
    """The leaf certificate ``127.0.0.1:port`` presents in a new TLS handshake (ALPN h2, as
    gRPC clients offer), verified against ``roots``; ``client`` is (chain PEM, key PEM)
    to present, or None."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the SAN is checked by the callers that care
    context.load_verify_locations(cadata=roots.decode())
    context.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory(prefix="tm-tls-") as folder:
        if client is not None:
            chain, key = Path(folder) / "chain.pem", Path(folder) / "key.pem"
            chain.write_bytes(client[0])
            key.write_bytes(client[1])
            context.load_cert_chain(chain, key)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def accepts(port: int, roots: bytes, client: tuple[bytes, bytes], trust_domain: str) -> bool:
    """Whether a new mTLS connection presenting ``client`` gets past the handshake: a call
    of an unknown method answers UNIMPLEMENTED once the port accepted the SVID and
    UNAVAILABLE when the handshake was refused."""
    credentials = grpc.ssl_channel_credentials(roots, client[1], client[0])
    options = [
        ("grpc.ssl_target_name_override", control_plane_dns_name(trust_domain)),
        ("grpc.use_local_subchannel_pool", 1),  # a connection of its own
    ]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as ch:
        call = ch.unary_unary(_PROBE_METHOD)
        try:
            await call(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return True
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                return False
            raise
    return True
