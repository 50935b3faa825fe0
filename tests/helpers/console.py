"""The browser tests' shared steps: the password every person signs up with, unique names,
Playwright's expect, the page's connection status, and keeping a screenshot for docs/."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tmp" / "artifacts"
PASSWORD = "correct horse battery"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def expect(locator):
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


def connection(page):
    return page.get_by_role("status", name="Connection")


def keep_for_docs(screenshot: Path, name: str) -> None:
    """The README's picture of the console is one the browser test took: copied to docs/
    when missing or when PULSE_UPDATE_DOCS_SCREENSHOTS=1 (not on every run, which would
    leave the checkout modified)."""
    target = ROOT / "docs" / name
    if target.exists() and os.environ.get("PULSE_UPDATE_DOCS_SCREENSHOTS") != "1":
        return
    target.parent.mkdir(exist_ok=True)
    shutil.copyfile(screenshot, target)
