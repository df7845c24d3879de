from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from tests.support.resources import mesh
from tiermesh.xds import AdsTls, BootstrapSpec, SnapshotCache, render_bootstrap, validate_bootstrap
from tiermesh.xds.wire import bytes_field, varint


@pytest.mark.parametrize(
    ("value", "encoded"), [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (300, b"\xac\x02")]
)
def test_varint(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded


def test_bytes_field_matches_protobuf() -> None:
    assert base_pb2.Node.FromString(bytes_field(1, b"edge-1")).id == "edge-1"


def test_cache_notifies_on_change_only() -> None:
    cache = SnapshotCache(node_key=lambda node: node.cluster)
    seen: list[str] = []
    unsubscribe = cache.subscribe("edge", lambda: seen.append("edge"))
    assert cache.node_key(base_pb2.Node(id="n1", cluster="edge")) == "edge"
    assert cache.set_snapshot("edge", mesh({"a": 1}))
    assert not cache.set_snapshot("edge", mesh({"a": 1}))
    assert cache.set_snapshot("edge", mesh({"a": 2}))
    cache.set_snapshot("other", mesh({"a": 3}))
    assert seen == ["edge", "edge"]
    unsubscribe()
    assert cache.watcher_count("edge") == 0
    cache.set_snapshot("edge", mesh({"a": 4}))
    assert seen == ["edge", "edge"]


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_bootstrap_parses_as_envoy_bootstrap(mode: str) -> None:
    doc = render_bootstrap(
        BootstrapSpec(
            node_id="edge-1",
            xds_host="127.0.0.1",
            xds_port=18000,
            admin_port=19000,
            mode=mode,  # type: ignore[arg-type]
            metadata={"tier": "local"},
            tls=AdsTls("cert.pem", "key.pem", "bundle.pem", "spiffe://mesh/controlplane"),
        )
    )
    validate_bootstrap(doc)
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if mode == "delta" else "GRPC")
    assert ads["set_node_on_first_message_only"] is True
    assert doc["node"] == {"id": "edge-1", "cluster": "tiermesh", "metadata": {"tier": "local"}}
    assert doc["bootstrap_extensions"] == [
        {
            "name": "envoy.bootstrap.internal_listener",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
            },
        }
    ]


def test_bootstrap_without_internal_listeners_has_no_extensions() -> None:
    doc = render_bootstrap(
        BootstrapSpec(node_id="n", xds_host="127.0.0.1", xds_port=1, internal_listeners=False)
    )
    validate_bootstrap(doc)
    assert "bootstrap_extensions" not in doc


def test_bootstrap_extension_typed_config_is_checked() -> None:
    doc = render_bootstrap(BootstrapSpec(node_id="n", xds_host="127.0.0.1", xds_port=1))
    doc["bootstrap_extensions"][0]["typed_config"]["buffer_size_kb"] = "lots"
    with pytest.raises(json_format.ParseError):
        validate_bootstrap(doc)


def test_invalid_bootstrap_is_rejected() -> None:
    doc = render_bootstrap(BootstrapSpec(node_id="n", xds_host="127.0.0.1", xds_port=1))
    doc["dynamic_resources"]["ads_config"]["api_type"] = "CARRIER_PIGEON"
    with pytest.raises(json_format.ParseError):
        validate_bootstrap(doc)


def _xds_cluster(host: str) -> dict[str, Any]:
    doc = render_bootstrap(BootstrapSpec(node_id="n", xds_host=host, xds_port=18000))
    validate_bootstrap(doc)
    clusters = doc["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == ["tiermesh_xds"]
    cluster = clusters[0]
    assert isinstance(cluster, dict)
    return cluster


def _socket_address(cluster: dict[str, Any]) -> dict[str, Any]:
    [locality] = cluster["load_assignment"]["endpoints"]
    [lb_endpoint] = locality["lb_endpoints"]
    address = lb_endpoint["endpoint"]["address"]["socket_address"]
    assert isinstance(address, dict)
    return address


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "::1", "fd00::18"])
def test_ads_cluster_for_an_ip_literal_is_static(host: str) -> None:
    cluster = _xds_cluster(host)
    assert cluster["type"] == "STATIC"
    assert "dns_lookup_family" not in cluster
    assert _socket_address(cluster) == {"address": host, "port_value": 18000}


def test_ads_cluster_for_an_ip_keeps_its_exact_shape() -> None:
    assert _xds_cluster("127.0.0.1") == {
        "name": "tiermesh_xds",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "1s", "timeout": "2s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": "tiermesh_xds",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": "127.0.0.1",
                                        "port_value": 18000,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


@pytest.mark.parametrize("host", ["localhost", "controlplane-1", "cp.tiermesh.example"])
def test_ads_cluster_for_a_host_name_resolves_it_with_logical_dns(host: str) -> None:
    cluster = _xds_cluster(host)
    assert cluster["type"] == "LOGICAL_DNS"
    assert cluster["dns_lookup_family"] == "V4_PREFERRED"
    assert _socket_address(cluster) == {"address": host, "port_value": 18000}
    assert cluster == {
        **_xds_cluster("127.0.0.1"),
        "type": "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": cluster["load_assignment"],
    }


def test_ads_cluster_for_a_host_name_keeps_tls() -> None:
    tls = AdsTls("cert.pem", "key.pem", "bundle.pem", "spiffe://mesh/controlplane")
    by_ip, by_name = (
        render_bootstrap(BootstrapSpec(node_id="n", xds_host=host, xds_port=1, tls=tls))
        for host in ("127.0.0.1", "controlplane-1")
    )
    validate_bootstrap(by_name)
    [ip_cluster] = by_ip["static_resources"]["clusters"]
    [name_cluster] = by_name["static_resources"]["clusters"]
    assert name_cluster["transport_socket"] == ip_cluster["transport_socket"]


def _addresses(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [
        (e["endpoint"]["address"]["socket_address"]["address"],
         e["endpoint"]["address"]["socket_address"]["port_value"])
        for e in endpoints
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("hosts", "kind"),
    [
        (("127.0.0.1", "127.0.0.2", "::1"), "STATIC"),
        (("cp-0.tiermesh", "cp-1.tiermesh"), "STRICT_DNS"),
        (("127.0.0.1", "cp-1.tiermesh"), "STRICT_DNS"),
    ],
)
def test_every_control_plane_replica_is_an_ads_endpoint(hosts: tuple[str, ...], kind: str) -> None:
    servers = [(host, 18000 + index) for index, host in enumerate(hosts)]
    document = render_bootstrap(
        BootstrapSpec(
            node_id="n", xds_host=servers[0][0], xds_port=servers[0][1], xds_more=tuple(servers[1:])
        )
    )
    validate_bootstrap(document)
    (cluster,) = document["static_resources"]["clusters"]
    assert cluster["type"] == kind
    assert _addresses(cluster) == servers
    assert ("dns_lookup_family" in cluster) == (kind != "STATIC")
