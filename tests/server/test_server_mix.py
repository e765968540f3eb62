"""The server's mix of a take, on a real server (port 0) with real clients: singers upload
through the client's tus uploader, ``take.mix`` arrives ready, the Opus file plays for its
whole length, a remix moves one singer by the dB asked for, the zip mixes with ``tutti mix``
to the same samples, share links open only their take, and the event loop keeps answering."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.server.helpers import Leader, Recorder, Singer, create_session, error_of, join
from tests.support.server import ROOT, RunningServer, running_server
from tutti.client.uploader import TusUploader, UploadJob, file_sha256
from tutti.mix.outputs import SCRATCH_PREFIX
from tutti.server.app_keys import SERVICES
from tutti.server.mixing import MIX_DIR, MIX_NICE, Mixes
from tutti.takeformat import parse_manifest
from tutti.wire import Ev, TakeMix

RATE = 48000
SECONDS = 5.0
#: Each singer sings one steady tone: its level in a mix is the spectrum at its frequency.
TONES = {"Ann": 330.0, "Bea": 550.0, "Cy": 770.0}
PARTS = {"Ann": "S", "Bea": "A", "Cy": "T"}
MIX_TIMEOUT = 90.0
#: Long enough that a take's mix is still running when the test stops the server.
LONG_S = 180.0


@dataclass
class MixedTake:
    server: RunningServer
    http: aiohttp.ClientSession
    leader: Leader
    singers: dict[str, Singer]
    take_id: str
    lead: Recorder
    ann: Recorder
    first: TakeMix

    @property
    def base(self) -> str:
        return f"/api/session/takes/{self.take_id}"

    async def ready(self, version: int) -> TakeMix:
        """Coroutine: the ``take.mix`` of ``version`` once it is ready (the leader's copy)."""
        return await mix_ready(self.lead, version)

    async def flac(self) -> tuple[np.ndarray[Any, Any], int]:
        async with self.http.get(f"{self.base}/mix/mix.flac", headers=self.leader.headers) as r:
            assert r.status == 200, await r.text()
            data, rate = sf.read(io.BytesIO(await r.read()), dtype="float64")
        return data, rate


async def mix_ready(lead: Recorder, version: int) -> TakeMix:
    """Coroutine: the ``take.mix`` of ``version`` once it is ready, as ``lead`` hears it."""
    raw = await lead.wait(
        Ev.TAKE_MIX,
        lambda d: d["version"] == version and d["state"] in ("ready", "failed"),
        timeout=MIX_TIMEOUT,
    )
    status = TakeMix.from_dict(raw)
    assert status.state == "ready", status.detail
    return status


def _tone(path: Path, freq: float, seconds: float = SECONDS) -> tuple[int, str]:
    t = np.arange(int(seconds * RATE)) / RATE
    sig = (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[:, None]
    sf.write(str(path), sig, RATE, format="FLAC", subtype="PCM_24")
    return len(sig), file_sha256(path)


def _recording(frames: int) -> dict[str, Any]:
    return {
        "rate": RATE,
        "channels": 1,
        "frames": frames,
        "start_offset": 0,
        "latency": 480,
        "latency_source": "measured",
        "overflows": 0,
        "underflows": 0,
        "shared_clock": True,
        "device": {"name": "test"},
    }


def _damage(path: Path) -> str:
    """Zero 64 bytes in the middle of ``path`` (its header stays whole): its new sha256."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return file_sha256(path)


async def _upload(
    url: str,
    singer: Singer,
    take_id: str,
    path: Path,
    *,
    damaged: bool = False,
    seconds: float = SECONDS,
) -> None:
    frames, sha = _tone(path, TONES[singer.name], seconds)
    if damaged:  # the singer's own file is damaged: its bytes arrive intact, as they are
        sha = _damage(path)
    job = UploadJob(path=path, take_id=take_id, sha256=sha, recording=_recording(frames))
    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, url, singer.token, chunk_size=256 * 1024, backoff=(0.05, 0.5))
        await asyncio.wait_for(up.upload(job), 60)


async def _started_take(
    http: aiohttp.ClientSession, leader: Leader, names: list[str]
) -> tuple[dict[str, Singer], str]:
    singers = {n: await join(http, leader.code, n, PARTS[n]) for n in names}
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json={"lead_s": 1.0}, headers=leader.headers
    ) as r:
        assert r.status == 200
    return singers, take_id


async def _stop(http: aiohttp.ClientSession, leader: Leader, take_id: str) -> None:
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers) as r:
        assert r.status == 200


async def _recorded(url: str, lead: Recorder, singer: Singer, take_id: str) -> None:
    """The singer's client says its take is recorded (as ``tutti join`` does before the
    stop), so the take waits for its upload."""
    me = Recorder()
    try:
        await me.connect(url, singer.token)
        await me.client.emit(Ev.TAKE_STATE, {"take_id": take_id, "state": "recorded"})
        await lead.wait(
            Ev.TAKE_UPDATES,
            lambda d: singer.participant_id in d["participant_ids"] and d["state"] == "recorded",
        )
    finally:
        await me.close()


def in_memory(tmp_path: Path) -> dict[str, Any]:
    """The server's mixes working in memory, as ``tutti serve`` has them by default
    (tutti.server.mixwork), within 1 GiB: the config's fields."""
    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() else tmp_path / "memory"
    folder.mkdir(exist_ok=True)
    return {"mix_memory": folder, "mix_memory_bytes": 1 << 30}


async def sung_take(
    url: str, http: aiohttp.ClientSession, leader: Leader, lead: Recorder
) -> tuple[dict[str, Singer], str]:
    """Coroutine: the singers of :data:`TONES` joined, a take started, recorded by each
    (``lead``, the leader's connection, hears it) and stopped: the singers and the take."""
    singers, take_id = await _started_take(http, leader, list(TONES))
    for singer in singers.values():
        await _recorded(url, lead, singer, take_id)
    await _stop(http, leader, take_id)
    return singers, take_id


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[MixedTake]:
    """A take of three singers, uploaded through the client's tus uploader and mixed (in
    memory)."""
    async with (
        running_server(tmp_path / "data", **in_memory(tmp_path)) as srv,
        aiohttp.ClientSession(srv.url) as http,
    ):
        leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
        lead, ann = Recorder(), Recorder()
        try:
            await lead.connect(srv.url, leader.token)
            singers, take_id = await sung_take(srv.url, http, leader, lead)
            await ann.connect(srv.url, singers["Ann"].token)
            uploads = [
                _upload(srv.url, s, take_id, tmp_path / f"{s.name}.flac") for s in singers.values()
            ]
            await asyncio.gather(*uploads)
            waiting = TakeMix(take_id, "waiting")
            take = MixedTake(srv, http, leader, singers, take_id, lead, ann, waiting)
            take.first = await take.ready(1)
            await _idle(take)  # every recording's pass 1 done too (two workers)
            yield take
        finally:
            await lead.close()
            await ann.close()


def _level_db(mix: np.ndarray[Any, Any], freq: float, rate: int) -> float:
    """The level of one tone in a mix (dB), from the spectrum of its mono fold."""
    mono = mix.mean(axis=1) * np.hanning(len(mix))
    spectrum = np.abs(np.fft.rfft(mono))
    k = int(round(freq * len(mono) / rate))
    return float(20 * np.log10(spectrum[k - 3 : k + 4].max()))


async def test_the_mix_is_announced_ready_and_its_opus_plays_for_the_take(
    mixed: MixedTake, tmp_path: Path
) -> None:
    m = mixed
    status = m.first
    assert status.version == 1 and status.files is not None and status.duration_s is not None
    # every singer of the take is told, not only the leader
    told = TakeMix.from_dict(await m.ann.wait(Ev.TAKE_MIX, lambda d: d["state"] == "ready"))
    assert told == status
    async with m.http.get(f"{m.base}/manifest", headers=m.leader.headers) as r:
        manifest = parse_manifest(await r.json())
    sung = max(r.timeline_start + r.frames for r in manifest.recordings)
    assert status.duration_s == pytest.approx(sung / RATE, abs=0.01)
    async with m.http.get(status.files.opus, headers=m.singers["Bea"].headers) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("audio/ogg")
        opus = tmp_path / "mix.opus"
        opus.write_bytes(await r.read())
    info = sf.info(str(opus))
    assert (info.format, info.subtype, info.samplerate) == ("OGG", "OPUS", 48000)
    assert info.duration == pytest.approx(status.duration_s, abs=0.03)
    decoded, _ = sf.read(str(opus))
    assert np.sqrt(np.mean(decoded**2)) > 0.01  # the choir, not silence
    # every singer is in it, loudness-matched: each tone within a few dB of the others
    flac, rate = await m.flac()
    levels = [_level_db(flac, tone, rate) for tone in TONES.values()]
    assert max(levels) - min(levels) < 3.0, levels
    # an <audio> element seeks with Range requests
    headers = {**m.leader.headers, "Range": "bytes=100-199"}
    async with m.http.get(status.files.opus, headers=headers) as r:
        assert r.status == 206 and len(await r.read()) == 100


@pytest.mark.parametrize("when", ["first", "last"])
async def test_a_recording_that_breaks_when_decoded_is_refused_and_the_rest_mixed(
    tmp_path: Path, when: str
) -> None:
    """The upload checks a FLAC's header only; its pass 1 decodes it.  A recording damaged in
    the middle is stored, then refused when its pass 1 (``first``: as it arrives) or the
    take's mix (``last``: the last upload's pass 1 is the mix's) meets the damage: the
    singer is told why, the file goes, and the take is mixed without it."""
    async with (
        running_server(tmp_path / "data", **in_memory(tmp_path)) as srv,
        aiohttp.ClientSession(srv.url) as http,
    ):
        leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
        lead = Recorder()
        try:
            await lead.connect(srv.url, leader.token)
            singers, take_id = await sung_take(srv.url, http, leader, lead)
            bea = singers["Bea"]
            others = [_upload(srv.url, s, take_id, tmp_path / f"{s.name}.flac")
                      for s in singers.values() if s is not bea]  # fmt: skip
            damaged = _upload(srv.url, bea, take_id, tmp_path / "Bea.flac", damaged=True)
            for upload in [damaged, *others] if when == "first" else [*others, damaged]:
                await upload  # each acknowledged: the bytes are the singer's, intact
            told = await lead.wait(
                Ev.TAKE_UPDATES,
                lambda d: bea.participant_id in d["participant_ids"] and d["state"] == "failed",
                timeout=MIX_TIMEOUT,
            )
            assert "cannot be played to its end" in told["detail"]
            assert "frames" in told["detail"], told["detail"]  # what the decode found
            raw = await lead.wait(Ev.TAKE_MIX, lambda d: d["state"] == "ready", MIX_TIMEOUT)
            take = MixedTake(
                srv, http, leader, singers, take_id, lead, lead, TakeMix.from_dict(raw)
            )
            async with http.get(f"{take.base}/manifest", headers=leader.headers) as r:
                manifest = parse_manifest(await r.json())
            assert sorted(r.singer for r in manifest.recordings) == ["Ann", "Cy"]
            folder = srv.config.data_dir / "takes" / leader.session_id / take_id / "recordings"
            assert sorted(p.stem for p in folder.iterdir()) == sorted(
                s.participant_id for s in singers.values() if s is not bea
            )
            mix, rate = await take.flac()
            ann_db = _level_db(mix, TONES["Ann"], rate)
            assert _level_db(mix, TONES["Cy"], rate) - ann_db > -3
            assert _level_db(mix, TONES["Bea"], rate) - ann_db < -60
            await _idle(take)
        finally:
            await lead.close()


async def _idle(m: MixedTake) -> Mixes:
    """Coroutine: the server's mixes once no mix or pass 1 is running or queued."""
    mixes = m.server.app[SERVICES].extras["mixes"]
    assert isinstance(mixes, Mixes)
    deadline = time.monotonic() + MIX_TIMEOUT
    while mixes.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not mixes.busy
    return mixes


def _kept(m: MixedTake) -> dict[str, tuple[int, int]]:
    """The recordings' kept pass 1 (file name: inode, mtime): a new analysis replaces one."""
    folder = _prepared(m)
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.iterdir()
        if p.suffix in (".raw", ".json")  # not the group sums, not the jobs' end marks
    }


