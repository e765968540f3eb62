"""The window when the delay cannot be measured: it says so and what to try, and the singer can
go on (the take then uses the device's reported delay, as ``tutti join`` does).

In-process and fast: the real server on port 0, the window around a real :class:`SingFlow`, real
PortAudio on the JACK dummy server (nothing wired back: the measurement hears silence),
headless Chromium.  A delay measured before for the headset is shown and kept when measuring
again fails.  When ``tutti sing`` ends, the page says it has stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import Screenshots, chromium  # noqa: F401 (the fixture)
from tests.support.jack import JackServer
from tutti.client import calibrate, sing
from tutti.client.window import Window

pytestmark = [pytest.mark.jack]


def _remember_a_measurement(frames: int) -> None:
    """What an earlier ``tutti calibrate`` of the JACK dummy's headset left in the config."""
    calibrate.store(
        calibrate.Calibration(
            frames=frames, runs=[float(frames)] * 3, confidence=100.0, snr_db=60.0, rate=48000,
            blocksize=0, device="JACK Audio Connection Kit:system", reported=256,
        )
    )  # fmt: skip


@pytest.mark.parametrize("measured_before", [False, True])
async def test_unheard_delay_says_what_to_try_and_lets_the_singer_go_on(
    measured_before: bool,
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
    if measured_before:
        _remember_a_measurement(336)  # 7 ms at 48 kHz
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
        await page.get_by_role("button", name="Choose another headset").click()  # and back
        await expect(page.get_by_role("heading", name="Your headset")).to_be_visible()
        await page.locator("#device-form").get_by_role("button", name="Next").click()
        result = page.locator("#cal-result")
        if measured_before:  # remembered for this headset: shown, and may be measured again
            await expect(result).to_have_text(re.compile("Measured before: .* is 7 ms"))
            await page.get_by_role("button", name="Measure again").click()
        else:
            await page.get_by_role("button", name="Start").click()
        await expect(result).to_have_attribute("data-state", "failed", timeout=30_000)
        await expect(result).to_have_text(re.compile("We did not hear it. Press the ear cup"))
        await expect(page.get_by_role("button", name="Try again")).to_be_enabled()
        if measured_before:
            await page.get_by_role("button", name="Go on with the 7 ms measured before").click()
        else:
            await shots.take("4b-not-heard")
            await page.get_by_role("button", name="Go on without measuring").click()
        await expect(page.locator("#w-next")).to_have_text(re.compile("Ready"), timeout=30_000)
        assert flow.singer is not None
        assert flow.singer.latency == ((336, "measured") if measured_before else (256, "reported"))
    finally:
        await flow.close()
        await window.close()
    await expect(page.locator("#gone")).to_be_visible()
