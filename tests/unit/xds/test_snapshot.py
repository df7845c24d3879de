from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import code_pb2

from tests.support.resources import mesh
from tiermesh.xds import InconsistentSnapshotError, Snapshot, UnknownTypeUrlError, typeurls
from tiermesh.xds.builders import eds_cluster, http_listener, load_assignment, route_config


def test_missing_endpoints_are_named() -> None:
    with pytest.raises(InconsistentSnapshotError) as info:
        Snapshot.build(clusters=[eds_cluster("llm-local")])
    assert info.value.missing == [("cds", "llm-local", "eds", "llm-local")]
    assert "cds 'llm-local' references eds 'llm-local'" in str(info.value)


def test_missing_routes_are_named() -> None:
    with pytest.raises(InconsistentSnapshotError, match="lds 'edge' references rds 'table'"):
        Snapshot.build(
            listeners=[
                http_listener("edge", address="127.0.0.1", port=1, route_config_name="table")
            ]
        )


def _tls_cluster(secret: str) -> cluster_pb2.Cluster:
    cluster = eds_cluster("cloud")
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificate_sds_secret_configs=[
                secret_pb2.SdsSecretConfig(
                    name=secret,
                    sds_config=config_source_pb2.ConfigSource(
                        ads=config_source_pb2.AggregatedConfigSource()
                    ),
                )
            ]
        )
    )
    cluster.transport_socket.name = "envoy.transport_sockets.tls"
    cluster.transport_socket.typed_config.Pack(context)
    return cluster


def test_missing_secrets_are_named() -> None:
    with pytest.raises(InconsistentSnapshotError, match="cds 'cloud' references sds 'svid'"):
        Snapshot.build(clusters=[_tls_cluster("svid")], endpoints=[load_assignment("cloud", [])])
    ok = Snapshot.build(
        clusters=[_tls_cluster("svid")],
        endpoints=[load_assignment("cloud", [])],
        secrets=[secret_pb2.Secret(name="svid")],
    )
    assert ok.names(typeurls.SECRET) == frozenset({"svid"})


def test_versions_are_content_hashes() -> None:
    a = mesh({"a": 1, "b": 2})
    b = mesh({"b": 2, "a": 1})
    assert a.version == b.version
    c = mesh({"a": 1, "b": 3})
    assert c.type_version(typeurls.CLUSTER) == a.type_version(typeurls.CLUSTER)
    assert c.type_version(typeurls.ENDPOINT) != a.type_version(typeurls.ENDPOINT)
    assert c.version != a.version


def test_bodies_decode_to_the_resources() -> None:
    snap = mesh({"a": 1, "b": 2})
    shared = snap.sotw_body(typeurls.ENDPOINT, frozenset({"b", "zz"}))
    response = discovery_pb2.DiscoveryResponse.FromString(shared.body)
    assert response.type_url == typeurls.ENDPOINT
    assert response.version_info == snap.type_version(typeurls.ENDPOINT)
    assert len(response.resources) == 1
    assert (shared.sent, shared.missing) == (("b",), frozenset({"zz"}))
    assert [e.resource_name.name for e in response.resource_errors] == ["zz"]
    assert response.resource_errors[0].error_detail.code == code_pb2.NOT_FOUND
    assert snap.resource(typeurls.ENDPOINT, "b") == load_assignment("b", [("127.0.0.1", 2)])
    resource = discovery_pb2.Resource.FromString(snap.encoded(typeurls.CLUSTER)["a"].delta_bytes)
    assert resource.name == "a"
    assert resource.version == snap.encoded(typeurls.CLUSTER)["a"].version
    unpacked = cluster_pb2.Cluster()
    resource.resource.Unpack(unpacked)
    assert unpacked == eds_cluster("a")


