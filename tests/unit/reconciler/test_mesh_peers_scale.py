"""The compiler narrows a node's mesh candidates to its callers by looking the callers
up, not by walking every candidate: with every other node of the fleet a candidate, a
reconcile would otherwise cost N^2. The answers are admitted_peers' own."""

from __future__ import annotations

from typing import Any, SupportsIndex, overload

import pytest

from tiermesh.controlplane.model import MeshTlsSettings, NodeSettings, admitted_peers
from tiermesh.controlplane.reconciler import CompileCache
from tiermesh.controlplane.reconciler.wiring import MeshCompiler, _Calls

TD = "mesh.test"
FLEET = 400


def sid(node_id: str) -> str:
    return f"spiffe://{TD}/node/{node_id}"


class CountedPeers(tuple[str, ...]):
    """A tuple that counts the entries read from it (by index or by iterating)."""

    reads = 0

    @overload
    def __getitem__(self, index: SupportsIndex) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: Any) -> Any:
        CountedPeers.reads += 1
        return super().__getitem__(index)

    def __iter__(self) -> Any:
        for item in super().__iter__():
            CountedPeers.reads += 1
            yield item


def node_id(index: int) -> str:
    return f"node-{index:04d}"


def callers_of(index: int) -> frozenset[str]:
    """Who calls node ``index``: its two neighbours, itself (never admitted), and a node
    outside the fleet (not a candidate)."""
    return frozenset(
        {node_id((index - 1) % FLEET), node_id((index + 1) % FLEET), node_id(index), "stranger"}
    )


def test_peers_are_found_from_the_callers_and_equal_admitted_peers() -> None:
    everyone = tuple(sid(node_id(i)) for i in range(FLEET))
    settings: dict[str, NodeSettings] = {}
    for index in range(FLEET):
        mesh = MeshTlsSettings(
            inbound_port=8443,
            model_port=8081,
            trust_domain=TD,
            allowed_peers=everyone[:index] + everyone[index + 1 :],
        )
        # Counted from here on; sorted already, as MeshTlsSettings keeps it.
        object.__setattr__(mesh, "allowed_peers", CountedPeers(mesh.allowed_peers))
        settings[node_id(index)] = NodeSettings(app_port=10000, mesh=mesh)
    callers = {sid(node_id(i)): callers_of(i) for i in range(FLEET)}
    bound = MeshCompiler(settings.__getitem__, CompileCache(0), calls=_Calls(callers, {}))

    CountedPeers.reads = 0
    answers = {node_id(i): bound.settings_for(node_id(i)).mesh for i in range(FLEET)}
    reads = CountedPeers.reads
    # Two bisections of ~log2(FLEET) steps per caller, against FLEET - 1 candidates per
    # node when every candidate is walked.
    assert reads <= FLEET * 3 * 2 * 11
    assert reads < FLEET * (FLEET - 1) // 4

    for index in range(FLEET):
        node = node_id(index)
        answer = answers[node]
        assert answer is not None
        candidates = tuple(settings[node].mesh.allowed_peers)  # type: ignore[union-attr]
        assert answer.allowed_peers == admitted_peers(candidates, node, TD, callers)
        assert answer.allowed_peers == tuple(
            sorted(sid(node_id(j)) for j in ((index - 1) % FLEET, (index + 1) % FLEET))
        )


def test_a_candidate_listed_twice_is_admitted_as_admitted_peers_does() -> None:
    peers = (sid("a"), sid("b"), sid("b"), sid("c"))
    mesh = MeshTlsSettings(inbound_port=8443, model_port=8081, trust_domain=TD)
    object.__setattr__(mesh, "allowed_peers", peers)
    settings = NodeSettings(app_port=10000, mesh=mesh)
    callers = {sid("gpu"): frozenset({"b", "c", "z"})}
    bound = MeshCompiler(lambda _n: settings, CompileCache(0), calls=_Calls(callers, {}))
    found = bound.settings_for("gpu").mesh
    assert found is not None
    assert found.allowed_peers == admitted_peers(peers, "gpu", TD, callers)
    assert found.allowed_peers == (sid("b"), sid("b"), sid("c"))


def test_a_peer_outside_the_trust_domain_is_refused_by_name() -> None:
    peers = (sid("a"), "spiffe://elsewhere.test/node/b", sid("c"))
    with pytest.raises(ValueError, match=r"'spiffe://elsewhere.test/node/b' is outside mesh.test"):
        MeshTlsSettings(inbound_port=8443, model_port=8081, trust_domain=TD, allowed_peers=peers)
