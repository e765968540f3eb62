"""The window's waiting room and "Listen to the choir", as a singer uses them.

In-process: the real server on port 0, the window around a real :class:`SingFlow` on real
PortAudio (JACK dummy server), headless Chromium; the other singer is a real python-socketio
client that uploads its take through the client's tus uploader.  The waiting room must show
the other singer (first name and part), the leader's note, and a wave each way; after a take
with real uploads, "Listen to the choir" must play the server's mix into the headset: the
window's output port, recorded by a JACK harness, carries the mix, whole and in order.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from playwright.async_api import Browser, Page, expect

from tests.server.helpers import Recorder, Singer, create_session, join
from tests.server.test_server_mix import _recording
from tests.support.browser import Screenshots, chromium  # noqa: F401 (the fixture)
from tests.support.jack import JackServer, RecorderProcess, jack_ports
from tutti.client import sing
from tutti.client.uploader import TusUploader, UploadJob, file_sha256
from tutti.client.window import Window
from tutti.wire import Ev, TakeMix

pytestmark = [pytest.mark.jack, pytest.mark.slow]

RATE = 48000
NOTE = "Welcome! We start at 7:30.\nHave some water nearby."


async def _to_the_waiting_room(page: Page, address: str) -> None:
    await page.goto(address)
    await expect(page.get_by_role("heading", name="Joining Sofa choir")).to_be_visible()
    await page.get_by_label("Your name").fill("Ann Lee")
    await page.get_by_label("S", exact=True).check()
    await page.get_by_role("button", name="Next").click()
    await expect(page.get_by_role("heading", name="Your headset")).to_be_visible()
    await expect(page.locator("#meter-hint")).to_have_attribute("data-hint", "quiet")
    await page.locator("#device-form").get_by_role("button", name="Next").click()
    await expect(page.get_by_role("heading", name="Measure your headset's delay")).to_be_visible()
    await page.get_by_role("button", name=re.compile("^Go on")).click()
    await expect(page.locator("#w-next")).to_have_text(re.compile("Ready"), timeout=30_000)


async def _window_output(before: set[str], flow: sing.SingFlow) -> str:
    """The left output port of the headset the window sings with (opened after ``before``)."""
    deadline = time.monotonic() + 30
    while True:
        new = sorted(set(await asyncio.to_thread(jack_ports)) - before)
        outs = [p for p in new if ":out_" in p]
        if outs and flow.singer is not None and flow.singer.engine is not None:
            return outs[0]
        assert time.monotonic() < deadline, new
        await asyncio.sleep(0.1)


async def _bea_sings(url: str, bea: Singer, rec: Recorder, take_id: str, tmp: Path) -> None:
    """The other singer's take: recorded, then uploaded whole (5 s of soft noise, so that
    each piece of the mix can be found in it by its samples alone)."""
    await rec.client.emit(Ev.TAKE_STATE, {"take_id": take_id, "state": "recorded"})
    path = tmp / "bea.flac"
    noise = np.random.default_rng(7).standard_normal((5 * RATE, 1)) * 0.05
    sf.write(str(path), noise.astype(np.float32), RATE, format="FLAC", subtype="PCM_24")
    frames, sha = len(noise), file_sha256(path)
    job = UploadJob(path=path, take_id=take_id, sha256=sha, recording=_recording(frames))
    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, url, bea.token, chunk_size=256 * 1024, backoff=(0.05, 0.5))
        await asyncio.wait_for(up.upload(job), 60)


@pytest.mark.timeout(240)
async def test_the_waiting_room_and_listening_to_the_choir(
    jack: JackServer,
    server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chromium: Browser,  # noqa: F811
) -> None:
    monkeypatch.setenv("TUTTI_DATA_DIR", str(tmp_path / "local"))
    http = aiohttp.ClientSession(server)
    leader = await create_session(http, title="Sofa choir", count_in_bars=1, bpm=120)
    bea = await join(http, leader.code, "Bea Jones", "A")
    bea_sock = Recorder()
    await bea_sock.connect(server, bea.token)
    flow = sing.SingFlow()
    await flow.open_link(f"{server}/j/{leader.code}")
    window = Window(flow)
    page = await chromium.new_page(viewport={"width": 800, "height": 1000})
    shots = Screenshots(page, tmp_path)
    try:
        before = set(await asyncio.to_thread(jack_ports))
        await _to_the_waiting_room(page, await window.start())
        output = await _window_output(before, flow)

        # who is here: both, first names and parts, within the lobby's second (and a margin)
        here = page.locator("#w-here li")
        await expect(here).to_have_text(["Bea (A)", "Ann (S)"], timeout=10_000)
        await expect(page.get_by_role("heading", name="Who is here: 2 singers")).to_be_visible()
        # the leader's note, live
        async with http.put("/api/session/note", json={"note": NOTE}, headers=leader.headers) as r:
            assert r.status == 200, await r.text()
        await expect(page.locator("#w-note-text")).to_have_text(NOTE, timeout=10_000)
        await expect(page.get_by_role("heading", name="A note from your leader")).to_be_visible()
        # a wave each way
        await bea_sock.client.emit(Ev.WAVE, {})
        await expect(page.locator("#w-waves")).to_contain_text("Bea waved 👋", timeout=10_000)
        await page.get_by_role("button", name="Wave to the choir").click()
        waves = await bea_sock.wait(Ev.WAVES, lambda d: d["names"] == ["Ann"], timeout=10)
        assert waves["more"] == 0
        await expect(page.get_by_role("button", name="Wave to the choir")).to_be_disabled()
        await expect(page.locator("#w-wave-wait")).to_have_text(re.compile("wave again in"))
        await shots.take("5b-room")

        take_id, mix = await _take(http, leader.headers, server, bea, bea_sock, page, tmp_path)
        await expect(page.locator("#mix-text")).to_have_text(
            re.compile("The choir's mix of take 1 is ready"), timeout=90_000
        )
        await shots.take("9-listen")
        heard = await _listen(page, jack, output, mix, tmp_path)
        async with http.get(
            f"/api/session/takes/{take_id}/mix/mix.flac", headers=leader.headers
        ) as r:
            served, rate = sf.read(io.BytesIO(await r.read()), dtype="float32", always_2d=True)
        assert rate == RATE and mix.duration_s is not None
        assert abs(len(served) / RATE - mix.duration_s) < 0.05
        _carries_the_mix(heard, served[:, 0])
    finally:
        await flow.close()
        await window.close()
        await bea_sock.close()
        await http.close()


async def _take(
    http: aiohttp.ClientSession,
    auth: dict[str, str],
    url: str,
    bea: Singer,
    bea_sock: Recorder,
    page: Page,
    tmp: Path,
) -> tuple[str, TakeMix]:
    """A take: the window records, Bea uploads her tone; returns the take and its ready mix."""
    async with http.post("/api/session/takes", headers=auth) as r:
        assert r.status == 201, await r.text()
        take_id = (await r.json())["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json={"lead_s": 2.0}, headers=auth
    ) as r:
        assert r.status == 200, await r.text()
    await _bea_sings(url, bea, bea_sock, take_id, tmp)
    await expect(page.locator("#beat")).to_have_text(re.compile(r"^bar [2-9]"), timeout=20_000)
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=auth) as r:
        assert r.status == 200, await r.text()
    await expect(page.locator("#upload")).to_have_text(
        re.compile("reached your leader"), timeout=60_000
    )
    raw = await bea_sock.wait(Ev.TAKE_MIX, lambda d: d["state"] in ("ready", "failed"), timeout=90)
    mix = TakeMix.from_dict(raw)
    assert mix.state == "ready", mix.detail
    return take_id, mix


async def _listen(page: Page, jack: JackServer, output: str, mix: TakeMix, tmp: Path) -> Any:
    """Press "Listen to the choir" with a JACK harness (its own process, so this busy one
    cannot make it miss cycles) on the headset's left output; what it recorded."""
    assert mix.duration_s is not None
    seconds = mix.duration_s + 8
    harness = await asyncio.to_thread(RecorderProcess, jack, [output], tmp / "heard.npy", seconds)
    await page.get_by_role("button", name="Listen to the choir").click()
    playing = page.locator("#mix-playing")
    await expect(playing).to_have_text("Playing in your headphones…", timeout=30_000)
    await expect(page.get_by_role("button", name="Listen to the choir")).to_be_disabled()
    await expect(playing).to_have_text("", timeout=int((mix.duration_s + 20) * 1000))
    await expect(page.get_by_role("button", name="Listen to the choir")).to_be_enabled()
    return (await asyncio.to_thread(harness.wait, seconds + 30))[:, 0]


