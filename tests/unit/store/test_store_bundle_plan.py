"""Pure bundle logic: digest, metadata, push planning, reassembly."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.store import (
    BundleConflict,
    BundleCorrupt,
    BundleTooLarge,
    BundleTooManyFiles,
    KeyLayout,
    bundle_digest,
)
from tiermesh.controlplane.store.bundle import (
    BundleMeta,
    assemble_bundle,
    plan_push,
    prepare_push,
)

LAYOUT = KeyLayout("/t/")
LIMITS = {"max_request_bytes": 10_000, "max_txn_ops": 8}


def test_digest_ignores_order_but_not_names_or_boundaries() -> None:
    a = {"x.rego": b"1", "y.rego": b"2"}
    assert bundle_digest(a) == bundle_digest(dict(reversed(a.items())))
    assert bundle_digest(a) != bundle_digest({"x.rego": b"2", "y.rego": b"1"})
    assert bundle_digest({"ab": b"c"}) != bundle_digest({"a": b"bc"})
    assert bundle_digest({}) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_meta_round_trips_and_rejects_garbage() -> None:
    meta = BundleMeta(3, "ab" * 32, ("a.rego",), {"git_commit": "c0ffee", "dirty": True})
    assert BundleMeta.decode(meta.encode()) == meta
    for raw in (b"", b"{}", b'{"format": 99}', b"[1]"):
        with pytest.raises(BundleCorrupt):
            BundleMeta.decode(raw)


def test_plan_bumps_revision_and_deletes_only_removed_files() -> None:
    prepared = prepare_push(
        LAYOUT, {"b.rego": b"B", "a.rego": b"A"}, expected_revision=4, provenance={}, **LIMITS
    )
    current = BundleMeta(4, "", ("a.rego", "old.rego"), {})
    plan = plan_push(
        LAYOUT,
        prepared,
        current=current,
        stored_file_keys=["/t/bundle/files/a.rego", "/t/bundle/files/old.rego"],
        **LIMITS,
    )
    assert plan.meta.revision == 5
    assert plan.meta.paths == ("a.rego", "b.rego")
    assert plan.puts == (("/t/bundle/files/a.rego", b"A"), ("/t/bundle/files/b.rego", b"B"))
    assert plan.deletes == ("/t/bundle/files/old.rego",)


def test_plan_conflicts_on_any_other_revision() -> None:
    prepared = prepare_push(LAYOUT, {}, expected_revision=1, provenance={}, **LIMITS)
    with pytest.raises(BundleConflict) as caught:
        plan_push(LAYOUT, prepared, current=None, stored_file_keys=[], **LIMITS)
    assert (caught.value.expected_revision, caught.value.actual_revision) == (1, 0)


def test_limits_are_checked_before_the_store_is_read() -> None:
    with pytest.raises(BundleTooLarge) as too_large:
        prepare_push(
            LAYOUT, {"a.rego": b"x" * 10_000}, expected_revision=0, provenance={}, **LIMITS
        )
    assert too_large.value.largest_path == "a.rego"
    many = {f"{i}.rego": b"" for i in range(8)}
    with pytest.raises(BundleTooManyFiles) as too_many:
        prepare_push(LAYOUT, many, expected_revision=0, provenance={}, **LIMITS)
    assert (too_many.value.operations, too_many.value.limit) == (9, 8)


def test_deletes_count_against_the_operation_limit() -> None:
    prepared = prepare_push(
        LAYOUT, {f"{i}.rego": b"" for i in range(6)}, expected_revision=0, provenance={}, **LIMITS
    )
    stored = [f"/t/bundle/files/old{i}.rego" for i in range(2)]
    with pytest.raises(BundleTooManyFiles):
        plan_push(LAYOUT, prepared, current=None, stored_file_keys=stored, **LIMITS)


def test_provenance_must_be_json_and_revision_non_negative() -> None:
    with pytest.raises(ValueError, match="provenance"):
        prepare_push(LAYOUT, {}, expected_revision=0, provenance={"x": object()}, **LIMITS)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="expected_revision"):
        prepare_push(LAYOUT, {}, expected_revision=-1, provenance={}, **LIMITS)


def test_assemble_detects_files_that_disagree_with_metadata() -> None:
    files = {"a.rego": b"A"}
    meta = BundleMeta(1, bundle_digest(files), ("a.rego",), {}).encode()
    good = assemble_bundle(LAYOUT, meta, {"/t/bundle/files/a.rego": b"A"}, 9)
    assert (good.revision, dict(good.files), good.etcd_revision) == (1, files, 9)

    with pytest.raises(BundleCorrupt, match="hash"):
        assemble_bundle(LAYOUT, meta, {"/t/bundle/files/a.rego": b"tampered"}, 9)
    with pytest.raises(BundleCorrupt, match="differ"):
        assemble_bundle(LAYOUT, meta, {}, 9)
    with pytest.raises(BundleCorrupt, match="without metadata"):
        assemble_bundle(LAYOUT, None, {"/t/bundle/files/a.rego": b"A"}, 9)
