"""NodeDirectory.settings_for over a fleet: the registrations are scanned for mesh
candidates once per change of them, not once per node asked (which made a reconcile of N
nodes quadratic), and what it answers is what a fresh scan gives."""

from __future__ import annotations

import asyncio

from tests.unit.reconciler.test_node_mesh_settings import TD, registered
from tiermesh.controlplane.api import NodeEndpoint
from tiermesh.controlplane.runtime.nodes import NodeDirectory
from tiermesh.controlplane.store.memory import MemoryStore

FLEET = 120
TIERS = ("local", "private", "cloud")


def node_id(index: int) -> str:
    return f"node-{index:04d}"


def spiffe(node: str) -> str:
    return f"spiffe://{TD}/node/{node}"


def registration(index: int) -> bytes:
    node = node_id(index)
    return registered(
        node_id=node,
        tier=TIERS[index % len(TIERS)],
        spiffe_id=spiffe(node),
        endpoints=(NodeEndpoint(name=f"{node}.llama", host="127.0.0.1", port=9000 + index),),
        mesh_port=8443,
    )


def expected_peers(node: str, indexes: range | list[int]) -> tuple[str, ...]:
    """Every other registered node of the trust domain that is not cloud, sorted."""
    return tuple(
        sorted(
            spiffe(node_id(i))
            for i in indexes
            if node_id(i) != node and TIERS[i % len(TIERS)] != "cloud"
        )
    )


async def wait_for_node(directory: NodeDirectory, node: str) -> None:
    for _ in range(500):
        if node in directory.nodes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the directory never saw {node}")


async def test_every_nodes_settings_cost_one_scan_of_the_registrations() -> None:
    store = MemoryStore()
    for index in range(FLEET):
        await store.register_node(node_id(index), registration(index), ttl_s=600)
    directory = NodeDirectory(store, "bundle", trust_domain=TD)
    await directory.start()
    try:

        def every_node() -> list[tuple[str, ...]]:
            answers = []
            for index in range(FLEET):
                mesh = directory.settings_for(node_id(index)).mesh
                assert mesh is not None
                answers.append(mesh.allowed_peers)
            return answers

        answers = await asyncio.to_thread(every_node)
        assert directory.candidate_builds == 1
        for index, peers in enumerate(answers):
            assert peers == expected_peers(node_id(index), range(FLEET))
        # Asked again: the very same settings, no further scan.
        first = await asyncio.to_thread(directory.settings_for, node_id(0))
        again = await asyncio.to_thread(directory.settings_for, node_id(0))
        assert first is again
        assert directory.candidate_builds == 1

        # A join changes every node's candidates: the next answers scan once more and
        # admit the new node.
        await store.register_node(node_id(FLEET), registration(FLEET), ttl_s=600)
        await wait_for_node(directory, node_id(FLEET))
        answers = await asyncio.to_thread(every_node)
        assert directory.candidate_builds == 2
        joined = [*range(FLEET), FLEET]
        for index, peers in enumerate(answers):
            assert peers == expected_peers(node_id(index), joined)
        assert spiffe(node_id(FLEET)) in answers[1]
    finally:
        await directory.aclose()


async def test_a_new_trust_bundle_is_in_the_next_answer() -> None:
    store = MemoryStore()
    await store.register_node(node_id(0), registration(0), ttl_s=600)
    directory = NodeDirectory(store, "old", trust_domain=TD)
    await directory.start()
    try:
        before = await asyncio.to_thread(directory.settings_for, node_id(0))
        directory.set_trust_bundle("new")
        after = await asyncio.to_thread(directory.settings_for, node_id(0))
    finally:
        await directory.aclose()
    assert (before.trust_bundle_pem, after.trust_bundle_pem) == ("old", "new")
