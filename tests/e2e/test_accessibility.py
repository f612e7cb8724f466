"""Accessibility: axe-core finds no serious or critical violation on any page, logged out or in,
and the main controls work from the keyboard."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from support.browser import serious_violations, sign_up

APP_PAGES = [
    "/app/chat",
    "/app/recipes",
    "/app/recipes/new",
    "/app/library",
    "/app/teams",
    "/app/account",
    "/app/library?section=datasets",
    "/app/datasets/new",
    "/app/jobs",
    "/app/jobs?form=vector",
    "/app/jobs?form=sweep",
    "/app/boards",
]


@pytest.mark.parametrize("path", ["/accounts/login/", "/accounts/signup/"])
def test_the_account_pages_have_no_serious_accessibility_issue(page: Any, path: str, artifacts: Path) -> None:
    page.goto(path)
    page.screenshot(path=str(artifacts / f"{path.strip('/').replace('/', '-')}.png"), full_page=True)
    assert serious_violations(page) == []


def test_every_app_page_has_no_serious_accessibility_issue(page: Any) -> None:
    sign_up(page, "frank")
    for path in APP_PAGES:
        page.goto(path)
        page.get_by_role("heading", level=1).first.wait_for()
        expect(page.get_by_role("status").filter(has_text=re.compile("^Loading"))).to_have_count(0)
        assert serious_violations(page) == [], path


def test_the_app_is_usable_from_the_keyboard(page: Any) -> None:
    sign_up(page, "grace")
    page.goto("/app/chat")
    page.get_by_role("heading", level=1).wait_for()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Tab walks the top navigation in order; Enter follows a link.
    for name in ["Steerlab", "Chat", "Recipes"]:
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name=name, exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url("**/app/recipes")
    expect(page.get_by_role("heading", level=1)).to_have_text("Recipes")
