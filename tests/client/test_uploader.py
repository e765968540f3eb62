"""tus uploads of a take to a real server process: drops, a kill -9 restart, a client restart.

Each test arms and starts a real take, uploads a real FLAC recording with
:class:`TusUploader`, and checks that the server's copy (downloaded by the leader) has the
same sha256 as the local file — byte-identical.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import ServerProcess
from tutti.client.connection import join_session
from tutti.client.uploader import (
    TusUploader,
    UploadJob,
    UploadProgress,
    UploadRejected,
    file_sha256,
)

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
                backoff=(0.05, 0.5),
                on_progress=progress,
            )
            await asyncio.wait_for(up.upload(s.job), 60)
        async with aiohttp.ClientSession() as http:
            assert await _server_copy_sha(s, http) == s.job.sha256
    assert len(drops) == 3
    assert any(e.state == "retrying" for e in events)
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
