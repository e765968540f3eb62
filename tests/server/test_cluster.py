"""One session served by two ``tutti serve`` processes sharing a real Redis, a real PostgreSQL
and one data folder: singers on both, the leader on one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.server.helpers import (
    Leader,
    Recorder,
    Singer,
    create_session,
    join,
    upload_take,
    write_audio,
)
from tests.support.server import ServeProcess
from tests.support.services import Postgres
from tutti.wire import Ev

FRAMES = 48000 * 2


@contextlib.asynccontextmanager
async def two_servers(
    data: Path, redis_url: str, database_url: str, *extra: str
) -> AsyncIterator[tuple[ServeProcess, ServeProcess]]:
    """Two server processes started at once (both create the schema and the key file)."""
    shared = ("--redis", redis_url, "--database", database_url, *extra)
    a = ServeProcess(data, *shared, "--node", "a")
    b = ServeProcess(data, *shared, "--node", "b")
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def _roster(http: aiohttp.ClientSession, leader: Leader) -> list[dict[str, Any]]:
    async with http.get("/api/session/roster", headers=leader.headers) as r:
        assert r.status == 200, await r.text()
        entries: list[dict[str, Any]] = (await r.json())["participants"]
        return entries


async def _until_all_connected(
    http: aiohttp.ClientSession, leader: Leader, singers: list[Singer], timeout: float = 20.0
) -> list[dict[str, Any]]:
    want = {s.participant_id for s in singers}
    deadline = time.monotonic() + timeout
    while True:
        roster = await _roster(http, leader)
        if {e["participant_id"] for e in roster if e["connected"]} == want:
            return roster
        assert time.monotonic() < deadline, f"roster never showed all connected: {roster}"
        await asyncio.sleep(0.05)


async def _until_disconnected(rec: Recorder, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while rec.client.connected:
        assert time.monotonic() < deadline, "the socket stayed connected"
        await asyncio.sleep(0.05)


async def _until(
    pred: Callable[[dict[str, Any]], bool],
    http: aiohttp.ClientSession,
    leader: Leader,
    singer: Singer,
    timeout: float = 20.0,
) -> None:
    """Wait until ``singer``'s roster entry (read with ``http``) satisfies ``pred``."""
    deadline = time.monotonic() + timeout
    while True:
        (entry,) = [
            e for e in await _roster(http, leader) if e["participant_id"] == singer.participant_id
        ]
        if entry["level"] is not None and pred(entry):
            return
        assert time.monotonic() < deadline, f"roster entry never matched: {entry}"
        await asyncio.sleep(0.05)


def _connected(pid: str) -> Callable[[Any], bool]:
    return lambda d: bool(d["participant_id"] == pid and d["connected"])


def _uploaded(pid: str) -> Callable[[Any], bool]:
    return lambda d: bool(pid in d["participant_ids"] and d["state"] == "uploaded")


