"""Packed messages are serialized deterministically: equal config gives equal bytes (and
so equal snapshot versions) in every process, whatever order a map's entries were
inserted or stored in."""

from __future__ import annotations

from google.protobuf import struct_pb2

from tiermesh.controlplane.generators._protos import pack


def test_a_struct_packs_with_its_keys_in_order() -> None:
    keys = [f"key-{i:02d}" for i in range(40)]
    forward, backward = struct_pb2.Struct(), struct_pb2.Struct()
    forward.update({key: key for key in keys})
    backward.update({key: key for key in reversed(keys)})
    first, second = pack(forward), pack(backward)
    assert first.value == second.value == forward.SerializeToString(deterministic=True)
    assert first.type_url == "type.googleapis.com/google.protobuf.Struct"
