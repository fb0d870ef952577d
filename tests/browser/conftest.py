"""Browser fixtures: Debian's Chromium, driven by Playwright, against the service's real processes.

Without Chromium or Playwright the tests fail under CI (CI=true) and are skipped elsewhere.
Screenshots go to GRADSWEEP_ARTIFACTS (default: tests/browser/artifacts/, not committed); with
GRADSWEEP_UPDATE_DOCS=1, those a test names for the docs also to docs/ (the pictures of docs/dashboard.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.processes import Stack, embedded_settings, running_stack
from tests.support.services import unavailable

CHROMIUM = os.environ.get("GRADSWEEP_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: no updates, sync or other calls home, so that the only traffic is to our API.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("GRADSWEEP_ARTIFACTS", Path(__file__).parent / "artifacts"))
VIEWPORT = {"width": 1280, "height": 900}
DOCS = Path(__file__).resolve().parents[2] / "docs"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Chromium through Playwright against real service processes")



@pytest.fixture(scope="session")
def browser() -> Iterator:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed: pip install -e '.[test]'")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GRADSWEEP_CHROMIUM)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API, without a token, and a 2-process worker; runs may be long enough to be sure to cancel them."""
    workdir = tmp_path_factory.mktemp("dashboard")
    with running_stack({**embedded_settings(workdir), "GRADSWEEP_MAX_EPOCHS": "3000000"}, workdir) as running:
        yield running


@pytest.fixture
def open_page(browser) -> Iterator[Callable]:
    """Opens a page on an API's URL, in a fresh browser context (so an empty sessionStorage).

    At the end, fails the test if a page threw a JavaScript error or asked for anything
    but 127.0.0.1: the dashboard must work with nothing fetched from the internet.
    """
    contexts, errors, elsewhere = [], [], []

    def stay_local(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def open_page(base_url: str):
        context = browser.new_context(base_url=base_url, viewport=VIEWPORT, accept_downloads=True)
        context.route("**/*", stay_local)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        # A script, style or image the page's Content-Security-Policy blocks is a console error, not an exception.
        page.on("console", lambda message: errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text else None)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not elsewhere, f"the dashboard asked for {elsewhere}"
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def page(open_page, stack: Stack):
    return open_page(stack.url)


@pytest.fixture(scope="session")
def screenshot() -> Callable:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def screenshot(page, name: str, *, full_page: bool = True, docs: str | None = None) -> Path:
        """The page as `name`.png among the artifacts; and as docs/`docs`.png when GRADSWEEP_UPDATE_DOCS=1."""
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=path, full_page=full_page)
        if docs is not None and os.environ.get("GRADSWEEP_UPDATE_DOCS") == "1":
            DOCS.mkdir(exist_ok=True)
            (DOCS / f"{docs}.png").write_bytes(path.read_bytes())
        return path

    return screenshot
