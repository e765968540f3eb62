"""What makes the server's mix ready sooner leaves it as it was: the FLAC written from 24-bit
words is the file libsndfile writes from floats; the Opus copy encoded in segments at once
decodes to the samples of one encoder's copy; and a refused remix names singers, not
their ids; and two server processes on one data folder see one take's mix state (real
servers, port 0)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

import tutti.server.opuscopy as opuscopy
from tests.server.helpers import Leader, Recorder, create_session, error_of, join
from tests.server.test_server_mix import (  # noqa: F401  (mixed: the fixture)
    MIX_TIMEOUT,
    MixedTake,
    _recorded,
    _started_take,
    _stop,
    _upload,
    mixed,
)
from tests.support.server import running_server
from tutti.mix.passes import open_out, pcm24_words
from tutti.server.opuscopy import OpusCopy

RATE = 48000
STEP = 1.0 / (1 << 23)  # one 24-bit step


def _tricky(n: int) -> np.ndarray[Any, Any]:
    """Stereo float32 with the values a conversion gets wrong: ties at half a step (both
    signs), the ends of the scale and past them, and plain music-like samples."""
    rng = np.random.default_rng(13)
    x = rng.uniform(-0.99, 0.99, (n, 2)).astype(np.float32)
    k = np.arange(-200, 200, dtype=np.float32)
    x[:400, 0] = (k + 0.5) * np.float32(STEP)  # ties: rounded half to even
    x[:400, 1] = (k + 0.25) * np.float32(STEP)
    ends = np.array([1.0, -1.0, 1.5, -1.5, 0.99999994, -0.99999994, 0.0, -0.0], np.float32)
    x[400 : 400 + len(ends)] = ends[:, None]
    return x


def test_flac_from_24_bit_words_is_the_file_libsndfile_writes_from_floats(
    tmp_path: Path,
) -> None:
    x = _tricky(200_000)
    ours, theirs = tmp_path / "words.flac", tmp_path / "floats.flac"
    with open_out(ours, "flac", RATE, 2) as f:
        for a in range(0, len(x), 65536):
            f.write(x[a : a + 65536])
    with sf.SoundFile(str(theirs), "w", RATE, 2, "PCM_24", format="FLAC",
                      compression_level=0.0) as g:  # fmt: skip
        for a in range(0, len(x), 65536):
            g.write(x[a : a + 65536])
    assert ours.read_bytes() == theirs.read_bytes()
    words = pcm24_words(x[:408]) >> 8
    assert words[:400, 0].tolist() == np.rint(np.arange(-200, 200) + 0.5).astype(int).tolist()
    assert words[400:404, 0].tolist() == [8388607, -8388608, 8388607, -8388608]


def _choir(seconds: float) -> np.ndarray[Any, Any]:
    """A stereo chord that swells and fades (what a choir's mix asks of a codec), float32."""
    t = np.arange(int(seconds * RATE)) / RATE
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * 0.23 * t)
    left = sum(np.sin(2 * np.pi * f * t + f) for f in (220.0, 277.2, 329.6, 440.0))
    right = sum(np.sin(2 * np.pi * f * t) for f in (246.9, 311.1, 370.0, 493.9))
    x = 0.08 * swell[:, None] * np.stack([left, right], axis=1)
    x += 0.002 * np.random.default_rng(5).standard_normal(x.shape)
    return np.asarray(x, dtype=np.float32)


def _encode(x: np.ndarray[Any, Any], path: Path) -> np.ndarray[Any, Any]:
    with OpusCopy(path, RATE) as copy:
        copy.begin(len(x))
        for a in range(0, len(x), 65536):
            copy.feed(x[a : a + 65536])
    decoded, rate = sf.read(str(path), dtype="float32")
    assert rate == RATE
    return np.asarray(decoded)


def _error_db(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], a: int, b: int) -> float:
    """The codec's error over frames [a, b), dB relative to the signal there."""
    err = np.mean((x[a:b] - y[a:b]) ** 2)
    return float(10 * np.log10(err / np.mean(x[a:b] ** 2)))


