"""A CA rollover under live mTLS traffic through a real Envoy, without one failed request.

Envoy holds the node's SVID and trust bundle over SDS from the agent's ``LocalSdsServer``;
its ``app`` listener forwards every request over a fresh mTLS connection (peer pinned to
the node's SPIFFE ID) to its own mTLS listener. The rollover is ordered so that no side ever
meets a certificate it does not trust yet:

1. ``ca.rotate()``; push the bundle with the old *and* the new root (same SVID);
2. re-issue the SVID from the new intermediate; push it (same bundle);
3. wait until the last SVID of the old generation has expired, retire the old generation
   (no ``force``: the CA's own record says nothing live depends on it); push the bundle
   without the old root.

Afterwards a leaf from the old intermediate is refused by ``verify_svid`` and by Envoy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.agent_identity.test_envoy_sds import PEER_OK, PEER_OTHER, bootstrap, get
from tests.unit.agent_identity.casource import NODE_ID, SPIFFE_ID, TRUST_DOMAIN
from tiermesh.agents.identity import (
    LocalSdsServer,
    SdsNames,
    SvidMaterial,
    SvidStore,
    build_csr,
    generate_key,
    load_material,
)
from tiermesh.controlplane.identity import (
    CaConfig,
    CaState,
    GenerationRecord,
    IssuedSvid,
    LocalCertificateAuthority,
    RootInUseError,
    UntrustedChainError,
    utc_now,
    verify_svid,
)
from tiermesh.demo.standin import StandinBackend
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import validate_bootstrap
from tiermesh.xds.builders import http_listener  # noqa: F401 - loads the HCM/router protos

pytestmark = pytest.mark.envoy

FIRST_SVID_TTL = dt.timedelta(seconds=4)
"""Short, so that waiting for the old generation's last SVID to expire fits in a test."""
MAX_TRAFFIC_S = 20.0


def issue(
    ca: LocalCertificateAuthority, ttl: dt.timedelta | None = None
) -> tuple[ec.EllipticCurvePrivateKey, IssuedSvid]:
    key = generate_key()
    return key, ca.issue(build_csr(key, node_id=NODE_ID), NODE_ID, ttl=ttl)


def material(
    key: ec.EllipticCurvePrivateKey, svid: IssuedSvid, ca: LocalCertificateAuthority
) -> SvidMaterial:
    return load_material(key, svid.chain_pem(), ca.bundle().to_pem(), now=utc_now())


def held(envoy: EnvoyProcess) -> tuple[set[int], set[int]]:
    """Serials of the roots Envoy trusts and of the certificates it presents."""
    roots: set[int] = set()
    chain: set[int] = set()
    for entry in envoy.admin_json("/certs")["certificates"]:
        roots |= {int(c["serial_number"], 16) for c in entry.get("ca_cert", [])}
        chain |= {int(c["serial_number"], 16) for c in entry.get("cert_chain", [])}
    return roots, chain


async def until(envoy: EnvoyProcess, done: Callable[[set[int], set[int]], bool]) -> None:
    deadline = time.monotonic() + 5
    while not done(*await asyncio.to_thread(held, envoy)):
        assert time.monotonic() < deadline, f"Envoy never got there: {held(envoy)}"
        await asyncio.sleep(0.02)


def traffic(url: str, stop: threading.Event) -> tuple[int, list[str]]:
    """A request every ~10 ms until ``stop`` (at most MAX_TRAFFIC_S); (sent, failures)."""
    sent, failures = 0, []
    deadline = time.monotonic() + MAX_TRAFFIC_S
    while not stop.is_set() and time.monotonic() < deadline:
        sent += 1
        try:
            status, backend = get(url)
            if status != 200 or backend != "model":
                failures.append(f"{status} {backend}")
        except OSError as exc:
            failures.append(repr(exc))
        time.sleep(0.01)
    return sent, failures


def mtls_request(
    port: int, key: ec.EllipticCurvePrivateKey, svid: IssuedSvid, trusted: bytes, workdir: Path
) -> str:
    """One request to Envoy's mTLS listener presenting ``svid``; the status line, or why not."""
    cert, key_file = workdir / f"{svid.serial}.pem", workdir / f"{svid.serial}.key"
    cert.write_bytes(svid.chain_pem())
    key_file.write_bytes(SvidMaterial(SPIFFE_ID, key, svid.chain, ()).key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # Envoy's certificate is checked against the bundle
    context.load_verify_locations(cadata=trusted.decode())
    context.load_cert_chain(cert, key_file)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: mtls\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc!r}"
    return data.split(b"\r\n", 1)[0].decode() or "refused: closed without an answer"


