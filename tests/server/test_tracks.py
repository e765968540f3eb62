"""Backing tracks over HTTP: upload, download (Range, ETag, 304, 416), membership, bad files."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile as sf

from tests.server.helpers import Recorder, create_session, error_of, join, write_audio
from tests.support.server import RunningServer, running_server
from tutti.audio.resample import resample_whole
from tutti.server.audiocheck import AudioCheckError, check_audio
from tutti.wire import Ev


async def put_track(
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    part: str,
    body: bytes,
    ctype: str = "audio/wav",
) -> aiohttp.ClientResponse:
    r = await http.put(
        f"/api/session/tracks/{part}", data=body, headers={**headers, "Content-Type": ctype}
    )
    await r.read()
    return r


async def test_upload_and_download(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code, "Ann", "S")
    sock = Recorder()
    await sock.connect(server.url, singer.token)
    f = tmp_path / "s.flac"
    sha = write_audio(f, frames=48000, channels=2, fmt="FLAC")
    body = f.read_bytes()
    r = await put_track(http, leader.headers, "S", body, "audio/flac")
    assert r.status == 201
    info = await r.json()
    assert info == {
        "part": "S",
        "sha256": sha,
        "frames": 48000,
        "rate": 48000,
        "channels": 2,
        "size": len(body),
        "format": "FLAC",
    }
    assert (server.config.data_dir / "tracks" / sha).read_bytes() == body
    ev = await sock.wait(Ev.SESSION, lambda d: "S" in d["tracks"])
    assert ev["tracks"]["S"]["sha256"] == sha

    async with http.get("/api/session/tracks/S", headers=singer.headers) as resp:
        assert resp.status == 200
        got = await resp.read()
        assert resp.headers["ETag"] == f'"{sha}"' and resp.headers["X-Tutti-Sha256"] == sha
        assert resp.headers["Content-Type"] == "audio/flac"
    assert hashlib.sha256(got).hexdigest() == sha

    h = {**singer.headers}
    async with http.get("/api/session/tracks/S", headers={**h, "Range": "bytes=10-99"}) as resp:
        assert resp.status == 206 and await resp.read() == body[10:100]
        assert resp.headers["Content-Range"] == f"bytes 10-99/{len(body)}"
    async with http.get("/api/session/tracks/S", headers={**h, "Range": "bytes=-16"}) as resp:
        assert resp.status == 206 and await resp.read() == body[-16:]
    async with http.get(
        "/api/session/tracks/S", headers={**h, "Range": f"bytes={len(body) - 5}-"}
    ) as resp:
        assert resp.status == 206 and await resp.read() == body[-5:]
    async with http.get(
        "/api/session/tracks/S", headers={**h, "Range": f"bytes={len(body)}-"}
    ) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(body)}"
        assert (await error_of(resp))["code"] == "range_not_satisfiable"
    async with http.get(
        "/api/session/tracks/S", headers={**h, "If-None-Match": f'"{sha}"'}
    ) as resp:
        assert resp.status == 304 and await resp.read() == b""
    async with http.get("/api/session/tracks/S", headers={**h, "If-None-Match": '"other"'}) as resp:
        assert resp.status == 200
    # If-Range with a stale ETag: the whole (new) file, not a piece of it
    async with http.get(
        "/api/session/tracks/S", headers={**h, "Range": "bytes=0-9", "If-Range": '"stale"'}
    ) as resp:
        assert resp.status == 200 and len(await resp.read()) == len(body)
    await sock.close()


async def test_download_needs_membership(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    a = await create_session(http, title="A")
    b = await create_session(http, title="B")
    singer_b = await join(http, b.code)
    f = tmp_path / "a.wav"
    write_audio(f)
    assert (await put_track(http, a.headers, "S", f.read_bytes())).status == 201
    async with http.get("/api/session/tracks/S") as r:
        assert r.status == 401
    async with http.get("/api/session/tracks/S", headers=singer_b.headers) as r:
        assert r.status == 404 and (await error_of(r))["code"] == "no_track"
    async with http.get("/api/session/tracks/S", headers=a.headers) as r:
        assert r.status == 200


def wav_header(channels: int, rate: int, bits: int, data_bytes: int) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def _good_wav(tmp: Path, **kw: object) -> bytes:
    f = tmp / "g.wav"
    write_audio(f, **kw)  # type: ignore[arg-type]
    return f.read_bytes()


def _good_flac(tmp: Path) -> bytes:
    f = tmp / "g.flac"
    write_audio(f, frames=96000, fmt="FLAC")
    return f.read_bytes()


BAD_FILES: dict[str, tuple[Callable[[Path], bytes], str, str]] = {
    "garbage": (lambda t: b"RIFF" + b"\x13\x37" * 500, "bad_audio", "readable"),
    "text": (lambda t: b"hello, I am not audio\n" * 50, "bad_audio", "readable"),
    "truncated_wav": (lambda t: _good_wav(t, frames=48000)[:40000], "bad_audio", "truncated"),
    "truncated_flac": (lambda t: _good_flac(t)[: len(_good_flac(t)) // 2], "bad_audio", ""),
    "zero_channels": (lambda t: wav_header(0, 48000, 16, 4000) + b"\0" * 4000, "bad_audio", ""),
    "huge_header": (lambda t: wav_header(1, 48000, 16, 0xFFFFFFF0) + b"\0" * 4000, "bad_audio", ""),
    "empty_data": (lambda t: wav_header(1, 48000, 16, 0), "bad_audio", ""),
    "three_channels": (lambda t: _good_wav(t, channels=3), "wrong_channels", "1 (mono)"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
async def test_bad_track_files(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path, kind: str
) -> None:
    make, code, words = BAD_FILES[kind]
    leader = await create_session(http)
    other = await create_session(http, title="Other")
    r = await put_track(http, leader.headers, "S", make(tmp_path))
    assert r.status == 422, kind
    err = await error_of(r)
    assert err["code"] == code and words in err["message"]
    assert "'S'" in err["message"]
    assert list((server.config.data_dir / "tracks").iterdir()) == []
    assert list((server.config.data_dir / "tmp").iterdir()) == []
    # another leader keeps being served
    assert (await put_track(http, other.headers, "A", _good_wav(tmp_path))).status == 201


async def test_a_backing_at_another_rate_is_stored_at_the_sessions(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A 44.1 kHz WAV (what most backings are) is converted to the session's 48 kHz: same
    sound, same timing to a fraction of a sample, no clipped peak; stored and served as
    24-bit FLAC under the converted file's sha256."""
    leader = await create_session(http)
    n = 2 * 44100
    t = np.arange(n) / 44100
    left = 0.5 * np.sin(2 * np.pi * 1000 * t)
    right = np.where(t >= 1.0, 0.25 * np.sin(2 * np.pi * 440 * (t - 1.0)), 0.0)  # from 1 s
    f = tmp_path / "cd.wav"
    sf.write(f, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    r = await put_track(http, leader.headers, "S", f.read_bytes())
    assert r.status == 201, await r.text()
    info = await r.json()
    assert (info["rate"], info["channels"], info["format"]) == (48000, 2, "FLAC")
    assert info["frames"] == 96000
    stored = server.config.data_dir / "tracks" / info["sha256"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == info["sha256"]
    assert info["size"] == stored.stat().st_size
    got, rate = sf.read(stored, always_2d=True)
    assert rate == 48000 and got.shape == (96000, 2)
    u = np.arange(96000) / 48000
    mid = slice(4800, 96000 - 4800)  # away from the ends, where the filter has no past
    assert np.max(np.abs(got[mid, 0] - 0.5 * np.sin(2 * np.pi * 1000 * u[mid]))) < 1e-4
    # a sample late or early would be off by 0.25 · 2π · 440 / 48000 = 0.014
    later = slice(48000 + 4800, 96000 - 4800)
    want = 0.25 * np.sin(2 * np.pi * 440 * (u[later] - 1.0))
    assert np.max(np.abs(got[later, 1] - want)) < 1e-4
    assert list((server.config.data_dir / "tmp").iterdir()) == []
    async with http.get("/api/session/tracks/S", headers=leader.headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "audio/flac"
        assert hashlib.sha256(await resp.read()).hexdigest() == info["sha256"]

    # at full scale, the resampler's ringing goes past it: lowered as a whole, not clipped
    square = np.where(np.sin(2 * np.pi * 100 * t) >= 0, 1.0, -1.0) * (1 - 2**-15)
    loud = tmp_path / "loud.wav"
    sf.write(loud, square, 44100, subtype="PCM_16")
    r = await put_track(http, leader.headers, "A", loud.read_bytes())
    assert r.status == 201, await r.text()
    got = sf.read(server.config.data_dir / "tracks" / (await r.json())["sha256"])[0]
    ringing = resample_whole(square[:, None].astype(np.float32), 44100, 48000)[:, 0]
    assert np.max(np.abs(ringing)) > 1.05  # what clipping would have flattened
    gain = float(np.dot(got, ringing) / np.dot(ringing, ringing))
    assert gain == pytest.approx(1 / np.max(np.abs(ringing)), rel=1e-4)  # its peak at 0 dBFS
    assert np.max(np.abs(got)) <= 1.0
    assert np.max(np.abs(got - gain * ringing)) < 1e-5  # one gain for all: no flat tops


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels", "error"),
    [
        ("WAV", "PCM_U8", 44100, 1, 0.01),  # 8-bit: its own quantisation
        ("WAV", "FLOAT", 44100, 2, 1e-4),
        ("WAV", "PCM_16", 96000, 2, 1e-4),
        ("WAV", "PCM_16", 8000, 1, 1e-4),
        ("FLAC", "PCM_16", 22050, 1, 1e-4),
        ("OGG", "VORBIS", 44100, 2, 0.02),  # lossy
        ("MP3", "MPEG_LAYER_III", 48000, 1, 0.02),  # at the session's rate: still FLAC
        ("MP3", "MPEG_LAYER_III", 32000, 2, 0.02),
    ],
)
async def test_backings_of_every_kind_become_the_sessions_rate(
    http: aiohttp.ClientSession,
    tmp_path: Path,
    server: RunningServer,
    fmt: str,
    subtype: str,
    rate: int,
    channels: int,
    error: float,
) -> None:
    leader = await create_session(http)
    n = int(2.5 * rate)
    tone = 0.4 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    f = tmp_path / f"backing.{fmt.lower()}"
    sf.write(f, np.repeat(tone[:, None], channels, axis=1), rate, format=fmt, subtype=subtype)
    r = await put_track(http, leader.headers, "S", f.read_bytes(), "audio/mpeg")
    assert r.status == 201, await r.text()
    info = await r.json()
    assert (info["format"], info["rate"], info["channels"]) == ("FLAC", 48000, channels)
    assert info["frames"] == n * 48000 // rate
    got = sf.read(server.config.data_dir / "tracks" / info["sha256"], always_2d=True)[0]
    u = np.arange(len(got))[12000:-12000] / 48000
    assert np.max(np.abs(got[12000:-12000, -1] - 0.4 * np.sin(2 * np.pi * 440 * u))) < error


async def test_an_mp3_backing_is_stored_as_flac(
    server: RunningServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Most backings a choir leader has are MP3s: decoded, converted to the session's rate
    and stored as FLAC, on time; a recording is never accepted as MP3."""
    leader = await create_session(http)
    t = np.arange(3 * 44100) / 44100
    onset = np.where(t >= 1.0, 0.25 * np.sin(2 * np.pi * 440 * (t - 1.0)), 0.0)
    mp3 = tmp_path / "backing.mp3"
    sf.write(mp3, np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), onset], axis=1), 44100)
    r = await put_track(http, leader.headers, "S", mp3.read_bytes(), "audio/mpeg")
    assert r.status == 201, await r.text()
    info = await r.json()
    assert (info["rate"], info["channels"], info["format"]) == (48000, 2, "FLAC")
    assert info["frames"] == 3 * 48000
    got = sf.read(server.config.data_dir / "tracks" / info["sha256"])[0]
    u = np.arange(3 * 48000) / 48000
    want = np.where(u >= 1.0, 0.25 * np.sin(2 * np.pi * 440 * (u - 1.0)), 0.0)
    lags = range(-48, 49)
    score = [float(np.dot(got[4800:-4800, 1], np.roll(want, d)[4800:-4800])) for d in lags]
    assert lags[int(np.argmax(score))] == 0  # the encoder's delay is taken off
    after = slice(48000 + 2400, 3 * 48000 - 4800)  # past the onset's pre-echo (lossy)

    assert np.max(np.abs(got[after, 1] - want[after])) < 0.02
    with pytest.raises(AudioCheckError, match="MP3 is not supported"):
        check_audio(mp3)  # as a take's recording is checked
    # cut off halfway: refused as any other format would be, nothing stored
    half = mp3.read_bytes()[: mp3.stat().st_size // 2]
    r = await put_track(http, leader.headers, "A", half, "audio/mpeg")
    assert r.status == 422 and "truncated" in (await error_of(r))["message"]
    assert list((server.config.data_dir / "tmp").iterdir()) == []


async def test_track_names_and_types(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    leader = await create_session(http)
    body = _good_wav(tmp_path)
    for part in ("..%2F..%2Fetc%2Fpasswd", "%2E%2E", "Descant", "a%00b"):
        r = await put_track(http, leader.headers, part, body)
        assert r.status in (400, 404), part
        assert (await error_of(r))["code"] in ("bad_part", "not_found")
    r = await put_track(http, leader.headers, "S", body, "text/plain")
    assert r.status == 415 and (await error_of(r))["code"] == "unsupported_media_type"
    assert (await put_track(http, leader.headers, "S", body)).status == 201


async def test_oversize_track_413(tmp_path: Path) -> None:
    async with running_server(tmp_path / "d", max_track_bytes=50_000) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            big = _good_wav(tmp_path, frames=48000)  # 96 kB
            r = await put_track(http, leader.headers, "S", big)
            assert r.status == 413 and "50000" in (await error_of(r))["message"]

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(big), 8192):  # no Content-Length: counted as it arrives
                    yield big[i : i + 8192]

            async with http.put(
                "/api/session/tracks/S",
                data=chunks(),
                headers={**leader.headers, "Content-Type": "audio/wav"},
            ) as r2:
                assert r2.status == 413
            assert list((srv.config.data_dir / "tmp").iterdir()) == []
            small = _good_wav(tmp_path, frames=4800)
            assert (await put_track(http, leader.headers, "S", small)).status == 201
