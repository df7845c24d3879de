"""Incremental ADS against a scripted client over real gRPC."""

from __future__ import annotations

from tests.integration.xds.conftest import Served
from tests.support.adsclient import AdsClient
from tests.support.resources import mesh
from tiermesh.xds import Snapshot, typeurls

CDS, EDS = typeurls.CLUSTER, typeurls.ENDPOINT


def names(response: object) -> list[str]:
    return sorted(r.name for r in response.resources)  # type: ignore[attr-defined]


async def test_wildcard_initial_ack_and_incremental_changes(served: Served) -> None:
    v1 = mesh({"a": 1, "b": 2})
    served.cache.set_snapshot("n1", v1)
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=CDS)
        first = await client.recv()
        assert names(first) == ["a", "b"]
        assert first.system_version_info == v1.type_version(CDS)
        assert all(r.version for r in first.resources)
        await client.send(type_url=CDS, response_nonce=first.nonce)
        await client.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[CDS].acked_version == v1.type_version(CDS)

        # Add c, drop b: only c is sent, b is removed; a (unchanged) is not re-sent.
        v2 = mesh({"a": 1, "c": 3})
        served.cache.set_snapshot("n1", v2)
        second = await client.recv()
        assert names(second) == ["c"]
        assert list(second.removed_resources) == ["b"]


async def test_named_subscribe_unsubscribe_and_absent_names(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1, "b": 2}))
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=EDS, resource_names_subscribe=["a"])
        first = await client.recv()
        assert names(first) == ["a"]
        await client.send(
            type_url=EDS, response_nonce=first.nonce, resource_names_subscribe=["b", "ghost"]
        )
        second = await client.recv()
        assert names(second) == ["b"]
        assert list(second.removed_resources) == ["ghost"]
        await client.send(
            type_url=EDS, response_nonce=second.nonce, resource_names_unsubscribe=["a"]
        )
        await client.expect_nothing()
        # a changes but is no longer subscribed; b changes and is.
        served.cache.set_snapshot("n1", mesh({"a": 11, "b": 12}))
        third = await client.recv()
        assert names(third) == ["b"]


async def test_nack_recorded_and_only_new_versions_pushed(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1}))
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=CDS)
        first = await client.recv()
        await client.send(type_url=CDS, response_nonce=first.nonce, error="bad cluster")
        await client.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[CDS].nack_count == 1
        assert status.types[CDS].last_nack is not None
        assert status.types[CDS].last_nack.message == "bad cluster"


async def test_reconnect_sends_only_what_changed(served: Served) -> None:
    v1 = mesh({"a": 1, "b": 2})
    served.cache.set_snapshot("n1", v1)
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=CDS)
        first = await client.recv()
        known = {r.name: r.version for r in first.resources}
    served.cache.set_snapshot("n1", mesh({"a": 1, "b": 2, "c": 3}))
    async with AdsClient(served.target, "n1", delta=True) as again:
        await again.send(type_url=CDS, initial_resource_versions=known)
        response = await again.recv()
        assert names(response) == ["c"]
    # Nothing changed since the client's versions: an empty initial answer, no resources.
    async with AdsClient(served.target, "n1", delta=True) as third:
        await third.send(
            type_url=CDS,
            initial_resource_versions={**known, "c": served_version(served, "c")},
        )
        response = await third.recv()
        assert names(response) == []
        assert list(response.removed_resources) == []


def served_version(served: Served, name: str) -> str:
    snapshot = served.cache.get_snapshot("n1")
    assert snapshot is not None
    return snapshot.encoded(CDS)[name].version


async def test_stale_nonce_still_applies_subscription(served: Served) -> None:
    served.cache.set_snapshot("n1", mesh({"a": 1, "b": 2}))
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=EDS, resource_names_subscribe=["a"])
        first = await client.recv()
        served.cache.set_snapshot("n1", mesh({"a": 5, "b": 2}))
        second = await client.recv()
        await client.send(type_url=EDS, response_nonce=first.nonce, resource_names_subscribe=["b"])
        third = await client.recv()
        assert names(third) == ["b"]
        assert second.nonce != third.nonce


