"""Headless Chromium for tests of pages (Debian's ``chromium``, driven by Playwright).

Browser downloads are not possible where the tests run, so Playwright drives the system's
Chromium (``apt-get install chromium``, scripts/test.sh).  A test takes the ``chromium``
fixture (import it into the test module) and opens its own pages::

    async def test_page(chromium: Browser) -> None:
        page = await chromium.new_page()
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support.server import ROOT

__all__ = ["CHROMIUM", "chromium", "Screenshots"]

#: Debian's Chromium (``chromium`` package).
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for one test; skipped only where the browser is not installed."""
    if not CHROMIUM.is_file():
        pytest.skip("chromium is not installed (scripts/test.sh: apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            await browser.close()


class Screenshots:
    """Screenshots of a page into the test's folder, and into docs/img when
    ``TUTTI_SCREENSHOTS=1`` (the docs show them; commit them when the page changed)."""

    def __init__(self, page: Page, folder: Path, prefix: str = "singer") -> None:
        self.page, self.prefix, self.dirs = page, prefix, [folder]
        if os.environ.get("TUTTI_SCREENSHOTS"):
            self.dirs.append(ROOT / "docs" / "img")

    async def take(self, name: str) -> None:
        """Coroutine: the whole page as ``PREFIX-NAME.png``."""
        png = await self.page.screenshot(full_page=True)
        assert len(png) > 1000  # an empty capture is a few hundred bytes
        for d in self.dirs:
            (d / f"{self.prefix}-{name}.png").write_bytes(png)
