"""The level budget: a singer sends ``level`` only as often as the server says, which keeps a
session's total within ``LEVEL_BUDGET_PER_S`` whatever its size, and not at all while no leader
watches (issue 12: real clients' traffic was what broke the server at 1,000 singers)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.server.helpers import Recorder, create_session, join
from tests.support.server import RunningServer
from tutti.server.realtime import LEVEL_BUDGET_PER_S, LEVEL_STEPS, level_rate
from tutti.wire import MAX_LEVEL_HZ


@pytest.mark.parametrize(
    ("singers", "watching", "hz"),
    [(1, True, 10.0), (10, True, 10.0), (11, True, 5.0), (40, True, 2.0), (100, True, 1.0),
     (250, True, 0.2), (1000, True, 0.1), (5000, True, 0.1), (3, False, 0.0)],
)  # fmt: skip
def test_the_budget_shared_in_steps(singers: int, watching: bool, hz: float) -> None:
    assert level_rate(singers, watching) == hz
    assert hz in LEVEL_STEPS or hz == 0.0
    if watching and singers <= 1000:
        assert singers * hz <= LEVEL_BUDGET_PER_S and hz <= MAX_LEVEL_HZ


async def test_singers_are_told_when_a_leader_watches_and_how_often(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    singers: list[Recorder] = []
    watcher = Recorder()
    try:
        for i in range(11):
            s = Recorder()
            singers.append(s)
            await s.connect(server.url, (await join(http, leader.code, f"S{i}", "S")).token)
            welcome = await s.wait("welcome")
            assert welcome["level_hz"] == 0.0  # nobody watches yet: send nothing
        await watcher.connect(server.url, leader.token)
        await watcher.wait("roster")
        for s in singers:  # 11 singers share 100 reports a second: 5 each (a step below 9.1)
            await s.wait("level.rate", lambda d: d["hz"] == 5.0)
        await singers.pop().close()  # 10 left: 10 a second each
        for s in singers:
            await s.wait("level.rate", lambda d: d["hz"] == 10.0)
        late = Recorder()
        singers.append(late)
        await late.connect(server.url, (await join(http, leader.code, "Late", "A")).token)
        assert (await late.wait("welcome"))["level_hz"] == 5.0
        await watcher.close()
        for s in singers:
            await s.wait("level.rate", lambda d: d["hz"] == 0.0)
    finally:
        for s in [*singers, watcher]:
            await s.close()
