"""Files replaced atomically, for the certificates and keys tiermesh keeps on disk.

:func:`replace_file` writes a temporary file beside the target (``O_EXCL``, created with
the final mode, so a key is never readable by others even for an instant), fsyncs it and
renames it over the target: a reader sees the whole old file or the whole new one.
Shared by the agents and the control plane, so it imports nothing of either.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data``, mode ``mode``; on any failure the temporary file is
    removed and ``path`` is left as it was.

    Raises:
        OSError: the folder is not writable (or the disk is full …).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
