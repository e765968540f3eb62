"""The singers' waiting room against the real server: ``lobby`` (who is here, the note),
the leader's note route, ``wave``/``waves``, and the coalescing that keeps 1,000 joins cheap."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.server.helpers import Recorder, create_session, error_of, join
from tests.support.server import RunningServer, running_server
from tutti.server.waitroom import (
    LOBBY_BUDGET_BYTES_S,
    LOBBY_INTERVAL_S,
    LOBBY_MAX_INTERVAL_S,
    lobby_every_s,
)
from tutti.wire import LOBBY_NAMES_MAX, NOTE_MAX_CHARS, Ev, Lobby, Waves


def _names(lobby: Any) -> list[tuple[str, str]]:
    return [(s.name, s.part) for s in Lobby.from_dict(lobby).here]


async def _singer(server: RunningServer, token: str) -> Recorder:
    rec = Recorder()
    await rec.connect(server.url, token)
    await rec.wait(Ev.WELCOME)
    return rec


async def test_singers_see_who_is_here_and_nothing_private(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    ann = await join(http, leader.code, "Ann Smith", "S")
    bob = await join(http, leader.code, "Bob", "B")
    lead = Recorder()
    await lead.connect(server.url, leader.token)
    a, b = await _singer(server, ann.token), await _singer(server, bob.token)
    try:
        both = [("Ann", "S"), ("Bob", "B")]
        got = await a.wait(Ev.LOBBY, lambda d: _names(d) == both)
        await b.wait(Ev.LOBBY, lambda d: _names(d) == both)
        assert got["count"] == 2 and got["parts"] == {"S": 1, "B": 1}
        # first names and parts only: no ids, tokens, surnames, latency or addresses
        assert all(set(entry) == {"name", "part"} for entry in got["here"])
        text = json.dumps(a.of(Ev.LOBBY) + b.of(Ev.LOBBY))
        for secret in (ann.token, bob.token, ann.participant_id, bob.participant_id, "Smith"):
            assert secret not in text
        assert "latency" not in text and "127.0.0.1" not in text
        assert lead.of(Ev.LOBBY) == []  # the leader has the roster; the lobby is the singers'
        await b.close()  # Bob leaves: Ann's waiting room says so
        await a.wait(Ev.LOBBY, lambda d: _names(d) == [("Ann", "S")] and d["count"] == 1)
    finally:
        for rec in (a, b, lead):
            await rec.close()


async def test_leader_note_reaches_the_waiting_room_and_bad_notes_are_refused(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    ann = await join(http, leader.code, "Ann", "S")
    a = await _singer(server, ann.token)
    try:
        note = "Warm up with a hum.\nWe start at 7:30 — water nearby!"
        async with http.put(
            "/api/session/note", json={"note": f"  {note} "}, headers=leader.headers
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json()) == {"note": note}
        await a.wait(Ev.LOBBY, lambda d: d["note"] == note)
        async with http.get("/api/session/note", headers=ann.headers) as r:
            assert (await r.json()) == {"note": note}  # a singer may read it too
        refusals: list[tuple[Any, int, str, str]] = [
            ({"note": "x" * (NOTE_MAX_CHARS + 1)}, 400, "bad_note", f"at most {NOTE_MAX_CHARS}"),
            ({"note": 42}, 400, "bad_note", "string"),
            ({"note": "bell\x07"}, 400, "bad_note", "plain text"),
            ({"note": "hi", "colour": "red"}, 400, "bad_note", "unknown field"),
            ([], 400, "bad_note", "JSON object"),
        ]
        for body, status, code, words in refusals:
            async with http.put("/api/session/note", json=body, headers=leader.headers) as r:
                assert r.status == status, body
                err = await error_of(r)
                assert err["code"] == code and words in err["message"], err
        async with http.put("/api/session/note", json={"note": "mine"}, headers=ann.headers) as r:
            assert r.status == 403
            assert (await error_of(r))["code"] == "leader_only"
        async with http.put("/api/session/note", json={"note": ""}, headers=leader.headers) as r:
            assert (await r.json()) == {"note": ""}  # an empty note clears it
        await a.wait(Ev.LOBBY, lambda d: d["note"] == "" and d["count"] == 1)
    finally:
        await a.close()


async def test_a_wave_reaches_the_others_once_per_ten_seconds(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    ann = await join(http, leader.code, "Ann", "S")
    bob = await join(http, leader.code, "Bob", "B")
    a, b = await _singer(server, ann.token), await _singer(server, bob.token)
    lead = Recorder()
    await lead.connect(server.url, leader.token)
    await lead.wait(Ev.WELCOME)
    try:
        await a.client.emit(Ev.WAVE, {})
        got = Waves.from_dict(await b.wait(Ev.WAVES))
        assert got.names == ("Ann",) and got.more == 0
        await a.client.emit(Ev.WAVE, {})  # again at once: refused, kindly
        err = await a.wait(Ev.ERROR, lambda d: d["event"] == Ev.WAVE)
        assert err["code"] == "too_soon" and "wave again in" in err["message"]
        await b.client.emit(Ev.WAVE, {"hello": 1})
        err = await b.wait(Ev.ERROR, lambda d: d["event"] == Ev.WAVE)
        assert err["code"] == "bad_payload" and "unknown field" in err["message"]
        await lead.client.emit(Ev.WAVE, {})
        err = await lead.wait(Ev.ERROR, lambda d: d["event"] == Ev.WAVE)
        assert err["code"] == "forbidden"
        await b.client.emit(Ev.WAVE, {})
        await a.wait(Ev.WAVES, lambda d: d["names"] == ["Bob"])
        assert [w["names"] for w in b.of(Ev.WAVES)] in (  # Ann's one wave came once
            [["Ann"], ["Bob"]],
            [["Ann"]],
        )
    finally:
        for rec in (a, b, lead):
            await rec.close()


async def test_joins_are_coalesced_into_one_lobby_a_second(tmp_path: Path) -> None:
    """N singers joining: each singer gets about one ``lobby`` per second of joining, not one
    per join (O(n) messages for the session, not O(n²))."""
    n = int(os.environ.get("TUTTI_LOBBY_N", "60"))
    async with (
        running_server(tmp_path / "data", max_joins_per_session=n + 1) as server,
        aiohttp.ClientSession(server.url) as http,
    ):
        await _coalesced(server, http, n)


async def _coalesced(server: RunningServer, http: aiohttp.ClientSession, n: int) -> None:
    leader = await create_session(http, parts=["S", "A", "T", "B"])
    watcher = await _singer(server, (await join(http, leader.code, "Wendy", "A")).token)
    tokens = [(await join(http, leader.code, f"Singer{i}", "SATB"[i % 4])).token for i in range(n)]
    recs = [Recorder() for _ in tokens]
    try:
        await watcher.wait(Ev.LOBBY, lambda d: d["count"] == 1)
        before = len(watcher.of(Ev.LOBBY))
        started = time.monotonic()
        await asyncio.gather(*(r.connect(server.url, t) for r, t in zip(recs, tokens, strict=True)))
        await watcher.wait(Ev.LOBBY, lambda d: d["count"] == n + 1, timeout=30)
        took = time.monotonic() - started
        got = len(watcher.of(Ev.LOBBY)) - before
        bound = math.ceil(took / LOBBY_INTERVAL_S) + 1
        print(f"\n{n} joins over {took:.1f} s: the watcher got {got} lobby events (≤ {bound})")
        assert 1 <= got <= bound < n
        last = Lobby.from_dict(watcher.of(Ev.LOBBY)[-1])
        want = {p: len(range(i, n, 4)) for i, p in enumerate("SATB")}
        want["A"] += 1  # Wendy
        assert last.parts == {p: k for p, k in want.items() if k}
        assert len(last.here) == min(n + 1, LOBBY_NAMES_MAX) and last.here[0].name == "Wendy"
        # every newcomer saw the whole room within the same bounded wait
        for r in recs:
            await r.wait(Ev.LOBBY, lambda d: d["count"] == n + 1, timeout=10)
        total = sum(len(r.of(Ev.LOBBY)) for r in recs)
        assert total <= n * bound  # never one per join per singer (that would be n·n/2)
    finally:
        for r in recs:
            await r.close()
        await watcher.close()


def test_a_big_room_gets_its_lobby_less_often_within_a_budget() -> None:
    assert lobby_every_s(10, 500) == LOBBY_INTERVAL_S  # a choir: every second
    assert lobby_every_s(250, 4000) == LOBBY_INTERVAL_S  # 1 MB a snapshot
    at_1000 = lobby_every_s(1000, 8000)  # 8 MB a snapshot
    assert at_1000 * LOBBY_BUDGET_BYTES_S == pytest.approx(1000 * 8000)
    assert lobby_every_s(100_000, 8000) == LOBBY_MAX_INTERVAL_S