async def test_a_resent_cluster_gets_its_endpoints_again(served: Served) -> None:
    """A changed cluster is rebuilt by Envoy, which then waits for its endpoints although
    it never unsubscribed: the server re-sends that cluster's EDS resource (only it)."""
    served.cache.set_snapshot("n1", mesh({"a": 1, "b": 2}))
    async with AdsClient(served.target, "n1", delta=True) as client:
        await client.send(type_url=CDS)
        cds = await client.recv()
        await client.send(type_url=CDS, response_nonce=cds.nonce)
        await client.send(type_url=EDS, resource_names_subscribe=["a", "b"])
        eds = await client.recv()
        await client.send(type_url=EDS, response_nonce=eds.nonce)
        await client.expect_nothing()
        snapshot = served.cache.get_snapshot("n1")
        assert snapshot is not None
        clusters = [snapshot.resource(CDS, "a"), snapshot.resource(CDS, "b")]
        clusters[0].connect_timeout.seconds = 7  # type: ignore[attr-defined]
        endpoints = [snapshot.resource(EDS, "a"), snapshot.resource(EDS, "b")]
        listeners = [snapshot.resource(typeurls.LISTENER, "app")]
        routes = [snapshot.resource(typeurls.ROUTE, "app")]
        served.cache.set_snapshot(
            "n1",
            Snapshot.build(
                clusters=clusters, endpoints=endpoints, listeners=listeners, routes=routes
            ),
        )
        changed_cds, resent_eds = await client.recv(), await client.recv()
        assert names(changed_cds) == ["a"]
        assert (resent_eds.type_url, names(resent_eds)) == (EDS, ["a"])


async def test_streams_of_one_class_share_a_push_and_a_stream_never_repeats_a_nonce(
    served: Served,
) -> None:
    """After a push, the members of a class send one shared response (nonce included);
    a stream that needs the same response again gets a nonce of its own."""
    v1 = mesh({"a": 1, "b": 2})
    for node in ("n1", "n2"):
        served.cache.set_snapshot(node, v1)
    async with (
        AdsClient(served.target, "n1", delta=True) as one,
        AdsClient(served.target, "n2", delta=True) as two,
    ):
        for client in (one, two):
            await client.send(type_url=EDS, resource_names_subscribe=["a"])
            first = await client.recv()
            await client.send(type_url=EDS, response_nonce=first.nonce)
        v2 = mesh({"a": 11, "b": 2})
        for node in ("n1", "n2"):
            served.cache.set_snapshot(node, v2)
        pushed = [await one.recv(), await two.recv()]
        assert pushed[0] == pushed[1]  # the same bytes, nonce included
        assert names(pushed[0]) == ["a"]
        await one.send(type_url=EDS, response_nonce=pushed[0].nonce)
        # Unsubscribed and subscribed again: the same resources of the same snapshot.
        await one.send(type_url=EDS, resource_names_unsubscribe=["a"])
        empty = await one.recv()  # a request without a nonce is answered, if only so
        assert not empty.resources
        await one.send(type_url=EDS, response_nonce=empty.nonce, resource_names_subscribe=["a"])
        again = await one.recv()
        assert names(again) == ["a"]
        assert again.resources == pushed[0].resources
        assert again.nonce not in (first.nonce, pushed[0].nonce)
        # A NACK echoing the push's nonce is stale now: not recorded.
        await one.send(type_url=EDS, response_nonce=pushed[0].nonce, error="late")
        await one.expect_nothing()
        await one.send(type_url=EDS, response_nonce=again.nonce)
        await one.expect_nothing()
        status = served.ads.status.get("n1")
        assert status is not None
        assert status.types[EDS].nack_count == 0
        assert status.types[EDS].acked_version == v2.type_version(EDS)
