"""A real Envoy takes the node's SVID over SDS from the agent and keeps serving mTLS traffic
while the SVID rotates underneath it."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.agent_identity.casource import SPIFFE_ID, CaSource, make_ca
from tiermesh.agents.identity import (
    LocalSdsServer,
    SdsNames,
    SvidRotator,
    SvidStore,
    downstream_tls_socket,
    upstream_tls_socket,
    with_sds_cluster,
)
from tiermesh.demo.standin import StandinBackend
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port
from tiermesh.xds import validate_bootstrap
from tiermesh.xds.builders import http_listener  # noqa: F401 - loads the HCM/router protos

pytestmark = pytest.mark.envoy

_T = "type.googleapis.com/"
PEER_OK = "peer_edge_1"
PEER_OTHER = "peer_other"
TRAFFIC_S = 4.0


def _hcm(name: str, routes: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _T
            + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {
                "name": name,
                "virtual_hosts": [
                    {
                        "name": name,
                        "domains": ["*"],
                        "routes": [
                            {"match": {"prefix": prefix}, "route": {"cluster": cluster}}
                            for prefix, cluster in routes
                        ],
                    }
                ],
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
        },
    }


def _static_cluster(
    name: str, port: int, transport_socket: dict[str, Any] | None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
        # One request per upstream connection: every request is a fresh mTLS handshake
        # with whatever SVID Envoy holds at that moment.
        options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        cluster["typed_extension_protocol_options"] = {
            options: {
                "@type": _T + options,
                "common_http_protocol_options": {"max_requests_per_connection": 1},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    return cluster


def _listener(
    name: str, port: int, hcm: dict[str, Any], tls: dict[str, Any] | None
) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [hcm]}
    if tls is not None:
        chain["transport_socket"] = tls
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }


def bootstrap(sds_address: str, *, admin: int, app: int, mtls: int, backend: int) -> dict[str, Any]:
    """app (plain HTTP) → cluster edge_mtls (mTLS, peer pinned to SPIFFE_ID) → listener
    mtls_in (mTLS with the SVID, client certificate required) → the stand-in backend.
    ``/wrong`` goes through a cluster that expects another SPIFFE ID and must fail."""
    document = {
        "node": {"id": "edge-1", "cluster": "tiermesh"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "clusters": [
                _static_cluster("backend", backend, None),
                _static_cluster("edge_mtls", mtls, upstream_tls_socket(validation_secret=PEER_OK)),
                _static_cluster(
                    "edge_mtls_wrong", mtls, upstream_tls_socket(validation_secret=PEER_OTHER)
                ),
            ],
            "listeners": [
                _listener(
                    "mtls_in", mtls, _hcm("mtls_in", [("/", "backend")]), downstream_tls_socket()
                ),
                _listener(
                    "app",
                    app,
                    _hcm("app", [("/wrong", "edge_mtls_wrong"), ("/", "edge_mtls")]),
                    None,
                ),
            ],
        },
    }
    return with_sds_cluster(document, sds_address)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status), str(response.headers.get("x-tiermesh-backend"))
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code), ""


def presented_serials(envoy: EnvoyProcess) -> set[int]:
    certs = envoy.admin_json("/certs")["certificates"]
    return {int(c["serial_number"], 16) for entry in certs for c in entry.get("cert_chain", [])}


def traffic(url: str, seconds: float) -> tuple[int, list[str]]:
    """Requests every ~10 ms for ``seconds``; returns (how many, what failed)."""
    sent, failures = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent += 1
        try:
            status, backend = get(url)
            if status != 200 or backend != "model":
                failures.append(f"{status} {backend}")
        except OSError as exc:
            failures.append(repr(exc))
        time.sleep(0.01)
    return sent, failures


@pytest.fixture
def backend() -> Iterator[StandinBackend]:
    with StandinBackend("model") as standin:
        yield standin


@pytest.fixture
async def agent(sock_dir: Path) -> AsyncIterator[tuple[SvidStore, SvidRotator, LocalSdsServer]]:
    ca = make_ca(ttl=dt.timedelta(seconds=2))
    store = SvidStore()
    rotator = SvidRotator(store, CaSource(ca))
    await rotator.rotate_now()
    names = SdsNames(
        peers={PEER_OK: (SPIFFE_ID,), PEER_OTHER: ("spiffe://mesh.example/node/other",)}
    )
    sds = LocalSdsServer(store, f"unix:{sock_dir / 'sds.sock'}", names=names)
    await sds.start()
    try:
        yield store, rotator, sds
    finally:
        await sds.stop()


async def test_mtls_through_rotations_without_a_failed_request(
    agent: tuple[SvidStore, SvidRotator, LocalSdsServer],
    backend: StandinBackend,
    tmp_path: Path,
) -> None:
    store, rotator, sds = agent
    ports = {"admin": free_port(), "app": free_port(), "mtls": free_port()}
    document = bootstrap(sds.address, backend=backend.port, **ports)
    validate_bootstrap(document)
    adopted: list[int] = [store.require().serial]
    store.subscribe(lambda m: adopted.append(m.serial))

    with EnvoyProcess(document, workdir=tmp_path, name="edge-1") as envoy:
        await asyncio.to_thread(envoy.wait_ready, 10)
        url = f"http://127.0.0.1:{ports['app']}/v1/models"
        assert await asyncio.to_thread(get, url) == (200, "model")
        first_serials = await asyncio.to_thread(presented_serials, envoy)
        assert adopted[0] in first_serials

        seen: set[int] = set(first_serials)
        rotating = asyncio.create_task(rotator.run())
        load = asyncio.create_task(asyncio.to_thread(traffic, url, TRAFFIC_S))
        while not load.done():
            seen |= await asyncio.to_thread(presented_serials, envoy)
            await asyncio.sleep(0.1)
        rotating.cancel()
        sent, failures = await load

        assert failures == [], f"{len(failures)} of {sent} requests failed: {failures[:5]}"
        assert sent > 100
        rotations = len(adopted) - 1
        assert rotations >= 2, f"only {rotations} rotations in {TRAFFIC_S}s"
        shown = seen & set(adopted)
        assert len(shown) >= 3, "Envoy did not present the rotated SVIDs"
        assert seen - set(adopted) == set(), "Envoy presented a certificate the agent never held"

        status, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{ports['app']}/wrong")
        assert status == 503, "a peer with the wrong SPIFFE ID was accepted"
    assert rotator.failures == 0
