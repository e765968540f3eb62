"""``tutti sing`` as a singer uses it: every step of the window in headless Chromium.

A real ``tutti serve`` process, a real ``tutti sing`` process on the JACK dummy server (real
PortAudio), the page in Chromium.  The test opens the address ``tutti sing`` printed, pastes the
invite link, types a name, picks a part, keeps the default headset, wires the headset's output to
its input with ``jack_connect`` (the ear cup on the mic) so the delay can be measured, waits in
the waiting room, and the leader runs a take over HTTP with words uploaded for the part.  The
page must show the countdown, then the line of the words that the take's timeline says,
then the upload and "safe to close".  A ``tutti join`` singer sings the same take: both
recordings must be placed the same way (same manifest fields, same start on the timeline).

``TUTTI_SCREENSHOTS=1`` also writes the screenshots to docs/img/singer-*.png (README, docs).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from playwright.async_api import Browser, Page, expect

from tests.client.net_helpers import Leader
from tests.support.browser import Screenshots, chromium  # noqa: F401 (the fixture)
from tests.support.files import files_under
from tests.support.jack import JackServer, isolate_ports, jack_connect, jack_ports
from tests.support.server import ROOT, ServerProcess
from tutti.audio.click import beat_frames
from tutti.audio.program import render_program
from tutti.wire import SessionSettings

pytestmark = [pytest.mark.jack, pytest.mark.slow]

RATE = 48000
#: The part's words, one line per bar (bar 1 is the first after the one-bar count-in).
WORDS = {
    1: "Row, row, row your boat",
    2: "gently down the stream",
    3: "merrily merrily",
    4: "life is but a dream",
}
#: How far the line shown may lag or lead the take's timeline (10 Hz pushes, polling the page).
WORDS_TOLERANCE_S = 0.5


def _env(jack: JackServer, tmp_path: Path, name: str) -> dict[str, str]:
    return {
        **jack.env,
        "TUTTI_JACK_CLIENT_NAME": name,
        "TUTTI_CONFIG_DIR": str(tmp_path / f"cfg-{name}"),
        "TUTTI_DATA_DIR": str(tmp_path / f"local-{name}"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(ROOT),
    }


@asynccontextmanager
async def _process(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[Path]:
    """A ``tutti`` subprocess writing to ``log``; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tutti", *argv, cwd=ROOT, env=env, stdout=out, stderr=out
        )
        try:
            yield log
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _printed_address(log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"http://127\.0\.0\.1:\d+/\?s=\S+", log.read_text(errors="replace"))
        if m:
            return m.group(0)
        await asyncio.sleep(0.1)
    raise AssertionError(f"tutti sing printed no address: {log.read_text()}")


async def _ports_of(client: str, env: dict[str, str], count: int) -> list[str]:
    deadline = time.monotonic() + 30
    while True:
        ports = [p for p in await asyncio.to_thread(jack_ports, env) if p.startswith(f"{client}:")]
        if len(ports) >= count or time.monotonic() > deadline:
            return ports
        await asyncio.sleep(0.1)


async def _loop_back(jack: JackServer) -> None:
    """Wire the window's headset output (left) to its microphone and nothing else to either
    (each stream the window opens gets new port numbers: in_1, out_2, … for the second)."""
    ports = await _ports_of("window", jack.env, 3)
    await asyncio.to_thread(isolate_ports, ports, jack.env)
    mic = next(p for p in ports if ":in_" in p)
    left = next(p for p in ports if ":out_" in p)
    await asyncio.to_thread(jack_connect, left, mic, jack.env)


def _expected_line(settings: SessionSettings, seconds: float) -> str:
    """The line the take's timeline has at ``seconds`` after t0 ('' before the first)."""
    line = ""
    for bar, text in WORDS.items():
        if _bar_start(settings, bar) <= seconds:
            line = text
    return line


async def _sample_words(page: Page, t0: float, until_s: float) -> list[tuple[float, str]]:
    """(seconds after t0, the line lit on the page), polled until ``until_s``."""
    seen: list[tuple[float, str]] = []
    while (now := time.monotonic() - t0) < until_s:
        text = await page.text_content("#words-now") or ""
        seen.append(((now + time.monotonic() - t0) / 2, text))  # the read took a moment
        await asyncio.sleep(0.05)
    return seen


async def _manifest(http: aiohttp.ClientSession, leader: Leader, take_id: str) -> Any:
    url = f"{leader.url}/api/session/takes/{take_id}/manifest"
    async with http.get(url, headers=leader.auth) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.timeout(240)
