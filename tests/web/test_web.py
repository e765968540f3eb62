"""The leader's web app in a real headless Chromium against the real server on port 0.

Virtual singers are real Socket.IO clients (as ``tutti join`` connects) that report levels,
and upload their takes with the real client uploader.  The screenshots of the main pages go
to ``docs/img/``.
"""

from __future__ import annotations

import asyncio
import base64
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
import socketio
import soundfile as sf

from tests.server.helpers import (
    Recorder,
    error_of,
    join,
    recording_meta,
    tus_create,
    write_audio,
)
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import ROOT, RunningServer, running_server
from tutti.client.uploader import TusUploader, UploadJob
from tutti.server import webapp
from tutti.server.app_keys import SERVICES
from tutti.server.auth import CSRF_COOKIE, CSRF_HEADER, LEADER_COOKIE, hash_token
from tutti.server.headers import PAGE_CSP
from tutti.server.tus import TusHandler
from tutti.wire import (
    PROTOCOL_VERSION,
    CalibrationReport,
    ClockReport,
    Ev,
    LevelReport,
    Levels,
    TakeState,
)

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
    modules = webapp.web_dir() / "node_modules"
    missing = [p for p in webapp.VENDOR.values() if not (modules / p).is_file()]
    assert not missing, f"the web app's npm packages are missing ({missing}): run `npm ci` in web/"
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

    async def start(self, latency_frames: int) -> None:
        """Connect, report a calibration and a clock estimate, then levels at 20 Hz."""
        await self.sock.connect(self.url, self.token)
        calibration = CalibrationReport(latency_frames, "measured")
        await self.sock.client.emit(Ev.CALIBRATION, calibration.to_dict())
        clock = ClockReport(offset=0.002, error_bound=0.0004, rtt_min=0.0009, samples=40)
        await self.sock.client.emit(Ev.CLOCK_REPORT, clock.to_dict())
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


