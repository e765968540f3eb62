"""Take uploads through the full tutti server: tus handler + the application's hooks
(singer auth, take checks, audio verification, placing the file in the take folder)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.server.helpers import (
    Leader,
    Singer,
    create_session,
    join,
    tus_create,
    tus_head,
    tus_patch,
    write_audio,
)
from tests.server.tus_support import raw_patch_cut, raw_patch_open, wait_offset
from tests.support.server import ServeProcess, running_server
from tutti.server.tus import READ_CHUNK

FRAMES = 48000 * 6


def recording(frames: int = FRAMES) -> str:
    return json.dumps(
        {
            "rate": 48000,
            "channels": 1,
            "frames": frames,
            "start_offset": 1234,
            "latency": 512,
            "latency_source": "measured",
            "overflows": 0,
            "underflows": 0,
            "shared_clock": True,
            "device": {"name": "test"},
        }
    )


async def started_take(
    http: aiohttp.ClientSession, n_singers: int = 1
) -> tuple[Leader, list[Singer], str]:
    leader = await create_session(http)
    singers = [await join(http, leader.code, name=f"Singer {i}") for i in range(n_singers)]
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        assert r.status == 201, await r.text()
        take_id = (await r.json())["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json={"lead_s": 1.0}, headers=leader.headers
    ) as r:
        assert r.status == 200, await r.text()
    return leader, singers, take_id


async def singer_state(
    http: aiohttp.ClientSession, leader: Leader, take_id: str, participant_id: str
) -> str:
    async with http.get("/api/session/takes", headers=leader.headers) as r:
        takes = (await r.json())["takes"]
    take = next(t for t in takes if t["take_id"] == take_id)
    return str(next(s["state"] for s in take["singers"] if s["participant_id"] == participant_id))


async def test_take_upload_cut_and_resumed(tmp_path: Path) -> None:
    flac = tmp_path / "take.flac"
    sha = write_audio(flac, frames=FRAMES, fmt="FLAC")
    data = flac.read_bytes()
    async with running_server(tmp_path / "data") as srv, aiohttp.ClientSession(srv.url) as http:
        leader, (ann, bob), take_id = await started_take(http, 2)
        meta = {
            "take_id": take_id,
            "filename": "take.flac",
            "sha256": sha,
            "recording": recording(),
        }
        # the leader does not upload recordings
        assert (await tus_create(http, leader.token, len(data), meta)).status == 403
        r = await tus_create(http, ann.token, len(data), meta)
        assert r.status == 201 and r.headers["Tus-Resumable"] == "1.0.0"
        location = r.headers["Location"]
        assert await singer_state(http, leader, take_id, ann.participant_id) == "uploading"
        # another singer can neither see nor write Ann's upload
        assert (await tus_head(http, location, bob.token)).status == 403
        # the connection drops in the middle of the body
        port = URL(srv.url).port
        assert port is not None
        cut = len(data) // 2 + 17
        await raw_patch_cut(
            "127.0.0.1", port, location, 0, len(data), data[:cut], owner=ann.token, pause=0.3
        )
        assert await wait_offset(http, location, cut, owner=ann.token) == cut
        r = await tus_patch(http, location, ann.token, cut, data[cut:])
        assert r.status == 204, await r.text()
        assert await singer_state(http, leader, take_id, ann.participant_id) == "uploaded"
        async with http.get(f"/api/session/takes/{take_id}/manifest", headers=leader.headers) as r:
            manifest = await r.json()
        rec = next(
            x for x in manifest["recordings"] if x.get("participant_id") == ann.participant_id
        )
        assert rec["sha256"] == sha and rec["frames"] == FRAMES and rec["start_offset"] == 1234
        async with http.get(
            f"/api/session/takes/{take_id}/files/{rec['file']}", headers=leader.headers
        ) as r:
            assert r.status == 200
            assert await r.read() == data


async def test_take_upload_refused_on_verification(tmp_path: Path) -> None:
    flac = tmp_path / "take.flac"
    sha = write_audio(flac, frames=FRAMES, fmt="FLAC")
    data = flac.read_bytes()
    async with running_server(tmp_path / "data") as srv, aiohttp.ClientSession(srv.url) as http:
        leader, (ann,), take_id = await started_take(http)
        meta = {
            "take_id": take_id,
            "filename": "take.flac",
            "sha256": sha,
            "recording": recording(frames=FRAMES + 1),
        }  # declares one frame too many
        r = await tus_create(http, ann.token, len(data), meta)
        assert r.status == 201
        location = r.headers["Location"]
        resp = await tus_patch(http, location, ann.token, 0, data)
        assert resp.status == 422
        message = (await resp.json())["error"]["message"]
        assert f"{FRAMES} frames" in message
        head = await tus_head(http, location, ann.token)
        assert head.status == 422 and head.headers["X-Tutti-Upload-State"] == "failed"
        assert await singer_state(http, leader, take_id, ann.participant_id) == "failed"


async def _poll_size(path: Path, at_least: int) -> None:
    for _ in range(500):
        if path.exists() and path.stat().st_size >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never reached {at_least} bytes")


@pytest.mark.slow
async def test_kill_9_tutti_serve_mid_upload(tmp_path: Path) -> None:
    """kill -9 ``tutti serve`` while a take upload streams; after a restart HEAD reports an
    offset whose bytes are what the client sent (those of the cut PATCH that reached the
    file are kept), the upload resumes from it and the take folder gets the identical file."""
    wav = tmp_path / "take.wav"
    sha = write_audio(wav, frames=48000 * 40, fmt="WAV")  # ~3.8 MB
    data = wav.read_bytes()
    committed = READ_CHUNK // 2 + 3
    server = ServeProcess(tmp_path / "data")
    try:
        url = await server.start()
        async with aiohttp.ClientSession(url) as http:
            leader, (ann,), take_id = await started_take(http)
            r = await tus_create(
                http,
                ann.token,
                len(data),
                {
                    "take_id": take_id,
                    "filename": "take.wav",
                    "sha256": sha,
                    "recording": recording(frames=48000 * 40),
                },
            )
            assert r.status == 201
            location = r.headers["Location"]
            part = tmp_path / "data" / "uploads" / (location.rsplit("/", 1)[1] + ".part")
            assert (await tus_patch(http, location, ann.token, 0, data[:committed])).status == 204
            port = URL(url).port
            assert port is not None
            _, writer = await raw_patch_open(
                "127.0.0.1",
                port,
                location,
                committed,
                len(data) - committed,
                data[committed : committed + 3 * READ_CHUNK],
                owner=ann.token,
            )
            await _poll_size(part, committed + 2 * READ_CHUNK)
            await server.kill9()
            writer.close()
        url = await server.start()
        async with aiohttp.ClientSession(url) as http:
            head = await tus_head(http, location, ann.token)
            assert head.status == 200
            offset = int(head.headers["Upload-Offset"])
            assert committed + 2 * READ_CHUNK <= offset <= committed + 3 * READ_CHUNK
            assert part.read_bytes() == data[:offset]
            r = await tus_patch(http, location, ann.token, offset, data[offset:])
            assert r.status == 204, r.status
            assert await singer_state(http, leader, take_id, ann.participant_id) == "uploaded"
            async with http.get(
                f"/api/session/takes/{take_id}/files/recordings/{ann.participant_id}.wav",
                headers=leader.headers,
            ) as resp:
                assert resp.status == 200 and await resp.read() == data
    finally:
        await server.stop()


async def test_tuspy_uploads_a_take(tmp_path: Path) -> None:
    """A standard tus client (tuspy) uploads a take through the full server, in chunks
    with checksums."""
    from tusclient import client as tus_client

    wav = tmp_path / "take.wav"
    sha = write_audio(wav, frames=FRAMES, fmt="WAV")
    async with running_server(tmp_path / "data") as srv, aiohttp.ClientSession(srv.url) as http:
        leader, (ann,), take_id = await started_take(http)

        def upload() -> None:
            client = tus_client.TusClient(
                srv.url + "/files/", headers={"Authorization": f"Bearer {ann.token}"}
            )
            with open(wav, "rb") as f:
                client.uploader(
                    file_stream=f,
                    chunk_size=200_000,
                    upload_checksum=True,
                    metadata={
                        "take_id": take_id,
                        "filename": "take.wav",
                        "sha256": sha,
                        "recording": recording(),
                    },
                ).upload()

        await asyncio.to_thread(upload)
        assert await singer_state(http, leader, take_id, ann.participant_id) == "uploaded"
        async with http.get(
            f"/api/session/takes/{take_id}/files/recordings/{ann.participant_id}.wav",
            headers=leader.headers,
        ) as r:
            assert await r.read() == wav.read_bytes()
