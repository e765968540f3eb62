"""The leader's page plays, remixes and hands out a take's server mix, in a real headless
Chromium against the real server (port 0): three singers upload steady tones through the
client's tus uploader, and everything after that is done on the page as a person does it.

Each singer sings one tone (``TONES``), so a singer's level in a mix is the spectrum at their
frequency; a gain is measured as the change of one singer's level *relative to another's*,
which cancels the master's loudness normalisation (the whole mix moves to −16 LUFS again).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.server.helpers import Leader, Recorder, error_of
from tests.server.test_server_mix import (
    MIX_TIMEOUT,
    TONES,
    _level_db,
    _recorded,
    _started_take,
    _stop,
    _upload,
)
from tests.support.server import ROOT, RunningServer
from tests.web.test_web import IMG, KEY, page, playwright_api, server, sign_in
from tutti.wire import TakeMix
from tutti.wire.replies import MAX_MIX_GAIN_DB, MIN_MIX_GAIN_DB

__all__ = ["page", "server"]  # the fixtures of test_web.py

#: Waits on the page for a mix: the first one also starts the server's worker processes.
MIX_MS = MIX_TIMEOUT * 1000
#: The remix moves one singer by the gain asked for, to this (dB).  The spectral peak of a
#: 5 s steady tone under a Hann window measures a level ratio to about 0.01 dB; what is left
#: is the master's true-peak limiter, which may touch the two mixes differently (the server
#: tests see ≤ 0.1 dB).  Within the issue's 0.5 dB bound.
GAIN_TOLERANCE_DB = 0.25


async def _session(http: aiohttp.ClientSession) -> Leader:
    body = {"title": "Mix night", "parts": ["S", "A", "T", "B"], "count_in_bars": 0}
    async with http.post("/api/sessions", json=body, headers={"X-Tutti-Session-Key": KEY}) as r:
        assert r.status == 201, await r.text()
        d = await r.json()
    return Leader(d["session_id"], d["code"], d["leader_token"])


async def _watch_states(page: Any) -> None:
    """Keep every text the take's mix line shows (a state may last less than a poll)."""
    await page.evaluate(
        """() => {
            const states = (window.mixStates = []);
            const seen = (t) => { if (t && states.at(-1) !== t) states.push(t); };
            new MutationObserver(() => {
                for (const el of document.querySelectorAll('.mix-state')) seen(el.textContent);
            }).observe(document.body, { subtree: true, childList: true, characterData: true });
        }"""
    )


async def _states(page: Any) -> list[str]:
    return list(await page.evaluate("() => window.mixStates"))


async def _download(page: Any, selector: str, dest: Path) -> Path:
    """Press a download button of the page and keep what the browser saved."""
    async with page.expect_download() as info:
        await page.click(selector)
    download = await info.value
    assert await download.failure() is None
    await download.save_as(str(dest))
    return dest


async def _ready(page: Any, version: int) -> None:
    mix = f".take-mix[data-state='ready'][data-version='{version}']"
    await page.wait_for_selector(mix, timeout=MIX_MS)


async def _server_status(http: aiohttp.ClientSession, leader: Leader, take_id: str) -> TakeMix:
    async with http.get(f"/api/session/takes/{take_id}/mix", headers=leader.headers) as r:
        assert r.status == 200, await r.text()
        return TakeMix.from_dict(await r.json())


#: What sticks out on the right of a 390 px screen (outside the roster, which scrolls).
_WIDER_THAN_THE_SCREEN = """() => [...document.querySelectorAll('body *')]
    .filter((e) => (e.getBoundingClientRect().right > 390 || e.scrollWidth > e.clientWidth + 1)
        && !e.closest('.table-wrap'))
    .map((e) => `${e.tagName}.${e.className} ${e.getBoundingClientRect().right} `
        + `${e.scrollWidth}/${e.clientWidth}`)
    .concat([`page ${document.documentElement.scrollWidth}`])"""


def _pre_skip(opus: bytes) -> int:
    """The pre-skip (samples at 48 kHz) of an Ogg Opus file's ``OpusHead`` (RFC 7845)."""
    at = opus.index(b"OpusHead")
    return int.from_bytes(opus[at + 10 : at + 12], "little")