#: Silence this long (frames) in the headset output is a hole: a cycle the engine or the
#: harness missed on a loaded machine (the mix itself, noise, has no such runs of zeros).
HOLE = 32
#: Share of the mix that must come out sample for sample; the rest may be lost to holes.
HEARD = 0.8


def _stretches(heard: Any) -> list[tuple[int, int]]:
    """(start, end) of the sounding stretches of ``heard`` between holes."""
    silent = np.r_[False, heard == 0, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(silent)).reshape(-1, 2)  # [start, end) of each silence
    holes = [(int(a), int(b)) for a, b in edges if b - a >= HOLE]
    bounds = [0, *[x for hole in holes for x in hole], len(heard)]
    pairs = zip(bounds[::2], bounds[1::2], strict=True)
    return [(a, b) for a, b in pairs if b > a]


def _pieces(heard: Any, mix: Any, a: int, b: int) -> list[tuple[int, int]]:
    """A sounding stretch ``heard[a:b]`` as pieces of the mix, (where in the mix, frames):
    each piece found by its first samples and followed while it matches sample for sample
    (a loaded engine may skip ahead without a hole in between)."""
    out = []
    while b - a >= 64:
        n = min(2048, b - a)
        score = scipy.signal.correlate(mix, heard[a : a + n], mode="valid", method="fft")
        at = int(np.argmax(score))
        span = min(b - a, len(mix) - at)
        off = np.abs(heard[a : a + span] - mix[at : at + span]) >= 1e-3
        run = int(np.argmax(off)) if off.any() else span
        assert run >= 64, (a, b, at, run)  # the same samples, not just similar sound
        out.append((at, run))
        a += run
    assert b - a == 0 or np.all(heard[a:b] == 0) or b - a < 64, (a, b)
    return out


def _carries_the_mix(heard: Any, mix: Any) -> None:
    """The headset output holds the mix: every sounding stretch of it is made of pieces of
    the mix, sample for sample, the pieces in the mix's order, together nearly all of it."""
    pieces = [p for a, b in _stretches(heard) for p in _pieces(heard, mix, a, b)]
    starts = [at for at, _ in pieces]
    covered = np.zeros(len(mix), dtype=bool)
    for at, n in pieces:
        covered[at : at + n] = True
    print(
        f"\nthe mix ({len(mix)} frames) came out of the headset in {len(pieces)} pieces, "
        f"{covered.mean():.1%} of it sample for sample"
    )
    assert starts == sorted(starts)  # in order
    assert covered.mean() >= HEARD, covered.mean()