async def test_leader_walkthrough(server: RunningServer, page: Any, tmp_path: Path) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    await sign_in(page, server.url, "not the key")
    await page.wait_for_selector("#error:has-text('neither this server')")
    await page.screenshot(path=str(IMG / "web-signin.png"))
    await page.fill("#secret", KEY)
    await page.press("#secret", "Enter")  # the keyboard alone signs in

    await page.wait_for_selector("#screen-create:visible")
    await page.fill("#title", "Tuesday choir")
    await page.fill("#parts", "S, A, T")
    await page.screenshot(path=str(IMG / "web-create.png"))
    await page.click("#create-form button[type=submit]")

    await page.wait_for_selector("#screen-session:visible")
    code = (await page.text_content("#join-code")) or ""
    assert len(code) == 6
    assert await page.text_content("#invite-link") == f"{server.url}/j/{code}"
    qr_width = "img => img.decode().then(() => img.naturalWidth)"
    assert await page.eval_on_selector("#invite-qr", qr_width) > 100
    await page.wait_for_selector("#link-state:has-text('Live')")
    token = await leader_token(page)

    # backing for S by tus, through the file picker (the drop zone's input)
    wav = tmp_path / "backing-s.wav"
    write_audio(wav, rate=RATE, frames=RATE * 3)
    await page.set_input_files("li[data-part='S'] input[type=file]", str(wav))
    await page.wait_for_selector("li[data-part='S'] .track-state:has-text('Backing ready: 0:03')")
    stored = server.app[SERVICES].store.tracks(session_id(server, token))
    assert stored["S"].sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()

    # dropped on a part: a CD's 44.1 kHz is converted to the session's rate
    cd = tmp_path / "alto-44k.wav"
    write_audio(cd, rate=44100, frames=44100, channels=2)
    await drop_file(page, "li[data-part='A']", cd)
    await page.wait_for_selector("li[data-part='A'] .track-state:has-text('Backing ready: 0:01')")
    alto = server.app[SERVICES].store.tracks(session_id(server, token))["A"]
    assert (alto.rate, alto.frames, alto.channels, alto.format) == (RATE, RATE, 2, "FLAC")
    # a file that cannot be a backing is refused with what to do
    wide = tmp_path / "tenor-surround.wav"
    write_audio(wide, rate=RATE, frames=RATE, channels=3)
    await drop_file(page, "li[data-part='T']", wide)
    await page.wait_for_selector("li[data-part='T'].failed:has-text('1 (mono) or 2 (stereo)')")

    # three virtual singers arrive and their meters move
    singers: list[VirtualSinger] = []
    async with aiohttp.ClientSession(server.url) as http:
        try:
            for name, part in (("Ann", "S"), ("Bob", "A"), ("Cleo", "T")):
                s = await join(http, code, name, part)
                v = VirtualSinger(server.url, s.token, s.participant_id)
                await v.start(latency_frames=RATE // 100 * (len(singers) + 2))
                singers.append(v)
            await page.wait_for_selector("#roster-count:has-text('3 connected of 3')")
            row = f".roster-row[data-participant-id='{singers[2].pid}']"
            await page.wait_for_selector(f"{row}:has-text('40 ms'):has-text('±0.4 ms')")
            meter = f".roster-row[data-participant-id='{singers[0].pid}'] .fill"
            first = await page.get_attribute(meter, "style")
            await until(lambda: _changed(page, meter, first))

            # the refusal stays on screen while the session changes around it
            assert "stereo" in (await page.text_content("li[data-part='T']") or "")

            # a take: arm, start (the countdown), the singers upload, stop
            await page.focus("#arm")
            await page.keyboard.press("Enter")  # keyboard: arm
            await page.wait_for_selector("#start:enabled")
            await page.click("#start")
            await page.wait_for_selector("#countdown:has-text('Starting in')")
            counted = await page.text_content("#countdown")
            await page.wait_for_selector("#countdown[data-phase='recording']", timeout=15_000)
            take_id = await page.get_attribute("#takes li.take", "data-take-id")
            assert take_id
            for v in singers:  # as tutti join reports it once its take is under way
                await v.sock.wait(Ev.TAKE_START)
                state = TakeState(take_id=take_id, state="recording")
                await v.sock.client.emit(Ev.TAKE_STATE, state.to_dict())
            await page.wait_for_selector("#takes li.take.running")
            await until(lambda: _count(page, "#takes .chip.recording", 3))
            await page.screenshot(path=str(IMG / "web-take.png"), full_page=True)
            await page.reload()  # a reload mid-take: still signed in, the take still counting
            await page.wait_for_selector("#countdown[data-phase='recording']")
            await page.wait_for_selector("#stop:enabled")
            await asyncio.gather(*(v.upload(http, tmp_path, take_id) for v in singers))
            await page.click("#stop")
            await page.wait_for_selector("#countdown:has-text('Stopped')")
            await page.wait_for_selector(
                "#takes li.take .take-head:has-text('3 of 3 recordings uploaded')"
            )
            assert await page.locator("#takes .chip.uploaded").count() == 3
            # the stop completed the take (every upload ended before it): its mix is under way
            await page.wait_for_selector(
                "#takes .take-mix:is([data-state='mixing'], [data-state='ready'])"
            )
            await page.screenshot(path=str(IMG / "web-session.png"), full_page=True)
            # on a phone: one column, nothing wider than the screen (the roster scrolls)
            await page.set_viewport_size({"width": 390, "height": 844})
            width = "() => document.documentElement.scrollWidth"
            assert await page.evaluate(width) <= 390
            await page.evaluate("() => window.scrollTo(0, 0)")
            await page.screenshot(path=str(IMG / "web-phone.png"))
            await page.wait_for_selector("#takes .take-mix[data-state='ready']", timeout=90_000)
        finally:
            for v in singers:
                await v.close()
    assert counted and counted.startswith("Starting in")


async def drop_file(page: Any, selector: str, path: Path) -> None:
    """Drop ``path`` on the element as a person dragging the file from their desktop does."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = await page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const t = new DataTransfer();
            t.items.add(new File([bytes], name, { type: "audio/wav" }));
            return t;
        }""",
        [path.name, data],
    )
    await page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    await page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def session_id(server: RunningServer, token: str) -> str:
    p = server.app[SERVICES].store.principal(hash_token(token))
    assert p is not None
    return p.session_id


async def _count(page: Any, selector: str, n: int) -> bool:
    return bool(await page.locator(selector).count() == n)


async def _changed(page: Any, selector: str, before: str | None) -> bool:
    return bool(await page.get_attribute(selector, "style") != before)


