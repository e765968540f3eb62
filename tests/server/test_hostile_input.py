"""Hostile input at the edge: deep JSON, bad recording metadata, reserved Socket.IO names,
malformed requests logged as one line — each a 4xx or a refusal, never a 5xx or traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from tests.server.helpers import (
    Recorder,
    bearer,
    create_session,
    error_of,
    join,
    tus_create,
)
from tests.support.server import RunningServer
from tutti.wire import Ev

DEEP = "[" * 60000


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
            await rec.wait(Ev.ERROR, lambda d, n=name: d["event"] == n)
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
