"""The cap on unfinished take uploads per singer, through real tus requests to a real server:
finishing, terminating or expiring an upload frees a slot; other singers are not affected."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.server.helpers import (
    Leader,
    Singer,
    error_of,
    recording_meta,
    tus_patch,
    write_audio,
)
from tests.server.test_take_uploads import started_take
from tests.server.tus_support import TUS
from tests.support.server import running_server
from tutti.tusheaders import encode_metadata

FRAMES = 4800


def meta(take_id: str) -> str:
    return str(
        encode_metadata(
            {"take_id": take_id, "filename": "take.wav", "recording": recording_meta(FRAMES)}
        )
    )


async def post(
    http: aiohttp.ClientSession, who: Singer, take_id: str, length: int
) -> tuple[int, Any]:
    """Create an upload; (201, its URL) or (status, the error object)."""
    async with http.post(
        "/files/",
        headers={
            **TUS,
            **who.headers,
            "Upload-Length": str(length),
            "Upload-Metadata": meta(take_id),
        },
    ) as r:
        if r.status == 201:
            return r.status, r.headers["Location"]
        return r.status, await error_of(r)


async def patch_all(http: aiohttp.ClientSession, who: Singer, url: str, body: bytes) -> int:
    return (await tus_patch(http, url, who.token, 0, body)).status


async def delete(http: aiohttp.ClientSession, who: Singer, url: str) -> int:
    async with http.delete(url, headers={**TUS, **who.headers}) as r:
        return r.status


async def singer_state(
    http: aiohttp.ClientSession, leader: Leader, take_id: str, who: Singer
) -> str:
    async with http.get("/api/session/takes", headers=leader.headers) as r:
        takes = (await r.json())["takes"]
    (take,) = [t for t in takes if t["take_id"] == take_id]
    return str({s["participant_id"]: s["state"] for s in take["singers"]}[who.participant_id])


async def next_take(http: aiohttp.ClientSession, leader: Leader, take_id: str) -> str:
    async with http.post(f"/api/session/takes/{take_id}/stop", headers=leader.headers) as r:
        assert r.status == 200
    async with http.post("/api/session/takes", headers=leader.headers) as r:
        new = str((await r.json())["take_id"])
    async with http.post(f"/api/session/takes/{new}/start", headers=leader.headers) as r:
        assert r.status == 200
    return new


async def test_cap_is_per_singer_and_finishing_or_terminating_frees_a_slot(tmp_path: Path) -> None:
    wav = tmp_path / "take.wav"
    write_audio(wav, frames=FRAMES)
    body = wav.read_bytes()
    async with running_server(tmp_path / "data", max_open_uploads_per_participant=3) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader, (ann, bob), take1 = await started_take(http)
            urls = []
            for _ in range(3):
                status, url = await post(http, ann, take1, len(body))
                assert status == 201
                urls.append(url)
            status, err = await post(http, ann, take1, len(body))
            assert status == 409 and err["code"] == "too_many_open_uploads"
            assert (err["open_uploads"], err["limit"]) == (3, 3)
            assert "3 unfinished uploads" in err["message"]
            assert "DELETE" in err["message"] and "expire" in err["message"]
            # another singer is not affected
            assert (await post(http, bob, take1, len(body)))[0] == 201

            # terminating one frees a slot, for exactly one new upload
            assert await delete(http, ann, urls.pop(0)) == 204
            status, url = await post(http, ann, take1, len(body))
            assert status == 201
            urls.append(url)
            assert (await post(http, ann, take1, len(body)))[0] == 409

            # finishing one frees a slot (for another take: this one is now uploaded)
            assert await patch_all(http, ann, urls.pop(0), body) == 204
            assert await singer_state(http, leader, take1, ann) == "uploaded"
            take2 = await next_take(http, leader, take1)
            status, bad = await post(http, ann, take2, len(body))
            assert status == 201
            # a refused (failed) upload keeps its bytes until it expires: it still counts
            garbage = bytes(len(body))
            assert (await tus_patch(http, bad, ann.token, 0, garbage)).status == 422
            status, err = await post(http, ann, take2, len(body))
            assert status == 409 and err["open_uploads"] == 3
            # a refused creation announces nothing: Ann's state is the failure's, untouched
            assert await singer_state(http, leader, take2, ann) == "failed"
            assert await delete(http, ann, bad) == 204
            status, url = await post(http, ann, take2, len(body))
            assert status == 201
            assert await patch_all(http, ann, url, body) == 204
            assert await singer_state(http, leader, take2, ann) == "uploaded"


async def test_a_refused_creation_leaves_the_singer_expected(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", max_open_uploads_per_participant=1) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            leader, (ann, _), take1 = await started_take(http)
            assert (await post(http, ann, take1, 1000))[0] == 201
            take2 = await next_take(http, leader, take1)
            assert (await post(http, ann, take2, 1000))[0] == 409
            assert await singer_state(http, leader, take2, ann) == "expected"
            assert await singer_state(http, leader, take1, ann) == "uploading"


async def test_concurrent_creations_cannot_overshoot_the_cap(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data", max_open_uploads_per_participant=3) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            _, (ann, bob), take1 = await started_take(http)
            results = await asyncio.gather(*(post(http, ann, take1, 1000) for _ in range(12)))
            statuses = sorted(status for status, _ in results)
            assert statuses == [201] * 3 + [409] * 9
            assert len(list((srv.config.data_dir / "uploads").glob("*.part"))) == 3
            assert (await post(http, bob, take1, 1000))[0] == 201


async def test_expired_uploads_free_their_slots(tmp_path: Path) -> None:
    expiry = 2.0
    async with running_server(
        tmp_path / "data", max_open_uploads_per_participant=2, upload_expiry_s=expiry
    ) as srv:
        async with aiohttp.ClientSession(srv.url) as http:
            _, (ann, _), take1 = await started_take(http)
            loop = asyncio.get_running_loop()
            for _ in range(2):
                assert (await post(http, ann, take1, 1000))[0] == 201
            last = loop.time()
            status, err = await post(http, ann, take1, 1000)
            assert status == 409 and err["open_uploads"] == 2
            await asyncio.sleep(max(0.0, last + expiry + 0.2 - loop.time()))
            for _ in range(2):
                assert (await post(http, ann, take1, 1000))[0] == 201
            assert (await post(http, ann, take1, 1000))[0] == 409
