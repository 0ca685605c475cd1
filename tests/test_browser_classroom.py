"""Classroom mode in a real browser: two students in two browser contexts (two cookie jars)
and the instructor, against a live server with LAB_INSTRUCTOR_KEY set.

Each picks a nickname; the nickname survives a new tab (the cookie); each sees their own
runs marked and no Stop/Rename/Delete on the other's (and core refuses the call anyway); the
instructor unlocks with the key and gets them. Runs are put in the store (a queued one held
behind a "running" run whose worker is this test process, and completed ones), so nothing
trains and the test takes seconds of browser time.
"""

from __future__ import annotations

import os

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    goto,
    main_text,
    playwright_api,
    server,  # noqa: F401 - the live-server fixture
    wait_idle,
)

from conftest import tiny_config
from core import access, jobs
from core.store import CANCELLED, RunStore

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Debian's chromium is not at {CHROMIUM}"),
]
KEY = "s3cret-key"


@pytest.fixture
def class_env(monkeypatch):
    """Set before the server fixture starts: the server reads it from the environment."""
    monkeypatch.setenv(access.KEY_ENV, KEY)
    monkeypatch.delenv("LAB_CLASS_CODE", raising=False)


@pytest.fixture
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def student(browser, base: str, nickname: str):
    """A fresh browser context (its own cookies) that joined with ``nickname``."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    goto(page, base + "/", "Who are you?")
    page.get_by_label("Nickname", exact=True).fill(nickname)
    page.get_by_label("Nickname", exact=True).press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Join").click()
    page.get_by_text(f"You: {nickname}").wait_for()
    return page


def sidebar(page) -> str:
    return page.locator("[data-testid='stSidebar']").inner_text()


def test_two_students_and_the_instructor(class_env, server, browser):  # noqa: F811
    base, home, _ = server
    ana, ben = student(browser, base, "Ana"), student(browser, base, "Ben")

    # A new tab of Ana's browser knows her (the cookie); Ben's context does not share it.
    tab = ana.context.new_page()
    goto(tab, base + "/compare", "Compare runs")
    assert "You: Ana" in sidebar(tab) and "Ben" not in sidebar(tab)
    tab.close()

    store = RunStore(home)
    blocker = store.create_run(tiny_config(name="held"), owner="Cy")
    store.claim_next(1)
    store.set_worker(blocker, os.getpid())  # alive: the queue waits behind it
    try:
        walk(base, store, ana, ben, blocker)
    finally:  # before the server fixture kills the workers of active runs (this process)
        store.finish(blocker, CANCELLED)


def walk(base: str, store: RunStore, ana, ben, blocker: str) -> None:
    queued = store.create_run(tiny_config(name="ana waiting"), owner="Ana")
    done = store.create_run(tiny_config(name="ana done"), owner="Ana")
    store.request_cancel(done)  # a finished run of Ana's (cancelled: final)

    # Ana's run: Stop for her, not for Ben, who sees whose it is.
    goto(ana, f"{base}/train?run={queued}", "Run: ana waiting")
    assert "by Ana (you)" in main_text(ana)
    ana.get_by_role("button", name="Stop").wait_for()  # (drawn just after the title)
    goto(ben, f"{base}/train?run={queued}", "Run: ana waiting")
    assert "by Ana" in main_text(ben) and "(you)" not in main_text(ben)
    assert ben.get_by_role("button", name="Stop").count() == 0
    ben.locator("[data-testid='stSidebar']").get_by_text("ana waiting · Ana").wait_for()

    # Compare: rename/delete only for the owner.
    goto(ben, f"{base}/compare?runs={done}", "belongs to Ana")  # (drawn after the title)
    assert ben.get_by_role("button", name="Rename").count() == 0
    assert ben.get_by_role("button", name="Delete run").count() == 0
    goto(ana, f"{base}/compare?runs={done}", "Manage and download")
    ana.get_by_role("button", name="Rename").wait_for()  # (drawn after the section's title)
    assert ana.get_by_role("button", name="Rename").count() == 1

    # Core refuses Ben whatever the page shows.
    with pytest.raises(access.PermissionDenied, match="belongs to Ana"):
        store.rename(done, "mine", access.Actor("Ben"))
    with pytest.raises(access.PermissionDenied, match="belongs to Ana"):
        jobs.cancel(store, queued, access.Actor("Ben"))

    # Ben unlocks instructor mode: now he may stop Ana's run, from another page load too.
    goto(ben, base + "/instructor", "Instructor key")
    ben.get_by_label("Instructor key", exact=True).fill(KEY)
    ben.get_by_label("Instructor key", exact=True).press("Enter")
    wait_idle(ben)
    ben.get_by_role("button", name="Unlock").click()
    ben.get_by_text("Class settings").wait_for()
    assert "Ben · instructor" in sidebar(ben)
    goto(ben, f"{base}/train?run={queued}", "Run: ana waiting")
    ben.get_by_role("button", name="Stop").click()
    ben.get_by_text("Stopped on request").wait_for()
    assert store.get(queued).status == CANCELLED
    goto(ben, f"{base}/compare?runs={done}", "Manage and download")
    ben.get_by_role("button", name="Rename").wait_for()
    assert ben.get_by_role("button", name="Rename").count() == 1
