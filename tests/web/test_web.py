"""The leader's web app in a real headless Chromium against the real server on port 0.

Virtual singers are real Socket.IO clients (as ``tutti join`` connects) that report levels,
and upload their takes with the real client uploader.  The screenshots of the main pages go
to ``docs/img/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.server.helpers import Recorder, error_of, join, recording_meta, write_audio
from tests.support.server import ROOT, RunningServer, running_server
from tutti.client.uploader import TusUploader, UploadJob
from tutti.server.app_keys import SERVICES
from tutti.server.auth import CSRF_COOKIE, CSRF_HEADER, LEADER_COOKIE, hash_token
from tutti.server.headers import PAGE_CSP
from tutti.wire import Ev, LevelReport, Levels

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
KEY = "web-test-session-key-0123456789"
IMG = ROOT / "docs" / "img"
RATE = 48000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/test.sh does it)"
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(
        tmp_path / "data", open_sessions=False, session_key=KEY, max_joins_per_session=1000
    ) as srv:
        yield srv


@pytest.fixture
async def page(server: RunningServer) -> AsyncIterator[Any]:
    """A fresh browser page; fails the test on a script error or a CSP refusal (the
    refused sign-ins the tests make on purpose log their 401 and 403 too)."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM))
        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        pg = await context.new_page()
        problems: list[str] = []
        pg.on(
            "console",
            lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
        )
        pg.on("pageerror", lambda e: problems.append(str(e)))
        try:
            yield pg
        finally:
            await context.close()
            await browser.close()
        assert problems == [], problems


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def leader_token(page: Any) -> str:
    cookies = await page.context.cookies()
    return str(next(c["value"] for c in cookies if c["name"] == LEADER_COOKIE))


async def sign_in(page: Any, url: str, secret: str) -> None:
    await page.goto(url)
    await page.fill("#secret", secret)
    await page.click("#signin-form button[type=submit]")


# -------------------------------------------------------------------- virtual singers


class VirtualSinger:
    """A singer as ``tutti join`` is on the wire: joined, connected, reporting levels."""

    def __init__(self, url: str, token: str, pid: str) -> None:
        self.url, self.token, self.pid = url, token, pid
        self.sock = Recorder()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sock.connect(self.url, self.token)
        self.task = asyncio.create_task(self._levels())

    async def _levels(self) -> None:
        for i in range(1_000_000):
            rms = -40.0 + 30.0 * abs(np.sin(i / 3.0))
            report = LevelReport(rms_db=rms, peak_db=rms + 6, dropouts=i // 20)
            await self.sock.client.emit(Ev.LEVEL, report.to_dict())
            await asyncio.sleep(0.05)

    async def upload(self, http: aiohttp.ClientSession, folder: Path, take_id: str) -> None:
        """Record 2 s of tone (a FLAC file) and upload it with the client's tus uploader."""
        frames = 2 * RATE
        path = folder / f"{self.pid}.flac"
        tone = 0.2 * np.sin(2 * np.pi * 330 * np.arange(frames) / RATE).astype(np.float32)
        sf.write(path, tone, RATE, format="FLAC")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        job = UploadJob(path, take_id, sha, json.loads(recording_meta(frames)), "take.flac")
        await TusUploader(http, self.url, self.token).upload(job)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.sock.close()


# ---------------------------------------------------------------------- the walkthrough


@pytest.mark.slow
async def test_leader_walkthrough(server: RunningServer, page: Any, tmp_path: Path) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    await sign_in(page, server.url, "not the key")
    await page.wait_for_selector("#error:has-text('neither this server')")
    await page.screenshot(path=str(IMG / "web-signin.png"))
    await page.fill("#secret", KEY)
    await page.click("#signin-form button[type=submit]")

    await page.wait_for_selector("#screen-create:visible")
    await page.fill("#title", "Tuesday choir")
    await page.fill("#parts", "S, A, T")
    await page.screenshot(path=str(IMG / "web-create.png"))
    await page.click("#create-form button[type=submit]")

    await page.wait_for_selector("#screen-session:visible")
    code = (await page.text_content("#join-code")) or ""
    assert len(code) == 6
    assert await page.text_content("#invite-link") == f"{server.url}/join/{code}"
    await page.wait_for_function("document.getElementById('invite-qr').naturalWidth > 100")
    await page.wait_for_selector("#link-state:has-text('Live')")
    token = await leader_token(page)

    # backing for S by tus, through the file picker (the drop zone's input)
    wav = tmp_path / "backing-s.wav"
    write_audio(wav, rate=RATE, frames=RATE * 3)
    await page.set_input_files("li[data-part='S'] input[type=file]", str(wav))
    await page.wait_for_selector("li[data-part='S'] .track-state:has-text('Backing ready: 0:03')")
    stored = server.app[SERVICES].store.tracks(session_id(server, token))
    assert stored["S"].sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()

    # three virtual singers arrive and their meters move
    singers: list[VirtualSinger] = []
    async with aiohttp.ClientSession(server.url) as http:
        try:
            for name, part in (("Ann", "S"), ("Bob", "A"), ("Cleo", "T")):
                s = await join(http, code, name, part)
                v = VirtualSinger(server.url, s.token, s.participant_id)
                await v.start()
                singers.append(v)
            await page.wait_for_selector("#roster-count:has-text('3 connected of 3')")
            meter = f"tr[data-participant-id='{singers[0].pid}'] .fill"
            first = await page.get_attribute(meter, "style")
            await until(lambda: _changed(page, meter, first))

            # a take: arm, start (the countdown), the singers upload, stop
            await page.click("#arm")
            await page.wait_for_selector("#start:enabled")
            await page.click("#start")
            await page.wait_for_selector("#countdown:has-text('Starting in')")
            counted = await page.text_content("#countdown")
            await page.wait_for_selector("#countdown[data-phase='recording']", timeout=15_000)
            take_id = await page.get_attribute("#takes li.take", "data-take-id")
            assert take_id
            await asyncio.gather(*(v.upload(http, tmp_path, take_id) for v in singers))
            await page.click("#stop")
            await page.wait_for_selector("#countdown:has-text('Stopped')")
            await page.wait_for_selector(
                "#takes li.take .take-head:has-text('3 of 3 recordings uploaded')"
            )
            assert await page.locator("#takes .chip.uploaded").count() == 3
            await page.screenshot(path=str(IMG / "web-session.png"), full_page=True)
        finally:
            for v in singers:
                await v.close()
    assert counted and counted.startswith("Starting in")


def session_id(server: RunningServer, token: str) -> str:
    p = server.app[SERVICES].store.principal(hash_token(token))
    assert p is not None
    return p.session_id


async def _changed(page: Any, selector: str, before: str | None) -> bool:
    return bool(await page.get_attribute(selector, "style") != before)