async def test_backing_upload_resumes_after_a_dropped_connection(
    server: RunningServer, page: Any, tmp_path: Path
) -> None:
    """Every connection is cut right after the first 4 MiB chunk is stored: the page's tus
    upload asks the server where it stopped and sends only the rest."""
    tus = server.app[SERVICES].extras["tus"]
    assert isinstance(tus, TusHandler)
    count = tus.on_stored
    stored: list[int] = []
    port = int(server.url.rsplit(":", 1)[1])
    async with JitterProxy("127.0.0.1", port, delay=0.0, jitter=0.0) as proxy:

        def cut_after_first(nbytes: int) -> None:
            count(nbytes)
            stored.append(nbytes)
            if len(stored) == 1:
                proxy.drop_all()

        url = f"http://127.0.0.1:{proxy.port}"
        await sign_in(page, url, KEY)
        await page.fill("#title", "Resume")
        await page.fill("#parts", "S")
        await page.click("#create-form button[type=submit]")
        await page.wait_for_selector("#link-state:has-text('Live')")
        wav = tmp_path / "long.wav"
        write_audio(wav, rate=RATE, frames=RATE * 30, channels=2)
        size = wav.stat().st_size
        tus.on_stored = cut_after_first
        try:
            await page.set_input_files("li[data-part='S'] input[type=file]", str(wav))
            await page.wait_for_selector(
                "li[data-part='S'] .track-state:has-text('Backing ready: 0:30')", timeout=30_000
            )
        finally:
            tus.on_stored = count
    assert stored[0] == 4 * 1024 * 1024 < size
    assert sum(stored) == size, stored  # each byte stored once: resumed, not sent again
    token = await leader_token(page)
    tracks = server.app[SERVICES].store.tracks(session_id(server, token))
    assert tracks["S"].sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()


# ------------------------------------------------------------------------- 1,000 singers


async def test_roster_of_1000_updates_within_a_frame(server: RunningServer, page: Any) -> None:
    """1,000 singers in the roster; each `levels` batch moves all 1,000 meters.  The page
    measures each batch (script, DOM writes, style and layout) with performance.now()."""
    svc = server.app[SERVICES]
    async with aiohttp.ClientSession(server.url) as http:
        leader = await create_session_by_key(http)
    pids = [
        svc.sessions.join(
            {"code": leader["code"], "name": f"Singer {i:04d}", "part": "SATB"[i % 4]}, "127.0.0.1"
        ).participant_id
        for i in range(1000)
    ]
    await sign_in(page, server.url, leader["leader_token"])
    await page.wait_for_selector("#roster-count:has-text('of 1000')")
    assert await page.locator("#roster .roster-body .roster-row").count() == 1000
    times: list[float] = []
    script: list[float] = []
    for batch in range(20):
        levels = {
            # every meter moves; one singer in 20 reports a new dropout
            pid: LevelReport(
                rms_db=-50.0 + (i + batch * 7) % 45, peak_db=-3.0, dropouts=(i + batch) // 20
            )
            for i, pid in enumerate(pids)
        }
        await svc.realtime.to_leaders(leader["session_id"], Ev.LEVELS, Levels(levels))
        await page.wait_for_selector(f"#roster[data-updates='{batch + 1}']")
        assert await page.get_attribute("#roster", "data-last-update-rows") == "1000"
        times.append(float(await page.get_attribute("#roster", "data-last-update-ms") or "nan"))
        script.append(float(await page.get_attribute("#roster", "data-last-script-ms") or "nan"))
    median = statistics.median(times)
    p90 = statistics.quantiles(times, n=10)[-1]
    print(
        f"1,000-row level update: median {median:.2f} ms, p90 {p90:.2f} ms, "
        f"max {max(times):.2f} ms "
        f"(script and DOM writes: median {statistics.median(script):.2f} ms)"
    )
    # the speed itself is a benchmark's (bench/bench_web.sh), not an assertion: a loaded
    # machine slows Chromium's layout as much as anything else
    assert all(t > 0.0 for t in times), times  # every batch was measured by the page


async def create_session_by_key(http: aiohttp.ClientSession) -> dict[str, Any]:
    body = {"title": "Big choir", "parts": ["S", "A", "T", "B"]}
    async with http.post("/api/sessions", json=body, headers={"X-Tutti-Session-Key": KEY}) as r:
        assert r.status == 201, await r.text()
        return dict(await r.json())