def _group_sums(m: MixedTake) -> set[str]:
    """The voice pass's group sums kept for the next mix (tutti.mix.groupsums)."""
    return {p.stem for p in (_prepared(m) / "sums").glob("*.f32")}


def _prepared(m: MixedTake) -> Path:
    """Where the server keeps the take's recordings for its mixes (in memory)."""
    mixes = m.server.app[SERVICES].extras["mixes"]
    assert isinstance(mixes, Mixes)
    take = m.server.app[SERVICES].store.get_take(m.take_id)
    assert take is not None
    folder = mixes.prepared(take)
    assert mixes.work is not None and mixes.work.root in folder.parents  # not in the take's
    return folder


async def test_a_remix_moves_one_singer_by_the_gain_asked_for(mixed: MixedTake) -> None:
    m = mixed
    kept = _kept(m)
    assert len(kept) == 2 * len(TONES)  # each recording's audio and analysis, kept once
    sums = _group_sums(m)
    assert len(sums) == 1  # three singers: one group, summed once
    before, rate = await m.flac()
    bea = m.singers["Bea"].participant_id
    async with m.http.post(
        f"{m.base}/mix", json={"gains_db": {bea: -6.0}}, headers=m.leader.headers
    ) as r:
        assert r.status == 202, await r.text()
        asked = TakeMix.from_dict(await r.json())
    assert asked.state == "mixing" and asked.version == 2 and asked.gains_db == {bea: -6.0}
    remix = await m.ready(2)
    assert remix.gains_db == {bea: -6.0}
    after, _ = await m.flac()

    def bea_over_ann(mix: np.ndarray[Any, Any]) -> float:
        return _level_db(mix, TONES["Bea"], rate) - _level_db(mix, TONES["Ann"], rate)

    assert bea_over_ann(after) - bea_over_ann(before) == pytest.approx(-6.0, abs=0.25)
    assert _kept(m) == kept  # the remix read every recording's pass 1; none was redone
    # Bea's gain is part of her group's sum: a new one, and only the one the remix used stays
    assert len(_group_sums(m)) == 1 and not _group_sums(m) & sums
    # muting leaves the singer out
    async with m.http.post(f"{m.base}/mix", json={"muted": [bea]}, headers=m.leader.headers) as r:
        assert r.status == 202
    await m.ready(3)
    muted, _ = await m.flac()
    assert bea_over_ann(muted) < -60


