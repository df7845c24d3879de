"""StatusRegistry: updates in place, readers get copies that later updates leave alone."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2

from tiermesh.xds import StatusRegistry, TypeStatus, typeurls


def test_a_read_status_is_a_copy_later_updates_leave_alone() -> None:
    registry = StatusRegistry()
    registry.stream_opened(base_pb2.Node(id="n1", cluster="c"), "sotw")
    registry.update_type("n1", typeurls.CLUSTER, sent_version="v1")
    before = registry.get("n1")
    assert before is not None
    registry.update_type("n1", typeurls.CLUSTER, acked_version="v1")
    registry.update_type("n1", typeurls.ROUTE, sent_version="r1")
    registry.stream_closed("n1")
    assert before.types == {typeurls.CLUSTER: TypeStatus(sent_version="v1")}
    assert before.streams == 1
    after = registry.get("n1")
    assert after is not None
    assert after.streams == 0
    assert after.types[typeurls.CLUSTER] == TypeStatus(sent_version="v1", acked_version="v1")
    assert registry.type_status("n1", typeurls.ROUTE) == TypeStatus(sent_version="r1")
    assert registry.type_status("n1", typeurls.SECRET) is None
    assert registry.missing("n1", typeurls.ROUTE) == frozenset()
    assert registry.missing("n2", typeurls.ROUTE) is None


def test_a_reconnect_keeps_what_the_node_acked() -> None:
    registry = StatusRegistry()
    node = base_pb2.Node(id="n1")
    registry.stream_opened(node, "sotw")
    registry.update_type("n1", typeurls.CLUSTER, acked_version="v1")
    registry.stream_closed("n1")
    registry.stream_opened(node, "delta")
    status = registry.get("n1")
    assert status is not None
    assert (status.mode, status.streams) == ("delta", 1)
    assert status.types[typeurls.CLUSTER].acked_version == "v1"


def test_an_unknown_field_is_named() -> None:
    registry = StatusRegistry()
    registry.stream_opened(base_pb2.Node(id="n1"), "sotw")
    with pytest.raises(TypeError, match="acked"):
        registry.update_type("n1", typeurls.CLUSTER, acked="v1")


def test_the_fast_marks_are_updates_of_one_field() -> None:
    registry = StatusRegistry()
    registry.stream_opened(base_pb2.Node(id="n1"), "sotw")
    registry.update_type("n1", typeurls.CLUSTER, nack_count=2)
    held = registry.type_status("n1", typeurls.CLUSTER)
    registry.mark_sent("n1", typeurls.CLUSTER, "v2")
    registry.mark_acked("n1", typeurls.CLUSTER, "v2")
    registry.mark_sent("n1", typeurls.ROUTE, "r1")
    assert held == TypeStatus(nack_count=2)
    assert registry.type_status("n1", typeurls.CLUSTER) == TypeStatus("v2", "v2", 2)
    assert registry.type_status("n1", typeurls.ROUTE) == TypeStatus(sent_version="r1")
    with pytest.raises(TypeError, match="no field colour"):
        registry.update_type("n1", typeurls.CLUSTER, colour="red")
    with pytest.raises(KeyError):
        registry.mark_sent("n2", typeurls.CLUSTER, "v1")
