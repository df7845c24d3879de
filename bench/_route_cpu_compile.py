"""The shipped route-only config of ``route_cpu.py``, compiled by the tree on ``sys.path``.

``route_cpu.py`` runs this file's text as ``python - PORTS_JSON APP_PORT`` with the
measured tree's ``src`` and ``bench`` on ``PYTHONPATH`` (so a checkout of ``main`` can be
compiled beside this one). It writes to stdout one JSON object: type URL → the
resources' serialized bytes, base64. Only names every tree since the route-only bench
has are used.

The config: the demo catalog's plan for ``edge-1`` (regorus, the policies of the tree),
compiled with a cascade handler (a socket nobody serves; the measured request is no
cascade) and ext_authz as ``tiermesh up`` registers the edge node, minus ext_authz
(``_route_only.compile_route_only``). Each backend on 127.0.0.1 answers at its port in
PORTS_JSON (backend name → port; endpoints are unique per catalog); every tenant's rate
limit is :data:`RATE`.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from _gw_mesh import evaluate_plan
from _route_only import compile_route_only
from tiermesh.controlplane.api import Catalog, load_catalog
from tiermesh.controlplane.model import CascadeSettings, MeshModel, NodeSettings
from tiermesh.xds import typeurls

NODE = "edge-1"
RATE = {"tokens_per_fill": 1_000_000, "fill_interval_ms": 1000, "max_tokens": 1_000_000}
TEST_BUNDLE = (
    "-----BEGIN CERTIFICATE-----\nTEST-ONLY-NOT-A-CERTIFICATE\n-----END CERTIFICATE-----\n"
)


def measured_catalog(ports: dict[str, int]) -> Catalog:
    """The demo catalog with its loopback backends on ``ports`` and big buckets."""
    document: dict[str, Any] = load_catalog(Path("policies/data/catalog.yaml")).model_dump(
        mode="json", exclude_none=True
    )
    for backend in document["backends"]:
        if backend["endpoint"]["host"] == "127.0.0.1":
            backend["endpoint"]["port"] = ports[backend["name"]]
    document["defaults"]["rate_limit"] = dict(RATE)
    for tenant in document["tenants"]:
        if "rate_limit" in tenant:
            tenant["rate_limit"] = dict(RATE)
    return Catalog.model_validate(document)


def main() -> None:
    ports, app_port = json.loads(sys.argv[1]), int(sys.argv[2])
    plan = evaluate_plan(measured_catalog(ports))
    settings = NodeSettings(
        app_port=app_port,
        trust_bundle_pem=TEST_BUNDLE,
        cascade=CascadeSettings(socket="/nonexistent/tiermesh-bench-cascade.sock"),
    )
    snapshot = compile_route_only(MeshModel.build([plan], {NODE: settings}), NODE)
    out = {
        type_url: [
            base64.b64encode(resource.decode().SerializeToString()).decode()
            for resource in snapshot.encoded(type_url).values()
        ]
        for type_url in typeurls.PUSH_ORDER
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
