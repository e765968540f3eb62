"""``/metrics`` for the host: Prometheus text that moves with a take, readable only by the host;
one structured log line per request and per take event."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.helpers import (
    Recorder,
    create_session,
    error_of,
    join,
    take_meta,
    tus_create,
    tus_patch,
    upload_take,
    write_audio,
)
from tests.support.server import running_server
from tutti.wire import Ev


async def _scrape(http: aiohttp.ClientSession, **headers: str) -> dict[tuple[str, str], float]:
    """``{(sample name, label values joined): value}`` as a real Prometheus parser reads it."""
    async with http.get("/metrics", headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    return {
        (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_move_when_a_take_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tutti")
    take_file = tmp_path / "take.flac"
    write_audio(take_file, frames=96000, fmt="FLAC", seed=3)
    data = take_file.read_bytes()
    async with running_server(tmp_path / "data") as server:
        async with aiohttp.ClientSession(server.url) as http:
            before = await _scrape(http)
            assert before[("tutti_sessions_open", "")] == 0
            assert before[("tutti_connections", "role=singer")] == 0
            assert before[("tutti_upload_bytes_total", "")] == 0
            assert before[("tutti_event_loop_lag_seconds", "")] >= 0

            leader = await create_session(http)
            ann = await join(http, leader.code, "Ann", "S")
            bob = await join(http, leader.code, "Bob", "B")
            sock = Recorder()
            await sock.connect(server.url, ann.token)
            try:
                await sock.wait(Ev.WELCOME)
                async with http.post("/api/session/takes", headers=leader.headers) as r:
                    take_id = (await r.json())["take_id"]
                async with http.post(
                    f"/api/session/takes/{take_id}/start", headers=leader.headers
                ) as r:
                    assert r.status == 200
                running = await _scrape(http)
                async with http.post(
                    f"/api/session/takes/{take_id}/stop", headers=leader.headers
                ) as r:
                    assert r.status == 200
                await upload_take(http, ann.token, take_id, data, 96000)
                junk = b"not audio at all" * 4096
                r = await tus_create(http, bob.token, len(junk), take_meta(take_id, junk, 96000))
                r = await tus_patch(http, r.headers["Location"], bob.token, 0, junk)
                assert r.status == 422, await r.text()
                after = await _scrape(http)
            finally:
                await sock.close()
            gone = await _scrape(http)

    assert running[("tutti_sessions_open", "")] == 1
    assert running[("tutti_connections", "role=singer")] == 1
    assert running[("tutti_takes", "state=running")] == 1
    assert after[("tutti_takes", "state=running")] == 0
    assert after[("tutti_takes", "state=stopped")] == 1
    assert after[("tutti_upload_bytes_total", "")] == len(data) + len(junk)
    assert after[("tutti_uploads_completed_total", "")] == 1
    assert after[("tutti_upload_failures_total", "")] == 1
    assert after[("tutti_http_requests_total", "status=2xx")] > before.get(
        ("tutti_http_requests_total", "status=2xx"), 0
    )
    assert gone[("tutti_connections", "role=singer")] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("method=POST path=/files/ status=201") for m in lines), lines
    assert any("method=GET path=/metrics status=200" in m for m in lines)
    for event in ("armed", "started", "stopped", "upload_stored", "upload_refused"):
        assert any(f"event={event} " in m and take_id in m for m in lines), (event, lines)


async def test_metrics_are_for_the_host_only(tmp_path: Path) -> None:
    async with running_server(
        tmp_path / "data", open_sessions=False, session_key="host-key-123"
    ) as server:
        async with aiohttp.ClientSession(server.url) as http:
            # through a proxy every visitor would look local: a forwarded request is refused
            async with http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}) as r:
                assert r.status == 403
                err = await error_of(r)
            assert err["code"] == "metrics_forbidden" and "Bearer" in err["message"]
            async with http.get(
                "/metrics", headers={"X-Forwarded-For": "1.2.3.4", "Authorization": "Bearer no"}
            ) as r:
                assert r.status == 403
            samples = await _scrape(
                http, **{"X-Forwarded-For": "1.2.3.4", "Authorization": "Bearer host-key-123"}
            )
            assert ("tutti_sessions_open", "") in samples
