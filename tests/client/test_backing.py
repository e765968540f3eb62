"""Backing download from a real (in-process) server: cache, Range resume, drops, checks."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.client.net_helpers import Leader, wav_bytes
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import running_server
from tutti.client.backing import BackingError, cache_path, fetch_backing
from tutti.client.connection import JoinInfo, join_session


@dataclass
class Env:
    url: str
    port: int
    leader: Leader
    info: JoinInfo
    data: bytes
    http: aiohttp.ClientSession


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setenv("TUTTI_CONFIG_DIR", str(tmp_path / "config"))
    async with running_server(tmp_path / "data") as srv:
        async with aiohttp.ClientSession() as http:
            leader = await Leader(http, srv.url).create()
            data = wav_bytes(48000 * 10)  # ~1.9 MB
            await leader.put_track("T", data)
            info = await join_session(
                http, srv.url, code=leader.code, name="Cy", part="T", remember=False
            )
            port = int(srv.url.rsplit(":", 1)[1])
            yield Env(srv.url, port, leader, info, data, http)


async def test_download_is_checked_cached_and_reported(env: Env, tmp_path: Path) -> None:
    track = env.info.track
    assert track is not None and track.info.sha256 == hashlib.sha256(env.data).hexdigest()
    seen: list[tuple[int, int]] = []
    path = await fetch_backing(
        env.http,
        env.url,
        env.info.token,
        track,
        tmp_path / "cache",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert path == cache_path(tmp_path / "cache", track)
    assert path.read_bytes() == env.data
    assert seen[-1] == (len(env.data), len(env.data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # second time: served from the cache, the server is not even asked
    again = await fetch_backing(
        env.http, "http://127.0.0.1:9", env.info.token, track, tmp_path / "cache"
    )
    assert again == path


async def test_resumes_a_partial_file_with_range(env: Env, tmp_path: Path) -> None:
    track = env.info.track
    assert track is not None
    final = cache_path(tmp_path / "cache", track)
    final.parent.mkdir(parents=True)
    part = final.with_name(final.name + ".part")
    half = len(env.data) // 2
    part.write_bytes(env.data[:half])
    async with JitterProxy("127.0.0.1", env.port, delay=0, jitter=0) as proxy:
        path = await fetch_backing(
            env.http, f"http://127.0.0.1:{proxy.port}", env.info.token, track, tmp_path / "cache"
        )
        fetched = proxy.bytes_to_client
    assert path.read_bytes() == env.data
    assert fetched < len(env.data) - half + 4096  # only the missing half (+ headers) came
    assert not part.exists()


async def test_dropped_download_resumes(env: Env, tmp_path: Path) -> None:
    track = env.info.track
    assert track is not None
    async with JitterProxy("127.0.0.1", env.port, delay=0, jitter=0) as proxy:
        drops: list[int] = []

        def progress(done: int, total: int) -> None:
            if not drops and done > total // 3:
                drops.append(done)
                proxy.drop_all()

        path = await fetch_backing(
            env.http,
            f"http://127.0.0.1:{proxy.port}",
            env.info.token,
            track,
            tmp_path / "cache",
            progress=progress,
        )
        fetched = proxy.bytes_to_client
    assert drops
    assert path.read_bytes() == env.data
    assert fetched < len(env.data) * 1.5  # resumed, not restarted from zero


async def test_damaged_cache_and_partial_are_fetched_again(env: Env, tmp_path: Path) -> None:
    track = env.info.track
    assert track is not None
    final = cache_path(tmp_path / "cache", track)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"not the track")
    path = await fetch_backing(env.http, env.url, env.info.token, track, tmp_path / "cache")
    assert path.read_bytes() == env.data
    path.unlink()
    part = final.with_name(final.name + ".part")
    part.write_bytes(b"X" * 1000)  # wrong bytes: the sha256 check catches it, fresh download
    path = await fetch_backing(env.http, env.url, env.info.token, track, tmp_path / "cache")
    assert path.read_bytes() == env.data


async def test_refusal_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    track = env.info.track
    assert track is not None
    with pytest.raises(BackingError, match=r"refused the backing for part 'T': HTTP 401"):
        await fetch_backing(env.http, env.url, "wrong-token", track, tmp_path / "cache")
    with pytest.raises(BackingError, match="failed 2 times"):
        await fetch_backing(
            env.http, "http://127.0.0.1:9", env.info.token, track, tmp_path / "other", attempts=2
        )
