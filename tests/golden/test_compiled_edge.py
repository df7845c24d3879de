"""Golden files: the compiled Envoy config of the demo catalog's edge node (which runs
ext_authz, as every node that routes must).

Each xDS type is one JSON file under ``tests/golden/edge-1/`` (``MessageToDict``,
sorted keys). A change to the compiler or the policy shows up as a reviewable diff.
Refresh with ``TIERMESH_UPDATE_GOLDEN=1 pytest tests/golden``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, demo_catalog, evaluate_plan
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import typeurls

NODE = "edge-1"
GOLDEN = Path(__file__).parent / NODE
UPDATE = os.environ.get("TIERMESH_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    catalog = demo_catalog()
    settings = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)
    model = MeshModel.build([evaluate_plan(catalog)], {NODE: settings})
    snapshot = compile_and_verify(model, NODE, catalog)
    return {
        typeurls.SHORT_NAMES[type_url]: json.dumps(
            [MessageToDict(r.decode()) for r in snapshot.encoded(type_url).values()],
            indent=1,
            sort_keys=True,
            ensure_ascii=False,
        )
        + "\n"
        for type_url in typeurls.PUSH_ORDER
    }


@pytest.mark.parametrize("kind", ["cds", "eds", "lds", "rds", "sds"])
def test_compiled_config_matches_golden(rendered: dict[str, str], kind: str) -> None:
    path = GOLDEN / f"{kind}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered[kind], encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with TIERMESH_UPDATE_GOLDEN=1"
    assert rendered[kind] == path.read_text(encoding="utf-8"), (
        f"{path.name} differs from the compiled config; review and refresh with "
        "TIERMESH_UPDATE_GOLDEN=1"
    )
