"""A script's completion (the OpenAI-compatible API) shown in the chat, shared by a read-only link
that a visitor opens without logging in, then revoked from the Account page."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect
from support.browser import serious_violations, sign_up


def _csrf(page: Any) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def test_a_shared_run_opens_read_only_for_a_visitor_until_it_is_revoked(page: Any, browser: Any) -> None:
    sign_up(page, "heidi")
    page.goto("/app/chat")
    page.get_by_role("heading", level=1).first.wait_for()
    token = page.request.post("/api/tokens", data={"name": "script"}, headers={"X-CSRFToken": _csrf(page)})
    assert token.ok, token.text()
    model = page.request.get("/api/deployments").json()["items"][0]["name"]
    answer = page.request.post(
        "/v1/chat/completions",
        data={
            "model": model,
            "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 6,
            "seed": 3,
        },
        headers={"Authorization": f"Bearer {token.json()['token']}"},
        timeout=120_000,
    )
    assert answer.ok, answer.text()
    run = answer.json()["steerlab"]
    text = answer.json()["choices"][0]["message"]["content"]

    page.goto(f"/app/chat/{run['conversation']}")
    page.get_by_role("button", name=f"Share run {run['run']}").click()
    url = page.get_by_label("Share link to this run").input_value()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/app/shared/shr_[\w-]+", url), url

    visitor = browser.new_context()  # no session: a stranger holding the link
    try:
        shared = visitor.new_page()
        shared.goto(url)
        expect(shared.get_by_role("heading", level=1)).to_be_visible()
        expect(shared.get_by_text("Hello there")).to_be_visible()
        if text.strip():
            expect(shared.locator("main")).to_contain_text(text.strip())
        expect(shared.get_by_role("navigation", name="Main")).to_have_count(0)
        assert serious_violations(shared) == []

        page.goto("/app/account")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=f"Revoke the link to run #{run['run']}").click()
        expect(page.get_by_text(f"Revoked the share link to run #{run['run']}.")).to_be_visible()

        shared.reload()
        expect(shared.get_by_text("This link does not exist or was revoked.")).to_be_visible()
    finally:
        visitor.close()