async def test_one_session_over_two_processes(
    tmp_path: Path, postgres: Postgres, redis_url: str
) -> None:
    data = tmp_path / "data"
    flac = tmp_path / "take.flac"
    write_audio(flac, frames=FRAMES, fmt="FLAC", seed=3)
    take_bytes = flac.read_bytes()
    async with (
        two_servers(data, redis_url, postgres.new_database()) as (a, b),
        aiohttp.ClientSession(a.url) as http_a,
        aiohttp.ClientSession(b.url) as http_b,
    ):
        leader = await create_session(http_a)
        # joining works on either process: the store is shared
        homes = [(a.url, http_a), (b.url, http_b)] * 2
        singers = [
            await join(http, leader.code, f"Singer {i}", "SATB"[i]) for i, (_, http) in
            enumerate(homes)
        ]  # fmt: skip
        lead = Recorder()
        recorders = [Recorder() for _ in singers]
        try:
            await lead.connect(a.url, leader.token)
            for rec, singer, (url, _) in zip(recorders, singers, homes, strict=True):
                await rec.connect(url, singer.token)
            # the leader on A hears of the singers connected to B, and both see all four
            for s in singers:
                await lead.wait(Ev.PARTICIPANT, _connected(s.participant_id), timeout=20)
            for http in (http_a, http_b):
                roster = await _until_all_connected(http, leader, singers)
                assert [e["name"] for e in roster] == [s.name for s in singers]
            # a singer on B reports its clock and level: the leader on A sees them
            on_b = recorders[1]
            await on_b.client.emit(
                Ev.CLOCK_REPORT,
                {"offset": 0.125, "error_bound": 0.002, "rtt_min": 0.003, "samples": 5},
            )
            await on_b.client.emit(Ev.LEVEL, {"rms_db": -18.0, "peak_db": -3.0, "lost_frames": 7})
            batch = await lead.wait(Ev.LEVELS, lambda d: singers[1].participant_id in d["levels"])
            assert batch["levels"][singers[1].participant_id]["rms_db"] == -18.0
            clocks = await lead.wait(Ev.CLOCKS, lambda d: singers[1].participant_id in d["clocks"])
            assert clocks["clocks"][singers[1].participant_id]["offset"] == 0.125
            await _until(
                lambda e: e["lost_frames"] == 7 and e["level"]["rms_db"] == -18.0,
                http_a,
                leader,
                singers[1],
            )

            async with http_a.post("/api/session/takes", headers=leader.headers) as r:
                assert r.status == 201, await r.text()
                take_id = (await r.json())["take_id"]
            async with http_a.post(
                f"/api/session/takes/{take_id}/start", json={"lead_s": 2.0}, headers=leader.headers
            ) as r:
                assert r.status == 200, await r.text()
            for rec in recorders:
                start = await rec.wait(Ev.TAKE_START, lambda d: d["take_id"] == take_id, 20)
                (arrived,) = [t for n, d, t in rec.events if n == Ev.TAKE_START]
                # one host, one CLOCK_MONOTONIC: the server's t0 and our arrival time compare
                assert arrived < start["t0"], (
                    f"take.start arrived {arrived - start['t0']:.3f} s late"
                )

            # each singer uploads to the process it is connected to
            await asyncio.gather(
                *(
                    upload_take(http, s.token, take_id, take_bytes, FRAMES)
                    for s, (_, http) in zip(singers, homes, strict=True)
                )
            )
            for s in singers:
                await lead.wait(Ev.TAKE_UPDATES, _uploaded(s.participant_id), timeout=20)

            async with http_b.post(
                f"/api/session/takes/{take_id}/stop", headers=leader.headers
            ) as r:
                assert r.status == 200, await r.text()
            for rec in [lead, *recorders]:
                await rec.wait(Ev.TAKE_STOP, lambda d: d["take_id"] == take_id, 20)
            async with http_b.get(
                f"/api/session/takes/{take_id}/manifest", headers=leader.headers
            ) as r:
                manifest = await r.json()
            files = sorted(rec["file"] for rec in manifest["recordings"])
            assert files == sorted(f"recordings/{s.participant_id}.flac" for s in singers)
            folder = data / "takes" / leader.session_id / take_id
            for f in files:
                assert (folder / f).read_bytes() == take_bytes
            # each process kept its partial uploads in a folder of its own
            assert (data / "uploads" / "a").is_dir() and (data / "uploads" / "b").is_dir()

            # the leader deletes the session on A: the sockets on B are closed too
            async with http_a.delete("/api/session", headers=leader.headers) as r:
                assert r.status == 200, await r.text()
            for rec in recorders:
                await _until_disconnected(rec)
        finally:
            for rec in [lead, *recorders]:
                await rec.close()


