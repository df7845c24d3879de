"""The request-policy contract: bounds, refusals, and replies older nodes still read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tiermesh.controlplane.api import (
    BundleRef,
    RequestPolicyBundle,
    RequestPolicyQuery,
    SessionReply,
    registry_method_path,
)
from tiermesh.controlplane.api.request_policy import MAX_REQUEST_MODULES

SHA = "ab" * 32
REF = BundleRef(revision=3, sha256=SHA, etcd_revision=42)
REPLY = {"node_id": "edge-1", "spiffe_id": "spiffe://td/node/edge-1", "lease_ttl_s": 10,
         "load_interval_s": 1.0, "revision": 7}  # fmt: skip


def test_a_reply_of_an_older_control_plane_reads_as_no_bundle() -> None:
    assert SessionReply.model_validate(REPLY).bundle is None


def test_a_reply_naming_a_bundle_round_trips() -> None:
    reply = SessionReply.model_validate({**REPLY, "bundle": REF.model_dump()})
    assert SessionReply.model_validate_json(reply.model_dump_json()).bundle == REF


@pytest.mark.parametrize(
    "bad",
    [
        {"revision": 0, "sha256": SHA, "etcd_revision": 1},
        {"revision": 1, "sha256": "AB" * 32, "etcd_revision": 1},
        {"revision": 1, "sha256": SHA[:-1], "etcd_revision": 1},
        {"revision": 1, "sha256": SHA, "etcd_revision": -1},
        {"revision": 1, "sha256": SHA, "etcd_revision": 1, "extra": 1},
    ],
)
def test_a_malformed_bundle_ref_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BundleRef.model_validate(bad)


def test_the_policy_holds_only_request_modules() -> None:
    policy = RequestPolicyBundle(bundle=REF, modules={"request/request.rego": "package x"})
    assert RequestPolicyBundle.model_validate_json(policy.model_dump_json()) == policy
    for modules in (
        {},
        {"routing/routing.rego": "package x"},
        {"request/sub/x.rego": "package x"},
        {"request/data.yaml": "x: 1"},
        {f"request/m{i}.rego": "package x" for i in range(MAX_REQUEST_MODULES + 1)},
    ):
        with pytest.raises(ValidationError):
            RequestPolicyBundle(bundle=REF, modules=modules)


def test_the_query_is_versioned_and_the_method_is_on_the_registry_service() -> None:
    assert RequestPolicyQuery.model_validate_json(b"{}").version == "v1"
    with pytest.raises(ValidationError):
        RequestPolicyQuery.model_validate({"version": "v2"})
    assert registry_method_path("RequestPolicy") == "/tiermesh.node.v1.NodeRegistry/RequestPolicy"
