"""``tutti backup``: a copy taken while the server runs and uploads arrive, restored onto a fresh
data folder, gives back every session, take and recording byte for byte; damage is found."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.server.helpers import (
    Leader,
    create_session,
    join,
    put_track,
    take_meta,
    tus_create,
    tus_head,
    tus_patch,
    upload_take,
    write_audio,
)
from tests.support.server import ServeProcess
from tutti import takeformat

FRAMES = 96000
CHUNK = 4 * 1024


async def _tutti(*argv: str) -> tuple[int, str]:
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tutti",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await p.communicate()
    assert p.returncode is not None
    return p.returncode, out.decode()


async def _take(http: aiohttp.ClientSession, leader: Leader, stop: bool) -> str:
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = str((await r.json())["take_id"])
    async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers) as r:
        assert r.status == 200
    if stop:
        async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers) as r:
            assert r.status == 200
    return take_id


async def _slow_upload(
    http: aiohttp.ClientSession, token: str, take_id: str, data: bytes, backed_up: asyncio.Event
) -> None:
    """A take upload in small chunks that keeps arriving until the backup is done."""
    r = await tus_create(http, token, len(data), take_meta(take_id, data, FRAMES))
    assert r.status == 201, await r.text()
    where = r.headers["Location"]
    at = 0
    while at < len(data):
        last = backed_up.is_set()
        size = len(data) - at if last else min(CHUNK, len(data) - at - 1)
        r = await tus_patch(http, where, token, at, data[at : at + size])
        assert r.status == 204, await r.text()
        at += size
        if not last:
            await asyncio.sleep(0.02)


async def _state(url: str, leader: Leader) -> dict[str, Any]:
    """The session, its takes and every stored file's bytes, as the server gives them."""
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(url) as http:
        async with http.get("/api/session", headers=leader.headers) as r:
            assert r.status == 200
            out["session"] = await r.json()
        async with http.get("/api/session/tracks/S", headers=leader.headers) as r:
            assert r.status == 200
            out["track"] = await r.read()
        async with http.get("/api/session/takes", headers=leader.headers) as r:
            takes = (await r.json())["takes"]
        out["takes"] = {t["take_id"]: {s["name"]: s["state"] for s in t["singers"]} for t in takes}
        for t in takes:
            tid = t["take_id"]
            async with http.get(f"/api/session/takes/{tid}/manifest", headers=leader.headers) as r:
                doc = await r.json()
            out[f"manifest {tid}"] = doc
            for rec in takeformat.parse_manifest(doc).recordings:
                async with http.get(
                    f"/api/session/takes/{tid}/files/{rec.file}", headers=leader.headers
                ) as r:
                    assert r.status == 200
                    body = await r.read()
                assert hashlib.sha256(body).hexdigest() == rec.sha256, rec.file
                out[f"file {tid}/{rec.file}"] = body
    return out


async def test_backup_while_uploading_and_restore(tmp_path: Path) -> None:
    track = tmp_path / "s.wav"
    write_audio(track, frames=48000, channels=2)
    takes = []
    for seed in range(4):
        f = tmp_path / f"take{seed}.flac"
        write_audio(f, frames=FRAMES, fmt="FLAC", seed=seed)
        takes.append(f.read_bytes())
    dest, restored = tmp_path / "backup", tmp_path / "restored"
    data = tmp_path / "data"
    original = ServeProcess(data)
    again = ServeProcess(restored)
    try:
        url = await original.start()
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http)
            ann, bob, cleo = [
                await join(http, leader.code, n, p)
                for n, p in (("Ann", "S"), ("Bob", "A"), ("Cleo", "T"))
            ]
            await put_track(http, leader, "S", track)
            take1 = await _take(http, leader, stop=True)
            await upload_take(http, ann.token, take1, takes[0], FRAMES)
            await upload_take(http, bob.token, take1, takes[1], FRAMES)
            take2 = await _take(http, leader, stop=False)
            # Cleo's upload is half done when the backup starts; Bob's arrives during it
            meta = take_meta(take2, takes[2], FRAMES)
            r = await tus_create(http, cleo.token, len(takes[2]), meta)
            cleo_at = r.headers["Location"]
            half = len(takes[2]) // 2
            assert (await tus_patch(http, cleo_at, cleo.token, 0, takes[2][:half])).status == 204
            backed_up = asyncio.Event()
            upload = asyncio.create_task(_slow_upload(http, bob.token, take2, takes[3], backed_up))
            code, out = await _tutti("backup", "create", str(dest), "--data", str(data))
            backed_up.set()
            await upload
            assert code == 0, out
            assert "backed up" in out
            before = await _state(url, leader)
        await original.stop()

        code, out = await _tutti("backup", "verify", str(dest))
        assert code == 0 and "every checksum right" in out, out
        code, out = await _tutti("backup", "restore", str(dest), "--data", str(restored))
        assert code == 0, out
        url2 = await again.start()
        after = await _state(url2, leader)
        # everything complete before the backup began is back, byte for byte
        for key in ("session", "track", f"manifest {take1}"):
            assert after[key] == before[key], key
        for key in [k for k in before if k.startswith(f"file {take1}/")]:
            assert after[key] == before[key], key
        assert after["takes"][take1] == {"Ann": "uploaded", "Bob": "uploaded", "Cleo": "missed"}
        # Bob's upload, arriving while the copy ran, is in it whole or not at all (checked
        # against its sha256 by _state); Cleo resumes hers on the restored server
        async with aiohttp.ClientSession(url2) as http:
            r = await tus_head(http, cleo_at, cleo.token)
            assert r.status == 200 and int(r.headers["Upload-Offset"]) == half
            r = await tus_patch(http, cleo_at, cleo.token, half, takes[2][half:])
            assert r.status == 204, await r.text()
        final = await _state(url2, leader)
        cleo_files = [v for k, v in final.items() if k.startswith(f"file {take2}/")]
        assert takes[2] in cleo_files
    finally:
        await original.stop()
        await again.stop()


async def test_damage_and_misuse_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServeProcess(data)
    try:
        url = await server.start()
        async with aiohttp.ClientSession(url) as http:
            await create_session(http)
    finally:
        await server.stop()
    dest = tmp_path / "b"
    assert (await _tutti("backup", "create", str(dest), "--data", str(data)))[0] == 0
    code, out = await _tutti("backup", "create", str(dest), "--data", str(data))
    assert code == 1 and "exists already" in out
    code, out = await _tutti("backup", "restore", str(dest), "--data", str(data))
    assert code == 1 and "not empty" in out
    code, out = await _tutti("backup", "create", str(tmp_path / "c"), "--data", str(tmp_path))
    assert code == 1 and "no tutti.db" in out
    db = dest / "tutti.db"
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    db.write_bytes(bytes(raw))
    code, out = await _tutti("backup", "verify", str(dest))
    assert code == 1 and "does not match its checksum" in out, out
    code, out = await _tutti("backup", "restore", str(dest), "--data", str(tmp_path / "new"))
    assert code == 1 and not (tmp_path / "new").exists()
