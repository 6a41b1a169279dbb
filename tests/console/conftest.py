"""Browser fixtures for the web console: Playwright for Python driving Debian's chromium.

One browser per test session (``browser``), one fresh context per test (``page``: no cookies
shared between tests); a failing test's page is saved as a screenshot under test-artifacts/console/
(CI keeps that directory). The browser is the distribution's package (``./dev`` installs it):
Playwright never downloads one."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ACCESS_KEY, REPO, SECRET_KEY, ServerProcess

CHROMIUM = os.environ.get("TIERSTORE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "console"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One chromium per test file. Not per session: while Playwright's sync API runs, its event
    loop is the thread's running loop, so ``asyncio.run`` fails in every later test of the same
    xdist worker (engine and catalog tests use it); stopping it after the file frees the thread."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: ./dev installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
    b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A page in a fresh browser context (its own cookies); a screenshot if the test fails."""
    context = browser.new_context(accept_downloads=True)
    pg = context.new_page()
    dialogs: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.dialogs = dialogs  # an XSS that ran would open one: tests assert this stays empty
    yield pg
    if request.node.stash.get(_FAILED, False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    context.close()


def sign_in(page, server: ServerProcess, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.endpoint}/console/login")
    page.fill("input[name=access_key]", access_key)
    page.fill("input[name=secret_key]", secret_key)
    page.click("button[type=submit]")
