"""Browser tests of the web console: Playwright driving Debian's Chromium against real
`pulse serve` processes on the session's stores. Skipped, saying why, where Chromium
is missing or does not start. Screenshots go to tmp/artifacts/."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from tests.helpers.console import ARTIFACTS

CHROMIUM = os.environ.get("PULSE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Browser steps wait this long for what they expect (the machine is shared and slow).
EXPECT_TIMEOUT_MS = 30_000


def chromium_missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium not found at {CHROMIUM} (make test installs Debian's chromium; apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (it is in the test extras: pip install -e '.[test]')"
    return None


# Package-scoped (not session): Chromium and these instances end with the browser tests
# instead of idling through the rest of the suite.
@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    pw = await async_playwright().start()
    try:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
    except Exception as exc:  # noqa: BLE001 - e.g. a Chromium too old for this Playwright
        await pw.stop()
        pytest.skip(f"Chromium at {CHROMIUM} did not start under Playwright: {str(exc)[:300]}")
    yield chromium
    await chromium.close()
    await pw.stop()


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest_asyncio.fixture(loop_scope="session")
async def people(browser, artifacts, request) -> AsyncIterator[Any]:
    """``await people()`` -> a new page in a browser context of its own (one person);
    a screenshot of each is kept when the test fails."""
    contexts = []

    async def person():
        context = await browser.new_context(viewport={"width": 1200, "height": 860})
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        contexts.append(context)
        return await context.new_page()

    yield person
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for i, context in enumerate(contexts):
        if failed:
            for page in context.pages:
                await page.screenshot(path=str(artifacts / f"{request.node.name}-failed-{i}.png"), full_page=True)
        await context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


@pytest.fixture(scope="package")
def console_instances(serve_process):
    """Two `pulse serve` processes for the pages (rate limits off: many sign-ups from 127.0.0.1)."""
    instances = [serve_process(rate_limits=False), serve_process(rate_limits=False)]
    yield instances
    for instance in instances:
        instance.stop()
