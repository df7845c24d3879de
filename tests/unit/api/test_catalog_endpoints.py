"""Endpoints in the catalog: one backend per address, and local/private backends pinned.

The verifier maps compiled endpoints back to backends by address, so two backends on one
address would make one look like the other; and a local or private backend that is
neither on the node's loopback address nor pinned to a SPIFFE ID by TLS could be any
host that answers on its name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tiermesh.controlplane.api import Catalog, CatalogError, parse_catalog
from tiermesh.controlplane.api.catalog import endpoint_address, is_loopback
from tiermesh.demo.catalog import DemoEndpoint, demo_catalog

DEMO = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"
FILE = "catalog.yaml"
EDGE, PRIVATE, US, EU = 0, 1, 2, 3  # positions of the demo catalog's backends


def _demo_raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    return raw


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(yaml.safe_dump(raw), file=FILE)
    return [line.removeprefix(f"{FILE}: ") for line in str(caught.value).splitlines()]


def _endpoint(raw: dict[str, Any], index: int, host: str, port: int, **more: Any) -> None:
    raw["backends"][index]["endpoint"] = {"host": host, "port": port, **more}


def test_two_backends_on_one_endpoint_are_refused() -> None:
    raw = _demo_raw()
    _endpoint(raw, EU, "127.0.0.1", 8081)
    assert _problems(raw) == [
        "backends[3].endpoint: backend 'frontier-eu' has the same endpoint 127.0.0.1:8081 "
        "as backend 'edge-smollm'"
    ]


def test_the_same_host_on_another_port_is_another_endpoint() -> None:
    raw = _demo_raw()
    _endpoint(raw, US, "gpu-1.internal", 8444, tls=True)
    parse_catalog(yaml.safe_dump(raw), file=FILE)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("gpu-1.internal", "GPU-1.Internal"),
        ("gpu-1.internal", "gpu-1.internal."),
        ("::1", "0:0:0:0:0:0:0:1"),
        ("127.0.0.1", "::ffff:127.0.0.1"),
        ("2001:db8::1", "2001:DB8:0::0:1"),
    ],
)
def test_one_address_written_two_ways_is_one_endpoint(first: str, second: str) -> None:
    raw = _demo_raw()
    _endpoint(raw, US, first, 9000)
    _endpoint(raw, EU, second, 9000)
    (problem,) = _problems(raw)
    assert problem.startswith("backends[3].endpoint: backend 'frontier-eu' has the same endpoint ")
    assert problem.endswith(":9000 as backend 'frontier-us'")
    assert f" {second}:9000 " in problem


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("GPU-1.Internal.", "gpu-1.internal"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("10.0.0.5", "10.0.0.5"),
    ],
)
def test_endpoint_address_is_canonical(host: str, canonical: str) -> None:
    assert endpoint_address(host, 80) == (canonical, 80)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", False),
        ("10.0.0.5", False),
        ("0.0.0.0", False),
    ],
)
def test_only_literal_loopback_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_local_backend_on_a_dns_name_without_a_spiffe_id_is_refused() -> None:
    raw = _demo_raw()
    _endpoint(raw, EDGE, "edge-1.internal", 8081)
    assert _problems(raw) == [
        "backends[0].endpoint.host: backend 'edge-smollm' (tier local) has endpoint host "
        "'edge-1.internal', which is no loopback IP address, and no spiffe_id that TLS pins "
        "the peer to: run it on its node's loopback address, or set spiffe_id with "
        "endpoint tls: true"
    ]


def test_a_private_backend_on_another_host_without_a_spiffe_id_is_refused() -> None:
    raw = _demo_raw()
    del raw["backends"][PRIVATE]["spiffe_id"]
    _endpoint(raw, PRIVATE, "10.0.0.7", 8443, tls=True)
    assert _problems(raw) == [
        "backends[1].endpoint.host: backend 'onprem-gpu' (tier private) has endpoint host "
        "'10.0.0.7', which is no loopback IP address, and no spiffe_id that TLS pins the "
        "peer to: run it on its node's loopback address, or set spiffe_id with "
        "endpoint tls: true"
    ]


def test_a_spiffe_id_without_tls_pins_nothing() -> None:
    raw = _demo_raw()
    raw["backends"][PRIVATE]["endpoint"]["tls"] = False
    assert _problems(raw) == [
        "backends[1].endpoint.tls: backend 'onprem-gpu' (tier private) names spiffe_id "
        "'spiffe://tiermesh.local/node/gpu-1' but connects without TLS, so nothing pins the "
        "peer to it: set endpoint tls: true, or run it on its node's loopback address"
    ]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.9", "::1"])
def test_a_local_backend_on_loopback_needs_no_spiffe_id(host: str) -> None:
    raw = _demo_raw()
    _endpoint(raw, EDGE, host, 8081)
    parse_catalog(yaml.safe_dump(raw), file=FILE)


def test_a_cloud_backend_needs_neither() -> None:
    raw = _demo_raw()
    _endpoint(raw, US, "api.example.com", 443, tls=True)
    parse_catalog(yaml.safe_dump(raw), file=FILE)


def test_building_a_catalog_in_python_checks_endpoints_too() -> None:
    raw = _demo_raw()
    _endpoint(raw, EU, "127.0.0.1", 9101)
    with pytest.raises(
        ValueError, match=r"same endpoint 127\.0\.0\.1:9101 as backend 'frontier-us'"
    ):
        Catalog.model_validate(raw)


def test_the_demo_catalog_the_mesh_demo_writes_passes() -> None:
    """The endpoints `tiermesh up` moves the backends to (src/tiermesh/demo/mesh.py)."""
    written = demo_catalog(
        _demo_raw(),
        {
            "edge-smollm": DemoEndpoint(18081, node="edge-1"),
            "onprem-gpu": DemoEndpoint(
                18443, tls=True, node="private-1", spiffe_id="spiffe://tiermesh.local/node/p1"
            ),
            "frontier-us": DemoEndpoint(19101, tls=True, credential="frontier-us"),
            "frontier-eu": DemoEndpoint(19102, tls=True, credential="frontier-eu"),
        },
    )
    Catalog.model_validate(written)


def test_the_demo_catalog_with_a_plain_http_private_backend_passes() -> None:
    """A private backend moved to plain HTTP on loopback loses its spiffe_id and stays valid."""
    written = demo_catalog(_demo_raw(), {"onprem-gpu": DemoEndpoint(18443, node="private-1")})
    assert "spiffe_id" not in written["backends"][PRIVATE]
    Catalog.model_validate(written)
