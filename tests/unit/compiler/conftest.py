"""Fixtures: the demo catalog's edge plan (evaluated once) and its compiled model."""

from __future__ import annotations

import pytest

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, demo_catalog, evaluate_plan
from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.model import MeshModel, NodeSettings

EDGE = "edge-1"
EDGE_SETTINGS = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return demo_catalog()


@pytest.fixture(scope="session")
def edge_plan(catalog: Catalog) -> Plan:
    return evaluate_plan(catalog)


@pytest.fixture(scope="session")
def edge_model(edge_plan: Plan) -> MeshModel:
    return MeshModel.build([edge_plan], {EDGE: EDGE_SETTINGS})
