"""The dashboard in a real headless chromium: what a person sees, the live refresh, and
that outside text stays text (no script of it runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.integration.dashboard.served import Served, served
from tests.support.browser import headless_chromium
from tests.unit.dashboard.helpers import HOSTILE
from tiermesh.controlplane.api import AnswerCounts

REFRESH_BOUND_MS = 10_000


@pytest.fixture
def page() -> Iterator[tuple[Served, Page]]:
    with served() as servers, headless_chromium() as browser:
        opened = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        errors: list[str] = []
        opened.on("pageerror", lambda error: errors.append(str(error)))
        yield servers, opened
        assert dialogs == [], "a script from outside text ran"
        assert errors == []


def test_the_page_shows_the_figures_and_refreshes_them(page: tuple[Served, Page]) -> None:
    servers, tab = page
    tab.goto(servers.dashboard_url)
    expect(tab.locator('[data-figure="total-answers"]')).to_have_text("7")
    expect(tab.locator('[data-figure="total-fallback-rate"]')).to_have_text("28.6%")
    expect(tab.locator('[data-figure="reason-cascade"]')).to_have_text("1")
    expect(tab.locator('[data-figure="budget-initech"]')).to_have_text("exhausted")
    expect(tab.locator("#mesh")).to_contain_text("listeners NACK")
    expect(tab.locator("#policy")).to_contain_text(HOSTILE)  # shown as text
    servers.add("edge-1", AnswerCounts(by_tier={"local": 3}, first_choice=3))
    figure = tab.locator('[data-figure="total-answers"]')
    expect(figure).to_have_text("10", timeout=REFRESH_BOUND_MS)  # polled, no reload
    expect(tab.locator("#live")).to_have_text("live")