async def test_killed_worker_loses_only_its_own_sockets(
    tmp_path: Path, postgres: Postgres, redis_url: str
) -> None:
    """kill -9 of one process mid-take: the singers on the other keep their sockets; those
    of the killed one reconnect to the other (as the proxy sends them), are handed the
    running take, and upload there.  On the wall clock, as processes on two hosts run."""
    data = tmp_path / "data"
    flac = tmp_path / "take.flac"
    write_audio(flac, frames=FRAMES, fmt="FLAC", seed=4)
    take_bytes = flac.read_bytes()
    async with (
        two_servers(data, redis_url, postgres.new_database(), "--clock", "realtime") as (a, b),
        aiohttp.ClientSession(b.url) as http_b,
    ):
        leader = await create_session(http_b)
        singers = [await join(http_b, leader.code, f"Singer {i}", "SATB"[i]) for i in range(4)]
        urls = [a.url, b.url, a.url, b.url]
        lead = Recorder()
        recorders = [Recorder() for _ in singers]
        again: list[Recorder] = []
        try:
            await lead.connect(b.url, leader.token)
            for rec, singer, url in zip(recorders, singers, urls, strict=True):
                await rec.connect(url, singer.token)
            await _until_all_connected(http_b, leader, singers)
            async with http_b.post("/api/session/takes", headers=leader.headers) as r:
                take_id = (await r.json())["take_id"]
            async with http_b.post(
                f"/api/session/takes/{take_id}/start", json={"lead_s": 1.0}, headers=leader.headers
            ) as r:
                assert r.status == 200, await r.text()
            t0s = {
                (await rec.wait(Ev.TAKE_START, lambda d: d["take_id"] == take_id, 20))["t0"]
                for rec in recorders
            }
            assert len(t0s) == 1
            (t0,) = t0s
            assert abs(t0 - (time.time() + 1.0)) < 10  # CLOCK_REALTIME, not the host's uptime

            await a.kill9()
            on_a = [i for i, url in enumerate(urls) if url == a.url]
            for i in on_a:
                await _until_disconnected(recorders[i])
                rec = Recorder()
                again.append(rec)
                await rec.connect(b.url, singers[i].token)
                start = await rec.wait(Ev.TAKE_START, lambda d: d["take_id"] == take_id, 20)
                assert {start["t0"]} == t0s  # the same take, on the same timeline
            for i, rec in enumerate(recorders):
                assert rec.client.connected == (i not in on_a)  # B's sockets are untouched
            await _until_all_connected(http_b, leader, singers)

            await asyncio.gather(
                *(upload_take(http_b, s.token, take_id, take_bytes, FRAMES) for s in singers)
            )
            for s in singers:
                await lead.wait(Ev.TAKE_UPDATES, _uploaded(s.participant_id), timeout=20)
            assert lead.client.connected and len(lead.of(Ev.WELCOME)) == 1
        finally:
            for rec in [lead, *recorders, *again]:
                await rec.close()


async def test_the_waiting_room_over_two_processes(
    tmp_path: Path, postgres: Postgres, redis_url: str
) -> None:
    """Singers on different processes see each other, the note set through either, and each
    other's waves; a leave on one process reaches the singers of the other."""
    async with (
        two_servers(tmp_path / "data", redis_url, postgres.new_database()) as (a, b),
        aiohttp.ClientSession(a.url) as http_a,
        aiohttp.ClientSession(b.url) as http_b,
    ):
        leader = await create_session(http_a)
        ann = await join(http_a, leader.code, "Ann", "S")
        bob = await join(http_b, leader.code, "Bob", "B")
        on_a, on_b = Recorder(), Recorder()
        try:
            await on_a.connect(a.url, ann.token)
            await on_b.connect(b.url, bob.token)
            both = [{"name": "Ann", "part": "S"}, {"name": "Bob", "part": "B"}]
            for rec in (on_a, on_b):
                await rec.wait(Ev.LOBBY, lambda d: d["here"] == both, timeout=20)
            note = "Bob's process keeps it; Ann's reads it"
            async with http_b.put(
                "/api/session/note", json={"note": note}, headers=leader.headers
            ) as r:
                assert r.status == 200, await r.text()
            await on_a.wait(Ev.LOBBY, lambda d: d["note"] == note and d["count"] == 2, timeout=20)
            await on_b.client.emit(Ev.WAVE, {})
            await on_a.wait(Ev.WAVES, lambda d: d["names"] == ["Bob"], timeout=20)
            await on_b.close()
            await on_a.wait(Ev.LOBBY, lambda d: d["count"] == 1 and d["note"] == note, timeout=20)
            newest = max(on_a.of(Ev.LOBBY), key=lambda d: d["at"])  # what Ann's window keeps
            assert newest["count"] == 1, on_a.of(Ev.LOBBY)
        finally:
            await on_a.close()
            await on_b.close()
