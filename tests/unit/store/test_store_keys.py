"""Key layout and name validation."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.store import ROOT, InvalidKey, KeyLayout
from tiermesh.controlplane.store.keys import prefix_range_end


def test_production_layout() -> None:
    layout = KeyLayout()
    assert layout.root == ROOT == "/tiermesh/v1/"
    assert layout.bundle_meta == "/tiermesh/v1/bundle/meta"
    assert layout.bundle_file("policies/a.rego") == "/tiermesh/v1/bundle/files/policies/a.rego"
    assert layout.node("edge-1") == "/tiermesh/v1/nodes/edge-1"
    assert layout.usage("acme", "2026-12") == "/tiermesh/v1/usage/2026-12/acme"
    assert layout.usage_month_prefix("2027-01") == "/tiermesh/v1/usage/2027-01/"
    assert layout.generic("tokens/join/x") == "/tiermesh/v1/tokens/join/x"
    assert layout.prefix("") == "/tiermesh/v1/"
    assert layout.relative("/tiermesh/v1/ca/bundle") == "ca/bundle"


@pytest.mark.parametrize("root", ["tiermesh/", "/tiermesh", "/a//b/", ""])
def test_root_must_be_absolute_directory(root: str) -> None:
    with pytest.raises(InvalidKey):
        KeyLayout(root)


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "tab\there", "x" * 254])
def test_node_ids_and_tenants_are_single_printable_segments(name: str) -> None:
    layout = KeyLayout()
    with pytest.raises(InvalidKey):
        layout.node(name)
    with pytest.raises(InvalidKey):
        layout.usage(name, "2026-12")


@pytest.mark.parametrize("key", ["bundle/meta", "nodes/x", "usage/acme", "/abs", "a/../b", "a//b"])
def test_generic_keys_refuse_reserved_and_malformed(key: str) -> None:
    with pytest.raises(InvalidKey) as caught:
        KeyLayout().generic(key)
    assert caught.value.key == key
    assert isinstance(caught.value, ValueError)


def test_relative_refuses_keys_outside_the_root() -> None:
    with pytest.raises(InvalidKey, match="not under root"):
        KeyLayout("/one/").relative("/two/x")


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b"\0"), (b"abc", b"abd")],
)
def test_prefix_range_end(prefix: bytes, end: bytes) -> None:
    assert prefix_range_end(prefix) == end