def test_the_opus_copy_in_segments_has_no_seam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _choir(40.0)
    n = 4  # segments of 10 s: three joins
    assert opuscopy.SEGMENTS >= n and opuscopy.SEGMENT_MIN_S == 10.0
    joins = [len(x) * k // n // 960 * 960 for k in range(1, n)]
    cut = _encode(x, tmp_path / "segments.opus")
    assert cut.shape == x.shape  # every frame, once: no packet twice or missing
    monkeypatch.setattr(opuscopy, "SEGMENTS", 1)  # one encoder, as before
    whole = _encode(x, tmp_path / "whole.opus")
    assert whole.shape == x.shape
    # each encoder's state has caught up with the one before it by the join: the same
    # samples (on the bench's 5-minute master too, docs/benchmarks-mix.md)
    assert np.array_equal(cut, whole)
    # encoders started cold at the joins leave a click there (20 ms either side: the codec's
    # error 6 dB above one encoder's): the comparison above would see one
    monkeypatch.setattr(opuscopy, "SEGMENTS", n)
    monkeypatch.setattr(opuscopy, "WARM_UP_S", 0.0)
    cold = _encode(x, tmp_path / "cold.opus")
    w = 960
    for j in joins:
        assert _error_db(x, cold, j - w, j + w) > _error_db(x, whole, j - w, j + w) + 6.0, j


async def test_a_refused_remix_names_the_singers(mixed: MixedTake) -> None:  # noqa: F811
    m = mixed
    late = await join(m.http, m.leader.code, "Dee", "B")  # joined after the take
    bea = m.singers["Bea"].participant_id
    body = {"gains_db": {late.participant_id: -3.0, bea: 1.0}, "muted": ["no-such-singer"]}
    async with m.http.post(f"{m.base}/mix", json=body, headers=m.leader.headers) as r:
        assert r.status == 400
        message = (await error_of(r))["message"]
    assert "Dee (not in this take)" in message
    assert "someone who is not in this session" in message
    assert "Ann, Bea, Cy" in message
    for pid in (late.participant_id, bea, "no-such-singer"):
        assert pid not in message


async def _mix_state(http: aiohttp.ClientSession, leader: Leader, take_id: str) -> Any:
    async with http.get(f"/api/session/takes/{take_id}/mix", headers=leader.headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _until_ready(
    http: aiohttp.ClientSession, leader: Leader, take_id: str, version: int
) -> list[str]:
    """Coroutine: poll one server until ``version`` is ready; the states it showed."""
    seen: list[str] = []
    deadline = time.monotonic() + MIX_TIMEOUT
    while time.monotonic() < deadline:
        state = await _mix_state(http, leader, take_id)
        seen.append(f"{state['state']} {state['version']}")
        if state["version"] == version and state["state"] == "ready":
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"version {version} never ready; seen {seen[-5:]}")


async def test_two_processes_on_one_data_folder_see_one_mix_state(tmp_path: Path) -> None:
    """As ``tutti serve --workers 2`` runs them (two apps, each with its own mix state and
    workers, one data folder and SQLite): the recordings land on both, the process that
    takes the last upload mixes, and the other one serves that mix, numbers the remix after
    it and never shows a mix the other runs as failed."""
    data = tmp_path / "data"
    async with (
        running_server(data, node="a") as a,
        running_server(data, node="b") as b,
        aiohttp.ClientSession(a.url) as on_a,
        aiohttp.ClientSession(b.url) as on_b,
    ):
        leader = await create_session(on_a, parts=["S", "A", "T", "B"], count_in_bars=0)
        lead = Recorder()
        try:
            await lead.connect(a.url, leader.token)
            singers, take_id = await _started_take(on_a, leader, ["Ann", "Bea"])
            for singer in singers.values():
                await _recorded(a.url, lead, singer, take_id)
            await _stop(on_a, leader, take_id)
        finally:
            await lead.close()
        await _upload(a.url, singers["Ann"], take_id, tmp_path / "Ann.flac")
        assert (await _mix_state(on_a, leader, take_id))["state"] == "waiting"  # a has read it
        await _upload(b.url, singers["Bea"], take_id, tmp_path / "Bea.flac")  # b mixes
        shown_by_a = await _until_ready(on_a, leader, take_id, 1)
        assert not any(s.startswith("failed") for s in shown_by_a), shown_by_a
        async with on_a.get(
            f"/api/session/takes/{take_id}/mix/mix.flac", headers=leader.headers
        ) as r:
            assert r.status == 200 and len(await r.read()) > 1000
        # a remix asked of a is version 2 (after b's), and b serves it once ready
        async with on_a.post(
            f"/api/session/takes/{take_id}/mix", json={}, headers=leader.headers
        ) as r:
            assert r.status == 202 and (await r.json())["version"] == 2
        assert (await _mix_state(on_b, leader, take_id))["version"] == 2
        await _until_ready(on_b, leader, take_id, 2)
