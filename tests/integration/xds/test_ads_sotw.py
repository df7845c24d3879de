"""State-of-the-world ADS against a scripted client over real gRPC."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from google.rpc import code_pb2

from tests.integration.xds.conftest import Served
from tests.support.adsclient import AdsClient
from tests.support.resources import mesh
from tiermesh.xds import typeurls

CDS, EDS, LDS, RDS = typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER, typeurls.ROUTE


def cluster_names(response: object) -> list[str]:
    out = []
    for packed in response.resources:  # type: ignore[attr-defined]
        cluster = cluster_pb2.Cluster()
        packed.Unpack(cluster)
        out.append(cluster.name)
    return out


async def test_initial_fetch_ack_and_status(served: Served) -> None:
    snap = mesh({"a": 1, "b": 2})
    served.cache.set_snapshot("n1", snap)
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=CDS)
        response = await client.recv()
        assert response.type_url == CDS
        assert response.version_info == snap.type_version(CDS)
        assert response.nonce
        assert cluster_names(response) == ["a", "b"]

        await client.send(
            type_url=CDS, version_info=response.version_info, response_nonce=response.nonce
        )
        await client.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.connected
        assert status.types[CDS].acked_version == snap.type_version(CDS)
        assert ("ack", "n1", CDS, snap.type_version(CDS)) in served.callbacks.events


async def test_nack_is_recorded_and_not_resent(served: Served) -> None:
    v1 = mesh({"a": 1})
    served.cache.set_snapshot("n1", v1)
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=CDS)
        first = await client.recv()
        await client.send(type_url=CDS, version_info=first.version_info, response_nonce=first.nonce)
        await client.expect_nothing()
        v2 = mesh({"a": 1, "bad": 2})
        served.cache.set_snapshot("n1", v2)
        second = await client.recv()
        assert second.version_info == v2.type_version(CDS)
        await client.send(
            type_url=CDS,
            version_info=first.version_info,
            response_nonce=second.nonce,
            error="cluster 'bad': invalid",
        )
        await client.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        cds = status.types[CDS]
        assert cds.nack_count == 1
        assert cds.last_nack is not None
        assert cds.last_nack.message == "cluster 'bad': invalid"
        assert cds.last_nack.version == v2.type_version(CDS)
        assert cds.acked_version == v1.type_version(CDS)
        assert served.callbacks.nacks[0].message == "cluster 'bad': invalid"

        # The same rejected content rebuilt: nothing to push.
        assert not served.cache.set_snapshot("n1", mesh({"a": 1, "bad": 2}))
        await client.expect_nothing()
        # A fixed config is pushed.
        v3 = mesh({"a": 1, "good": 2})
        served.cache.set_snapshot("n1", v3)
        third = await client.recv()
        assert cluster_names(third) == ["a", "good"]


async def test_stale_nonce_is_ignored(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=EDS, resource_names=["a"])
        first = await client.recv()
        served.cache.set_snapshot("n1", mesh({"a": 5}))
        second = await client.recv()
        assert second.nonce != first.nonce
        # The client answers the first response late, asking for other names: ignored.
        await client.send(
            type_url=EDS,
            resource_names=["a", "b"],
            version_info=first.version_info,
            response_nonce=first.nonce,
        )
        await client.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[EDS].acked_version == ""


async def test_subscription_change_answers_with_new_names(served: Served) -> None:
    snap = mesh({"a": 1, "b": 2})
    served.cache.set_snapshot("n1", snap)
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=EDS, resource_names=["a"])
        first = await client.recv()
        assert len(first.resources) == 1
        await client.send(
            type_url=EDS,
            resource_names=["a", "b"],
            version_info=first.version_info,
            response_nonce=first.nonce,
        )
        second = await client.recv()
        assert len(second.resources) == 2
        assert second.nonce != first.nonce


async def test_unknown_resource_name_gets_not_found(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=EDS, resource_names=["a", "nope"])
        response = await client.recv()
        assert len(response.resources) == 1
        assert [e.resource_name.name for e in response.resource_errors] == ["nope"]
        assert response.resource_errors[0].error_detail.code == code_pb2.NOT_FOUND
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[EDS].missing == frozenset({"nope"})


async def test_push_order_is_cds_eds_lds_rds(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client:
        acked = {}
        for type_url, names in ((CDS, []), (EDS, ["a"]), (LDS, []), (RDS, ["app"])):
            await client.send(type_url=type_url, resource_names=names)
            response = await client.recv()
            await client.send(
                type_url=type_url,
                resource_names=names,
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
            acked[type_url] = response.version_info
        changed = mesh({"a": 2, "b": 3}, listener_port=10001, default="b")
        served.cache.set_snapshot("n1", changed)
        responses = [await client.recv() for _ in range(4)]
        assert [r.type_url for r in responses] == [CDS, EDS, LDS, RDS]
        assert all(r.version_info != acked[r.type_url] for r in responses)


async def test_reconnect_with_known_versions(served: Served) -> None:
    snap = mesh({"a": 1})
    served.cache.set_snapshot("n1", snap)
    async with AdsClient(served.target, "n1") as client:
        await client.send(type_url=CDS)
        first = await client.recv()
    async with AdsClient(served.target, "n1") as again:
        await again.send(type_url=CDS, version_info=first.version_info)
        response = await again.recv()
        status = served.ads.status.get("n1")
        assert response.version_info == first.version_info
        assert status is not None
        assert status.types[CDS].acked_version == first.version_info
        # The new stream is live: a change reaches it.
        served.cache.set_snapshot("n1", mesh({"a": 1, "z": 3}))
        assert cluster_names(await again.recv()) == ["a", "z"]


async def test_nodes_sharing_a_key_share_encoded_bodies(served: Served) -> None:
    snap = mesh({"a": 1})
    served.cache.set_snapshot("n1", snap)
    served.cache.set_snapshot("n2", snap)
    async with AdsClient(served.target, "n1") as one, AdsClient(served.target, "n2") as two:
        await one.send(type_url=CDS)
        await two.send(type_url=CDS)
        r1, r2 = await one.recv(), await two.recv()
        assert r1.resources == r2.resources
        assert len(snap._bodies) == 1
        # Nonce included: each stream sends the shared bytes as they are.
        assert r1.nonce == r2.nonce


async def test_a_body_sent_again_on_a_stream_gets_a_nonce_never_sent_there(
    served: Served,
) -> None:
    """Streams share a body's nonce, but a stream that sends the same body twice (a
    snapshot served again, a type re-sent on request) must not repeat a nonce: a request
    echoing the older one would pass for an answer to the newer."""
    s1, s2 = mesh({"a": 1}), mesh({"a": 1, "b": 2})
    served.cache.set_snapshot("n1", s1)
    async with AdsClient(served.target, "n1") as client:
        nonces = []

        async def ack(response: object) -> None:
            nonces.append(response.nonce)  # type: ignore[attr-defined]
            await client.send(
                type_url=CDS,
                version_info=response.version_info,  # type: ignore[attr-defined]
                response_nonce=response.nonce,  # type: ignore[attr-defined]
            )

        await client.send(type_url=CDS)
        await ack(await client.recv())
        served.cache.set_snapshot("n1", s2)
        await ack(await client.recv())
        served.cache.set_snapshot("n1", s1)  # the same snapshot object, served again
        third = await client.recv()
        assert third.version_info == s1.type_version(CDS)
        assert third.nonce not in nonces
        # A NACK echoing the first response's nonce is stale now: not recorded.
        await client.send(type_url=CDS, version_info="", response_nonce=nonces[0], error="late")
        await client.expect_nothing()
        await ack(third)
        # A new request without a nonce is answered with the same body again.
        await client.send(type_url=CDS)
        fourth = await client.recv()
        assert fourth.nonce not in nonces
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[CDS].nack_count == 0
        assert status.types[CDS].acked_version == s1.type_version(CDS)


async def test_a_cluster_push_resends_endpoints_even_when_unchanged(served: Served) -> None:
    """Envoy rebuilds a changed cluster and waits for its endpoints again, while its EDS
    request names stay the same: the server re-sends EDS after every CDS push."""
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1") as client:
        for type_url, names in ((CDS, []), (EDS, ["a"])):
            await client.send(type_url=type_url, resource_names=names)
            response = await client.recv()
            await client.send(
                type_url=type_url,
                resource_names=names,
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
        await client.expect_nothing()
        changed = mesh({"a": 1, "b": 2})
        served.cache.set_snapshot("n1", changed)
        cds, eds = await client.recv(), await client.recv()
        assert (cds.type_url, eds.type_url) == (CDS, EDS)
        assert len(eds.resources) == 1