async def test_ca_rollover_under_live_traffic_without_a_failed_request(
    sock_dir: Path, tmp_path: Path
) -> None:
    ca = LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN))
    old = ca.active
    key0, first = issue(ca, FIRST_SVID_TTL)
    store = SvidStore()
    store.update(material(key0, first, ca))
    names = SdsNames(
        peers={PEER_OK: (SPIFFE_ID,), PEER_OTHER: (f"spiffe://{TRUST_DOMAIN}/node/other",)}
    )
    ports = {"admin": free_port(), "app": free_port(), "mtls": free_port()}

    with StandinBackend("model") as backend:
        async with LocalSdsServer(store, f"unix:{sock_dir / 'sds.sock'}", names=names) as sds:
            document = bootstrap(sds.address, backend=backend.port, **ports)
            validate_bootstrap(document)
            with EnvoyProcess(document, workdir=tmp_path, name="edge-1") as envoy:
                await asyncio.to_thread(envoy.wait_ready, 10)
                url = f"http://127.0.0.1:{ports['app']}/v1/models"
                assert await asyncio.to_thread(get, url) == (200, "model")
                assert held(envoy) == ({old.root.serial_number}, {first.serial})

                stop = threading.Event()
                load = asyncio.create_task(asyncio.to_thread(traffic, url, stop))
                try:
                    await asyncio.sleep(0.3)

                    # 1. Trust the new root everywhere before anything presents it.
                    new = ca.rotate()
                    store.update(material(key0, first, ca))
                    await until(envoy, lambda roots, _: new.root.serial_number in roots)
                    await asyncio.sleep(0.3)

                    # 2. A new SVID from the new intermediate; the bundle is unchanged.
                    key1, second = issue(ca)
                    assert second.generation_id == new.id
                    store.update(material(key1, second, ca))
                    await until(
                        envoy, lambda _, chain: second.serial in chain and first.serial not in chain
                    )
                    await asyncio.sleep(0.3)

                    # A leaf of the old intermediate that the CA has no record of (a leaked
                    # key, say): accepted while the old root is still in the bundle.
                    old_only = LocalCertificateAuthority(
                        ca.config, CaState(TRUST_DOMAIN, (GenerationRecord(old),))
                    )
                    stray_key, stray = issue(old_only)
                    trusted = ca.bundle().to_pem()
                    accepted = await asyncio.to_thread(
                        mtls_request, ports["mtls"], stray_key, stray, trusted, tmp_path
                    )
                    assert accepted == "HTTP/1.1 200 OK"

                    # 3. Retire the old root once its last recorded SVID has expired.
                    with pytest.raises(RootInUseError):
                        ca.retire(old.id)
                    retirable_at = ca.retirable_at(old.id)
                    # The record keeps the exact expiry; the certificate rounds it down.
                    assert retirable_at is not None
                    assert (
                        dt.timedelta(0) <= retirable_at - first.not_after < dt.timedelta(seconds=1)
                    )
                    await asyncio.sleep((retirable_at - utc_now()).total_seconds() + 0.05)
                    ca.retire(old.id)
                    store.update(material(key1, second, ca))
                    await until(envoy, lambda roots, _: roots == {new.root.serial_number})
                    await asyncio.sleep(0.3)
                finally:
                    stop.set()
                    sent, failures = await load

                assert failures == [], f"{len(failures)} of {sent} requests failed: {failures[:5]}"
                assert sent > 100
                assert sds.pushes == 4

                with pytest.raises(UntrustedChainError):
                    verify_svid(
                        stray.chain, ca.bundle(), now=utc_now(), expected_spiffe_id=SPIFFE_ID
                    )
                verify_svid(second.chain, ca.bundle(), now=utc_now(), expected_spiffe_id=SPIFFE_ID)
                trusted = ca.bundle().to_pem()
                refused = await asyncio.to_thread(
                    mtls_request, ports["mtls"], stray_key, stray, trusted, tmp_path
                )
                assert refused.startswith("refused"), refused
                current = await asyncio.to_thread(
                    mtls_request, ports["mtls"], key1, second, trusted, tmp_path
                )
                assert current == "HTTP/1.1 200 OK"