async def test_mix_requests_are_checked_and_only_the_leader_changes_the_mix(
    mixed: MixedTake,
) -> None:
    m = mixed
    ann = m.singers["Ann"]
    async with m.http.get(f"{m.base}/mix", headers=ann.headers) as r:
        assert r.status == 200 and (await r.json())["state"] == "ready"
    async with m.http.post(f"{m.base}/mix", json={}, headers=ann.headers) as r:
        assert r.status == 403 and (await error_of(r))["code"] == "leader_only"
    async with m.http.get(f"{m.base}/mix") as r:
        assert r.status == 401
    async with m.http.get(f"{m.base}/mix/mix.flac") as r:
        assert r.status == 401
    for body, words in (
        ({"gains_db": {ann.participant_id: 13}}, "from -24 to 12 dB"),
        ({"gains_db": {"nobody": 1}}, "no recording"),
        ({"gain": 1}, "unknown field"),
        ({"muted": "x"}, "must be a list"),
    ):
        async with m.http.post(f"{m.base}/mix", json=body, headers=m.leader.headers) as r:
            assert r.status == 400, body
            assert words in (await error_of(r))["message"]


async def test_the_zip_mixes_with_tutti_mix_to_the_same_samples(
    mixed: MixedTake, tmp_path: Path
) -> None:
    m = mixed
    async with m.http.get(f"{m.base}/download.zip", headers=m.leader.headers) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
        assert int(r.headers["Content-Length"]) > 0
        body = await r.read()
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        z.extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    async with m.http.get(f"{m.base}/manifest", headers=m.leader.headers) as r:
        served = await r.json()
    assert parse_manifest(served) == parse_manifest(
        __import__("json").loads((folder / "take.json").read_text())
    )
    out = tmp_path / "mine.flac"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tutti", "mix", str(folder), "-o", str(out), "--jobs", "2",
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    mine, _ = sf.read(str(out), dtype="int32")
    server, _ = sf.read(io.BytesIO(await _bytes(m, f"{m.base}/mix/mix.flac")), dtype="int32")
    assert mine.shape == server.shape
    # Same samples, to the last bit of 24 or one step of it: a recording measured while it is
    # decoded (a warm worker) or after (a cold process) may differ in the last bits of its
    # loudness, a gain difference below one 24-bit step (docs/architecture.md, "Server mix").
    diff = np.abs(mine.astype(np.int64) - server) >> 8  # int32 holds the 24 bits at the top
    assert diff.max() <= 1 and diff.mean() < 0.05


