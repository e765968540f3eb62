"""Hostile input at the edge: deep JSON, bad recording metadata, reserved Socket.IO names,
malformed requests logged as one line — each a 4xx or a refusal, never a 5xx or traceback."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.server.helpers import (
    Recorder,
    bearer,
    create_session,
    error_of,
    join,
    tus_create,
    write_audio,
)
from tests.support.server import RunningServer
from tutti.wire import Ev

DEEP = "[" * 60000


def _about(event: str, refusal: Any) -> bool:
    return isinstance(refusal, dict) and refusal.get("event") == event


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/sessions"), ("POST", "/api/join"), ("PATCH", "/api/session")],
)
async def test_deep_json_is_400_naming_the_nesting(
    http: aiohttp.ClientSession, method: str, path: str
) -> None:
    leader = await create_session(http)
    async with http.request(
        method,
        path,
        data=DEEP,
        headers={"Content-Type": "application/json", **leader.headers},
    ) as r:
        assert r.status == 400
        err = await error_of(r)
    assert err["code"] == "bad_json" and "nested too deeply" in err["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("overflows", "abc"),
        ("overflows", [1]),
        ("underflows", {}),
        ("underflows", 1e400),
        ("latency", 10**30),
        ("start_offset", 10**30),
        ("frames", True),
    ],
)
async def test_bad_recording_fields_are_400_naming_the_field(
    http: aiohttp.ClientSession, field: str, value: object
) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers) as r:
        assert r.status == 200, await r.text()
    rec = {"rate": 48000, "channels": 1, "frames": 4800, "start_offset": 0, "latency": 0}
    text = (
        json.dumps({**rec, field: value})
        if value != 1e400
        else (json.dumps(rec)[:-1] + f', "{field}": 1e400}}')
    )
    r = await tus_create(
        http, singer.token, 100, {"take_id": take_id, "filename": "a.wav", "recording": text}
    )
    assert r.status == 400, r.status


async def test_reserved_event_names_are_refused_and_the_socket_keeps_working(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code)
    watcher, rec = Recorder(), Recorder()
    try:
        await watcher.connect(server.url, leader.token)
        await rec.connect(server.url, singer.token)
        await watcher.wait("roster")
        for name in ("disconnect", "connect", "connect_error", "*"):
            await rec.client.emit(name, {})
            refusal = await rec.wait(Ev.ERROR, functools.partial(_about, name))
            assert "reserved" in refusal["message"]
        reply = await rec.client.call("clock.probe", {"t0": 1.0}, timeout=5)
        assert reply["t0"] == 1.0
        async with http.get("/api/session/roster", headers=leader.headers) as r:
            roster = (await r.json())["participants"]
        assert roster[0]["connected"] is True
    finally:
        await rec.close()
        await watcher.close()


async def test_malformed_http_logs_one_line_without_traceback(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    for _ in range(20):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()
        head = await reader.read(200)
        writer.close()
        await writer.wait_closed()
        assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400")
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].exc_info is None and "BadHttpMessage" in lines[0].getMessage()
    async with aiohttp.ClientSession(server.url) as http:
        async with http.get("/healthz", headers=bearer("x")) as r:
            assert r.status == 200


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT"])
@pytest.mark.parametrize("fmt", ["WAV", "WAVEX"])
async def test_every_standard_wav_form_is_a_backing_track(
    http: aiohttp.ClientSession, tmp_path: Path, fmt: str, subtype: str
) -> None:
    leader = await create_session(http)
    path = tmp_path / "t.wav"
    write_audio(path, fmt=fmt, subtype=subtype)
    headers = {**leader.headers, "Content-Type": "audio/wav"}
    async with http.put("/api/session/tracks/S", data=path.read_bytes(), headers=headers) as r:
        assert r.status == 201, await r.text()
        assert (await r.json())["format"] == "WAV"


async def test_flac_damaged_in_the_middle_is_refused(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    leader = await create_session(http)
    path = tmp_path / "t.flac"
    write_audio(path, frames=48000 * 4, fmt="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)
    headers = {**leader.headers, "Content-Type": "audio/flac"}
    async with http.put("/api/session/tracks/S", data=bytes(data), headers=headers) as r:
        assert r.status == 422, await r.text()
        err = await error_of(r)
    assert err["code"] == "bad_audio"


async def test_every_reply_has_security_headers_and_no_versions(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    replies = []
    for method, path in [("GET", "/healthz"), ("GET", "/api/session"), ("GET", "/nowhere")]:
        async with http.request(method, path, headers=leader.headers) as r:
            await r.read()
            replies.append(r)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00garbage\r\n\r\n")
    raw = await reader.read(1000)
    writer.close()
    await writer.wait_closed()
    assert b"\r\nServer: tutti\r\n" in raw and b"aiohttp" not in raw
    for r in replies:
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Server"] == "tutti"
        assert r.headers["Cache-Control"] == "no-store"