def _read(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    data, rate = sf.read(str(path), dtype="float64")
    return data, int(rate)


def _over_ann(mix: np.ndarray[Any, Any], rate: int, name: str) -> float:
    """A singer's level relative to Ann's in a mix (dB)."""
    return _level_db(mix, TONES[name], rate) - _level_db(mix, TONES["Ann"], rate)


async def test_the_page_plays_remixes_and_hands_out_the_mix(
    server: RunningServer, page: Any, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        leader = await _session(http)
        lead = Recorder()
        try:
            await lead.connect(server.url, leader.token)
            singers, take_id = await _started_take(http, leader, list(TONES))
            for s in singers.values():
                await _recorded(server.url, lead, s, take_id)
            await _stop(http, leader, take_id)
        finally:
            await lead.close()
        take = f"#takes li.take[data-take-id='{take_id}']"
        mix = f"{take} .take-mix"

        # the leader's page before the uploads: the mix waits for them, and says so
        await sign_in(page, server.url, leader.token)
        await page.wait_for_selector("#link-state:has-text('Live')")
        await page.wait_for_selector(f"{mix} .mix-state:has-text('waiting for 3 of 3')")
        await _watch_states(page)
        await asyncio.gather(
            *(
                _upload(server.url, s, take_id, tmp_path / f"{s.name}.flac")
                for s in singers.values()
            )
        )

        # 1. the player loads the Opus mix, as long as the server's mix file
        await _ready(page, 1)
        assert any(t.startswith("Mixing…") for t in await _states(page)), await _states(page)
        status = await _server_status(http, leader, take_id)
        assert status.version == 1 and status.duration_s is not None and status.files
        duration = await page.eval_on_selector(
            f"{mix} audio",
            """(a) => a.readyState >= 1 ? a.duration : new Promise((done) =>
                a.addEventListener('loadedmetadata', () => done(a.duration), { once: true }))""",
        )
        src = await page.eval_on_selector(f"{mix} audio", "(a) => a.currentSrc")
        assert src == f"{server.url}/api/session/takes/{take_id}/mix/mix.opus?v=1"
        async with http.get(f"{status.files.opus}", headers=leader.headers) as r:
            opus = await r.read()
        (tmp_path / "mix.opus").write_bytes(opus)
        exact = sf.info(str(tmp_path / "mix.opus"))  # libopusfile: RFC 7845 to the sample
        assert exact.frames == round(status.duration_s * exact.samplerate)
        # Chromium's demuxer (FFmpeg's) counts the Ogg's last granule position without taking
        # off the encoder's pre-skip (312 samples, 6.5 ms, with libopus): its duration is the
        # take's length plus that, to the sample
        skip = _pre_skip(opus) / 48000
        print(f"<audio> duration {duration:.5f} s, server mix {status.duration_s:.5f} s, "
              f"Opus pre-skip {skip * 1000:.2f} ms")  # fmt: skip
        assert duration == pytest.approx(status.duration_s + skip, abs=0.001)

        # 2. the take folder's zip through the page's button, mixed with `tutti mix`: the
        # server's samples (the mix's FLAC, also through the page's button)
        zipped = await _download(page, f"{mix} a[data-download='zip']", tmp_path / "take.zip")
        with zipfile.ZipFile(zipped) as z:
            z.extractall(tmp_path / "unzipped")
        (folder,) = (tmp_path / "unzipped").iterdir()
        assert (folder / "take.json").is_file()
        mine = tmp_path / "mine.flac"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tutti", "mix", str(folder), "-o", str(mine), "--jobs", "2",
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        first = await _download(page, f"{mix} a[data-download='mix']", tmp_path / "v1.flac")
        ours, _ = sf.read(str(mine), dtype="int32")
        theirs, _ = sf.read(str(first), dtype="int32")
        assert ours.shape == theirs.shape
        # within one 24-bit step, as tests/server/test_server_mix.py explains
        diff = np.abs(ours.astype(np.int64) - theirs) >> 8
        assert diff.max() <= 1 and diff.mean() < 0.05

        # 3. Bea's slider, with the keyboard, 6 steps down: "−6 dB", then a remix by −6 dB
        bea = singers["Bea"].participant_id
        row = f"{mix} .mixer-row[data-participant-id='{bea}']"
        slider = f"{row} input[type=range]"
        assert await page.get_attribute(slider, "min") == f"{MIN_MIX_GAIN_DB:g}"
        assert await page.get_attribute(slider, "max") == f"{MAX_MIX_GAIN_DB:g}"
        # her recording as she uploaded it, from the button beside her slider
        stem = await _download(page, f"{row} a.stem", tmp_path / "bea-download.flac")
        assert stem.read_bytes() == (tmp_path / "Bea.flac").read_bytes()
        await page.focus(slider)
        for _ in range(6):
            await page.keyboard.press("ArrowLeft")
        await page.wait_for_selector(f"{row} .mixer-value:text-is('−6 dB')")
        assert await page.get_attribute(slider, "aria-valuetext") == "−6 dB"
        await _ready(page, 2)
        assert any(t.startswith("Remixing…") for t in await _states(page))
        remixed = await _server_status(http, leader, take_id)
        assert (remixed.version, remixed.gains_db) == (2, {bea: -6.0})  # one remix for 6 keys
        assert await page.eval_on_selector(f"{mix} audio", "(a) => a.currentSrc.endsWith('?v=2')")
        await page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        await page.screenshot(path=str(IMG / "web-mix.png"), full_page=True)
        second = await _download(page, f"{mix} a[data-download='mix']", tmp_path / "v2.flac")
        before, rate = _read(first)
        after, _ = _read(second)
        moved = _over_ann(after, rate, "Bea") - _over_ann(before, rate, "Bea")
        untouched = _over_ann(after, rate, "Cy") - _over_ann(before, rate, "Cy")
        print(f"Bea moved {moved:+.3f} dB, Cy {untouched:+.3f} dB")
        assert moved == pytest.approx(-6.0, abs=GAIN_TOLERANCE_DB)
        assert untouched == pytest.approx(0.0, abs=GAIN_TOLERANCE_DB)

        # 4. mute (a press, as on a touch screen) leaves Bea out
        await page.click(f"{row} button.mute")
        assert await page.get_attribute(f"{row} button.mute", "aria-pressed") == "true"
        await _ready(page, 3)
        assert (await _server_status(http, leader, take_id)).muted == (bea,)
        third = await _download(page, f"{mix} a[data-download='mix']", tmp_path / "v3.flac")
        muted, _ = _read(third)
        print(f"Bea muted: {_over_ann(muted, rate, 'Bea'):.1f} dB under Ann")
        assert _over_ann(muted, rate, "Bea") < -60
        assert _over_ann(muted, rate, "Cy") == pytest.approx(
            _over_ann(before, rate, "Cy"), abs=0.25
        )

        # 5. a share link: made, copied, opened without signing in, then revoked
        share = f"{mix} .mix-share"
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.click(f"{share} button:has-text('Make a share link')")
        await page.wait_for_selector(f"{share} .share-link:visible")
        url = await page.get_attribute(f"{share} .share-link", "href")
        assert url and url.startswith(f"{server.url}/listen/")
        await page.click(f"{share} button:has-text('Copy')")
        await page.wait_for_selector(f"{share} button:text-is('Copied')")
        assert await page.evaluate("() => navigator.clipboard.readText()") == url
        async with aiohttp.ClientSession() as anyone:
            async with anyone.get(url) as r:
                assert r.status == 200 and "mix.opus" in await r.text()
            await page.click(f"{share} button:has-text('Stop sharing')")
            await page.wait_for_selector(f"{share}:has-text('The share link no longer works')")
            async with anyone.get(url) as r:
                assert r.status == 404

        # 6. a refused remix: Cy took their recording back meanwhile; the page says the
        # server's sentence and then drops Cy's slider
        async with http.delete("/api/session/recordings", headers=singers["Cy"].headers) as r:
            assert r.status == 200, await r.text()
        cy = singers["Cy"].participant_id
        await page.fill(f"{mix} .mixer-row[data-participant-id='{cy}'] input[type=range]", "-3")
        alert = f"{mix} .mix-error"
        await page.wait_for_selector(f"{alert}:has-text('The remix was refused: no recording')")
        await page.wait_for_selector(
            f"{mix} .mixer-row[data-participant-id='{cy}']", state="detached"
        )

        # on a phone the player, sliders and buttons fit the screen's width
        await page.set_viewport_size({"width": 390, "height": 844})
        fits = "() => document.documentElement.scrollWidth <= 390"
        try:
            await page.wait_for_function(fits, timeout=5000)  # once laid out at the new width
        except playwright_api.TimeoutError:
            raise AssertionError(await page.evaluate(_WIDER_THAN_THE_SCREEN)) from None
        box = await page.locator(f"{mix} input[type=range]").first.bounding_box()
        assert box is not None and box["height"] >= 44  # a finger's target


async def test_mix_routes_from_the_page_need_the_cookie_and_csrf(server: RunningServer) -> None:
    """The page's remix and share requests go through the cookie + CSRF scheme: without the
    CSRF header they are refused before anything is mixed or shared."""
    origin = {"Origin": server.url}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(server.url, cookie_jar=jar) as http:
        async with http.post("/api/web/signin", json={"secret": KEY}, headers=origin) as r:
            assert r.status == 200
            csrf = r.cookies["tutti_csrf"].value
        body = {"title": "Web", "parts": ["S"]}
        with_csrf = {**origin, "X-Tutti-CSRF": csrf}
        async with http.post("/api/web/sessions", json=body, headers=with_csrf) as r:
            assert r.status == 201
        async with http.post("/api/session/takes", headers=with_csrf) as r:
            assert r.status == 409  # nobody has joined: no take, but the cookie was accepted
        base = "/api/session/takes/nope"
        for method, path in (("POST", f"{base}/mix"), ("POST", f"{base}/share"),
                             ("DELETE", f"{base}/share")):  # fmt: skip
            async with http.request(method, path, json={}, headers=origin) as r:
                assert r.status == 403, (method, path)
                assert (await error_of(r))["code"] == "bad_csrf"
            foreign = {"Origin": "https://evil.example", "X-Tutti-CSRF": csrf}
            async with http.request(method, path, json={}, headers=foreign) as r:
                assert r.status == 403
                assert (await error_of(r))["code"] == "bad_origin"
            async with http.request(method, path, json={}, headers=with_csrf) as r:
                assert r.status == 404, (method, path)  # past the door: no such take
        for path in (f"{base}/mix", f"{base}/mix/mix.flac", f"{base}/download.zip"):
            async with http.get(path) as r:  # a read by cookie needs no CSRF header
                assert r.status == 404, path
    async with aiohttp.ClientSession(server.url) as bare:
        for path in (f"{base}/mix/mix.opus", f"{base}/download.zip"):
            async with bare.get(path) as r:
                assert r.status == 401, path
