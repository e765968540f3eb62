"""Sessions over real HTTP: create, join, roles, refusals, join-code rate limit."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.server.helpers import (
    SETTINGS,
    Recorder,
    bearer,
    create_session,
    error_of,
    join,
    write_audio,
)
from tests.support.server import RunningServer
from tutti.server.auth import CODE_ALPHABET, CODE_LENGTH, new_id
from tutti.wire import PROTOCOL_VERSION, Ev


async def test_healthz(http: aiohttp.ClientSession) -> None:
    async with http.get("/healthz") as r:
        assert r.status == 200
        body = await r.json()
    assert body["ok"] is True and body["protocol"] == PROTOCOL_VERSION == 2 and body["version"]


async def test_create_join_and_roles(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    assert len(leader.code) == CODE_LENGTH and set(leader.code) <= set(CODE_ALPHABET)
    # a code typed in lower case with a dash still works
    typed = leader.code[:3].lower() + "-" + leader.code[3:].lower()
    singer = await join(http, typed, "Bea", "A")
    async with http.get("/api/session", headers=leader.headers) as r:
        me = await r.json()
    assert me["role"] == "leader" and me["code"] == leader.code and me["state"] == "open"
    assert me["settings"]["title"] == SETTINGS["title"] and me["tracks"] == {}
    async with http.get("/api/session", headers=singer.headers) as r:
        me = await r.json()
    assert me["role"] == "singer" and me["participant_id"] == singer.participant_id
    assert me["part"] == "A" and me["code"] is None  # a singer never sees the join code


async def test_tokens_are_stored_hashed(server: RunningServer, http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code)
    db = (server.config.data_dir / "tutti.db").read_bytes()
    assert leader.token.encode() not in db and singer.token.encode() not in db


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "no_token"),
        ({"Authorization": "Bearer not-a-token"}, "bad_token"),
        ({"Authorization": "Basic abc"}, "no_token"),
    ],
)
async def test_unknown_or_missing_token_401(
    http: aiohttp.ClientSession, headers: dict[str, str], code: str
) -> None:
    async with http.get("/api/session", headers=headers) as r:
        assert r.status == 401
        assert (await error_of(r))["code"] == code


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"title": "x", "rate": 12345}, 400, "bad_payload"),
        ({"title": "x", "nonsense": 1}, 400, "bad_payload"),
        ({"rate": 48000}, 400, "bad_payload"),
        ([1, 2], 400, "bad_payload"),
    ],
)
async def test_bad_settings(
    http: aiohttp.ClientSession, body: object, status: int, code: str
) -> None:
    async with http.post("/api/sessions", json=body) as r:
        assert r.status == status
        assert (await error_of(r))["code"] == code
    await create_session(http)  # the server keeps serving


async def test_malformed_and_oversize_json(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/api/sessions", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and (await error_of(r))["code"] == "bad_json"
    huge = b'{"title": "' + b"x" * 200_000 + b'"}'
    async with http.post(
        "/api/sessions", data=huge, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 413 and (await error_of(r))["code"] == "too_large"
    async with http.post(
        "/api/sessions",
        data=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 400 and (await error_of(r))["code"] == "bad_content_type"
    async with http.get("/api/nothing-here") as r:
        assert r.status == 404 and (await error_of(r))["code"] == "not_found"
    await create_session(http)


@pytest.mark.parametrize(
    "body, code",
    [
        ({"code": "ZZZZZZ", "name": "Ann", "part": "S"}, "bad_code"),
        ({"name": "Ann", "part": "S"}, "bad_payload"),
        ("just a string", "bad_payload"),
    ],
)
async def test_bad_join(http: aiohttp.ClientSession, body: object, code: str) -> None:
    await create_session(http)
    async with http.post("/api/join", json=body) as r:
        assert r.status in (400, 404)
        assert (await error_of(r))["code"] == code


async def test_join_checks_name_and_part(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    for name, part in (("Ann", "Descant"), ("../../etc", "S"), ("", "S"), ("Ann", "../S")):
        async with http.post(
            "/api/join", json={"code": leader.code, "name": name, "part": part}
        ) as r:
            assert r.status == 400, (name, part)
            err = await error_of(r)
            assert err["code"] == "bad_payload"
    await join(http, leader.code, "Ann", "S")


async def test_join_without_part_lists_the_sessions_parts(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    async with http.post("/api/join", json={"code": leader.code, "name": "Ann"}) as r:
        assert r.status == 400
        err = await error_of(r)
    assert err["code"] == "bad_part"
    assert ", ".join(SETTINGS["parts"]) in err["message"]


async def test_join_code_guessing_is_rate_limited(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    statuses = []
    for i in range(32):  # many different codes: the per-address limit (3 x 10 a minute)
        async with http.post(
            "/api/join", json={"code": f"WRONG{i:02d}", "name": "Eve", "part": "S"}
        ) as r:
            statuses.append(r.status)
            if r.status == 429:
                retry = int(r.headers["Retry-After"])
                assert 1 <= retry <= 60
                assert (await error_of(r))["code"] == "rate_limited"
    assert statuses[:30] == [404] * 30 and statuses[30:] == [429, 429]
    # even the right code is refused while the address is locked out after so many guesses
    async with http.post("/api/join", json={"code": leader.code, "name": "Eve", "part": "S"}) as r:
        assert r.status == 429


async def test_closed_session_refuses_joins(http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    async with http.post("/api/session/close", headers=leader.headers) as r:
        assert r.status == 200 and (await r.json())["state"] == "closed"
    async with http.post("/api/join", json={"code": leader.code, "name": "Ann", "part": "S"}) as r:
        assert r.status == 403 and (await error_of(r))["code"] == "session_closed"
    async with http.patch("/api/session", json={"bpm": 90}, headers=leader.headers) as r:
        assert r.status == 409 and (await error_of(r))["code"] == "session_closed"


async def test_patch_settings(server: RunningServer, http: aiohttp.ClientSession) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code)
    sock = Recorder()
    await sock.connect(server.url, singer.token)
    async with http.patch(
        "/api/session", json={"bpm": 90, "count_in_bars": 2}, headers=leader.headers
    ) as r:
        assert r.status == 200
        s = await r.json()
    assert s["bpm"] == 90 and s["count_in_bars"] == 2 and s["title"] == SETTINGS["title"]
    ev = await sock.wait(Ev.SESSION)  # everyone in the session hears of it
    assert ev["settings"] == s and ev["session_id"] == leader.session_id
    await sock.close()
    async with http.patch("/api/session", json={"bpm": -3}, headers=leader.headers) as r:
        assert r.status == 400 and "bpm" in (await error_of(r))["message"]


LEADER_ONLY = [
    ("PATCH", "/api/session", {"json": {"bpm": 90}}),
    ("POST", "/api/session/close", {}),
    ("GET", "/api/session/roster", {}),
    ("PUT", "/api/session/tracks/S", {"track": True}),
    ("POST", "/api/session/takes", {}),
    ("GET", "/api/session/takes", {}),
    ("POST", "/api/session/takes/{take}/start", {"json": {"lead_s": 1.5}}),
    ("POST", "/api/session/takes/{take}/stop", {}),
    ("GET", "/api/session/takes/{take}/manifest", {}),
    ("GET", "/api/session/takes/{take}/files/backing/S.wav", {}),
]


@pytest.mark.parametrize(
    "method, path, opts", LEADER_ONLY, ids=[f"{m} {p}" for m, p, _ in LEADER_ONLY]
)
async def test_leader_only_actions_refused_for_singer(
    http: aiohttp.ClientSession, tmp_path: Path, method: str, path: str, opts: dict[str, object]
) -> None:
    leader = await create_session(http)
    singer = await join(http, leader.code)
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        assert r.status == 201
        take_id = (await r.json())["take_id"]
    kwargs: dict[str, object] = {"headers": singer.headers}
    if "json" in opts:
        kwargs["json"] = opts["json"]
    if opts.get("track"):
        f = tmp_path / "t.wav"
        write_audio(f)
        kwargs["data"] = f.read_bytes()
        kwargs["headers"] = {**singer.headers, "Content-Type": "audio/wav"}
    async with http.request(method, path.format(take=take_id), **kwargs) as r:  # type: ignore[arg-type]
        assert r.status == 403
        err = await error_of(r)
        assert err["code"] == "leader_only" and "leader" in err["message"]
    # nothing changed: the session is open, the take still armed, no track stored
    async with http.get("/api/session/takes", headers=leader.headers) as r:
        takes = (await r.json())["takes"]
    assert [t["state"] for t in takes] == ["armed"]
    async with http.get("/api/session", headers=leader.headers) as r:
        s = await r.json()
    assert s["state"] == "open" and s["tracks"] == {} and s["settings"]["bpm"] == 120


async def test_tokens_are_per_session(http: aiohttp.ClientSession) -> None:
    a = await create_session(http, title="A")
    b = await create_session(http, title="B")
    singer_b = await join(http, b.code)
    async with http.post("/api/session/takes", headers=a.headers) as r:
        assert r.status == 409  # nobody joined A: B's singer does not count
        assert (await error_of(r))["code"] == "no_singers"
    async with http.get("/api/session", headers=bearer(singer_b.token)) as r:
        assert (await r.json())["session_id"] == b.session_id


def test_ids_never_start_with_a_dash() -> None:
    """Leaders pass ids on the command line, where ``-zBg2…`` reads as an option (a lead
    test failed on such a take id, 1 in 64 of them).  Of 20,000 plain urlsafe ids about 312
    start with a dash; none of these may."""
    ids = [new_id() for _ in range(20_000)]
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids) and {len(i) for i in ids} == {22}
    assert sum(i.startswith("_") for i in ids) > 100  # the rest of the alphabet stays
