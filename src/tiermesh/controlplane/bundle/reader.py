"""Reading a policy directory into bundle files: deterministic, bounded, no surprises.

What is read from ``DIR`` (paths in the bundle are relative to ``DIR``, ``/``-separated):

- every ``*.rego`` file at any depth (Rego modules, tests included);
- ``data/*.yaml``, ``data/*.yml``, ``data/*.json`` (data documents, ``data.<stem>``);
- ``schemas/*.json`` (the JSON schemas the bundle was written against).

Hidden files and directories (``.git``, ``.venv``) are skipped; anything else is not
part of the bundle. Symlinks are followed only when they stay inside ``DIR``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from tiermesh.controlplane.bundle.errors import BundleReadError
from tiermesh.controlplane.bundle.provenance import git_provenance
from tiermesh.controlplane.store import JsonScalar, bundle_digest

__all__ = ["DATA_SUFFIXES", "BundleLimits", "LocalBundle", "is_bundle_path", "read_policy_dir"]

DATA_SUFFIXES = (".yaml", ".yml", ".json")
"""Suffixes of data documents under ``data/``."""


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """Bounds on what a policy directory may hold; each is checked while reading.

    The store has its own (smaller) request limits, checked again at push time.
    """

    max_files: int = 512
    max_file_bytes: int = 1 << 20
    max_total_bytes: int = 8 << 20


def is_bundle_path(path: str) -> bool:
    """Whether a ``/``-separated relative path is one this module puts in a bundle."""
    parts = PurePosixPath(path).parts
    if not parts or any(part.startswith(".") for part in parts):
        return False
    if path.endswith(".rego"):
        return True
    if len(parts) == 2 and parts[0] == "data":
        return PurePosixPath(path).suffix in DATA_SUFFIXES
    return len(parts) == 2 and parts[0] == "schemas" and path.endswith(".json")


@dataclass(frozen=True, slots=True)
class LocalBundle:
    """A bundle read from disk. Immutable.

    ``files`` maps bundle paths to content, sorted by path; ``provenance`` holds git facts
    (see :func:`~tiermesh.controlplane.bundle.provenance.git_provenance`).
    """

    root: Path
    files: Mapping[str, bytes]
    provenance: Mapping[str, JsonScalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", MappingProxyType(dict(sorted(self.files.items()))))
        object.__setattr__(self, "provenance", MappingProxyType(dict(self.provenance)))

    @property
    def sha256(self) -> str:
        """The store's digest of ``files`` (equal digests mean equal bundles)."""
        return bundle_digest(self.files)


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for current, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(current)
        found.extend(base / name for name in sorted(names) if not name.startswith("."))
    return found


def read_policy_dir(
    directory: str | Path, *, limits: BundleLimits | None = None, provenance: bool = True
) -> LocalBundle:
    """Read ``directory`` (see the module docstring for what is taken).

    The result is deterministic: the same tree gives the same files and digest whatever
    the file system's listing order. ``provenance=False`` skips the git subprocess.

    Raises :class:`BundleReadError` when the directory is missing, holds no Rego module,
    a file cannot be read, a symlink leaves the directory, or a limit is exceeded.
    Blocking (file I/O and ``git``): run it off the event loop.
    """
    limits = limits or BundleLimits()
    root = Path(directory)
    if not root.is_dir():
        raise BundleReadError(str(directory), "not a directory")
    resolved_root = root.resolve()
    files: dict[str, bytes] = {}
    total = 0
    for path in _walk(root):
        relative = path.relative_to(root).as_posix()
        if not is_bundle_path(relative):
            continue
        if not path.resolve().is_relative_to(resolved_root):
            raise BundleReadError(str(path), "symlink points outside the policy directory")
        try:
            size = path.stat().st_size
            if size > limits.max_file_bytes:
                raise BundleReadError(
                    str(path), f"{size} bytes is over the {limits.max_file_bytes}-byte file limit"
                )
            content = path.read_bytes()
        except OSError as exc:
            raise BundleReadError(str(path), f"cannot read: {exc.strerror or exc}") from exc
        total += len(content)
        if total > limits.max_total_bytes:
            raise BundleReadError(
                str(directory), f"bundle is over the {limits.max_total_bytes}-byte total limit"
            )
        files[relative] = content
        if len(files) > limits.max_files:
            raise BundleReadError(str(directory), f"more than {limits.max_files} bundle files")
    if not any(name.endswith(".rego") for name in files):
        raise BundleReadError(str(directory), "no Rego modules (*.rego) found")
    facts = git_provenance(root) if provenance else {}
    return LocalBundle(root=root, files=files, provenance=facts)
