"""Sessions expire a set time after creation: clear refusals, takes still downloadable."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest
import socketio

from tests.server.helpers import Recorder, bearer, create_session, error_of, join
from tests.support.server import running_server
from tutti.server.app_keys import SERVICES
from tutti.wire import PROTOCOL_VERSION


async def test_expired_session_refuses_with_a_clear_message(tmp_path: Path) -> None:
    lifetime = 30 * 24 * 3600.0
    async with running_server(tmp_path / "data", session_lifetime_s=lifetime) as server:
        sessions = server.app[SERVICES].sessions
        async with aiohttp.ClientSession(server.url) as http:
            leader = await create_session(http)
            singer = await join(http, leader.code, "Ann", "S")
            async with http.post("/api/session/takes", headers=bearer(leader.token)) as r:
                assert r.status == 201
                take_id = (await r.json())["take_id"]
            async with http.post(
                f"/api/session/takes/{take_id}/stop", headers=bearer(leader.token)
            ) as r:
                assert r.status == 200
            # a month and a second later, by the sessions' clock
            sessions.clock = lambda: time.time() + lifetime + 1.0

            async with http.post("/api/session/takes", headers=bearer(leader.token)) as r:
                assert r.status == 409
                err = await error_of(r)
            assert err["code"] == "session_expired"
            assert "expired on" in err["message"] and "tutti lead create" in err["message"]

            async with http.post(
                "/api/join", json={"code": leader.code, "name": "Bo", "part": "A"}
            ) as r:
                assert r.status == 403
                assert (await error_of(r))["code"] == "session_expired"

            async with http.patch(
                "/api/session", json={"bpm": 90}, headers=bearer(leader.token)
            ) as r:
                assert r.status == 409
                assert (await error_of(r))["code"] == "session_expired"

            rec = Recorder()
            with pytest.raises(socketio.exceptions.ConnectionError):
                await rec.client.connect(
                    server.url,
                    auth={"token": singer.token, "protocol": PROTOCOL_VERSION},
                    transports=["websocket"],
                    wait_timeout=5,
                )
            assert rec.connect_error["code"] == "session_expired"
            await rec.close()

            # what was recorded stays the leader's to fetch
            async with http.get("/api/session/takes", headers=bearer(leader.token)) as r:
                assert r.status == 200
                assert [t["take_id"] for t in (await r.json())["takes"]] == [take_id]
            async with http.get(
                f"/api/session/takes/{take_id}/manifest", headers=bearer(leader.token)
            ) as r:
                assert r.status == 200
