"""The repository's Rego policies with a small catalog that every node can route with.

The catalog has one tenant, two tasks, an on-prem backend cleared for restricted data and
an EU cloud API, so any node gets a plan without violations in a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path

POLICY_DIR = Path(__file__).resolve().parents[3] / "policies"

TIER = """
      timeout_ms: 30000
      first_byte_timeout_ms: 2000
      retries: {count: 1, backoff_base_ms: 50, backoff_max_ms: 500, retry_on: [5xx]}
      circuit_breaker: {max_connections: 8, max_pending: 8, max_requests: 8, max_retries: 2}
      outlier_detection: {consecutive_5xx: 3, interval_ms: 5000, base_ejection_ms: 10000,
                          max_ejection_percent: 50}
      health_check: {interval_ms: 5000, timeout_ms: 1000, unhealthy_threshold: 2,
                     healthy_threshold: 1}"""

SMALL_CATALOG = f"""version: v1
defaults:
  default_task: chat
  tiers:
    local:{TIER}
    private:{TIER}
    cloud:{TIER}
backends:
  - name: onprem
    tier: private
    region: eu-west
    residency: eu
    cost_per_1k_tokens: {{input: 0.0001, output: 0.0002}}
    capacity: 8
    models: [small-model]
    max_complexity: 3
    max_sensitivity: restricted
    endpoint: {{host: 127.0.0.1, port: 9001}}
  - name: cloud-eu
    tier: cloud
    region: eu-west
    residency: eu
    cost_per_1k_tokens: {{input: 0.003, output: 0.015}}
    capacity: 64
    models: [big-model]
    max_complexity: 5
    endpoint: {{host: 127.0.0.1, port: 9002}}
tenants:
  - name: acme
    residency: [eu]
    monthly_budget_usd: 100
    allowed_tiers: [private, cloud]
    restricted_tiers: [private]
tasks:
  - {{name: chat, complexity: 2}}
  - {{name: reasoning, complexity: 4}}
"""

NODES = """- {id: edge-1, tier: local, region: eu-west, residency: [eu]}
- {id: gpu-1, tier: private, region: eu-west}
"""


def rego_files() -> dict[str, bytes]:
    """Every .rego file of the repository's policies, by path under policies/."""
    return {
        path.relative_to(POLICY_DIR).as_posix(): path.read_bytes()
        for path in sorted(POLICY_DIR.rglob("*.rego"))
    }


def policy_files(catalog: str = SMALL_CATALOG, *, nodes: str | None = NODES) -> dict[str, bytes]:
    """A complete bundle: the policies, the catalog and (optionally) the nodes to check."""
    files = rego_files()
    files["data/catalog.yaml"] = catalog.encode()
    if nodes is not None:
        files["data/nodes.yaml"] = nodes.encode()
    return files


def write_policy_dir(directory: Path, files: dict[str, bytes] | None = None) -> Path:
    """Write ``files`` (default: :func:`policy_files`) under ``directory``; returns it."""
    for name, content in (files if files is not None else policy_files()).items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return directory


def node_registration(node_id: str, tier: str = "local", region: str = "eu-west") -> bytes:
    """What a node registers, with extra fields the reconciler ignores."""
    return (
        f'{{"id": "{node_id}", "tier": "{tier}", "region": "{region}", '
        f'"residency": ["eu"], "endpoints": [{{"host": "127.0.0.1", "port": 8081}}]}}'
    ).encode()