async def test_a_singer_sings_a_take_in_the_window(
    jack: JackServer,
    tmp_path: Path,
    chromium: Browser,  # noqa: F811
) -> None:
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create(
                title="Sofa choir", rate=RATE, bpm=120.0, count_in_bars=1, parts=["S", "A"]
            )
            cues = "".join(f"{bar}:1 {text}\n" for bar, text in WORDS.items()).encode()
            async with http.put(
                f"{srv.url}/api/session/lyrics/A", data=cues, headers=leader.auth
            ) as r:
                assert r.status == 201, await r.text()
            sing_env = _env(jack, tmp_path, "window")
            join_argv = [
                "join",
                f"{srv.url}/j/{leader.code}",
                "--name",
                "Joe",
                "--part",
                "S",
                "--plain",
            ]
            async with (
                _process(["sing", "--no-browser"], sing_env, tmp_path / "sing.log") as log,
                _process(join_argv, _env(jack, tmp_path, "joiner"), tmp_path / "join.log"),
            ):
                page = await chromium.new_page(viewport={"width": 800, "height": 900})
                shots = Screenshots(page, tmp_path)
                await _walk_to_the_waiting_room(
                    page, shots, jack, srv.url, leader, await _printed_address(log)
                )
                manifest = await _sing_a_take(page, shots, http, leader, log, jack.period)
            _placed_at_lag_zero(manifest, tmp_path / "data")
    finally:
        await asyncio.to_thread(srv.stop)


async def _walk_to_the_waiting_room(
    page: Page, shots: Screenshots, jack: JackServer, url: str, leader: Leader, address: str
) -> None:
    await page.goto(address)
    assert page.url.endswith("/") and "s=" not in page.url  # the secret left the address bar
    await expect(page.get_by_role("heading", name="Welcome to the choir")).to_be_visible()
    await page.get_by_label("Paste the invite link").fill(f"{url}/j/{leader.code}")
    await shots.take("1-link")
    await page.get_by_label("Paste the invite link").press("Enter")

    await expect(page.get_by_role("heading", name="Joining Sofa choir")).to_be_visible()
    await page.get_by_label("Your name").fill("Ann")
    await page.get_by_label("A", exact=True).check()
    await shots.take("2-name")
    await page.get_by_role("button", name="Next").click()

    await expect(page.get_by_role("heading", name="Your headset")).to_be_visible()
    await expect(page.locator("#meter-hint")).to_have_text(re.compile("Too quiet"))
    await shots.take("3-headset")
    await page.get_by_role("button", name="Play a test sound").click()
    await expect(page.get_by_role("button", name="Play a test sound")).to_be_enabled()
    await expect(page.locator("#error")).to_be_hidden()
    await page.locator("#device-form").get_by_role("button", name="Next").click()

    await expect(page.get_by_role("heading", name="Measure your headset's delay")).to_be_visible()
    # the ear cup on the mic: the window's output comes back into its input
    await _loop_back(jack)
    await page.get_by_role("button", name="Start").click()
    result = page.locator("#cal-result")
    await expect(result).to_have_attribute("data-state", "done", timeout=60_000)
    text = await result.text_content() or ""
    ms = int(re.search(r"delay is (\d+) ms", text).group(1))  # type: ignore[union-attr]
    assert 1 <= ms <= 50, text  # a JACK period or two, and what PortAudio adds
    await shots.take("4-delay")
    await page.get_by_role("button", name="Next").click()

    await expect(page.locator("#w-next")).to_have_text(re.compile("Ready"), timeout=60_000)
    await expect(page.locator("#w-connection")).to_have_text(re.compile("Connected"))
    await expect(page.locator("#w-clock")).to_have_text(re.compile("Clock in time"))
    # the `tutti join` singer has arrived too: the waiting room says so
    for here in ("Joe (S)", "Ann (A)"):
        await expect(page.locator("#w-here")).to_contain_text(here, timeout=30_000)
    await shots.take("5-waiting")
    # the singer's own headset into its microphone for the take (the engine was opened anew):
    # the recording must then hold the headset program where its numbers place it
    await _loop_back(jack)


