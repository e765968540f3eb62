"""A part's timed words on the server: the leader uploads them (read once, at the edge), the
singers of the session read them, and they go with the session."""

from __future__ import annotations

import aiohttp

from tests.server.helpers import create_session, error_of, join
from tests.support.server import RunningServer
from tutti.client.lyrics import fetch_words
from tutti.wire import Cue, Lyrics, SessionSettings

LRC = b"[00:01.00]Down to the river\n[00:03.50]to pray\n"
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


async def test_leader_uploads_singers_read_and_the_take_places_them(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    async with http.put("/api/session/lyrics/S", data=LRC, headers={**leader.headers, **TEXT}) as r:
        assert r.status == 201, await r.text()
        stored = Lyrics.from_dict(await r.json())
    assert stored == Lyrics(
        "S", (Cue("Down to the river", seconds=1.0), Cue("to pray", seconds=3.5))
    )
    ann = await join(http, leader.code, "Ann", "S")
    async with http.get("/api/session/lyrics/S", headers=ann.headers) as r:
        assert r.status == 200 and Lyrics.from_dict(await r.json()) == stored
    async with http.get("/api/session/lyrics/A", headers=ann.headers) as r:
        assert r.status == 404 and (await error_of(r))["code"] == "no_lyrics"

    # what tutti join does at a take's start: 120 bpm, one bar of count-in = 2 s
    settings = SessionSettings(title="t", rate=48000, bpm=120, count_in_bars=1)
    words = await fetch_words(http, server.url, ann.token, "S", settings, 20 * 48000)
    assert words.frames == [3 * 48000, round(5.5 * 48000)]
    assert words.at(3 * 48000 - 1) == ("", "Down to the river")
    assert words.at(4 * 48000) == ("Down to the river", "to pray")
    assert words.at(19 * 48000) == ("to pray", "")
    empty = await fetch_words(http, server.url, ann.token, "A", settings, 20 * 48000)
    assert empty.frames == [] and empty.at(0) == ("", "")


async def test_only_the_leader_changes_them_and_bad_files_are_refused(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    ann = await join(http, leader.code, "Ann", "S")
    async with http.put("/api/session/lyrics/S", data=LRC, headers={**ann.headers, **TEXT}) as r:
        assert r.status == 403
    cases = [
        ("S", b"[00:01.00] ok\nno time\n", 400, "bad_lyrics", "line 2"),
        ("Bass", LRC, 400, "bad_part", "not one of this session's parts"),
        ("S", b"\xff\xfe\x00", 400, "bad_lyrics", "UTF-8"),
        ("S", b"x" * (70 * 1024), 413, "too_large", ""),
    ]
    for part, data, status, code, words in cases:
        headers = {**leader.headers, **TEXT}
        async with http.put(f"/api/session/lyrics/{part}", data=data, headers=headers) as r:
            assert r.status == status, (part, await r.text())
            err = await error_of(r)
            assert err["code"] == code and words in err["message"], err
    async with http.get("/api/session/lyrics/S", headers=leader.headers) as r:
        assert r.status == 404  # nothing half-stored
    async with http.put("/api/session/lyrics/S", data=LRC, headers={**leader.headers, **TEXT}) as r:
        assert r.status == 201
    async with http.delete("/api/session/lyrics/S", headers=ann.headers) as r:
        assert r.status == 403
    async with http.delete("/api/session/lyrics/S", headers=leader.headers) as r:
        assert r.status == 200
    async with http.get("/api/session/lyrics/S", headers=ann.headers) as r:
        assert r.status == 404


async def test_they_go_with_the_session(server: RunningServer, http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    async with http.put("/api/session/lyrics/T", data=LRC, headers={**leader.headers, **TEXT}) as r:
        assert r.status == 201
    stored = list((server.config.data_dir).rglob("lyrics/*.json"))
    assert len(stored) == 1
    async with http.delete("/api/session", headers=leader.headers) as r:
        assert r.status == 200
    assert not stored[0].exists()
