"""Policy bundles: reading a policy directory, checking it, evaluating it per node.

- :func:`read_policy_dir` → :class:`LocalBundle` (files, sha256, git provenance);
- :func:`check_bundle` → :class:`CheckReport` (Rego, catalog, schemas, tests, plans,
  violations, compile and verify), problems as ``file:line: message`` :class:`Finding`;
- :func:`evaluate_bundle` → :class:`BundleOutcome`, the pipeline the reconciler runs;
- :class:`Compiler`, the injected plan → snapshot step (:class:`PlanAwareCompiler`: one
  that sees every node's plan first).
"""

from __future__ import annotations

from tiermesh.controlplane.bundle.check import CheckReport, check_bundle
from tiermesh.controlplane.bundle.compiler import Compiler, PlanAwareCompiler, compile_findings
from tiermesh.controlplane.bundle.documents import (
    CATALOG_DOCUMENT,
    NODES_DOCUMENT,
    REQUEST_CONFIG_DOCUMENT,
    Documents,
    check_nodes,
    read_documents,
)
from tiermesh.controlplane.bundle.errors import BundleError, BundleReadError
from tiermesh.controlplane.bundle.evaluate import (
    BundleOutcome,
    evaluate_bundle,
    evaluate_plan,
    load_engine,
)
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.controlplane.bundle.plan_checks import plan_problems
from tiermesh.controlplane.bundle.provenance import git_provenance
from tiermesh.controlplane.bundle.reader import (
    BundleLimits,
    LocalBundle,
    is_bundle_path,
    read_policy_dir,
)

__all__ = [
    "CATALOG_DOCUMENT",
    "NODES_DOCUMENT",
    "REQUEST_CONFIG_DOCUMENT",
    "BundleError",
    "BundleLimits",
    "BundleOutcome",
    "BundleReadError",
    "CheckReport",
    "Compiler",
    "Documents",
    "Finding",
    "LocalBundle",
    "PlanAwareCompiler",
    "Stage",
    "check_bundle",
    "check_nodes",
    "compile_findings",
    "evaluate_bundle",
    "evaluate_plan",
    "git_provenance",
    "is_bundle_path",
    "load_engine",
    "plan_problems",
    "read_documents",
    "read_policy_dir",
]
