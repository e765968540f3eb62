"""Hosting on the internet: the host's session key, quotas, and join-code limits per /64."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.server.helpers import SETTINGS, create_session, error_of, join, tus_create, write_audio
from tests.support.server import ServeProcess, running_server
from tutti.server.app_keys import SERVICES
from tutti.server.client_address import address_bucket
from tutti.server.hostkey import KEY_FILE, KEY_HEADER

REC = {"rate": 48000, "channels": 1, "frames": 48000, "start_offset": 0, "latency": 0}


async def test_creation_needs_the_key_401_without_201_with(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", open_sessions=False) as srv:
        key = (tmp_path / "data" / KEY_FILE).read_text().strip()
        assert len(key) >= 24
        async with aiohttp.ClientSession(srv.url) as http:
            async with http.post("/api/sessions", json=SETTINGS) as r:
                assert r.status == 401
                assert (await error_of(r))["code"] == "no_session_key"
            bad = {KEY_HEADER: key + "x"}
            async with http.post("/api/sessions", json=SETTINGS, headers=bad) as r:
                assert r.status == 401
                assert (await error_of(r))["code"] == "bad_session_key"
            async with http.post("/api/sessions", json=SETTINGS, headers={KEY_HEADER: key}) as r:
                assert r.status == 201, await r.text()
        assert srv.app[SERVICES].host_key.open is False


async def test_tutti_serve_creates_the_key_once_and_says_how_to_give_it(tmp_path: Path) -> None:
    proc = ServeProcess(tmp_path / "data", open_sessions=False)
    url = await proc.start()
    try:
        key = (tmp_path / "data" / KEY_FILE).read_text().strip()
        assert (tmp_path / "data" / KEY_FILE).stat().st_mode & 0o077 == 0
        async with aiohttp.ClientSession(url) as http:
            async with http.post("/api/sessions", json=SETTINGS) as r:
                assert r.status == 401
            async with http.post("/api/sessions", json=SETTINGS, headers={KEY_HEADER: key}) as r:
                assert r.status == 201
    finally:
        await proc.stop()
    await proc.start()
    await proc.stop()
    assert (tmp_path / "data" / KEY_FILE).read_text().strip() == key


async def test_session_quota_refuses_with_403_naming_the_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", max_sessions=2) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            first = await create_session(http)
            await create_session(http)
            async with http.post("/api/sessions", json=SETTINGS) as r:
                assert r.status == 403
                err = await error_of(r)
            assert err["code"] == "session_quota"
            assert "--max-sessions" in err["message"] and "host" in err["message"]
            async with http.post("/api/session/close", headers=first.headers) as r:
                assert r.status == 200
            await create_session(http)  # closing one frees a slot


async def test_join_quota_refuses_with_403_naming_the_limit(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", max_joins_per_session=2) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            await join(http, leader.code, "Ann")
            await join(http, leader.code, "Bob")
            body = {"code": leader.code, "name": "Cy", "part": "S"}
            async with http.post("/api/join", json=body) as r:
                assert r.status == 403
                err = await error_of(r)
            assert err["code"] == "join_quota" and "--max-joins" in err["message"]


async def test_one_mistyping_singer_does_not_lock_out_the_room(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", join_failures_per_minute=3) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            statuses = []
            for _ in range(5):  # the same wrong code, again and again
                async with http.post(
                    "/api/join", json={"code": "WRONG2", "name": "Ann", "part": "S"}
                ) as r:
                    statuses.append(r.status)
            assert statuses == [404, 404, 404, 429, 429]
            await join(http, leader.code, "Bob")  # same address, right code: admitted
            statuses = []
            for i in range(12):  # many different codes from one address are limited too
                async with http.post(
                    "/api/join", json={"code": f"ZZZZ{i:02d}", "name": "Eve", "part": "S"}
                ) as r:
                    statuses.append(r.status)
            assert 429 in statuses


def test_ipv6_limits_key_on_the_64() -> None:
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:ffff::9")
    assert address_bucket("2001:db8:1:2::1") != address_bucket("2001:db8:1:3::1")
    assert address_bucket("192.0.2.7") == "192.0.2.7"


async def test_storage_quotas_refuse_uploads_with_413_naming_the_limit(tmp_path: Path) -> None:
    track = tmp_path / "t.wav"
    write_audio(track, frames=48000)  # 96 kB
    body = track.read_bytes()
    headers_ct = {"Content-Type": "audio/wav"}
    async with running_server(tmp_path / "a", max_session_bytes=150_000) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            h = {**leader.headers, **headers_ct}
            async with http.put("/api/session/tracks/S", data=body, headers=h) as r:
                assert r.status == 201
            async with http.put("/api/session/tracks/A", data=body, headers=h) as r:
                assert r.status == 413
                err = await error_of(r)
            assert err["code"] == "storage_quota" and "--max-session-gb" in err["message"]
            singer = await join(http, leader.code)
            async with http.post("/api/session/takes", headers=leader.headers) as r:
                take_id = (await r.json())["take_id"]
            async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers):
                pass
            meta = {"take_id": take_id, "filename": "a.wav", "recording": json.dumps(REC)}
            r = await tus_create(http, singer.token, 100_000, meta)
            assert r.status == 413
    async with running_server(tmp_path / "b", max_server_bytes=50_000) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader = await create_session(http)
            h = {**leader.headers, **headers_ct}
            async with http.put("/api/session/tracks/S", data=body, headers=h) as r:
                assert r.status == 413
                err = await error_of(r)
            assert "--max-server-gb" in err["message"]
