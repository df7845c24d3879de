"""Errors of the bundle package.

Reading a policy directory is the only step that raises: checking a bundle reports
problems as :class:`~tiermesh.controlplane.bundle.findings.Finding` values instead,
so one run shows every problem at once.
"""

from __future__ import annotations

__all__ = ["BundleError", "BundleReadError"]


class BundleError(Exception):
    """Root of every error raised by :mod:`tiermesh.controlplane.bundle`."""


class BundleReadError(BundleError):
    """A policy directory could not be read into a bundle.

    ``path`` is the file or directory concerned, as given or found; ``reason`` says why
    (missing directory, file over a size limit, a symlink leaving the directory, ...).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
