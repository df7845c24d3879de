"""The request settings in the request-policy contract: what a bundle may set mesh-wide,
how the node merges its own over them, and answers older nodes still read."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tiermesh.controlplane.api import BundleRef, RequestPolicyBundle
from tiermesh.controlplane.api.request_policy import (
    MAX_REQUEST_CONFIG_KEYS,
    MAX_REQUEST_CONFIG_STRING,
    merged_request_config,
    validate_request_config,
)

REF = BundleRef(revision=3, sha256="ab" * 32, etcd_revision=42)
MODULES = {"request/request.rego": "package x"}


def test_scalars_keep_their_type() -> None:
    settings = {"default_tenant": "acme", "max_request_tokens": 5, "ratio": 0.5, "strict": True}
    assert validate_request_config(settings) == settings
    assert type(validate_request_config({"flag": True})["flag"]) is bool
    assert type(validate_request_config({"limit": 5})["limit"]) is int
    assert validate_request_config(None) == {}


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        "max_request_tokens: 5",
        {"limits": [1, 2]},
        {"nested": {"a": 1}},
        {"unset": None},
        {"infinite": float("inf")},
        {"not a name": 1},
        {"1st": 1},
        {"long": "x" * (MAX_REQUEST_CONFIG_STRING + 1)},
        {f"k{i}": i for i in range(MAX_REQUEST_CONFIG_KEYS + 1)},
    ],
)
def test_anything_but_a_bounded_mapping_of_scalars_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        validate_request_config(bad)
    with pytest.raises(ValidationError):
        RequestPolicyBundle.model_validate(
            {"bundle": REF.model_dump(), "modules": MODULES, "request_config": bad}
        )


def test_the_node_overrides_the_bundle_key_by_key() -> None:
    bundle = {"default_tenant": "acme", "max_request_tokens": 5}
    assert merged_request_config(bundle, {"max_request_tokens": 100}) == {
        "default_tenant": "acme",
        "max_request_tokens": 100,
    }
    assert merged_request_config(None, {"default_tenant": "beta"}) == {"default_tenant": "beta"}
    assert merged_request_config(bundle, {}) == bundle


def test_the_settings_round_trip_and_an_answer_without_them_reads_as_none() -> None:
    policy = RequestPolicyBundle(
        bundle=REF, modules=MODULES, request_config={"max_request_tokens": 5, "x": 1.5}
    )
    assert RequestPolicyBundle.model_validate_json(policy.model_dump_json()) == policy
    older = RequestPolicyBundle(bundle=REF, modules=MODULES).model_dump_json(
        exclude={"request_config"}
    )
    assert RequestPolicyBundle.model_validate_json(older).request_config is None