# ------------------------------------------------------------------------------ security


async def test_cookie_needs_csrf_and_own_origin(server: RunningServer) -> None:
    """No cookie: refused; the cookie without the CSRF header, or from another site's page:
    refused; signing in from another site: refused; the pages carry the strict CSP."""
    origin = {"Origin": server.url}
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
    async with aiohttp.ClientSession(server.url, cookie_jar=jar) as http:
        async with http.get("/") as r:
            assert r.status == 200
            assert r.headers["Content-Security-Policy"] == PAGE_CSP
            assert "unsafe-inline" not in PAGE_CSP and "script-src 'self'" in PAGE_CSP
        async with http.get("/api/session") as r:
            assert r.status == 401
            assert (await error_of(r))["code"] == "no_token"
        foreign = {"Origin": "https://evil.example"}
        async with http.post("/api/web/signin", json={"secret": KEY}, headers=foreign) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "bad_origin"
        async with http.post("/api/web/signin", json={"secret": KEY}, headers=origin) as r:
            assert r.status == 200, await r.text()
            assert r.cookies["tutti_key"]["httponly"]
            assert r.cookies["tutti_key"]["samesite"] == "Strict"
            assert not r.cookies["tutti_key"]["secure"]  # plain http: a Secure one would be lost
            assert not r.cookies[CSRF_COOKIE]["httponly"]  # the page reads this one
            csrf = r.cookies[CSRF_COOKIE].value
        async with aiohttp.ClientSession(server.url) as behind_tls:
            tls = {**origin, "X-Forwarded-Proto": "https"}
            async with behind_tls.post("/api/web/signin", json={"secret": KEY}, headers=tls) as r:
                assert r.status == 200
                assert r.cookies["tutti_key"]["secure"]
        body = {"title": "Web", "parts": ["S", "A"]}
        async with http.post("/api/web/sessions", json=body, headers=origin) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "bad_csrf"
        with_csrf = {**origin, CSRF_HEADER: csrf}
        async with http.post("/api/web/sessions", json=body, headers=with_csrf) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
            assert "leader_token" not in json.dumps(created)
            assert r.cookies[LEADER_COOKIE]["httponly"]
        async with http.get("/api/session") as r:  # a read needs no CSRF header
            assert r.status == 200
            assert (await r.json())["code"] == created["session"]["code"]
        rename = {"title": "Web 2"}
        async with http.patch("/api/session", json=rename, headers=origin) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "bad_csrf"
        # one character changed (a token may already end in the one put there: 1 in 64)
        changed = csrf[:-1] + ("x" if csrf[-1] != "x" else "y")
        for bad in (changed, "é" + csrf):
            wrong = {**origin, CSRF_HEADER: bad}
            async with http.patch("/api/session", json=rename, headers=wrong) as r:
                assert r.status == 403
        foreign_csrf = {**foreign, CSRF_HEADER: csrf}
        async with http.patch("/api/session", json=rename, headers=foreign_csrf) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "bad_origin"
        async with http.patch("/api/session", json=rename, headers=with_csrf) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["title"] == "Web 2"
        async with http.get("/api/web/invite.svg") as r:
            assert r.status == 200 and r.content_type == "image/svg+xml"
            assert r.headers["Cache-Control"] == "no-store"
        token = next(c.value for c in jar if c.key == LEADER_COOKIE)
    async with aiohttp.ClientSession(server.url) as bare:
        async with bare.get("/api/web/invite.svg") as r:
            assert r.status == 401
        # the page's live link: the cookie is its token, from this host's page only
        cookie = {"Cookie": f"{LEADER_COOKIE}={token}"}
        mine = Recorder()
        try:
            await mine.client.connect(
                server.url,
                auth={"protocol": PROTOCOL_VERSION},
                headers={**cookie, "Origin": server.url},
                transports=["websocket"],
                wait_timeout=10,
            )
            welcome = await mine.wait(Ev.WELCOME)
            assert welcome["role"] == "leader"
        finally:
            await mine.close()
        theirs = Recorder()
        try:
            with pytest.raises(socketio.exceptions.ConnectionError):
                await theirs.client.connect(
                    server.url,
                    auth={"protocol": PROTOCOL_VERSION},
                    headers={**cookie, "Origin": "https://evil.example"},
                    transports=["websocket"],
                    wait_timeout=10,
                )
        finally:
            await theirs.close()


