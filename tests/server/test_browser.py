"""The project's real-browser test: Debian's Chromium, driven by Playwright, uses the todo
sample app through Facets' HTTP front door as a person would: it loads the page, types a
title into the form, submits it, and sees the item listed.

Chromium is the system's (``make test`` installs the Debian package ``chromium``); Playwright
never downloads a browser of its own. Outside CI the test is skipped when Chromium is
missing; in CI (``CI`` set) that is a failure, since the Makefile installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from runtime import Supervisor
from server import Listen, PublicApp, ServerThread

ROOT = Path(__file__).resolve().parents[2]
TODO_WASM = ROOT / "sample_apps" / "todo" / "todo.wasm"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root Chromium needs --no-sandbox; the background-networking flags keep it from dialling
# Google's hosts at start, which this machine's closed network refuses (many at a time).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: Chromium shares 2 cores with the rest of the suite. Not a timing assertion, only
# how long Playwright waits for the page to show what it must.
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: `make test` installs the Debian package chromium")
        pytest.skip("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=2 * WAIT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def todo_server(tmp_path: Path) -> Iterator[tuple[Supervisor, str]]:
    """The todo app in a supervisor, served by the real front door on a loopback port."""
    with Supervisor(tmp_path / "data", idle_timeout=3600) as sup:
        sup.load_app(TODO_WASM, "todo")
        app = PublicApp(sup)
        try:
            with ServerThread(app, Listen("127.0.0.1", 0)) as served:
                yield sup, served.url
        finally:
            app.close()


def test_add_an_item_through_the_todo_page_in_chromium(browser: Browser, todo_server: tuple[Supervisor, str]) -> None:
    sup, url = todo_server
    # Markup characters and non-ASCII text: the page must show exactly what was typed.
    title = "Buy oat milk & <bread> for Zoë"
    page = browser.new_page()
    try:
        response = page.goto(f"{url}/todo/alice/", timeout=WAIT_MS)
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["x-request-id"]
        page.get_by_label("New item").fill(title)
        page.get_by_role("button", name="Add").click()

        # The form's POST is answered 303 to the page, which the browser loads again.
        expect(page).to_have_url(f"{url}/todo/alice/", timeout=WAIT_MS)
        expect(page.locator("li", has_text=title)).to_have_count(1, timeout=WAIT_MS)
        expect(page.get_by_text(title, exact=True)).to_be_visible(timeout=WAIT_MS)
    finally:
        page.close()
    # It went into alice's own database, and nowhere else.
    assert sup.query("todo/alice", "SELECT title FROM items")["rows"] == [[title]]
    assert [f.target for f in sup.facet_list()] == ["todo/alice"]
