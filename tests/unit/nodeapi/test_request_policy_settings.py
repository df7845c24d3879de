"""The served request policy carries the bundle's ``data/request_config.yaml``, and leaves
the field out when the bundle has none (nodes older than it refuse unknown fields)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
import pytest

from tests.unit.reconciler.policyfiles import policy_files
from tiermesh.controlplane.api import RequestPolicyBundle
from tiermesh.controlplane.nodeapi import status_for
from tiermesh.controlplane.nodeapi.errors import RequestPolicyTooLarge
from tiermesh.controlplane.nodeapi.policy import RequestPolicies, request_policy_of
from tiermesh.controlplane.store import Bundle, bundle_digest


def bundle(revision: int, extra: Mapping[str, bytes]) -> Bundle:
    content = {**policy_files(), **extra}
    return Bundle(revision, bundle_digest(content), content, {}, 40 + revision)


def test_the_bundle_settings_are_served() -> None:
    served = bundle(1, {"data/request_config.yaml": b"max_request_tokens: 5\nstrict: true\n"})
    policy = request_policy_of(served)
    assert policy.request_config == {"max_request_tokens": 5, "strict": True}
    decoded = RequestPolicyBundle.model_validate_json(RequestPolicies().encoded(served))
    assert decoded.request_config == policy.request_config


def test_no_settings_leave_the_field_out() -> None:
    served = bundle(1, {})
    assert request_policy_of(served).request_config is None
    assert "request_config" not in json.loads(RequestPolicies().encoded(served))


def test_invalid_settings_are_not_served_without_them() -> None:
    served = bundle(1, {"data/request_config.yaml": b"limits: [1, 2]\n"})
    with pytest.raises(RequestPolicyTooLarge) as caught:
        request_policy_of(served)
    code, message = status_for(caught.value)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "data/request_config.yaml" in message
