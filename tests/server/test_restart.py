"""kill -9 of a ``tutti serve`` process mid-session, restart on the same data directory:
sessions, tracks, completed takes and tokens are all still there."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest

from tests.server.helpers import (
    Recorder,
    create_session,
    join,
    put_track,
    upload_take,
    write_audio,
)
from tests.support.server import ServeProcess
from tutti.wire import Ev


@pytest.mark.slow
async def test_kill_9_mid_session_and_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = ServeProcess(data_dir)
    track = tmp_path / "s.wav"
    track_sha = write_audio(track, frames=48000, channels=2)
    take_file = tmp_path / "take.flac"
    write_audio(take_file, frames=48000 * 2, fmt="FLAC", seed=3)
    take_bytes = take_file.read_bytes()
    try:
        url = await proc.start()
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http, bpm=96)
            ann = await join(http, leader.code, "Ann", "S")
            bob = await join(http, leader.code, "Bob", "B")
            await put_track(http, leader, "S", track)
            async with http.post("/api/session/takes", headers=leader.headers) as r:
                take1 = (await r.json())["take_id"]
            async with http.post(f"/api/session/takes/{take1}/start", headers=leader.headers) as r:
                assert r.status == 200
            async with http.post(f"/api/session/takes/{take1}/stop", headers=leader.headers):
                pass
            await upload_take(http, ann.token, take1, take_bytes, 96000)
            # a second take is running when the server dies; sockets are connected
            async with http.post("/api/session/takes", headers=leader.headers) as r:
                take2 = (await r.json())["take_id"]
            async with http.post(f"/api/session/takes/{take2}/start", headers=leader.headers) as r:
                assert r.status == 200
            sock = Recorder()
            await sock.connect(url, bob.token)
            await sock.wait(Ev.WELCOME)
            await sock.client.emit(Ev.CALIBRATION, {"latency_frames": 777, "source": "measured"})
            await sock.client.call(Ev.CLOCK_PROBE, {"t0": 0.0}, timeout=5)  # calibration stored
        await proc.kill9()
        await sock.close()

        url = await proc.start()
        async with aiohttp.ClientSession(url) as http:
            async with http.get("/healthz") as r:
                assert r.status == 200
            async with http.get("/api/session", headers=leader.headers) as r:
                assert r.status == 200  # the leader token still works
                s = await r.json()
            assert s["settings"]["bpm"] == 96 and s["code"] == leader.code
            assert s["tracks"]["S"]["sha256"] == track_sha
            async with http.get("/api/session/tracks/S", headers=ann.headers) as r:
                assert hashlib.sha256(await r.read()).hexdigest() == track_sha
            async with http.get("/api/session/takes", headers=leader.headers) as r:
                takes = {t["take_id"]: t for t in (await r.json())["takes"]}
            assert takes[take1]["state"] == "stopped" and takes[take2]["state"] == "running"
            states = {x["participant_id"]: x["state"] for x in takes[take1]["singers"]}
            # Bob never recorded take 1: "missed" since its stop, also after a restart
            assert states == {ann.participant_id: "uploaded", bob.participant_id: "missed"}
            async with http.get(
                f"/api/session/takes/{take1}/files/recordings/{ann.participant_id}.flac",
                headers=leader.headers,
            ) as r:
                assert r.status == 200 and await r.read() == take_bytes
            async with http.get("/api/session/roster", headers=leader.headers) as r:
                roster = {p["name"]: p for p in (await r.json())["participants"]}
            assert roster["Bob"]["latency_frames"] == 777 and not roster["Bob"]["connected"]
            # the singer reconnects with its old token: same participant
            again = Recorder()
            await again.connect(url, bob.token)
            assert (await again.wait(Ev.WELCOME))["participant_id"] == bob.participant_id
            await again.close()
            # the take that was running can be stopped; new singers can still join
            async with http.post(f"/api/session/takes/{take2}/stop", headers=leader.headers) as r:
                assert r.status == 200
            await join(http, leader.code, "Cy", "T")
            await upload_take(http, bob.token, take2, take_bytes, 96000)
    finally:
        await proc.stop()
