"""Debian's chromium driven by Playwright (no browser download works here): the path of
the binary, and a skip when this machine has none (``make os-deps`` installs it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, sync_playwright


def chromium_path() -> str:
    """The system chromium, or skip (a missing machine capability)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on this machine (make os-deps installs Debian's)")
    return found


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    """A headless chromium, closed on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()
