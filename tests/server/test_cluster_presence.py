"""The live roster state: the same behaviour in one process's memory and in a real Redis
shared by two processes (here two RedisPresence objects with names of their own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tutti.server.presence import (
    DeploymentError,
    Live,
    LocalPresence,
    NodeInfo,
    Presence,
    RedisPresence,
    conflict,
)
from tutti.wire import LevelReport, LiveClock


@pytest.fixture(params=["local", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Presence, Presence]]:
    """Two processes' presences of one deployment (one shared object when local)."""
    if request.param == "local":
        one = LocalPresence()
        yield one, one
        return
    url: str = request.getfixturevalue("redis_url")
    a, b = RedisPresence(url, node="a"), RedisPresence(url, node="b")
    await a.beat()
    await b.beat()
    try:
        yield a, b
    finally:
        for p in (a, b):
            await p.redis.aclose()


async def test_connected_anywhere_and_live_state(pair: tuple[Presence, Presence]) -> None:
    a, b = pair
    await a.joined("s1", "p1", "sid-1")
    await b.joined("s1", "p1", "sid-2")  # the same singer on two processes
    await b.joined("s1", "p2", "sid-3")
    clock = LiveClock(offset=0.25, error_bound=0.001, rtt_min=0.004)
    level = LevelReport(rms_db=-20.5, peak_db=-6.0, overflows=1, lost_frames=64)
    await a.put("s1", {"p1": Live(clock=clock, level=level, lost_frames=64, last_seen=5.5)})
    seen = await b.get("s1", ["p1", "p2", "p3"])
    assert seen["p1"] == Live(True, clock, level, lost_frames=64, last_seen=5.5)
    assert seen["p2"] == Live(connected=True) and seen["p3"] == Live()
    assert await a.left("s1", "p1", "sid-1") is True  # still on b
    assert await b.left("s1", "p1", "sid-2") is False
    seen = await a.get("s1", ["p1"])
    assert not seen["p1"].connected and seen["p1"].clock == clock  # kept for the roster
    await a.forget("s1")
    assert await b.get("s1", ["p1", "p2"]) == {"p1": Live(), "p2": Live()}


async def test_a_dead_process_sockets_stop_counting(redis_url: str) -> None:
    """A process killed without cleanup stops beating; its sockets stop counting once its
    heartbeat expires, and are dropped."""
    dead = RedisPresence(redis_url, node="dead", node_ttl_s=0.5)
    alive = RedisPresence(redis_url, node="alive", node_ttl_s=30)
    try:
        await alive.beat()
        await dead.beat()
        await dead.joined("s1", "p1", "sid-1")
        await alive.joined("s1", "p2", "sid-2")
        assert {p: v.connected for p, v in (await alive.get("s1", ["p1", "p2"])).items()} == {
            "p1": True,
            "p2": True,
        }
        deadline = time.monotonic() + 20
        while (await alive.get("s1", ["p1"]))["p1"].connected:
            assert time.monotonic() < deadline, "a dead process's socket kept counting"
            await asyncio.sleep(0.05)
        assert (await alive.get("s1", ["p2"]))["p2"].connected
        assert await alive.redis.hkeys("tutti:s1:sockets:p1") == []  # dropped
        assert await alive.redis.hkeys("tutti:s1:sockets:p2") == [b"sid-2"]
    finally:
        await dead.redis.aclose()
        await alive.redis.aclose()


def test_deployment_conflicts() -> None:
    mono, pg = NodeInfo("h1", "monotonic", "sqlite"), NodeInfo("h1", "realtime", "postgresql")
    assert conflict(mono, [NodeInfo("h1", "monotonic", "sqlite")]) is None
    assert conflict(pg, [NodeInfo("h2", "realtime", "postgresql"), pg]) is None
    why = conflict(mono, [NodeInfo("h2", "monotonic", "sqlite")])
    assert why is not None and "need --clock realtime" in why and "h2" in why
    why = conflict(NodeInfo("h1", "realtime", "sqlite"), [NodeInfo("h2", "realtime", "sqlite")])
    assert why is not None and "need --database postgresql://" in why
    why = conflict(pg, [NodeInfo("h1", "monotonic", "postgresql")])
    assert why is not None and "the same --clock" in why
    why = conflict(pg, [NodeInfo("h1", "realtime", "sqlite")])
    assert why is not None and "the same --database" in why


