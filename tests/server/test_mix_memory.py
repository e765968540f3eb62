"""The server's mixes work in memory (tutti.server.mixwork): nothing of their work on disk,
nothing left when the server stops (or after it was killed), and within a budget: the least
recently used take leaves memory and is mixed again from its recordings, to the same samples;
a take too large for the budget works on disk."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.server.helpers import Leader, Recorder, create_session
from tests.server.test_server_mix import (
    MIX_TIMEOUT,
    TONES,
    _upload,
    mix_ready,
    sung_take,
)
from tests.support.memory import shm_folder
from tests.support.server import RunningServer, running_server
from tutti.server.app_keys import SERVICES
from tutti.server.mixing import MIX_DIR, Mixes
from tutti.server.mixwork import PREFIX, MixWork


@pytest.fixture
def memory() -> Iterator[Path]:
    """A folder of its own on the tmpfs (``/dev/shm``)."""
    with shm_folder() as folder:
        yield folder


@asynccontextmanager
async def _serving(tmp_path: Path, memory: Path) -> AsyncIterator[Served]:
    """A server whose mixes work in ``memory`` (1 GiB), with a take mixed on it."""
    config = {"mix_memory": memory, "mix_memory_bytes": 1 << 30}
    async with (
        running_server(tmp_path / "data", **config) as srv,
        aiohttp.ClientSession(srv.url) as http,
    ):
        take_id = await _mixed_take(srv, http, tmp_path / "up")
        mixes = _mixes(srv)
        await _idle(mixes)
        assert mixes.work is not None and mixes.work.root is not None
        yield Served(srv, http, mixes, mixes.work, mixes.work.root, take_id)


@dataclass
class Served:
    srv: RunningServer
    http: aiohttp.ClientSession
    mixes: Mixes
    work: MixWork
    root: Path  # this server's memory folder
    take_id: str  # mixed once


def _mixes(srv: RunningServer) -> Mixes:
    mixes = srv.app[SERVICES].extras["mixes"]
    assert isinstance(mixes, Mixes)
    return mixes


async def _mixed_take(srv: RunningServer, http: aiohttp.ClientSession, folder: Path) -> str:
    """Coroutine: a take of the three singers, uploaded and mixed (version 1): its id."""
    leader = await create_session(http, parts=["S", "A", "T", "B"], count_in_bars=0)
    lead = Recorder()
    try:
        await lead.connect(srv.url, leader.token)
        singers, take_id = await sung_take(srv.url, http, leader, lead)
        folder.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(
            *(_upload(srv.url, s, take_id, folder / f"{s.name}.flac") for s in singers.values())
        )
        await mix_ready(lead, 1)
    finally:
        await lead.close()
    _LEADERS[take_id] = leader
    return take_id


_LEADERS: dict[str, Leader] = {}  # each take's


async def _flac(http: aiohttp.ClientSession, take_id: str) -> np.ndarray:
    path = f"/api/session/takes/{take_id}/mix/mix.flac"
    async with http.get(path, headers=_LEADERS[take_id].headers) as r:
        assert r.status == 200, await r.text()
        return np.asarray(sf.read(io.BytesIO(await r.read()), dtype="int32")[0])


async def _idle(mixes: Mixes) -> None:
    deadline = asyncio.get_running_loop().time() + MIX_TIMEOUT
    while mixes.busy and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not mixes.busy


def _on_disk(srv: RunningServer, take_id: str) -> list[str]:
    """What the take's mix folder on disk holds."""
    (out,) = srv.config.data_dir.glob(f"takes/*/{take_id}/{MIX_DIR}")
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


async def test_a_take_is_mixed_in_memory_and_nothing_of_the_work_outlives_the_server(
    tmp_path: Path, memory: Path
) -> None:
    async with _serving(tmp_path, memory) as s:
        assert _on_disk(s.srv, s.take_id) == ["mix-1.flac", "mix-1.opus"]  # the mix alone
        assert s.root.parent == memory and s.root.name.startswith(f"{PREFIX}{os.getpid()}-")
        kept = list((s.root / s.take_id / "prepared").glob("*.raw"))
        assert len(kept) == len(TONES)  # each recording's pass 1, in memory
    assert not s.root.exists() and not list(memory.iterdir())


async def test_the_least_recently_used_take_leaves_memory_and_mixes_again_the_same(
    tmp_path: Path, memory: Path
) -> None:
    async with _serving(tmp_path, memory) as s:
        first = s.take_id
        assert (s.root / first).is_dir()
        before = await _flac(s.http, first)
        s.work.budget = 1  # nothing fits beside the next take's jobs any more
        second = await _mixed_take(s.srv, s.http, tmp_path / "up2")
        await _idle(s.mixes)
        assert not (s.root / first).exists()  # left memory for the second take
        # which is too large for this budget: it worked in its own folder on disk
        assert "prepared" in _on_disk(s.srv, second) and not (s.root / second).exists()
        # the first take is mixed again from its recordings, to the same samples
        s.work.budget = 1 << 30
        lead = Recorder()
        try:
            await lead.connect(s.srv.url, _LEADERS[first].token)
            path = f"/api/session/takes/{first}/mix"
            async with s.http.post(path, json={}, headers=_LEADERS[first].headers) as r:
                assert r.status == 202, await r.text()
            await mix_ready(lead, 2)
        finally:
            await lead.close()
        after = await _flac(s.http, first)
        assert after.shape == before.shape and np.array_equal(after, before)


async def test_a_killed_servers_memory_is_freed_by_the_next_one(
    tmp_path: Path, memory: Path
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # a pid no process has now
    gone.wait()
    left = memory / f"{PREFIX}{gone.pid}-abcd1234"
    (left / "take" / "prepared").mkdir(parents=True)
    (left / "take" / "prepared" / "x.raw").write_bytes(b"\0" * 4096)
    mine = memory / f"{PREFIX}{os.getpid()}-alive000"  # a live process's: kept
    mine.mkdir()
    config = {"mix_memory": memory, "mix_memory_bytes": 1 << 30}
    async with running_server(tmp_path / "data", **config) as srv:
        work = _mixes(srv).work
        assert work is not None and work.root is not None and work.root.is_dir()
        assert not left.exists() and mine.exists()
