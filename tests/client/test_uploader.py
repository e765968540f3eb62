"""tus uploads of a take to a real server process: drops, a kill -9 restart, a client restart.

Each test arms and starts a real take, uploads a real FLAC recording with
:class:`TusUploader`, and checks that the server's copy (downloaded by the leader) has the
same sha256 as the local file — byte-identical.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.client.net_helpers import Leader
from tests.server.tus_support import tus_server
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import ServerProcess
from tutti.client.connection import join_session
from tutti.client.uploader import (
    MAX_CHUNK,
    ChunkSizer,
    TusUploader,
    UploadJob,
    UploadProgress,
    UploadRejected,
    file_sha256,
)
from tutti.server import tus

RATE = 48000


@dataclass
class Setup:
    server: ServerProcess
    leader: Leader
    token: str
    participant_id: str
    take_id: str
    job: UploadJob


def _take_file(path: Path, seconds: float, seed: int = 5) -> tuple[int, str]:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((int(seconds * RATE), 1)) * 0.2).clip(-1, 1).astype(np.float32)
    sf.write(str(path), data, RATE, format="FLAC", subtype="PCM_24")
    return len(data), file_sha256(path)


def _recording(frames: int) -> dict[str, Any]:
    return {
        "rate": RATE,
        "channels": 1,
        "frames": frames,
        "start_offset": -100,
        "latency": 512,
        "latency_source": "measured",
        "overflows": 0,
        "underflows": 0,
        "shared_clock": True,
        "device": {"key": "test"},
    }


@pytest.fixture
async def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Setup]:
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(tmp_path / "config"))
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    try:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create(rate=RATE)
            info = await join_session(
                http, srv.url, code=leader.code, name="Bo", part="A", remember=False
            )
            take_id = await leader.arm()
            await leader.start(take_id, lead_s=1.0)
            path = tmp_path / "take.flac"
            frames, sha = _take_file(path, 30.0)
            job = UploadJob(path=path, take_id=take_id, sha256=sha, recording=_recording(frames))
            yield Setup(srv, leader, info.token, info.participant_id, take_id, job)
    finally:
        await asyncio.to_thread(srv.stop)


def _wav_job(s: Setup, path: Path, nbytes: int) -> UploadJob:
    """A 16-bit mono WAV take of about ``nbytes`` bytes (noise, so no two chunks are alike)."""
    frames = (nbytes - 44) // 2
    pcm = np.random.default_rng(9).integers(-3000, 3000, (frames, 1), dtype=np.int16)
    sf.write(str(path), pcm, RATE, format="WAV", subtype="PCM_16")
    return UploadJob(path, s.take_id, file_sha256(path), _recording(frames))


async def _server_copy_sha(s: Setup, http: aiohttp.ClientSession) -> str:
    leader = Leader(http, s.server.url, s.leader.token)
    await leader.wait_state(s.take_id, s.participant_id, "uploaded")
    async with http.get(
        f"{s.server.url}/api/session/takes/{s.take_id}/manifest", headers=leader.auth
    ) as r:
        assert r.status == 200, await r.text()
        manifest = await r.json()
    rec = [x for x in manifest["recordings"] if x["participant_id"] == s.participant_id][0]
    async with http.get(
        f"{s.server.url}/api/session/takes/{s.take_id}/files/{rec['file']}", headers=leader.auth
    ) as r:
        assert r.status == 200
        body = await r.read()
    assert rec["start_offset"] == -100 and rec["latency"] == 512
    return hashlib.sha256(body).hexdigest()


async def test_upload_survives_dropped_connections(setup: Setup) -> None:
    s = setup
    async with JitterProxy("127.0.0.1", s.server.port, delay=0.0, jitter=0.0) as proxy:
        drops: list[int] = []
        events: list[UploadProgress] = []

        def progress(p: UploadProgress) -> None:
            events.append(UploadProgress(**vars(p)))
            # cut the line at roughly 1/4, 1/2 and 3/4 of the file
            if (
                p.state == "uploading"
                and len(drops) < 3
                and p.offset > (len(drops) + 1) * p.total / 4
            ):
                drops.append(p.offset)
                proxy.drop_all()

        async with aiohttp.ClientSession() as http:
            up = TusUploader(
                http,
                f"http://127.0.0.1:{proxy.port}",
                s.token,
                chunk_size=64 * 1024,
                max_chunk=64 * 1024,  # many chunks, so that the drops fall between them
                backoff=(0.05, 0.5),
                on_progress=progress,
            )
            await asyncio.wait_for(up.upload(s.job), 60)
        async with aiohttp.ClientSession() as http:
            assert await _server_copy_sha(s, http) == s.job.sha256
    assert len(drops) == 3
    # every drop cost the client its connection: it went on over a new one each time (a drop
    # that cuts a PATCH in flight shows as "retrying"; one between PATCHes, just reconnects)
    assert proxy.connections >= 1 + len(drops)
    assert events[-1].state == "uploaded" and events[-1].offset == s.job.size
    # offsets the client reported never went backwards past what the server had confirmed
    confirmed = [e.offset for e in events if e.state == "uploading"]
    assert confirmed == sorted(confirmed)


async def test_upload_survives_server_kill9_and_restart(setup: Setup) -> None:
    s = setup
    killed = threading.Event()
    restarted = threading.Event()

    def restart() -> None:
        s.server.kill()
        killed.set()
        time.sleep(1.0)  # the client meets a dead server for a while
        s.server.start()
        restarted.set()

    def progress(p: UploadProgress) -> None:
        if not killed.is_set() and p.offset > p.total // 3 and not restarted.is_set():
            if not getattr(progress, "started", False):
                progress.started = True  # type: ignore[attr-defined]
                threading.Thread(target=restart, daemon=True).start()

    async with aiohttp.ClientSession() as http:
        up = TusUploader(
            http,
            s.server.url,
            s.token,
            chunk_size=64 * 1024,
            backoff=(0.1, 1.0),
            on_progress=progress,
        )
        await asyncio.wait_for(up.upload(s.job), 90)
        assert killed.is_set() and restarted.is_set()
        assert await _server_copy_sha(s, http) == s.job.sha256


async def test_a_restarted_client_resumes_the_same_upload(setup: Setup) -> None:
    s = setup
    seen: list[int] = []
    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, s.server.url, s.token, chunk_size=64 * 1024)
        half = asyncio.Event()

        def progress(p: UploadProgress) -> None:
            if p.offset > p.total // 2:
                half.set()

        up.on_progress = progress
        task = asyncio.ensure_future(up.upload(s.job))
        await half.wait()
        task.cancel()  # the client dies mid-upload
        with pytest.raises(asyncio.CancelledError):
            await task
        assert TusUploader.state_path(s.job).exists()

        up2 = TusUploader(
            http,
            s.server.url,
            s.token,
            chunk_size=64 * 1024,
            on_progress=lambda p: seen.append(p.offset),
        )
        await up2.upload(s.job)
        assert await _server_copy_sha(s, http) == s.job.sha256
    assert seen[0] > s.job.size // 2  # resumed where the server was, not from byte 0
    up2.forget(s.job)
    assert not TusUploader.state_path(s.job).exists()


async def test_server_refusal_is_final_and_clear(setup: Setup, tmp_path: Path) -> None:
    s = setup
    bad = UploadJob(
        path=s.job.path, take_id=s.take_id, sha256=s.job.sha256, recording=_recording(12345)
    )  # declares the wrong number of frames
    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, s.server.url, s.token, chunk_size=256 * 1024)
        with pytest.raises(UploadRejected, match="frames"):
            await asyncio.wait_for(up.upload(bad), 60)
        # the refused upload is deleted on the server at once (it would otherwise count
        # against this singer's open uploads until it expires); the local take is kept
        url = up._load_url(bad)
        assert url is not None
        async with http.head(url, headers={"Tus-Resumable": "1.0.0", **up._headers()}) as r:
            assert r.status in (404, 410), r.status
        assert bad.path.exists()


MIB = 1 << 20


def test_chunk_sizer_grows_shrinks_and_stays_in_bounds() -> None:
    z = ChunkSizer(MIB, 256 * 1024, 16 * MIB, target_s=2.0)
    z.sent(MIB, 0.5)  # quick: double
    assert z.size == 2 * MIB
    z.sent(2 * MIB, 1.5)  # within [target/2, 2 target]: keep
    assert z.size == 2 * MIB
    z.sent(100, 0.01)  # a short last chunk says nothing about the line
    assert z.size == 2 * MIB
    z.sent(2 * MIB, 8.0)  # slow: what 2 s send at 256 KiB/s
    assert z.size == 512 * 1024
    z.failed()
    assert z.size == 256 * 1024
    z.failed()  # never below the floor
    assert z.size == 256 * 1024
    for _ in range(10):
        z.sent(z.size, 0.1)
    assert z.size == 16 * MIB  # nor above the ceiling
    z.sent(16 * MIB, 10.0)  # 3.2 MiB in 2 s, rounded down to 64 KiB
    assert z.size == 3342336
    with pytest.raises(ValueError, match="bounds"):
        ChunkSizer(MIB, 2 * MIB, MIB)


async def test_chunks_grow_on_a_fast_line_shrink_when_slow_and_after_a_drop(
    setup: Setup, tmp_path: Path
) -> None:
    """The real client against a real server: the chunk doubles from 1 MiB while PATCHes are
    quick, falls after a PATCH the server answered late (its process stopped for 5 s, longer
    than 2 × TARGET_PATCH_S), halves after a PATCH whose connection dropped, and the file
    still arrives byte-identical."""
    s = setup
    job = _wav_job(s, tmp_path / "long.wav", 64_000_000)
    tasks: set[asyncio.Task[None]] = set()

    async def stall(seconds: float, drop: bool) -> None:
        os.kill(s.server.pid, signal.SIGSTOP)  # the PATCH now in flight waits on the server
        try:
            await asyncio.sleep(seconds)
            if drop:
                proxy.drop_all()
        finally:
            os.kill(s.server.pid, signal.SIGCONT)

    stalls: list[int] = []  # PATCH (its index in up.chunks) each stall fell on

    retried: list[int] = []

    def progress(p: UploadProgress) -> None:
        if p.state == "retrying":
            retried.append(p.offset)
        if p.state != "uploading" or len(stalls) == 2:
            return
        # the first PATCH of 8 MiB is held for 5 s; the one after the next is cut off
        first = not stalls and up.sizer.size >= 8 * MIB
        if first or (stalls and len(up.chunks) == stalls[0] + 2):
            stalls.append(len(up.chunks))
            task = asyncio.ensure_future(stall(5.0 if first else 1.0, not first))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async with (
        JitterProxy("127.0.0.1", s.server.port, delay=0.0, jitter=0.0) as proxy,
        aiohttp.ClientSession() as http,
    ):
        up = TusUploader(
            http, f"http://127.0.0.1:{proxy.port}", s.token, backoff=(0.05, 0.5),
            on_progress=progress,
        )  # fmt: skip
        await asyncio.wait_for(up.upload(job), 120)
        await asyncio.gather(*tasks)
    async with aiohttp.ClientSession() as http:
        assert await _server_copy_sha(s, http) == job.sha256
    sizes = up.chunks
    slow, cut = stalls
    assert sizes[: slow + 1] == [MIB << i for i in range(slow + 1)] and slow >= 3, sizes
    assert sizes[slow + 1] <= 4 * MIB, sizes  # 8 MiB in ≥ 4.5 s: what 2 s send, ≤ 3.6 MiB
    assert sizes[cut + 1] == max(256 * 1024, sizes[cut] // 2 // 65536 * 65536), (sizes, stalls)
    assert retried  # the drop was a failed PATCH (its bytes may all have reached the server)


async def test_a_50_mb_take_needs_few_requests(setup: Setup, tmp_path: Path) -> None:
    """With the defaults a 50 MB take goes in a handful of PATCHes (the chunk doubles from
    1 MiB to 16 MiB while each takes under 1 s) instead of the 191 that fixed 256 KiB chunks
    took."""
    s = setup
    job = _wav_job(s, tmp_path / "big.wav", 50_000_000)
    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, s.server.url, s.token)
        await asyncio.wait_for(up.upload(job), 120)
        assert await _server_copy_sha(s, http) == job.sha256
    assert sum(up.chunks) == job.size and max(up.chunks) <= MAX_CHUNK
    # POST, HEAD, PATCHes of 1, 2, 4, 8, 16, 16 and 0.7 MiB, HEAD: 10 on an idle machine;
    # a loaded one may hold a chunk at 2–8 MiB (a PATCH over 1 s), 25 PATCHes at 2 MiB
    assert up.chunks[:2] == [MIB, 2 * MIB] and len(up.chunks) <= 25, up.chunks
    assert up.requests == len(up.chunks) + 3


async def test_kill_9_mid_chunk_resumes_byte_identical(setup: Setup, tmp_path: Path) -> None:
    """kill -9 ``tutti serve`` while a chunk's bytes are reaching its disk (the data file
    already past the acknowledged offset); after a restart the client, with its defaults,
    resumes from the offset the server reports (the start of that chunk: its checksum could
    not be checked) and the server's copy is byte-identical."""
    s = setup
    job = _wav_job(s, tmp_path / "big.wav", 50_000_000)
    acked: list[int] = []
    killed_at: list[tuple[int, int]] = []  # (acknowledged offset, bytes in the data file)

    async def kill_mid_chunk() -> None:
        uploads = s.server.data_dir / "uploads"
        while not killed_at:
            for part in uploads.glob("*.part"):
                size = part.stat().st_size
                if acked and size >= acked[-1] + MIB:
                    killed_at.append((acked[-1], size))
                    await asyncio.to_thread(s.server.kill)
                    await asyncio.to_thread(s.server.start)
                    return
            await asyncio.sleep(0.002)

    events: list[tuple[str, int]] = []

    def progress(p: UploadProgress) -> None:
        events.append((p.state, p.offset))
        if p.state == "uploading" and p.offset > 0:
            acked.append(p.offset)

    async with aiohttp.ClientSession() as http:
        up = TusUploader(http, s.server.url, s.token, backoff=(0.1, 1.0), on_progress=progress)
        killer = asyncio.ensure_future(kill_mid_chunk())
        try:
            await asyncio.wait_for(up.upload(job), 120)
        finally:
            killer.cancel()
        assert killed_at, "the upload ended before a chunk was caught mid-write"
        assert await _server_copy_sha(s, http) == job.sha256
    offset, _ = killed_at[0]  # the data file was ≥ 1 MiB past it: a chunk mid-write
    first_retry = [state for state, _ in events].index("retrying")
    before = [o for state, o in events[:first_retry] if state == "uploading"][-1]
    after = [o for state, o in events[first_retry:] if state == "uploading"][0]
    assert before >= offset and after == before  # the chunk cut by the kill was dropped


async def test_a_server_without_crc32_gets_sha256_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The uploader's chunks carry ``Upload-Checksum: crc32``; a tus server that does not
    offer crc32 (tutti's before it did) answers 400 ``bad_checksum``, and the uploader sends
    sha256 from then on: the upload still arrives whole."""
    monkeypatch.delitem(tus.CHECKSUM_ALGORITHMS, "crc32")
    data = np.random.default_rng(3).bytes(3 * MIB + 5)
    path = tmp_path / "take.bin"
    path.write_bytes(data)
    job = UploadJob(path, "take-1", hashlib.sha256(data).hexdigest())
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as http:
        up = TusUploader(http, srv.url.removesuffix("/files/"), "alice", backoff=(0.01, 0.1))
        url = await asyncio.wait_for(up.upload(job), 60)
    assert up.checksum == "sha256"
    assert srv.hooks.completed == [(url.rsplit("/", 1)[1], job.sha256)]
    assert (srv.hooks.done_dir / url.rsplit("/", 1)[1]).read_bytes() == data