async def test_a_process_on_another_host_with_the_monotonic_clock_refuses(
    redis_url: str,
) -> None:
    first = RedisPresence(redis_url, node="h1-0")
    other = RedisPresence(redis_url, node="h2-0")
    other.info = NodeInfo("h2", "monotonic", "sqlite")  # as a process on a second host says
    same_host = RedisPresence(redis_url, node="h1-1")
    try:
        await first.beat()
        await same_host.check_deployment()  # a second process on the same host is fine
        with pytest.raises(DeploymentError, match="need --clock realtime"):
            await other.check_deployment()
    finally:
        for p in (first, other, same_host):
            await p.redis.aclose()


async def test_more_callers_at_once_than_connections_wait_for_one(redis_url: str) -> None:
    """500 singers on one process ask at once (joins, levels, reports): past the pool's
    connections they wait for a free one instead of failing (redis-py's default pool raised
    MaxConnectionsError at 100 in use)."""
    p = RedisPresence(redis_url, node="busy")
    try:
        await p.beat()
        singers = [f"p{i}" for i in range(500)]
        await asyncio.gather(*(p.joined("s1", pid, f"sid-{pid}") for pid in singers))
        lives = {pid: Live(last_seen=float(i)) for i, pid in enumerate(singers)}
        await asyncio.gather(*(p.put("s1", {pid: live}) for pid, live in lives.items()))
        seen = await asyncio.gather(*(p.get("s1", [pid]) for pid in singers))
        assert [s[pid] for s, pid in zip(seen, singers, strict=True)] == [
            Live(True, last_seen=float(i)) for i in range(500)
        ]
    finally:
        await p.redis.aclose()


async def test_one_waiting_room_snapshot_a_turn_over_all_processes(
    pair: tuple[Presence, Presence],
) -> None:
    """Changes seen by either process are sent by one of them, once per interval; a change
    marked while the turn is taken waits for the next turn instead of being lost."""
    a, b = pair
    every = 60.0  # the interval never ends by itself here: its end is made below
    assert await a.lobby_turn({"s1", "s2"}, every) == ["s1", "s2"]
    assert await b.lobby_turn(set(), every) == []  # nothing marked any more
    due_b = await b.lobby_turn({"s1"}, every)
    if a is b:  # one process: every flush sends what changed
        assert due_b == ["s1"]
        return
    assert due_b == []  # within the interval: s1 stays marked
    assert isinstance(a, RedisPresence)
    assert await a.redis.delete("tutti:s1:lobby_turn") == 1  # the interval is over
    assert await a.lobby_turn(set(), every) == ["s1"]  # the next turn sends the mark
    assert await b.lobby_turn(set(), every) == []


async def test_a_held_waiting_room_keeps_its_marks_until_the_hold_ends(
    pair: tuple[Presence, Presence],
) -> None:
    """A big room's snapshots are spaced out: while a session is held no process takes its
    turn, and what changed meanwhile goes out once the hold ends."""
    a, b = pair
    assert await a.lobby_turn({"s1", "s2"}, 0.001) == ["s1", "s2"]
    await a.lobby_hold("s1", 60.0)
    await asyncio.sleep(0.01)  # past the 1 ms turn: only the hold stands
    assert await b.lobby_turn({"s1", "s2"}, 0.001) == ["s2"]
    assert await a.lobby_turn(set(), 0.001) == []  # s1 held, still marked
    await a.lobby_hold("s1", 0.001)  # the hold ends
    await asyncio.sleep(0.01)
    assert await b.lobby_turn(set(), 0.001) == ["s1"]


async def test_connected_without_the_live_state(pair: tuple[Presence, Presence]) -> None:
    a, b = pair
    await a.joined("s1", "p1", "sid-1")
    await b.joined("s1", "p2", "sid-2")
    await b.put("s1", {"p3": Live(last_seen=1.0)})  # seen once, no socket
    assert await a.connected("s1", ["p1", "p2", "p3", "p4"]) == {"p1", "p2"}
    assert await b.connected("s1", []) == set()


async def test_the_singers_of_a_session_over_all_processes(
    pair: tuple[Presence, Presence],
) -> None:
    """The level budget is shared by the session's singers on every process."""
    a, b = pair
    if a is b:  # one process: its own count is the count
        assert await a.singers_here("s1", 3) == 3
        return
    assert await a.singers_here("s1", 3) == 3
    assert await b.singers_here("s1", 5) == 8
    assert await a.singers_here("s1", 2) == 7
    assert await a.singers_here("s2", 1) == 1  # per session
    assert isinstance(a, RedisPresence)
    dead = RedisPresence(a.url, node="dead")  # no heartbeat: as a killed process
    try:
        await dead.singers_here("s1", 100)
        assert await b.singers_here("s1", 5) == 7
    finally:
        await dead.redis.aclose()
