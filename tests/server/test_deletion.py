"""Deletion on request and retention, through the real server: what is deleted is gone from
the data folder, from every download and from any later backup."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import aiohttp

from tests.server.helpers import (
    Recorder,
    create_session,
    error_of,
    join,
    put_track,
    upload_take,
    write_audio,
)
from tests.support.files import files_under
from tests.support.server import running_server
from tutti.server.app_keys import SERVICES
from tutti.server.backup import create_backup
from tutti.wire import Ev

FRAMES = 96000


def _holding(data: Path, content: bytes) -> list[Path]:
    """Every file under ``data`` whose bytes are ``content``."""
    held = []
    for p in files_under(data):
        try:
            if p.read_bytes() == content:
                held.append(p)
        except FileNotFoundError:  # a mix's scratch file, removed meanwhile
            pass
    return held


async def _take(http: aiohttp.ClientSession, headers: dict[str, str]) -> str:
    async with http.post("/api/session/takes", headers=headers) as r:
        take_id = str((await r.json())["take_id"])
    async with http.post(f"/api/session/takes/{take_id}/start", headers=headers) as r:
        assert r.status == 200
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=headers) as r:
        assert r.status == 200
    return take_id


async def test_deletion_and_retention(tmp_path: Path) -> None:
    data = tmp_path / "data"
    audio = []
    for seed in range(4):
        f = tmp_path / f"{seed}.flac"
        write_audio(f, frames=FRAMES, fmt="FLAC", seed=seed)
        audio.append(f.read_bytes())
    track = tmp_path / "s.wav"
    write_audio(track, frames=48000, channels=2, seed=9)
    async with running_server(data, keep_days=30.0) as server:
        svc = server.app[SERVICES]
        async with aiohttp.ClientSession(server.url) as http:
            leader = await create_session(http)
            ann = await join(http, leader.code, "Ann", "S")
            bob = await join(http, leader.code, "Bob", "B")
            await put_track(http, leader, "S", track)
            take1 = await _take(http, leader.headers)
            await upload_take(http, ann.token, take1, audio[0], FRAMES)
            await upload_take(http, bob.token, take1, audio[1], FRAMES)
            take2 = await _take(http, leader.headers)
            await upload_take(http, ann.token, take2, audio[2], FRAMES)
            await upload_take(http, bob.token, take2, audio[3], FRAMES)
            async with http.get("/api/session/takes", headers=leader.headers) as r:
                listed = (await r.json())["takes"]
            for t in listed:  # the leader sees when each take will be removed
                assert abs(t["expires_at"] - (t["stopped_at"] + 30 * 86400)) < 1e-6

            # Ann's own copy of what the session holds of her
            async with http.get("/api/session/my-data", headers=ann.headers) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
                z = zipfile.ZipFile(io.BytesIO(await r.read()))
            me = json.loads(z.read("me.json"))
            assert me["name"] == "Ann" and len(me["takes"]) == 2
            kept = sorted(z.read(n) for n in z.namelist() if n.startswith("recordings/"))
            assert kept == sorted([audio[0], audio[2]])
            async with http.get("/api/session/my-data", headers=leader.headers) as r:
                assert r.status == 403 and (await error_of(r))["code"] == "singer_only"
            assert not list((data / "tmp").glob("my-data-*")), "the zip is not left behind"

            # Ann deletes her recordings: gone from disk, downloads and a later backup
            assert _holding(data, audio[0]) and _holding(data, audio[2])
            async with http.delete("/api/session/recordings", headers=ann.headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["deleted_recordings"] == 2
            assert _holding(data, audio[0]) == [] and _holding(data, audio[2]) == []
            for take_id in (take1, take2):
                async with http.get(
                    f"/api/session/takes/{take_id}/manifest", headers=leader.headers
                ) as r:
                    recs = (await r.json())["recordings"]
                assert [x["singer"] for x in recs] == ["Bob"]
            async with http.get("/api/session/takes", headers=leader.headers) as r:
                states = {s["name"]: s["state"] for s in (await r.json())["takes"][0]["singers"]}
            assert states == {"Ann": "deleted", "Bob": "uploaded"}
            backup = create_backup(data, tmp_path / "backup")
            assert _holding(tmp_path / "backup", audio[0]) == []
            assert _holding(tmp_path / "backup", audio[1]) != []
            assert len(backup.files) > 3

            # the leader deletes take 2; a singer cannot
            async with http.delete(f"/api/session/takes/{take2}", headers=bob.headers) as r:
                assert r.status == 403
            async with http.delete(f"/api/session/takes/{take2}", headers=leader.headers) as r:
                assert r.status == 200, await r.text()
            assert _holding(data, audio[3]) == []
            async with http.get(
                f"/api/session/takes/{take2}/manifest", headers=leader.headers
            ) as r:
                assert r.status == 404

            sock = Recorder()
            await sock.connect(server.url, bob.token)
            await sock.wait(Ev.WELCOME)

            # retention: a month and a day later, take 1 goes by itself
            svc.sessions.clock = lambda: time.time() + 31 * 86400
            assert await svc.retention.expire() == 1
            svc.sessions.clock = time.time
            assert _holding(data, audio[1]) == []
            async with http.get("/api/session/takes", headers=leader.headers) as r:
                assert (await r.json())["takes"] == []
            assert not files_under(data / "takes", "*.flac")

            # the leader deletes the session: tokens, rows, track and folders gone
            async with http.delete("/api/session", headers=leader.headers) as r:
                assert r.status == 200, await r.text()
            for who in (leader, bob):
                async with http.get("/api/session", headers=who.headers) as r:
                    assert r.status == 401
            assert _holding(data, track.read_bytes()) == []
            assert not (
                data / "takes" / svc.store.sessions_created_before(1e12).__len__().__str__()
            ).exists()
            assert svc.store.sessions_created_before(time.time() + 1) == []
            assert list((data / "takes").iterdir()) == []
            for _ in range(100):
                if not sock.client.connected:
                    break
                await sock.client.sleep(0.05)
            assert not sock.client.connected, "the deleted session's sockets are closed"
            await sock.close()
