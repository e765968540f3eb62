"""The window when the delay cannot be measured: it says so and what to try, and the singer can
go on (the take then uses the device's reported delay, as ``tutti join`` does).

In-process and fast: the real server on port 0, the window around a real :class:`SingFlow`, real
PortAudio on the JACK dummy server (nothing wired back: the measurement hears silence),
headless Chromium.  When ``tutti sing`` ends, the page says it has stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import Screenshots, chromium  # noqa: F401 (the fixture)
from tests.support.jack import JackServer
from tutti.client import sing
from tutti.client.window import Window

pytestmark = [pytest.mark.jack]


async def test_unheard_delay_says_what_to_try_and_lets_the_singer_go_on(
    jack: JackServer,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium: Browser,  # noqa: F811
) -> None:
    monkeypatch.setattr(sing, "LISTEN_S", 1.0)  # the beeps never come back: no need to wait 15 s
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server}/api/sessions", json={"title": "Tuesday choir"}) as r:
            code = (await r.json())["code"]
    monkeypatch.setenv("TUTTI_DATA_DIR", str(tmp_path / "local"))
    flow = sing.SingFlow()
    await flow.open_link(f"{server}/j/{code}")  # the link given on the command line
    window = Window(flow)
    page = await chromium.new_page(viewport={"width": 800, "height": 900})
    shots = Screenshots(page, tmp_path)
    try:
        await page.goto(await window.start())
        await expect(page.get_by_role("heading", name="Joining Tuesday choir")).to_be_visible()
        await page.get_by_label("Your name").fill("Bo")
        await page.get_by_label("T", exact=True).check()
        await page.get_by_label("Your name").press("Enter")  # the keyboard is enough

        await expect(page.get_by_role("heading", name="Your headset")).to_be_visible()
        await expect(page.locator("#meter-hint")).to_have_attribute("data-hint", "quiet")
        await page.locator("#device-form").get_by_role("button", name="Next").click()
        await page.get_by_role("button", name="Start").click()
        result = page.locator("#cal-result")
        await expect(result).to_have_attribute("data-state", "failed", timeout=30_000)
        await expect(result).to_have_text(re.compile("We did not hear it. Press the ear cup"))
        await expect(page.get_by_role("button", name="Try again")).to_be_enabled()
        await shots.take("4b-not-heard")

        await page.get_by_role("button", name="Go on without measuring").click()
        await expect(page.locator("#w-next")).to_have_text(re.compile("Ready"), timeout=30_000)
        assert flow.singer is not None and flow.singer.latency[1] == "reported"
    finally:
        await flow.close()
        await window.close()
    await expect(page.locator("#gone")).to_be_visible()