async def _bytes(m: MixedTake, path: str, headers: dict[str, str] | None = None) -> bytes:
    async with m.http.get(path, headers=m.leader.headers if headers is None else headers) as r:
        assert r.status == 200, await r.text()
        return await r.read()


async def test_a_share_link_plays_its_take_and_nothing_else(mixed: MixedTake) -> None:
    m = mixed
    async with m.http.post(f"{m.base}/share", headers=m.singers["Ann"].headers) as r:
        assert r.status == 403
    async with m.http.post(f"{m.base}/share", headers=m.leader.headers) as r:
        assert r.status == 201
        url = (await r.json())["url"]
    async with m.http.get(url) as r:  # no token in any header: the link is the key
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        csp = r.headers["Content-Security-Policy"]
    assert "Tuesday choir" in page and "Take 1" in page and f'src="{url}/mix.opus"' in page
    assert "script-src" not in csp and "default-src 'none'" in csp
    opus = await _bytes(m, f"{url}/mix.opus", {})
    assert opus == await _bytes(m, f"{m.base}/mix/mix.opus")
    async with m.http.get(f"{url}/mix.flac") as r:  # only the page and its Opus file
        assert r.status == 404
    async with m.http.get(url + "x") as r:
        assert r.status == 404 and "not here" in await r.text()
    # the link names its take; its token opens nothing else (it is no API token)
    _, other = await _started_take(m.http, m.leader, ["Ann"])
    await _stop(m.http, m.leader, other)
    token = url.rsplit("/", 1)[-1]
    for path in (f"/api/session/takes/{other}/mix", f"{m.base}/mix/mix.opus"):
        async with m.http.get(path, headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401
    async with m.http.delete(f"{m.base}/share", headers=m.leader.headers) as r:
        assert r.status == 200 and (await r.json())["revoked"] == 1
    for path in (url, f"{url}/mix.opus"):
        async with m.http.get(path) as r:
            assert r.status == 404 and "text/html" in r.headers["Content-Type"]


async def test_the_event_loop_answers_while_a_take_is_mixed(mixed: MixedTake) -> None:
    m = mixed
    for _ in range(3):  # three remixes in a row: the worker is busy for a while
        async with m.http.post(f"{m.base}/mix", json={}, headers=m.leader.headers) as r:
            assert r.status == 202
    waits: list[float] = []
    while not any(d["version"] == 4 and d["state"] != "mixing" for d in m.lead.of(Ev.TAKE_MIX)):
        t = time.perf_counter()
        async with m.http.get("/healthz") as r:
            assert r.status == 200
        waits.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)
    assert len(waits) >= 5
    assert sorted(waits)[len(waits) // 2] < 0.1, waits


async def test_a_restarted_server_mixes_a_complete_take_that_has_no_mix(
    mixed: MixedTake,
) -> None:
    m = mixed
    data = m.server.config.data_dir
    folder = next(data.glob(f"takes/*/{m.take_id}"))
    await m.lead.close()
    await m.ann.close()
    await _idle(m)
    shutil.rmtree(folder / "mix")  # as if the server had stopped before mixing
    async with running_server(data) as srv, aiohttp.ClientSession(srv.url) as http:
        deadline = time.monotonic() + MIX_TIMEOUT
        while True:
            async with http.get(f"{m.base}/mix", headers=m.leader.headers) as r:
                status = TakeMix.from_dict(await r.json())
            if status.state in ("ready", "failed") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert status.state == "ready", status.detail
        assert status.version == 1


async def test_a_recording_stored_after_the_mix_makes_a_new_one(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
    lead = Recorder()
    try:
        await lead.connect(server.url, leader.token)
        singers, take_id = await _started_take(http, leader, ["Ann", "Bea"])
        await _recorded(server.url, lead, singers["Ann"], take_id)
        await _stop(http, leader, take_id)  # Bea never said she recorded: missed
        await _upload(server.url, singers["Ann"], take_id, tmp_path / "ann.flac")
        first = await lead.wait(Ev.TAKE_MIX, lambda d: d["state"] == "ready", timeout=MIX_TIMEOUT)
        assert first["version"] == 1
        await _upload(server.url, singers["Bea"], take_id, tmp_path / "bea.flac")  # late
        second = await lead.wait(
            Ev.TAKE_MIX, lambda d: d["version"] == 2 and d["state"] == "ready", timeout=MIX_TIMEOUT
        )
    finally:
        await lead.close()
    async with http.get(f"/api/session/takes/{take_id}/mix/mix.flac", headers=leader.headers) as r:
        mix, rate = sf.read(io.BytesIO(await r.read()), dtype="float64")
    assert second["duration_s"] == pytest.approx(len(mix) / rate)
    assert _level_db(mix, TONES["Bea"], rate) - _level_db(mix, TONES["Ann"], rate) > -3


async def test_a_take_whose_uploads_all_ended_before_the_stop_is_mixed_at_the_stop(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Every singer uploads while the take still runs (they left early); the stop is what
    completes the take, so the stop starts its mix.  A take that only ever had missed
    singers says there is nothing to mix, not that it waits for "0 of N" uploads."""
    leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
    lead = Recorder()
    try:
        await lead.connect(server.url, leader.token)
        singers, take_id = await _started_take(http, leader, ["Ann", "Bea"])
        for s in singers.values():
            await _upload(server.url, s, take_id, tmp_path / f"{s.name}.flac")
        base = f"/api/session/takes/{take_id}"
        async with http.get(f"{base}/mix", headers=leader.headers) as r:
            assert (await r.json())["state"] == "waiting"
        await _stop(http, leader, take_id)
        ready = await lead.wait(
            Ev.TAKE_MIX, lambda d: d["state"] in ("ready", "failed"), timeout=MIX_TIMEOUT
        )
        assert ready["state"] == "ready" and ready["version"] == 1, ready["detail"]
        # a take nobody recorded: stopped, nothing to wait for and nothing to mix
        async with http.post("/api/session/takes", headers=leader.headers) as r:
            empty = (await r.json())["take_id"]
        await _stop(http, leader, empty)
        async with http.get(f"/api/session/takes/{empty}/mix", headers=leader.headers) as r:
            status = TakeMix.from_dict(await r.json())
        assert (status.state, status.detail) == (
            "waiting",
            "no recording was uploaded: nothing to mix",
        )
    finally:
        await lead.close()


async def test_the_mix_state_is_kept_while_a_failing_mix_removes_its_folder(
    mixed: MixedTake,
) -> None:
    """A mix or pass 1 that fails removes the folders it made (``mix/``, when empty: see
    mix/outputs.py) while the event loop writes the take's mix state.  Here a thread does that
    removal as fast as it can while the state is announced 300 times: every write lands, and
    a restarted server reads the last one announced, not an older one."""
    m = mixed
    mixes = await _idle(m)
    svc = m.server.app[SERVICES]
    take = svc.store.get_take(m.take_id)
    assert take is not None
    out = mixes.out_dir(take)
    assert out.name == MIX_DIR
    shutil.rmtree(out)  # as a failed first pass 1 leaves it
    done = threading.Event()

    def fail_and_clean_up() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                out.rmdir()  # mix/outputs.py: Outputs._remove_created

    remover = threading.Thread(target=fail_and_clean_up, daemon=True)
    remover.start()
    state = mixes._load(take)
    try:
        for version in range(2, 302):  # the one place the state is written: each announcement
            status = TakeMix(m.take_id, "failed", f"try {version}", version)
            await mixes._announce(take, state, status)
    finally:
        done.set()
        remover.join()
    restarted = Mixes(svc.store, svc.takes, svc.realtime, svc.tracks.path)
    assert restarted.status(take) == mixes.status(take) == status
    announced = TakeMix.from_dict(await m.lead.wait(Ev.TAKE_MIX, lambda d: d["version"] == 301))
    assert announced == status
    # a take mixed by an older server has its state where that one kept it: still read
    out.mkdir(exist_ok=True)
    (out.parent / "mix-status.json").rename(out / "status.json")
    older = Mixes(svc.store, svc.takes, svc.realtime, svc.tracks.path)
    assert older.status(take) == status


async def _mix_job_running(srv: RunningServer, take_id: str) -> None:
    """Coroutine: until the take's mix job is the only one the workers have (every pass 1
    ended), so it runs."""
    mixes = srv.app[SERVICES].extras["mixes"]
    assert isinstance(mixes, Mixes)
    deadline = time.monotonic() + MIX_TIMEOUT
    while not (mixes._mixing.get(take_id) and len(mixes._jobs) == 1 and not mixes._preparing):
        assert time.monotonic() < deadline, "the mix job never ran alone"
        await asyncio.sleep(0.02)


async def _long_take_uploaded(
    url: str, http: aiohttp.ClientSession, leader: Leader, lead: Recorder, tmp_path: Path
) -> str:
    """Coroutine: a take sung by four singers whose :data:`LONG_S` recordings are uploaded
    (its mix then runs for seconds); its id."""
    singers, take_id = await sung_take(url, http, leader, lead)
    paths = {n: tmp_path / f"{n}.flac" for n in singers}
    await asyncio.gather(
        *[_upload(url, s, take_id, paths[n], seconds=LONG_S) for n, s in singers.items()]
    )
    return take_id


async def _mix_workspace_made(mixes: Mixes, under: Path) -> None:
    """Coroutine: until a mix's scratch folder exists under ``under`` or the mixes' memory."""
    roots = [under] + ([] if mixes.work is None or mixes.work.root is None else [mixes.work.root])
    deadline = time.monotonic() + MIX_TIMEOUT
    while not any(next(r.rglob(f"{SCRATCH_PREFIX}*"), None) for r in roots):
        assert time.monotonic() < deadline, "no mix made its scratch folder"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("where", ["memory", "take folder"])
async def test_a_stop_interrupts_the_mix_and_the_next_start_makes_it(
    tmp_path: Path, where: str
) -> None:
    """Stopping the server does not wait for a running mix: its job is interrupted and
    leaves nothing behind, and the next start makes the mix again (the interrupted version
    is never announced ready)."""
    data = tmp_path / "data"
    config = in_memory(tmp_path) if where == "memory" else {}
    async with running_server(data, **config) as srv, aiohttp.ClientSession(srv.url) as http:
        leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
        lead = Recorder()
        try:
            await lead.connect(srv.url, leader.token)
            take_id = await _long_take_uploaded(srv.url, http, leader, lead, tmp_path)
            await lead.wait(Ev.TAKE_MIX, lambda d: d["state"] == "mixing", timeout=MIX_TIMEOUT)
            await _mix_job_running(srv, take_id)
        finally:
            await lead.close()
        stopping = time.monotonic()
    stopped_s = time.monotonic() - stopping
    folder = next(data.glob(f"takes/*/{take_id}"))
    left = [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(SCRATCH_PREFIX)]
    assert left == []
    assert not list((folder / MIX_DIR).glob("mix-*.*"))  # no mix presented as made
    async with running_server(data, **config) as srv, aiohttp.ClientSession(srv.url) as http:
        async with http.get(f"/api/session/takes/{take_id}/mix", headers=leader.headers) as r:
            status = TakeMix.from_dict(await r.json())
        assert status.state == "mixing" and status.version == 2, status  # made again
        started = time.monotonic()
        deadline = started + MIX_TIMEOUT
        while status.state == "mixing" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            async with http.get(f"/api/session/takes/{take_id}/mix", headers=leader.headers) as r:
                status = TakeMix.from_dict(await r.json())
        assert status.state == "ready" and status.version == 2, status
        assert status.duration_s == pytest.approx(LONG_S, abs=0.5)
    print(f"\nthe stop took {stopped_s:.2f} s; the whole mix {time.monotonic() - started:.2f} s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "systemd"])
async def test_a_signal_to_the_mix_workers_alone_makes_the_mix_again(
    tmp_path: Path, sig: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C reaches the mix workers with the server (one process group), and systemd's stop
    signals every process of the unit: a worker may be interrupted before the server knows it
    stops, or without it stopping at all.  The running server then makes the mix again at
    once, as the next version, and logs no task error."""
    caplog.set_level(logging.INFO, logger="tutti.mixing")
    async with running_server(tmp_path / "data", **in_memory(tmp_path)) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
            lead = Recorder()
            try:
                await lead.connect(srv.url, leader.token)
                take_id = await _long_take_uploaded(srv.url, http, leader, lead, tmp_path)
                await _mix_job_running(srv, take_id)
                mixes = srv.app[SERVICES].extras["mixes"]
                assert isinstance(mixes, Mixes) and mixes._pool is not None
                # the job has entered the mix (a signal between jobs is ignored, rightly)
                await _mix_workspace_made(mixes, tmp_path)
                for pid in list(mixes._pool._processes):
                    os.kill(pid, sig)
                ready = await lead.wait(
                    Ev.TAKE_MIX, lambda d: d["state"] != "mixing", timeout=MIX_TIMEOUT
                )
                versions = [(d["version"], d["state"]) for d in lead.of(Ev.TAKE_MIX)]
            finally:
                await lead.close()
    assert ready["state"] == "ready" and ready["version"] == 2, versions
    assert (1, "ready") not in versions and (1, "failed") not in versions, versions
    assert ready["duration_s"] == pytest.approx(LONG_S, abs=0.5)
    gc.collect()  # a task whose exception nobody retrieved says so when it is collected
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert any("event=mix_interrupted" in r.getMessage() for r in caplog.records)


async def test_a_take_deleted_while_it_is_mixed_leaves_nothing(mixed: MixedTake) -> None:
    m = mixed
    folder = next(m.server.config.data_dir.glob(f"takes/*/{m.take_id}"))
    async with m.http.post(f"{m.base}/mix", json={}, headers=m.leader.headers) as r:
        assert r.status == 202
    async with m.http.delete(m.base, headers=m.leader.headers) as r:
        assert r.status == 200, await r.text()
    await _idle(m)
    assert not folder.exists()
    mixes = m.server.app[SERVICES].extras["mixes"]
    assert isinstance(mixes, Mixes) and mixes.work is not None and mixes.work.root is not None
    assert not list(mixes.work.root.iterdir())  # nor what its mixes held in memory
    async with m.http.get(f"{m.base}/mix", headers=m.leader.headers) as r:
        assert r.status == 404


async def test_a_singer_who_deletes_their_recording_is_taken_out_of_the_mix(
    mixed: MixedTake,
) -> None:
    m = mixed
    bea = m.singers["Bea"]
    async with m.http.delete("/api/session/recordings", headers=bea.headers) as r:
        assert r.status == 200, await r.text()
    # the next look at the mix finds the mix holding her voice gone, and a new one on its way
    async with m.http.get(f"{m.base}/mix", headers=m.leader.headers) as r:
        status = TakeMix.from_dict(await r.json())
    assert status.state == "mixing" and status.version == 2
    assert len(_kept(m)) == 2 * (len(TONES) - 1)  # her prepared pass 1 went too
    await m.ready(2)
    mix, rate = await m.flac()
    assert _level_db(mix, TONES["Bea"], rate) - _level_db(mix, TONES["Ann"], rate) < -60


def test_mix_workers_yield_the_cpu_to_the_server() -> None:
    """The workers run at a lower priority, so an upload storm or a take start never waits
    behind a mix (bench_server.py measured the storm beside the mixing of the last one)."""
    mixes = Mixes(None, None, None, Path, workers=1)  # type: ignore[arg-type]
    mixes._running = True  # as Mixes.run does; the pool starts with the first job
    try:
        niceness = mixes._submit(os.nice, 0).result(timeout=120)
    finally:
        assert mixes._pool is not None
        mixes._pool.shutdown(wait=True)
    assert niceness == min(19, os.nice(0) + MIX_NICE)
