"""``tutti lead`` against the real server on port 0: a leader's whole session.

The CLI runs in-process (:func:`tests.client.lead_cli.run_cli`) while the server runs in the
test's event loop; singers are driven through the real singer API (HTTP join, Socket.IO,
tus uploads) by :class:`tests.client.lead_support.Singer`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
import soundfile as sf

from tests.client.lead_cli import run_cli
from tests.client.lead_support import CuttingProxy, Singer, serve, tone, write_wav
from tutti import takeformat, wire
from tutti.client import config
from tutti.client.leadconfig import remember_session


async def _create(server: str, *extra: str) -> dict[str, object]:
    res = await run_cli(
        "lead", "create", server, "--title", "Sofa Singers", "--bpm", "96", "--json", *extra
    )
    assert res.code == 0, res
    data = res.json()
    assert isinstance(data, dict)
    return data


async def _take_with_uploads(
    server: str, tmp_path: Path, n: int = 2, upload: int | None = None
) -> tuple[str, list[Singer], list[Path]]:
    """A session with a WAV backing for S, ``n`` singers, one stopped take; ``upload`` of them
    (default all) have uploaded a recording.  Returns (take id, singers, their files)."""
    created = await _create(server)
    backing = write_wav(tmp_path / "soprano.wav", tone(440, 1.0))
    assert (await run_cli("lead", "track", "S", str(backing))).code == 0
    parts = ["S", "A", "T", "B"]
    singers = [
        await Singer(server, f"Singer {i}", parts[i % 4]).join(str(created["code"]))
        for i in range(n)
    ]
    res = await run_cli("lead", "take", "run", "--seconds", "0.1", "--lead", "1", "--json")
    assert res.code == 0, res
    take_id = res.json()["take_id"]
    files = []
    for i, s in enumerate(singers[: n if upload is None else upload]):
        f = write_wav(tmp_path / f"rec{i}.wav", tone(220 * (i + 1), 2.0 + i))
        await s.upload(take_id, f)
        files.append(f)
    return take_id, singers, files


async def test_create_prints_code_and_remembers_token(server: str, config_dir: Path) -> None:
    res = await run_cli(
        "lead",
        "create",
        server,
        "--title",
        "Sofa Singers",
        "--meter",
        "3/4",
        "--count-in",
        "2",
        "--parts",
        "S,A,Men",
    )
    assert res.code == 0, res
    sec = config.load()["leader"]
    sid = sec["current"]["session_id"]
    entry = sec[server][sid]
    code = entry["code"]
    assert len(code) >= 4 and " ".join(code) in res.out  # shown big and spaced
    assert f"tutti join {server} --code {code}" in res.out
    assert f"{server}/j/{code}" in res.out  # the invite link
    assert entry["token"] and entry["token"] not in res.out  # the token is not printed
    res = await run_cli("lead", "roster", "--json")
    assert res.code == 0 and res.json() == {"participants": []}, res
    res = await run_cli("lead", "roster")
    assert f"nobody has joined yet (join code {code})" in res.out
    # the settings went through: 3/4, 2 bars count-in, the custom parts
    res = await run_cli(
        "lead",
        "create",
        server,
        "--title",
        "Second",
        "--json",
        "--tempo-map",
        str(_write_tempo_map(config_dir.parent)),
    )
    assert res.code == 0, res
    s2 = res.json()["settings"]
    assert s2["tempo_map"][0]["bpm"] == 72.0 and s2["tempo_map"][0]["bar"] == 8
    assert config.load()["leader"]["current"]["session_id"] == res.json()["session_id"]


def _write_tempo_map(folder: Path) -> Path:
    p = folder / "tempo.json"
    p.write_text(json.dumps([{"bar": 8, "bpm": 72}]))
    return p


async def test_track_upload_and_refusals(server: str, tmp_path: Path) -> None:
    await _create(server)
    audio = tone(330, 1.5, channels=2)
    wav = write_wav(tmp_path / "alto.wav", audio)
    res = await run_cli("lead", "track", "A", str(wav), "--json")
    assert res.code == 0, res
    info = res.json()
    assert info["sha256"] == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert info["frames"] == len(audio) and info["channels"] == 2 and info["rate"] == 48000
    # another rate: converted by the server to the session's
    slow = write_wav(tmp_path / "slow.wav", tone(330, 0.5, rate=44100), rate=44100)
    res = await run_cli("lead", "track", "T", str(slow))
    assert res.code == 0 and "converted to 48000 Hz" in res.out, res
    # unknown part, not audio: each refused with what is accepted
    res = await run_cli("lead", "track", "Q", str(wav))
    assert res.code == 2 and "not one of this session's parts ['S', 'A', 'T', 'B']" in res.err
    pdf = tmp_path / "score.flac"
    pdf.write_bytes(b"%PDF-1.7 sheet music\n" * 50)
    res = await run_cli("lead", "track", "S", str(pdf))
    assert res.code == 2 and "not an audio file" in res.err and "WAV, FLAC, OGG or MP3" in res.err


async def test_roster_shows_singers_live_state(server: str) -> None:
    created = await _create(server)
    ann = await Singer(server, "Ann", "S").join(str(created["code"]))
    bo = await Singer(server, "Bo", "B").join(str(created["code"]))
    await ann.connect()
    try:
        await ann.report(latency=480, rms_db=-18.0, overflows=3)
        for _ in range(50):  # the server handles the events asynchronously
            res = await run_cli("lead", "roster", "--json")
            people = {p["name"]: p for p in res.json()["participants"]}
            if people["Ann"].get("level") and people["Ann"].get("latency_frames") == 480:
                break
        assert people["Ann"]["connected"] is True and people["Bo"]["connected"] is False
        assert people["Ann"]["latency_frames"] == 480
        assert people["Ann"]["clock"]["error_bound"] == pytest.approx(0.0002)
        assert people["Ann"]["level"]["rms_db"] == -18.0 and people["Ann"]["overflows"] == 3
        res = await run_cli("lead", "roster")
        assert res.code == 0
        for needle in (
            "Ann",
            "Bo",
            "480 frames (10.0 ms) measured",
            "±0.20 ms",
            "not calibrated",
            "-18.0 dB",
        ):
            assert needle in res.out, (needle, res.out)
    finally:
        await ann.close()
    del bo


async def test_take_arm_start_stop_and_takes_list(server: str, tmp_path: Path) -> None:
    created = await _create(server)
    res = await run_cli("lead", "take", "start")
    assert res.code == 1 and "nobody has joined the session yet" in res.err, res
    singer = await Singer(server, "Ann", "S").join(str(created["code"]))
    await singer.connect()
    try:
        res = await run_cli("lead", "take", "arm", "--json")
        assert res.code == 0, res
        armed = res.json()
        assert armed["state"] == "armed" and armed["expected"] == [singer.participant_id]
        res = await run_cli("lead", "take", "start", "--lead", "1.5", "--json")
        assert res.code == 0, res
        started = res.json()
        assert started["take_id"] == armed["take_id"]  # start used the armed take
        assert started["t0"] - started["server_time"] == pytest.approx(1.5)
        res = await run_cli("lead", "take", "stop")
        assert res.code == 0 and f"take {armed['take_id']} stopped" in res.out, res
        res = await run_cli("lead", "take", "stop")
        assert res.code == 1 and "no take is running" in res.err
        # `take start` with nothing armed arms a new one first; --lead below 1 s is refused
        res = await run_cli("lead", "take", "start", "--lead", "0.2")
        assert res.code == 1 and "lead_s: must be from 1.0 to 30.0 seconds, got 0.2" in res.err, res
        # the singer heard it all
        names = [e for e, _ in singer.events]
        assert "take.armed" in names and "take.start" in names and "take.stop" in names
        f = write_wav(tmp_path / "ann.wav", tone(220, 1.0))
        await singer.upload(armed["take_id"], f)
        res = await run_cli("lead", "takes", "--json")
        takes = {t["take_id"]: t for t in res.json()["takes"]}
        first = takes[armed["take_id"]]
        assert first["state"] == "stopped"
        assert [(s["name"], s["state"]) for s in first["singers"]] == [("Ann", "uploaded")]
        res = await run_cli("lead", "takes")
        assert "Ann (S): uploaded" in res.out and "1/1" in res.out, res
    finally:
        await singer.close()


async def test_download_take_folder_for_mix(server: str, tmp_path: Path) -> None:
    take_id, singers, files = await _take_with_uploads(server, tmp_path, n=3)
    dest = tmp_path / "dl"
    res = await run_cli("lead", "download", take_id, str(dest), "--json")
    assert res.code == 0, res
    summary = res.json()
    assert summary["missing"] == [] and len(summary["recordings"]) == 3
    manifest = takeformat.parse_manifest(json.loads((dest / "take.json").read_text()))
    assert manifest.take_id == take_id and manifest.rate == 48000
    by_pid = {r.participant_id: r for r in manifest.recordings}
    for singer, f in zip(singers, files, strict=True):
        rec = by_pid[singer.participant_id]
        got = (dest / rec.file).read_bytes()
        assert got == f.read_bytes()
        assert hashlib.sha256(got).hexdigest() == rec.sha256
        assert rec.start_offset == 100 and rec.latency == 512 and rec.singer == singer.name
        a, rate = sf.read(str(dest / rec.file), dtype="float32", always_2d=True)
        assert rate == 48000 and len(a) == rec.frames
    (b,) = manifest.backing
    assert b.part == "S" and (dest / b.file).read_bytes() == (tmp_path / "soprano.wav").read_bytes()
    assert not list(dest.rglob("*.part")) and not list(dest.rglob("*.etag"))
    # running it again transfers nothing (every file is already there and checks out)
    res = await run_cli("lead", "download", take_id, str(dest), "--json")
    assert res.code == 0 and res.json()["bytes_downloaded"] == 0, res
    # 'last', the take's number and an id prefix name the same take
    for ref in ("last", "1", take_id[:6]):
        res = await run_cli("lead", "download", ref, str(dest), "--json")
        assert res.code == 0 and res.json()["take_id"] == take_id, (ref, res)
    # takes stay downloadable after the session is closed
    assert (await run_cli("lead", "close")).code == 0
    res = await run_cli("lead", "download", "last", str(tmp_path / "after-close"))
    assert res.code == 0, res
    assert (tmp_path / "after-close" / "take.json").exists()


async def _until_state(server: str, take_id: str, participant_id: str, state: str) -> None:
    """Coroutine: until the server has stored a singer's state (a ``take.state`` is written
    with the next batch, within a tenth of a second)."""
    sid = config.load()["leader"]["current"]["session_id"]
    token = config.load()["leader"][server][sid]["token"]
    seen = ""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(200):
            async with http.get(f"{server}/api/session/takes") as r:
                takes = (await r.json())["takes"]
            seen = next(
                s["state"]
                for t in takes
                if t["take_id"] == take_id
                for s in t["singers"]
                if s["participant_id"] == participant_id
            )
            if seen == state:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the singer's state stayed {seen!r}, not {state!r}")


async def test_download_reports_missing_singers(server: str, tmp_path: Path) -> None:
    take_id, singers, _ = await _take_with_uploads(server, tmp_path, n=2, upload=1)
    dest = tmp_path / "dl"
    res = await run_cli("lead", "download", take_id, str(dest), "--wait", "0.6")
    assert res.code == 6, res
    # nobody recorded for Singer 1 (no connection during the take): missed, and why
    assert "not yet uploaded" not in res.err
    assert (
        f"{singers[1].name} did not record this take: not connected with audio while the "
        "take ran" in " ".join(res.err.split())
    ), res.err
    manifest = takeformat.parse_manifest(json.loads((dest / "take.json").read_text()))
    assert [r.participant_id for r in manifest.recordings] == [singers[0].participant_id]
    # a singer who did record but has not uploaded yet is waited for, then reported
    await singers[1].connect()
    assert singers[1].sio is not None
    await singers[1].sio.call(
        wire.Ev.TAKE_STATE, {"take_id": take_id, "state": "recorded"}, timeout=10
    )
    await _until_state(server, take_id, singers[1].participant_id, "recorded")
    res = await run_cli("lead", "download", take_id, str(dest), "--wait", "0.6")
    assert res.code == 6, res
    assert f"not yet uploaded: {singers[1].name} (recorded)" in res.err
    await singers[1].close()
    res = await run_cli("lead", "download", "no-such-take", str(dest))
    assert res.code == 1 and "take 'no-such-take' matches no take" in res.err, res
    assert "give 'last', a number 1–1, or a take id" in res.err


async def test_download_resumes_after_interruption(server: str, tmp_path: Path) -> None:
    take_id, singers, files = await _take_with_uploads(server, tmp_path, n=1)
    # make the recording big enough that a cut lands mid-file
    big = write_wav(tmp_path / "big.wav", tone(110, 20.0, channels=2))  # 3.84 MB
    take_id2 = await _second_take(server, singers[0], big)
    sid = config.load()["leader"]["current"]["session_id"]
    token = config.load()["leader"][server][sid]["token"]
    upstream_port = int(server.rsplit(":", 1)[1])
    dest = tmp_path / "dl"
    async with CuttingProxy(upstream_port, cut_after=1_500_000) as proxy:
        via = f"http://127.0.0.1:{proxy.port}"
        remember_session(via, sid, token, "", "via proxy")
        res = await run_cli("lead", "download", take_id2, str(dest), "--server", via)
    assert res.code == 1, res
    assert "was interrupted" in res.err and "run the same command again to resume" in res.err
    (partial,) = list(dest.rglob("*.wav.part"))
    kept = partial.stat().st_size
    assert 1_000_000 < kept < big.stat().st_size
    assert not (dest / "take.json").exists()  # nothing presented as complete
    async with CuttingProxy(upstream_port, cut_after=None) as proxy:
        via = f"http://127.0.0.1:{proxy.port}"
        remember_session(via, sid, token, "", "via proxy")
        res = await run_cli("lead", "download", take_id2, str(dest), "--server", via, "--json")
        assert res.code == 0, res
        ranges = [r for r in proxy.requests if b"/files/recordings/" in r]
        assert ranges and f"Range: bytes={kept}-".encode() in ranges[0]
    rec_bytes = big.stat().st_size
    backing_bytes = (tmp_path / "soprano.wav").stat().st_size
    assert res.json()["bytes_downloaded"] == rec_bytes - kept + backing_bytes
    manifest = takeformat.parse_manifest(json.loads((dest / "take.json").read_text()))
    (rec,) = manifest.recordings
    assert (dest / rec.file).read_bytes() == big.read_bytes()
    del files, take_id


async def test_download_detects_corrupted_partial(server: str, tmp_path: Path) -> None:
    _, singers, _ = await _take_with_uploads(server, tmp_path, n=1)
    big = write_wav(tmp_path / "big.wav", tone(110, 10.0))
    take_id = await _second_take(server, singers[0], big)
    sid = config.load()["leader"]["current"]["session_id"]
    token = config.load()["leader"][server][sid]["token"]
    upstream_port = int(server.rsplit(":", 1)[1])
    dest = tmp_path / "dl"
    async with CuttingProxy(upstream_port, cut_after=400_000) as proxy:
        via = f"http://127.0.0.1:{proxy.port}"
        remember_session(via, sid, token, "", "via proxy")
        assert (await run_cli("lead", "download", take_id, str(dest), "--server", via)).code == 1
    (partial,) = list(dest.rglob("*.wav.part"))
    data = bytearray(partial.read_bytes())
    assert len(data) > 10_000, len(data)
    data[len(data) // 2] ^= 0xFF  # flipped bits on disk
    partial.write_bytes(bytes(data))
    res = await run_cli("lead", "download", take_id, str(dest), "--server", server)
    assert res.code == 1, res
    assert "does not match the manifest's" in res.err and "partial file was removed" in res.err
    assert not partial.exists() and not (dest / "take.json").exists()
    res = await run_cli("lead", "download", take_id, str(dest), "--server", server)
    assert res.code == 0, res
    (rec,) = takeformat.parse_manifest(json.loads((dest / "take.json").read_text())).recordings
    assert (dest / rec.file).read_bytes() == big.read_bytes()


async def _second_take(server: str, singer: Singer, wav: Path) -> str:
    res = await run_cli("lead", "take", "run", "--seconds", "0.1", "--lead", "1", "--json")
    assert res.code == 0, res
    take_id = str(res.json()["take_id"])
    await singer.upload(take_id, wav)
    return take_id


async def test_closed_session_and_stale_token(server: str, tmp_path: Path) -> None:
    created = await _create(server)
    await Singer(server, "Ann", "S").join(str(created["code"]))
    res = await run_cli("lead", "close")
    assert res.code == 0 and "closed" in res.out
    res = await run_cli("lead", "take", "arm")
    assert res.code == 1 and "closed" in res.err, res
    wav = write_wav(tmp_path / "s.wav", tone(440, 0.5))
    res = await run_cli("lead", "track", "S", str(wav))
    assert res.code == 1 and "closed" in res.err, res
    res = await run_cli("lead", "watch", "--duration", "1")
    assert res.code == 1 and "this session is closed" in res.out + res.err, res
    # a server whose data was reset no longer knows the saved token
    async with serve(tmp_path / "fresh-data") as fresh:
        sid = config.load()["leader"]["current"]["session_id"]
        token = config.load()["leader"][server][sid]["token"]
        remember_session(fresh, sid, token, "", "gone")
        res = await run_cli("lead", "roster")
    assert res.code == 1, res
    assert "no longer valid" in res.err and "create a new session" in res.err
    assert "`tutti lead adopt`" in res.err


async def test_help_texts_name_every_action() -> None:
    res = await run_cli("lead", "--help")
    for action in ("create", "track", "roster", "take", "takes", "download", "close", "watch"):
        assert action in res.out
    res = await run_cli("lead", "take", "--help")
    assert all(s in res.out for s in ("arm", "start", "stop", "run"))


async def test_server_refusals_reach_the_leader_as_its_sentence(
    server: str, tmp_path: Path
) -> None:
    """Past the CLI's own checks, the server's refusal arrives as one LeaderError."""
    from tutti.client.leader_api import LeaderClient, LeaderError

    await _create(server)
    sid = config.load()["leader"]["current"]["session_id"]
    token = config.load()["leader"][server][sid]["token"]
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"RIFF not really a wave file" * 40)
    async with LeaderClient(server, token) as api:
        with pytest.raises(LeaderError) as info:
            await api.upload_track("S", junk)
        assert info.value.status in (415, 422) and info.value.code
        assert "WAV" in str(info.value) or "audio" in str(info.value)
        with pytest.raises(LeaderError) as info:
            await api.arm_take()
        assert info.value.status == 409 and "nobody has joined" in str(info.value)
        with pytest.raises(LeaderError) as info:
            await api.stop_take("no-such-take")
        assert info.value.status == 404
    async with LeaderClient(server, "not-a-token") as api:
        with pytest.raises(LeaderError) as info:
            await api.roster()
        assert info.value.status == 401 and "no longer valid" in str(info.value)


async def test_expired_session_is_a_clear_message(tmp_path: Path) -> None:
    async with serve(tmp_path / "data", session_lifetime_s=1.0) as url:
        await _create(url)
        await asyncio.sleep(1.2)
        res = await run_cli("lead", "take", "start")
        assert res.code == 1, res
        assert "expired on" in res.err and "tutti lead create" in res.err, res
        res = await run_cli("lead", "takes")  # what was recorded stays listable
        assert res.code == 0, res


async def test_delete_a_take_then_the_session(server: str, tmp_path: Path) -> None:
    take_id, _, _ = await _take_with_uploads(server, tmp_path, n=1)
    res = await run_cli("lead", "delete", take_id)
    assert res.code == 2 and "--yes" in res.err, res  # no terminal to ask on: refused
    res = await run_cli("lead", "delete")
    assert res.code == 2 and "name one take to delete, or --whole-session" in res.err, res
    res = await run_cli("lead", "delete", take_id, "--yes")
    assert res.code == 0 and f"deleted take {take_id}" in res.out, res
    assert (await run_cli("lead", "takes", "--json")).json()["takes"] == []
    res = await run_cli("lead", "delete", take_id, "--yes")
    assert res.code == 1 and "take" in res.err, res
    res = await run_cli("lead", "delete", "--whole-session", "--yes")
    assert res.code == 0 and "deleted session" in res.out, res
    res = await run_cli("lead", "takes")
    assert res.code == 1 and "unknown token" in res.err, res  # the session is gone


async def test_lyrics_upload_reports_what_the_singers_will_see(server: str, tmp_path: Path) -> None:
    await _create(server, "--parts", "S,A")
    cues = tmp_path / "alto.txt"
    cues.write_text("in 1:1 Ready\n1:1 Sing\n", encoding="utf-8")
    res = await run_cli("lead", "lyrics", "A", str(cues))
    assert res.code == 0, res
    assert "words for A: 2 timed lines, the first at count-in bar 1 beat 1" in res.out
    bad = tmp_path / "bad.lrc"
    bad.write_text("[00:01.00] fine\nno time\n", encoding="utf-8")
    res = await run_cli("lead", "lyrics", "A", str(bad))
    assert res.code == 1 and "line 2" in res.err, res
    res = await run_cli("lead", "lyrics", "A", str(tmp_path / "missing.lrc"))
    assert res.code == 2 and "missing.lrc" in res.err, res


async def test_note_sets_shows_and_clears_the_waiting_rooms_note(server: str) -> None:
    await _create(server)
    res = await run_cli("lead", "note")
    assert res.code == 0 and "no note in the waiting room" in res.out, res
    res = await run_cli("lead", "note", "Tea at the break ☕\nWe start at 7:30")
    assert res.code == 0 and "the waiting room's note is now: Tea at the break" in res.out, res
    res = await run_cli("lead", "note", "--json")
    assert res.json() == {"note": "Tea at the break ☕\nWe start at 7:30"}
    res = await run_cli("lead", "note", "x" * 281)
    assert res.code == 2 and "at most 280 characters" in res.err, res
    res = await run_cli("lead", "note", "")
    assert res.code == 0 and "the note is cleared" in res.out, res
    assert (await run_cli("lead", "note", "--json")).json() == {"note": ""}