async def _sing_a_take(
    page: Page,
    shots: Screenshots,
    http: aiohttp.ClientSession,
    leader: Leader,
    log: Path,
    period: int,
) -> Any:
    deadline = time.monotonic() + 60
    while len([p for p in await leader.roster() if p["latency_frames"] is not None]) < 2:
        assert time.monotonic() < deadline, await leader.roster()
        await asyncio.sleep(0.2)
    roster = {p["name"]: p for p in await leader.roster()}
    take_id = await leader.arm()
    started = await leader.start(take_id, lead_s=3.0)
    async with http.get(f"{leader.url}/api/session", headers=leader.auth) as r:
        settings = SessionSettings.from_dict((await r.json())["settings"], "settings")
    # the server's clock is this machine's monotonic clock
    t0 = started["t0"]
    countdown = page.locator("#countdown")
    await expect(countdown).to_have_attribute("data-counting", "yes", timeout=5_000)
    left = int(await countdown.text_content() or "0")
    assert 1 <= left <= 3
    await expect(page.get_by_text("The take starts in")).to_be_visible()
    await shots.take("6-countdown")
    seen = await _sample_words(page, t0, until_s=_bar_start(settings, 4) + 1.0)
    await shots.take("7-words")
    await expect(page.locator("#beat")).to_have_text(re.compile(r"^bar [45] · beat [1-4]$"))
    await leader.stop(take_id)
    shown = [text for _, text in seen]
    assert [w for w in WORDS.values() if w in shown] == list(WORDS.values()), shown
    for seconds, text in seen:
        allowed = {
            _expected_line(settings, seconds + d)
            for d in (-WORDS_TOLERANCE_S, 0.0, WORDS_TOLERANCE_S)
        }
        assert text in allowed, f"at {seconds:.2f} s the page showed {text!r}, not {allowed}"

    await expect(page.locator("#safe")).to_have_attribute("data-safe", "yes", timeout=60_000)
    await expect(page.locator("#upload")).to_have_text(re.compile("reached your leader"))
    await shots.take("8-sent")
    for name in ("Ann", "Joe"):
        await leader.wait_state(take_id, roster[name]["participant_id"], "uploaded", timeout=60)
    manifest = await _manifest(http, leader, take_id)
    _same_placement(manifest, roster, period)
    assert "Traceback" not in log.read_text(errors="replace")
    return manifest


def _bar_start(settings: SessionSettings, bar: int) -> float:
    """Seconds after t0 of song bar ``bar`` (counted from 1, as the cues are)."""
    beats = beat_frames(settings, RATE, seconds=20.0)
    return next(b.frame for b in beats if (b.bar, b.beat) == (bar - 1, 0)) / RATE


def _same_placement(manifest: dict[str, Any], roster: dict[str, Any], period: int) -> None:
    """The window's recording is a take like ``tutti join``'s: same fields, same timeline."""
    by_singer = {rec["participant_id"]: rec for rec in manifest["recordings"]}
    window = by_singer[roster["Ann"]["participant_id"]]
    join = by_singer[roster["Joe"]["participant_id"]]
    assert set(window) == set(join), set(window) ^ set(join)
    assert window["latency_source"] == "measured"  # the window's step, not the device's guess
    assert window["latency"] == roster["Ann"]["latency_frames"]
    assert (window["rate"], window["channels"]) == (join["rate"], join["channels"])
    # the same t0 on the same JACK clock, the same latency: placed within 1 ms of each other
    # (the choir test's bound); timeline start = start_offset - latency (takeformat.Recording).
    # Each recording starts with the JACK cycle its client puts t0 in, so when t0 falls within
    # a frame of a cycle's edge one may start a whole cycle before the other (CI, 7 Dec:
    # -256 and -511): the cycles line up, so their placements agree modulo the period.
    starts = [rec["start_offset"] - rec["latency"] for rec in (window, join)]
    apart = starts[0] - starts[1]
    assert min(abs(apart + k * period) for k in (-1, 0, 1)) <= 48, (window, join)
    print(f"\nwindow: {window}\njoin: {join}")


def _placed_at_lag_zero(manifest: dict[str, Any], data_dir: Path) -> None:
    """The window singer's recording (headset wired to mic) holds the headset program at the
    timeline frames its numbers give: lag 0, as for ``tutti join`` (tests/e2e)."""
    settings = SessionSettings.from_dict(manifest["settings"], "settings")
    rec = next(r for r in manifest["recordings"] if r["singer"] == "Ann")
    found = files_under(data_dir, Path(rec["file"]).name)
    assert len(found) == 1, found
    audio, rate = sf.read(str(found[0]), dtype="float32", always_2d=True)
    program = render_program(settings, None, channels=2).audio[: 2 * RATE, 0]
    at0 = -(rec["start_offset"] - rec["latency"])  # recording index of timeline frame 0
    search = min(at0, 1000)  # frames either side searched
    assert search > 0, rec
    segment = audio[at0 - search : at0 + len(program) + search, 0]
    score = scipy.signal.correlate(segment, program, mode="valid", method="fft")
    lag = int(np.argmax(score)) - search
    print(f"\nwindow singer's own headset program found at lag {lag} frames")
    # 0 on a quiet machine; a loaded one (load 6 here) moved it by one frame once, as it can
    # for tutti join (issue 16's bound for the real stack: lag 0 ± 1 sample)
    assert abs(lag) <= 1
