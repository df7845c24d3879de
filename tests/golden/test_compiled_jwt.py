"""Golden files: the edge node of the demo catalog with two JWT issuers (a remote key set
and an inline one), where only the listeners (jwt_authn before ext_authz) and the clusters
(the remote key set's) differ from ``edge-1``. Refresh with
``TIERMESH_UPDATE_GOLDEN=1 pytest tests/golden``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from tests.unit.compiler.plans import TEST_AUTHZ, TEST_BUNDLE, demo_catalog, evaluate_plan
from tiermesh.controlplane.api import Catalog
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import typeurls

NODE = "edge-1"
GOLDEN = Path(__file__).parent / "edge-1-jwt"
UPDATE = os.environ.get("TIERMESH_UPDATE_GOLDEN") == "1"
ISSUERS = [
    {
        "name": "corp-sso",
        "issuer": "https://sso.example.com/",
        "audiences": ["tiermesh"],
        "remote_jwks": {"uri": "https://sso.example.com/.well-known/jwks.json"},
        "tenant_claim": ["org", "id"],
        "tenants": ["acme", "globex"],
    },
    {
        "name": "ci",
        "issuer": "ci-runner",
        "audiences": ["tiermesh"],
        "local_jwks": {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg",
                    "kid": "ci-1",
                }
            ]
        },
    },
]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    base = demo_catalog()
    catalog = Catalog.model_validate({**base.model_dump(mode="json"), "jwt_issuers": ISSUERS})
    settings = NodeSettings(app_port=10000, trust_bundle_pem=TEST_BUNDLE, authz=TEST_AUTHZ)
    model = MeshModel.build(
        [evaluate_plan(catalog)], {NODE: settings}, jwt_issuers=catalog.jwt_issuers
    )
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


@pytest.mark.parametrize("kind", ["cds", "lds"])
def test_compiled_jwt_config_matches_golden(rendered: dict[str, str], kind: str) -> None:
    path = GOLDEN / f"{kind}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered[kind], encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with TIERMESH_UPDATE_GOLDEN=1"
    assert rendered[kind] == path.read_text(encoding="utf-8"), (
        f"{path.name} differs from the compiled config; review and refresh with "
        "TIERMESH_UPDATE_GOLDEN=1"
    )


@pytest.mark.parametrize("kind", ["eds", "rds", "sds"])
def test_the_rest_is_the_edge_nodes_config(rendered: dict[str, str], kind: str) -> None:
    edge = Path(__file__).parent / NODE / f"{kind}.json"
    assert rendered[kind] == edge.read_text(encoding="utf-8")
