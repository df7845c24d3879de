"""The long-running commands log UTC timestamps; a bad ``--log-level`` is named."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
import typer

from tiermesh.cli.server_logs import configure_server_logging


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    root = logging.getLogger()
    kept = list(root.handlers)
    level = logging.getLogger("tiermesh").level
    formatters = [h.formatter for h in kept]
    yield kept
    for handler in list(root.handlers):
        if handler not in kept:
            root.removeHandler(handler)
    for handler, formatter in zip(kept, formatters, strict=True):
        handler.setFormatter(formatter)
    logging.getLogger("tiermesh").setLevel(level)


def test_lines_carry_a_utc_timestamp_and_the_level_is_set(
    root_handlers: list[logging.Handler],
) -> None:
    configure_server_logging("info")
    assert logging.getLogger("tiermesh").level == logging.INFO
    handlers = logging.getLogger().handlers
    assert handlers
    record = logging.LogRecord("tiermesh.x", logging.INFO, __file__, 1, "hello %s", ("y",), None)
    record.created = 86400.25  # 1970-01-02T00:00:00.250 UTC
    record.msecs = 250.0
    for handler in handlers:
        assert handler.formatter is not None
        line = handler.formatter.format(record)
        assert line == "1970-01-02T00:00:00.250Z INFO tiermesh.x: hello y"
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line)


def test_an_unknown_level_is_refused_by_name(root_handlers: list[logging.Handler]) -> None:
    with pytest.raises(typer.BadParameter, match="unknown level 'loud'"):
        configure_server_logging("loud")
