"""Logging of the long-running commands (``controlplane run``, ``agent run``).

Their lines carry a UTC timestamp to the millisecond, so that the logs of a mesh's
processes (under ``tiermesh up`` they share one terminal) can be read side by side in
time order; the one-shot commands keep :func:`tiermesh.cli.main.main`'s short format.
"""

from __future__ import annotations

import logging
import time
from typing import Final

import typer

__all__ = ["SERVER_LOG_FORMAT", "configure_server_logging"]

SERVER_LOG_FORMAT: Final = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT: Final = "%Y-%m-%dT%H:%M:%S"


def _formatter() -> logging.Formatter:
    formatter = logging.Formatter(SERVER_LOG_FORMAT, _DATE_FORMAT)
    formatter.converter = time.gmtime
    return formatter


def configure_server_logging(log_level: str) -> None:
    """Set the ``tiermesh`` loggers to ``log_level`` (a name such as ``info``) and give
    every root handler the timestamped format (a root handler is added when none is set).

    Raises:
        typer.BadParameter: ``log_level`` names no logging level (``--log-level``).
    """
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown level {log_level!r}", param_hint="--log-level")
    logging.getLogger("tiermesh").setLevel(level)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING)
    for handler in root.handlers:
        handler.setFormatter(_formatter())
