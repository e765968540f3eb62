"""Take uploads through the whole server with a standard tus client (tuspy), and the take
hooks' refusals: who may upload, what metadata is accepted, what a finished take shows."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import aiohttp
import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from tests.server.helpers import (
    Leader,
    Recorder,
    Singer,
    create_session,
    error_of,
    join,
    recording_meta,
    tus_create,
    tus_patch,
    write_audio,
)
from tests.support.server import RunningServer
from tutti.takeformat import parse_manifest
from tutti.wire import Ev

FRAMES = 48000 * 3


async def started_take(http: aiohttp.ClientSession, n: int = 2) -> tuple[Leader, list[Singer], str]:
    leader = await create_session(http)
    singers = [await join(http, leader.code, f"Singer {i}", "SA"[i % 2]) for i in range(n)]
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json={"lead_s": 1.0}, headers=leader.headers
    ) as r:
        assert r.status == 200
    return leader, singers, take_id


async def test_tuspy_upload_of_a_flac_take(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader, (ann, bob), take_id = await started_take(http)
    backing = tmp_path / "backing.wav"
    write_audio(backing, frames=48000)
    async with http.put(
        "/api/session/tracks/S",
        data=backing.read_bytes(),
        headers={**leader.headers, "Content-Type": "audio/wav"},
    ) as r:
        assert r.status == 201
    # tracks are snapshotted at arm time: arm a second take after the track exists
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers):
        pass
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers):
        pass
    lead = Recorder()
    await lead.connect(server.url, leader.token)

    flac = tmp_path / "take.flac"
    sha = write_audio(flac, frames=FRAMES, fmt="FLAC", seed=7)
    c = tus_client.TusClient(
        server.url + "/files/", headers={"Authorization": f"Bearer {ann.token}"}
    )
    with open(flac, "rb") as stream:  # tuspy leaves files it opens itself unclosed
        up = c.async_uploader(
            file_stream=stream,
            chunk_size=64 * 1024,
            metadata={
                "take_id": take_id,
                "filename": "take.flac",
                "sha256": sha,
                "recording": recording_meta(),
            },
        )
        await up.upload()
    assert up.offset == flac.stat().st_size

    upd = await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "uploaded")
    assert upd["participant_ids"] == [ann.participant_id] and upd["take_id"] == take_id
    async with http.get(f"/api/session/takes/{take_id}/manifest", headers=leader.headers) as r:
        manifest = parse_manifest(await r.json())
    assert manifest.take_id == take_id and manifest.rate == 48000
    (rec,) = manifest.recordings
    assert rec.file == f"recordings/{ann.participant_id}.flac"
    assert (rec.singer, rec.part, rec.sha256) == ("Singer 0", "S", sha)
    assert (rec.frames, rec.start_offset, rec.latency, rec.overflows) == (FRAMES, 700, 512, 2)
    assert rec.timeline_start == 700 - 512 and rec.device == {"name": "JACK dummy"}
    (back,) = manifest.backing
    assert back.part == "S" and back.file == "backing/S.wav"
    assert back.timeline_start == 96000  # one 4/4 bar at 120 bpm, 48 kHz
    on_disk = server.config.data_dir / "takes" / leader.session_id / take_id / rec.file
    assert hashlib.sha256(on_disk.read_bytes()).hexdigest() == sha
    for f, want in ((rec.file, sha), (back.file, back.sha256)):
        async with http.get(f"/api/session/takes/{take_id}/files/{f}", headers=leader.headers) as r:
            assert r.status == 200 and hashlib.sha256(await r.read()).hexdigest() == want
            assert r.headers["ETag"] == f'"{want}"'
    # Bob never uploaded: still expected, and not in the manifest
    async with http.get("/api/session/takes", headers=leader.headers) as r:
        takes = (await r.json())["takes"]
    states = {s["participant_id"]: s["state"] for s in takes[-1]["singers"]}
    assert states == {ann.participant_id: "uploaded", bob.participant_id: "expected"}
    # a second upload of the same take by Ann is refused
    r = await tus_create(
        http,
        ann.token,
        10,
        {"take_id": take_id, "filename": "t.flac", "recording": recording_meta()},
    )
    assert r.status == 409 and (await error_of(r))["code"] == "already_uploaded"
    await lead.close()


async def test_take_file_paths_cannot_escape(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader, _, take_id = await started_take(http, 1)
    for path in (
        "..%2F..%2Ftutti.db",
        "recordings/..%2F..%2F..%2Ftutti.db",
        "%2Fetc%2Fpasswd",
        "recordings/nobody.flac",
        "take.json",
    ):
        async with http.get(
            f"/api/session/takes/{take_id}/files/{path}", headers=leader.headers
        ) as r:
            assert r.status in (400, 404), path
            assert (await error_of(r))["code"] in ("bad_path", "no_file", "not_found")


@pytest.mark.parametrize(
    "meta_change, status, code",
    [
        ({"take_id": "nope"}, 404, "no_take"),
        ({"filename": "take.mp3"}, 400, "bad_metadata"),
        ({"filename": "../../../etc/passwd"}, 400, "bad_metadata"),
        ({"recording": "{not json"}, 400, "bad_metadata"),
        ({"recording": recording_meta(latency=-1)}, 400, "bad_metadata"),
        ({"recording": recording_meta(rate=44100)}, 422, "wrong_rate"),
    ],
)
async def test_upload_metadata_checked(
    http: aiohttp.ClientSession, meta_change: dict[str, str], status: int, code: str
) -> None:
    _, (ann, bob), take_id = await started_take(http)
    meta = {
        "take_id": take_id,
        "filename": "take.wav",
        "recording": recording_meta(),
        **meta_change,
    }
    r = await tus_create(http, ann.token, 1000, meta)
    assert r.status == status
    assert (await error_of(r))["code"] == code
    assert r.headers["Tus-Resumable"] == "1.0.0"
    good = {"take_id": take_id, "filename": "take.wav", "recording": recording_meta()}
    assert (await tus_create(http, bob.token, 1000, good)).status == 201


async def test_only_expected_singers_upload(http: aiohttp.ClientSession) -> None:
    leader, _, take_id = await started_take(http, 1)
    late = await join(http, leader.code, "Late", "T")  # joined after the take was armed
    meta = {"take_id": take_id, "filename": "take.wav", "recording": recording_meta()}
    r = await tus_create(http, late.token, 1000, meta)
    assert r.status == 403 and (await error_of(r))["code"] == "not_expected"
    other = await create_session(http, title="Other")
    stranger = await join(http, other.code)
    r = await tus_create(http, stranger.token, 1000, meta)
    assert r.status == 404 and (await error_of(r))["code"] == "no_take"
    r = await tus_create(http, "made-up", 1000, meta)
    assert r.status == 401


async def test_wrong_sha_fails_and_leader_hears(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader, (ann, _), take_id = await started_take(http)
    lead = Recorder()
    await lead.connect(server.url, leader.token)
    wav = tmp_path / "t.wav"
    write_audio(wav, frames=FRAMES)
    data = wav.read_bytes()
    r = await tus_create(
        http,
        ann.token,
        len(data),
        {
            "take_id": take_id,
            "filename": "t.wav",
            "sha256": "0" * 64,
            "recording": recording_meta(),
        },
    )
    loc = r.headers["Location"]
    resp = await tus_patch(http, loc, ann.token, 0, data)
    assert resp.status == 422
    assert "sha256" in (await resp.json())["error"]["message"]
    upd = await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "failed")
    assert "sha256" in upd["detail"]
    take_dir = server.config.data_dir / "takes" / leader.session_id / take_id
    assert not (take_dir / "recordings").exists()
    # the singer may try again with a new upload
    sha = hashlib.sha256(data).hexdigest()
    c = tus_client.TusClient(
        server.url + "/files/", headers={"Authorization": f"Bearer {ann.token}"}
    )
    up = c.async_uploader(
        file_stream=io.BytesIO(data),
        chunk_size=1 << 20,
        metadata={
            "take_id": take_id,
            "filename": "t.wav",
            "sha256": sha,
            "recording": recording_meta(),
        },
    )
    await up.upload()
    await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "uploaded")
    assert (take_dir / "recordings" / f"{ann.participant_id}.wav").read_bytes() == data
    await lead.close()


async def test_tuspy_sees_refusal(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader, _, take_id = await started_take(http, 1)
    wav = tmp_path / "t.wav"
    write_audio(wav, frames=4800)
    c = tus_client.TusClient(server.url + "/files/", headers=leader.headers)
    up = c.async_uploader(
        file_stream=io.BytesIO(wav.read_bytes()),
        metadata={"take_id": take_id, "filename": "t.wav", "recording": recording_meta(4800)},
    )
    with pytest.raises(TusCommunicationError) as info:
        await up.upload()
    assert info.value.status_code == 403


async def test_no_upload_before_the_take_starts(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    ann = await join(http, leader.code)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    meta = {"take_id": take_id, "filename": "take.wav", "recording": recording_meta()}
    r = await tus_create(http, ann.token, 1000, meta)
    assert r.status == 409 and (await error_of(r))["code"] == "take_not_started"
