"""Take lifecycle over real HTTP and Socket.IO: arm, start (t0 ≥ 1 s ahead) to all, stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.server.helpers import Recorder, create_session, error_of, join
from tests.support.server import RunningServer
from tutti.wire import MIN_START_LEAD_S, Ev, TakeStart


async def test_arm_needs_a_singer(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        assert r.status == 409 and (await error_of(r))["code"] == "no_singers"


async def test_take_arm_start_stop_broadcast(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    leader = await create_session(http)
    singers = [await join(http, leader.code, f"Singer {i}", "SATB"[i % 4]) for i in range(8)]
    lead = Recorder()
    await lead.connect(server.url, leader.token)
    clients = []
    for s in singers:
        c = Recorder()
        await c.connect(server.url, s.token)
        await c.wait(Ev.WELCOME)
        clients.append(c)

    async with http.post("/api/session/takes", headers=leader.headers) as r:
        assert r.status == 201
        armed = await r.json()
    assert armed["state"] == "armed"
    assert sorted(armed["expected"]) == sorted(s.participant_id for s in singers)
    for c in clients:
        assert (await c.wait(Ev.TAKE_ARMED))["take_id"] == armed["take_id"]
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        assert r.status == 409 and (await error_of(r))["code"] == "take_active"

    take_id = armed["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json={"lead_s": 3.0}, headers=leader.headers
    ) as r:
        assert r.status == 200
        started = await r.json()
    assert started["t0"] - started["server_time"] == pytest.approx(3.0, abs=1e-6)
    delays = []
    for c in clients:
        msg = TakeStart.from_dict(await c.wait(Ev.TAKE_START))
        arrived = next(t for n, _, t in c.events if n == Ev.TAKE_START)
        assert msg.take_id == take_id and msg.t0 == started["t0"]
        assert msg.settings.title == "Tuesday choir"
        # one host: server monotonic == ours; it arrived well before t0
        assert msg.t0 - arrived >= MIN_START_LEAD_S
        delays.append(arrived - msg.sent_at)
    print(f"\ntake.start delivery to 8 singers: max {max(delays) * 1e3:.2f} ms")

    async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers) as r:
        assert r.status == 409 and (await error_of(r))["code"] == "take_not_armed"
    # all but the last singer's clients say they are recording
    for c in clients[:-1]:
        await c.client.emit(Ev.TAKE_STATE, {"take_id": take_id, "state": "recording"})
    for sg in singers[:-1]:
        await lead.wait(Ev.TAKE_UPDATES, _about(sg.participant_id))
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers) as r:
        assert r.status == 200
        stopped = await r.json()
    assert stopped["state"] == "stopped" and abs(stopped["stopped_at"] - time.time()) < 5
    for c in clients:
        assert (await c.wait(Ev.TAKE_STOP))["take_id"] == take_id

    # the singer who never recorded is "missed", with the reason, not "expected" forever
    missed = await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "missed")
    assert missed == {
        "take_id": take_id,
        "participant_ids": [singers[-1].participant_id],
        "state": "missed",
        "detail": "not connected with audio while the take ran",
    }
    # singers report progress; the leader sees it and the take list shows it
    await clients[0].client.emit(Ev.TAKE_STATE, {"take_id": take_id, "state": "recorded"})
    upd = await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "recorded")
    assert upd == {
        "take_id": take_id,
        "participant_ids": [singers[0].participant_id],
        "state": "recorded",
        "detail": "",
    }
    async with http.get("/api/session/takes", headers=leader.headers) as r:
        takes = (await r.json())["takes"]
    assert len(takes) == 1 and takes[0]["state"] == "stopped"
    states = {s["participant_id"]: s["state"] for s in takes[0]["singers"]}
    assert states[singers[0].participant_id] == "recorded"
    assert states[singers[-1].participant_id] == "missed"
    assert sum(v == "recording" for v in states.values()) == 6
    assert "expected" not in states.values()
    assert takes[0]["settings"]["bpm"] == 120
    for c in [*clients, lead]:
        await c.close()


async def test_a_choirs_states_reach_the_leader_in_one_message(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    """A take stopped before it began leaves every singer missed at once: the leader gets one
    ``take.updates`` naming them all, not one message per singer (1,000 at a large choir)."""
    leader = await create_session(http)
    singers = [await join(http, leader.code, f"Singer {i}", "SATB"[i % 4]) for i in range(12)]
    lead = Recorder()
    await lead.connect(server.url, leader.token)
    await lead.wait(Ev.WELCOME)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers) as r:
        assert r.status == 200
    missed = await lead.wait(Ev.TAKE_UPDATES, lambda d: d["state"] == "missed")
    assert sorted(missed["participant_ids"]) == sorted(s.participant_id for s in singers)
    assert missed["detail"] == "never started: the take was stopped before it began"
    assert len(lead.of(Ev.TAKE_UPDATES)) == 1
    await lead.close()


def _about(participant_id: str) -> Callable[[Any], bool]:
    return lambda d: participant_id in d["participant_ids"]


@pytest.mark.parametrize("body", [{"lead_s": 0.5}, {"lead_s": "soon"}, {"lead_s": 1e9}, [1]])
async def test_start_lead_checked(http: aiohttp.ClientSession, body: object) -> None:
    leader = await create_session(http)
    await join(http, leader.code)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        take_id = (await r.json())["take_id"]
    async with http.post(
        f"/api/session/takes/{take_id}/start", json=body, headers=leader.headers
    ) as r:
        assert r.status == 400
        assert "lead_s" in (await error_of(r))["message"]
    async with http.post(f"/api/session/takes/{take_id}/start", headers=leader.headers) as r:
        assert r.status == 200  # no body: the default lead
        d = await r.json()
    assert d["t0"] - d["server_time"] >= MIN_START_LEAD_S


async def test_unknown_take_404(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    for path in ("/api/session/takes/nope/start", "/api/session/takes/nope/stop"):
        async with http.post(path, headers=leader.headers) as r:
            assert r.status == 404 and (await error_of(r))["code"] == "no_take"
    async with http.get(
        "/api/session/takes/" + "x" * 500 + "/manifest", headers=leader.headers
    ) as r:
        assert r.status == 404