async def test_singers_cannot_upload_backing(server: RunningServer, tmp_path: Path) -> None:
    """A backing upload by tus needs the session's leader; a singer's token is refused."""
    async with aiohttp.ClientSession(server.url) as http:
        leader = await create_session_by_key(http)
        singer = await join(http, leader["code"], "Ann", "S")
        meta = {"kind": "backing", "part": "S", "filename": "s.wav"}
        r = await tus_create(http, singer.token, 1000, meta)
        assert r.status == 403
        r = await tus_create(http, leader["leader_token"], 1000, {**meta, "part": "X"})
        assert r.status == 400
        r = await tus_create(http, leader["leader_token"], 1000, meta)
        assert r.status == 201


async def test_page_says_what_to_run_without_its_packages(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without web/node_modules the server still serves, and / says in plain words what to run."""
    monkeypatch.setitem(webapp.VENDOR, "tus.min.js", "tus-js-client/not-installed.js")
    async with aiohttp.ClientSession(server.url) as http:
        async with http.get("/") as r:
            assert r.status == 200
            page = await r.text()
        assert "npm ci" in page and "scripts/serve.sh" in page
        async with http.get("/web/vendor/tus.min.js") as r:
            assert r.status == 404
            assert "npm ci" in (await error_of(r))["message"]
        async with http.get("/healthz") as r:
            assert r.status == 200


async def test_an_installed_server_without_the_web_folder_says_how_to_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server installed from a package has no web/ beside it: / says what to set."""
    monkeypatch.setenv(webapp.WEB_DIR_ENV, str(tmp_path / "nowhere"))
    async with running_server(tmp_path / "data") as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            async with http.get("/") as r:
                assert r.status == 503
                assert webapp.WEB_DIR_ENV in await r.text()
            async with http.get("/healthz") as r:
                assert r.status == 200


async def test_serves_only_its_own_files(server: RunningServer) -> None:
    async with aiohttp.ClientSession(server.url) as http:
        async with http.get("/web/app/main.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        async with http.get("/web/vendor/socket.io.esm.min.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
        for path in (
            "/web/app/..%2F..%2Fserver%2Fauth.py",
            "/web/app/%2E%2E%2Fpackage.json",
            "/web/app/.hidden.js",
            "/web/vendor/package.json",
            "/web/vendor/..%2Fpackage-lock.json",
        ):
            async with http.get(path) as r:
                assert r.status == 404, path
                assert (await error_of(r))["code"] in ("no_file", "not_found"), path


async def test_the_leaders_note_reaches_the_waiting_room(server: RunningServer, page: Any) -> None:
    """The note box on the leader's page: saved, seen by a singer within the lobby's second,
    still there after a reload, cleared with one button; the keyboard is enough."""
    await sign_in(page, server.url, KEY)
    await page.wait_for_selector("#screen-create:visible")
    await page.fill("#title", "Note choir")
    await page.click("#create-form button[type=submit]")
    await page.wait_for_selector("#note-state:has-text('No note yet.')")
    code = (await page.text_content("#join-code")) or ""
    async with aiohttp.ClientSession(server.url) as http:
        singer = await join(http, code, "Ann", "S")
    sock = Recorder()
    await sock.connect(server.url, singer.token)
    try:
        await sock.wait(Ev.LOBBY, lambda d: d["count"] == 1 and d["note"] == "")
        note = "Welcome! We start at 7:30 – bring water."
        await page.fill("#note", note)
        await page.click("#note-form button[type=submit]")
        await page.wait_for_selector("#note-state:has-text('Singers see this note now.')")
        await sock.wait(Ev.LOBBY, lambda d: d["note"] == note, timeout=10)
        await page.reload()
        await page.wait_for_selector(
            "#note-state:has-text('Singers see this note while they wait.')"
        )
        assert await page.input_value("#note") == note
        await page.focus("#note-clear")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#note-state:has-text('The note is cleared.')")
        await sock.wait(Ev.LOBBY, lambda d: d["note"] == "" and len(sock.of(Ev.LOBBY)) > 2)
        assert await page.is_disabled("#note-clear")
    finally:
        await sock.close()
