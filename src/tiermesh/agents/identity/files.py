"""Writing the node's identity to disk for consumers that read files (an Envoy configured
with file-based TLS, operators' tools).

The directory is created (or tightened) to 0700 and the private key is written 0600; the
chain and bundle are 0644 inside that private directory. Every file is replaced atomically
(a temporary file in the same directory, then ``os.replace``), so a reader sees either the
old or the new content, never a mix; the key is replaced before the chain, so a reader that
sees a new chain finds the matching key already in place. Thread-safe for distinct
directories; one writer per directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tiermesh.agents.identity.material import SvidMaterial
from tiermesh.atomic_files import replace_file

__all__ = ["SvidFiles"]

DIR_MODE = 0o700
KEY_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True, slots=True)
class SvidFiles:
    """Where the identity lives on disk: ``svid.pem``, ``svid_key.pem``, ``bundle.pem``."""

    directory: Path

    @property
    def chain_path(self) -> Path:
        return self.directory / "svid.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "svid_key.pem"

    @property
    def bundle_path(self) -> Path:
        return self.directory / "bundle.pem"

    def write(self, material: SvidMaterial) -> None:
        """Write all three files. Raises ``OSError`` if the directory is not writable."""
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)
        replace_file(self.key_path, material.key_pem(), KEY_MODE)
        replace_file(self.bundle_path, material.bundle_pem(), PUBLIC_MODE)
        replace_file(self.chain_path, material.chain_pem(), PUBLIC_MODE)

    def remove(self) -> None:
        """Delete the files (not the directory); missing files are fine."""
        for path in (self.chain_path, self.key_path, self.bundle_path):
            path.unlink(missing_ok=True)
