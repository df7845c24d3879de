"""Reading ``deploy/kubernetes/``: its objects, their pods and containers, as Kubernetes
would see them (``$(VAR)`` references in args expanded from the container's env)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
K8S_DIR = REPO / "deploy" / "kubernetes"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
README = REPO / "deploy" / "README.md"
WORKLOADS = ("StatefulSet", "Deployment", "DaemonSet")
SOURCE = "tiermesh.test/source"
"""Annotation key under which :func:`load_manifests` records each object's file name."""

# What the downward API would give a pod, for expanding $(VAR) in tests.
_SAMPLE_FIELDS = {"metadata.name": "{workload}-0", "spec.nodeName": "box-1"}
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def manifest_files() -> list[Path]:
    """The manifest files (every ``*.yaml`` but the kustomization), sorted."""
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p != KUSTOMIZATION)


def load_manifests() -> list[dict[str, Any]]:
    """Every object of every manifest file, with :data:`SOURCE` naming its file."""
    found = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            doc.setdefault("metadata", {}).setdefault("annotations", {})[SOURCE] = path.name
            found.append(doc)
    return found


def without_source(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as written (the :data:`SOURCE` annotation removed)."""
    metadata = dict(doc["metadata"])
    annotations = {k: v for k, v in metadata.get("annotations", {}).items() if k != SOURCE}
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return {**doc, "metadata": metadata}


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in WORKLOADS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    assert isinstance(labels, dict)
    return labels


@dataclass(frozen=True)
class Container:
    """One container of a workload's pod. ``init``: an init container; ``sidecar``: an
    init container with ``restartPolicy: Always`` (it keeps running)."""

    workload: dict[str, Any]
    spec: dict[str, Any]
    init: bool

    @property
    def name(self) -> str:
        return f"{self.workload['metadata']['name']}/{self.spec['name']}"

    @property
    def sidecar(self) -> bool:
        return self.init and self.spec.get("restartPolicy") == "Always"

    @property
    def long_running(self) -> bool:
        return not self.init or self.sidecar

    @property
    def image(self) -> str:
        return str(self.spec["image"])

    def env(self) -> dict[str, str]:
        """The container's env values, downward-API fields given sample values."""
        values = {}
        for entry in self.spec.get("env", []):
            if "value" in entry:
                values[entry["name"]] = entry["value"]
                continue
            field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field in _SAMPLE_FIELDS:
                workload = self.workload["metadata"]["name"]
                values[entry["name"]] = _SAMPLE_FIELDS[field].format(workload=workload)
        return values

    def args(self) -> list[str]:
        """``args`` with ``$(VAR)`` expanded as the kubelet would; an unknown reference
        stays as written (as Kubernetes leaves it)."""
        env = self.env()
        return [
            _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), str(arg))
            for arg in self.spec.get("args", [])
        ]

    def mounts(self) -> dict[PurePosixPath, dict[str, Any]]:
        """Mount path → the pod volume mounted there."""
        volumes = {v["name"]: v for v in pod_spec(self.workload).get("volumes", [])}
        claims = {
            c["metadata"]["name"]: {"name": c["metadata"]["name"], "persistentVolumeClaim": {}}
            for c in self.workload["spec"].get("volumeClaimTemplates", [])
        }
        return {
            PurePosixPath(m["mountPath"]): volumes.get(m["name"]) or claims[m["name"]]
            for m in self.spec.get("volumeMounts", [])
        }

    def volume_at(self, path: PurePosixPath | Path) -> tuple[PurePosixPath, dict[str, Any]] | None:
        """The deepest mount holding ``path``, or None."""
        path = PurePosixPath(path)
        held = [(m, v) for m, v in self.mounts().items() if path.is_relative_to(m)]
        return max(held, key=lambda item: len(item[0].parts)) if held else None

    def ports(self) -> dict[str, int]:
        return {p["name"]: int(p["containerPort"]) for p in self.spec.get("ports", [])}

    def probes(self) -> dict[str, dict[str, Any]]:
        kinds = ("startupProbe", "livenessProbe", "readinessProbe")
        return {k: self.spec[k] for k in kinds if k in self.spec}


def containers(docs: list[dict[str, Any]]) -> Iterator[Container]:
    """Every container of every workload, init containers first (their start order)."""
    for workload in workloads(docs):
        spec = pod_spec(workload)
        for entry in spec.get("initContainers", []):
            yield Container(workload, entry, init=True)
        for entry in spec["containers"]:
            yield Container(workload, entry, init=False)


def is_tiermesh(container: Container) -> bool:
    """Runs the image's ``tiermesh`` entrypoint (no ``command`` of its own)."""
    return container.image.split(":", 1)[0] == "tiermesh" and "command" not in container.spec


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pods_selected(docs: list[dict[str, Any]], selector: dict[str, str]) -> list[dict[str, Any]]:
    """The workloads whose pods ``selector`` (matchLabels) selects."""
    return [w for w in workloads(docs) if selects(selector, pod_labels(w))]