def test_one_response_body_per_subscription_is_shared_by_every_stream() -> None:
    snap = mesh({"a": 1, "b": 2})
    wildcard = snap.sotw_body(typeurls.CLUSTER, None)
    assert snap.sotw_body(typeurls.CLUSTER, None) is wildcard
    assert wildcard.sent == ("a", "b")
    assert not wildcard.missing
    one = snap.sotw_body(typeurls.ENDPOINT, frozenset({"a"}))
    assert snap.sotw_body(typeurls.ENDPOINT, frozenset({"a"})) is one
    assert snap.sotw_body(typeurls.ENDPOINT, frozenset({"a", "b"})) is not one


def test_snapshot_is_not_changed_by_mutating_inputs() -> None:
    cluster = eds_cluster("a")
    snap = Snapshot.build(clusters=[cluster], endpoints=[load_assignment("a", [])])
    cluster.name = "mutated"
    assert snap.names(typeurls.CLUSTER) == frozenset({"a"})


def test_duplicate_names_and_wrong_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="two cds resources are named 'a'"):
        Snapshot.build(
            clusters=[eds_cluster("a"), eds_cluster("a")], endpoints=[load_assignment("a", [])]
        )
    with pytest.raises(ValueError, match="RouteConfiguration given where Cluster belongs"):
        Snapshot.build(clusters=[route_config("r", [])])
    with pytest.raises(UnknownTypeUrlError, match=r"no\.Such"):
        Snapshot.from_resources({"type.googleapis.com/no.Such": []})


def test_static_clusters_need_no_endpoints() -> None:
    static = cluster_pb2.Cluster(name="s", type=cluster_pb2.Cluster.STATIC)
    assert Snapshot.build(clusters=[static]).names(typeurls.CLUSTER) == frozenset({"s"})


def test_a_body_is_framed_with_its_shared_nonce() -> None:
    snap = mesh({"a": 1})
    shared = snap.sotw_body(typeurls.CLUSTER, None)
    response = discovery_pb2.DiscoveryResponse.FromString(shared.framed)
    assert response.nonce == shared.nonce == f"s{shared.serial}"
    assert shared.framed.startswith(shared.body)
    assert discovery_pb2.DiscoveryResponse.FromString(shared.body).nonce == ""
    later = mesh({"a": 1}).sotw_body(typeurls.CLUSTER, None)
    assert later.serial > shared.serial


def test_incremental_bodies_decode_and_are_shared_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snap = mesh({"a": 1, "b": 2, "c": 3})
    shared = snap.delta_body(typeurls.ENDPOINT, ("b", "a"), ("gone",))
    response = discovery_pb2.DeltaDiscoveryResponse.FromString(shared.framed)
    assert response.type_url == typeurls.ENDPOINT
    assert response.system_version_info == snap.type_version(typeurls.ENDPOINT)
    assert [r.name for r in response.resources] == ["b", "a"]
    assert [r.version for r in response.resources] == [
        snap.encoded(typeurls.ENDPOINT)[n].version for n in ("b", "a")
    ]
    assert list(response.removed_resources) == ["gone"]
    assert response.nonce == shared.nonce
    assert snap.delta_body(typeurls.ENDPOINT, ("b", "a"), ("gone",)) is shared
    assert snap.delta_body(typeurls.ENDPOINT, ("a", "b"), ("gone",)) is not shared
    # Past the bounds a body is still right, only no longer kept.
    monkeypatch.setattr("tiermesh.xds.snapshot.DELTA_BODIES", 2)
    extra = snap.delta_body(typeurls.ENDPOINT, ("c",), ())
    assert snap.delta_body(typeurls.ENDPOINT, ("c",), ()) is not extra
    assert snap.delta_body(typeurls.ENDPOINT, ("c",), ()).body == extra.body
    other = mesh({"a": 1, "b": 2})
    monkeypatch.setattr("tiermesh.xds.snapshot.DELTA_BODY_BYTES", 1)
    big = other.delta_body(typeurls.ENDPOINT, ("a",), ())
    assert other.delta_body(typeurls.ENDPOINT, ("a",), ()) is not big
    assert other.delta_body(typeurls.ENDPOINT, ("a",), ()).body == big.body
