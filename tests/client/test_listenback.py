"""Listen-back in ``tutti join``: the singer is told when the choir's mix is ready, the L key
(read from a real pseudo-terminal) fetches the mix with the singer's own token, and it plays
through the real engine on the JACK dummy server (its output wired back to its input)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.client.test_engine import loopback  # noqa: F401 - the fixture
from tests.server.test_server_mix import MIX_TIMEOUT, MixedTake, mixed  # noqa: F401 - the fixture
from tests.support.server import ROOT
from tutti.client.connection import join_session
from tutti.client.engine import DuplexEngine
from tutti.client.join import Singer
from tutti.client.listenback import KeyReader, ListenBack, ListenError, fetch_mix
from tutti.wire import MixFiles, TakeMix

RATE = 48000


async def _singer(m: MixedTake) -> Singer:
    """A ``tutti join`` singer object joined to the mixed take's session, told of the mix."""
    info = await join_session(
        m.http, m.server.url, code=m.leader.code, name="Dee", part="S", remember=False
    )
    singer = Singer(argparse.Namespace(name="Dee", part="S", plain=True), m.server.url)
    singer.http, singer.info = m.http, info
    singer.listen.take_armed(m.take_id)
    singer.listen.on_mix(m.first)
    return singer


async def test_the_mix_is_fetched_with_a_singers_token_as_the_headset_plays_it(
    mixed: MixedTake,  # noqa: F811
) -> None:
    m = mixed
    assert m.first.files is not None
    token = m.singers["Cy"].token
    stereo = await fetch_mix(m.http, m.server.url, token, m.first.files.flac, rate=RATE, channels=2)
    served, _ = await m.flac()
    assert stereo.dtype == np.float32 and stereo.shape == served.shape
    assert np.allclose(stereo, served, atol=1e-6)
    mono = await fetch_mix(m.http, m.server.url, token, m.first.files.flac, rate=RATE, channels=1)
    assert mono.shape == (len(served), 1)
    assert np.allclose(mono[:, 0], served.mean(axis=1), atol=1e-6)
    with pytest.raises(ListenError, match="unknown token"):
        await fetch_mix(m.http, m.server.url, "x" * 43, m.first.files.flac, rate=RATE, channels=2)
    with pytest.raises(ListenError, match="44100 Hz"):
        await fetch_mix(m.http, m.server.url, token, m.first.files.flac, rate=44100, channels=2)


def test_the_singer_is_told_once_per_ready_mix() -> None:
    said: list[str] = []
    lb = ListenBack(said.append)
    lb.take_armed("t1")
    lb.take_armed("t2")
    files = MixFiles("/o", "/f")
    lb.on_mix(TakeMix("t2", "mixing", version=1))
    assert said == [] and lb.path() is None
    lb.on_mix(TakeMix("t2", "ready", version=1, files=files))
    lb.on_mix(TakeMix("t2", "ready", version=1, files=files))  # the same mix again: once
    assert said == ["The choir's mix of take 2 is ready — press L to listen"]
    assert lb.path() == "/f"
    lb.on_mix(TakeMix("t9", "ready", version=3, files=files))
    assert said[-1] == "The choir's mix of the last take is ready — press L to listen"


async def test_keys_come_from_a_terminal_and_nothing_is_read_without_one() -> None:
    got: list[str] = []
    arrived = asyncio.Event()

    async def on_key(key: str) -> None:
        got.append(key)
        arrived.set()

    master, slave = os.openpty()
    try:
        reader = KeyReader(on_key, fd=slave)
        assert reader.start()
        try:
            os.write(master, b"L")
            await asyncio.wait_for(arrived.wait(), 5)
        finally:
            reader.stop()
        assert got == ["L"]
        r, w = os.pipe()
        try:
            assert not KeyReader(on_key, fd=r).start()  # a pipe is no terminal
        finally:
            os.close(r)
            os.close(w)
    finally:
        os.close(master)
        os.close(slave)


async def test_l_without_audio_or_during_a_take_says_why(mixed: MixedTake) -> None:  # noqa: F811
    singer = await _singer(mixed)
    await singer.on_key("l")
    assert "joined without audio" in singer.state.message
    singer.listen.ready = None
    await singer.on_key("L")
    assert "no mix is ready yet" in singer.state.message


@pytest.mark.jack
async def test_l_plays_the_choirs_mix_into_the_headset(
    mixed: MixedTake,  # noqa: F811
    loopback: DuplexEngine,  # noqa: F811
) -> None:
    singer = await _singer(mixed)
    singer.engine = loopback
    await singer.on_key("L")
    assert "playing the choir's mix of take 1" in singer.state.message, singer.state.message
    playing = singer._playing
    assert playing is not None
    peaks = []
    deadline = time.monotonic() + (mixed.first.duration_s or 0) + 10
    while not playing.done.is_set() and time.monotonic() < deadline:
        peaks.append(loopback.input_level().peak)
        await asyncio.sleep(0.05)
    assert playing.done.is_set() and playing.error is None
    # the mix came back through the port: the choir's level, not silence
    assert max(peaks) > 0.05
    # a take arming ends a playback at once
    await singer.on_key("L")
    assert singer._playing is not None
    await singer._stop_listening()
    assert singer._playing is None


async def test_tutti_join_tells_the_singer_when_the_mix_is_ready(
    mixed: MixedTake,  # noqa: F811
    tmp_path: Path,
) -> None:
    m = mixed
    env = {**os.environ, "TUTTI_CONFIG_DIR": str(tmp_path / "cfg"), "PYTHONUNBUFFERED": "1"}
    env["TUTTI_DATA_DIR"] = str(tmp_path / "local")
    cmd = [sys.executable, "-m", "tutti", "join", m.server.url, "--code", m.leader.code,
           "--name", "Dee", "--part", "S", "--no-audio", "--plain"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        while b"joined" not in await asyncio.wait_for(proc.stdout.readline(), 30):
            pass
        deadline = time.monotonic() + 30
        while not any(p["name"] == "Dee" and p["connected"] for p in await _roster(m)):
            assert time.monotonic() < deadline, "tutti join never connected"
            await asyncio.sleep(0.1)
        async with m.http.post(f"{m.base}/mix", json={}, headers=m.leader.headers) as r:
            assert r.status == 202
        told = b""
        while b"press L to listen" not in told:
            told = await asyncio.wait_for(proc.stdout.readline(), MIX_TIMEOUT)
            assert told, "tutti join ended before the mix was ready"
        assert told.decode().strip() == (
            "The choir's mix of the last take is ready — press L to listen"
        )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await proc.communicate()


async def _roster(m: MixedTake) -> list[dict[str, Any]]:
    async with m.http.get("/api/session/roster", headers=m.leader.headers) as r:
        body: dict[str, Any] = await r.json()
        return list(body["participants"])
