"""tus 1.0 protocol behaviour of TusHandler against a real aiohttp server on port 0."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import os
import zlib
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.server.tus_support import (
    OCTET,
    TUS,
    Clock,
    auth,
    create,
    head_offset,
    patch,
    raw_patch_open,
    sha256,
    tus_server,
)
from tutti.tusheaders import Crc32

DATA = os.urandom(300_000)


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def test_options_discovery(tmp_path: Path) -> None:
    async with tus_server(tmp_path, max_size=12345) as srv, aiohttp.ClientSession() as s:
        async with s.options(srv.url) as r:
            assert r.status == 204
            assert r.headers["Tus-Resumable"] == "1.0.0"
            assert r.headers["Tus-Version"] == "1.0.0"
            assert set(r.headers["Tus-Extension"].split(",")) == {
                "creation",
                "checksum",
                "expiration",
                "termination",
            }
            assert r.headers["Tus-Max-Size"] == "12345"
            assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) == {
                "sha1",
                "md5",
                "sha256",
                "crc32",
            }


async def test_create_head_patch_complete(tmp_path: Path) -> None:
    clock = Clock()
    meta = {"filename": "take.flac", "sha256": sha256(DATA), "note": "Grüße", "flag": ""}
    async with tus_server(tmp_path, clock=clock, expiry_s=600) as srv, aiohttp.ClientSession() as s:
        headers = {
            **auth("alice"),
            "Upload-Length": str(len(DATA)),
            "Upload-Metadata": ",".join(
                [
                    f"filename {base64.b64encode(b'take.flac').decode()}",
                    f"sha256 {base64.b64encode(meta['sha256'].encode()).decode()}",
                    f"note {base64.b64encode('Grüße'.encode()).decode()}",
                    "flag",
                ]
            ),
        }
        async with s.post(srv.url, headers=headers) as r:
            assert r.status == 201
            assert r.headers["Tus-Resumable"] == "1.0.0"
            location = r.headers["Location"]
            assert location.startswith("/files/") and len(location) == len("/files/") + 32
            expires = email.utils.parsedate_to_datetime(r.headers["Upload-Expires"])
            assert expires.timestamp() == clock.now + 600
        url = srv.url + upload_id(location)
        async with s.head(url, headers=auth("alice")) as r:
            assert r.status == 200
            assert r.headers["Upload-Offset"] == "0"
            assert r.headers["Upload-Length"] == str(len(DATA))
            assert r.headers["Cache-Control"] == "no-store"
            assert r.headers["X-Tutti-Upload-State"] == "receiving"
            assert "Upload-Expires" in r.headers
            from tutti.tusheaders import parse_metadata

            assert parse_metadata(r.headers["Upload-Metadata"]) == meta
        r = await patch(s, url, 0, DATA[:100_000])
        assert r.status == 204 and r.headers["Upload-Offset"] == "100000"
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert await head_offset(s, url) == 100_000
        assert srv.hooks.completed == []
        r = await patch(s, url, 100_000, DATA[100_000:])
        assert r.status == 204 and r.headers["Upload-Offset"] == str(len(DATA))
        assert srv.hooks.completed == [(upload_id(url), sha256(DATA))]
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == DATA
        async with s.head(url, headers=auth("alice")) as r:
            assert r.status == 200 and r.headers["X-Tutti-Upload-State"] == "completed"
            assert r.headers["Upload-Offset"] == str(len(DATA))
        # a completed upload takes nothing more and cannot be terminated
        r = await patch(s, url, len(DATA), b"x")
        assert r.status == 403
        r = await patch(s, url, len(DATA), b"")
        assert r.status == 403
        async with s.delete(url, headers=auth("alice")) as r:
            assert r.status == 403
            assert (await r.json())["error"]["code"] == "upload_complete"


async def test_creation_errors(tmp_path: Path) -> None:
    async with tus_server(tmp_path, max_size=1000) as srv, aiohttp.ClientSession() as s:
        async with s.post(srv.url, headers=auth("a")) as r:
            assert r.status == 400 and r.headers["Tus-Resumable"] == "1.0.0"
            assert "Upload-Length is required" in (await r.json())["error"]["message"]
        async with s.post(srv.url, headers={**auth("a"), "Upload-Length": "-5"}) as r:
            assert r.status == 400
        async with s.post(srv.url, headers={**auth("a"), "Upload-Length": "1001"}) as r:
            assert r.status == 413
            assert "1000" in (await r.json())["error"]["message"]
        async with s.post(srv.url, headers={**auth("a"), "Upload-Length": "1000"}) as r:
            assert r.status == 201
        bad_meta = f"filename {base64.b64encode(b'x').decode()},take_id not*base64!"
        async with s.post(
            srv.url, headers={**auth("a"), "Upload-Length": "10", "Upload-Metadata": bad_meta}
        ) as r:
            assert r.status == 400
            body = await r.json()
            assert body["error"]["code"] == "bad_metadata"
            assert "'take_id'" in body["error"]["message"]
        dup = "a YQ==,a Yg=="
        async with s.post(
            srv.url, headers={**auth("a"), "Upload-Length": "10", "Upload-Metadata": dup}
        ) as r:
            assert r.status == 400 and "twice" in (await r.json())["error"]["message"]
        # the hook refuses: its exception reaches the client, still with Tus-Resumable
        async with s.post(srv.url, headers={**TUS, "Upload-Length": "10"}) as r:
            assert r.status == 401 and r.headers["Tus-Resumable"] == "1.0.0"
        # only the uploads that were accepted exist on disk
        assert len(list(srv.upload_dir.glob("*.json"))) == 1


async def test_version_check(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 10)
        for headers in ({"Tus-Resumable": "0.2.2"}, {}):
            hdr = {"Authorization": "Bearer alice", "Upload-Length": "10", **headers}
            async with s.post(srv.url, headers=hdr) as r:
                assert r.status == 412
                assert r.headers["Tus-Version"] == "1.0.0"
                assert r.headers["Tus-Resumable"] == "1.0.0"
            async with s.head(url, headers=hdr) as r:
                assert r.status == 412
        r = await patch(s, url, 0, b"0123456789", **{"Tus-Resumable": "2.0.0"})
        assert r.status == 412
        assert await head_offset(s, url) == 0


async def test_patch_errors(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 1000)
        part = srv.upload_dir / f"{upload_id(url)}.part"
        # wrong content type
        async with s.patch(
            url,
            data=b"abc",
            headers={**auth("alice"), "Upload-Offset": "0", "Content-Type": "text/plain"},
        ) as r:
            assert r.status == 415
            assert OCTET in (await r.json())["error"]["message"]
        # missing / malformed offset
        async with s.patch(url, data=b"abc", headers={**auth("alice"), "Content-Type": OCTET}) as r:
            assert r.status == 400
        r = await patch(s, url, 0, b"abc", **{"Upload-Offset": "1e3"})
        assert r.status == 400
        # offset mismatch
        r = await patch(s, url, 0, b"a" * 400)
        assert r.status == 204
        r = await patch(s, url, 300, b"b" * 10)
        assert r.status == 409 and r.headers["Upload-Offset"] == "400"
        r = await patch(s, url, 500, b"b" * 10)
        assert r.status == 409
        # beyond the declared length, announced by Content-Length: refused before reading
        r = await patch(s, url, 400, b"c" * 601)
        assert r.status == 413
        assert part.stat().st_size == 400 and await head_offset(s, url) == 400

        # beyond the declared length, streamed without Content-Length: nothing kept
        async def chunks() -> object:
            for _ in range(7):
                yield b"d" * 100

        async with s.patch(
            url,
            data=chunks(),
            headers={**auth("alice"), "Upload-Offset": "400", "Content-Type": OCTET},
        ) as r:
            assert r.status == 413
        assert part.stat().st_size == 400 and await head_offset(s, url) == 400
        # someone else's upload
        r = await patch(s, url, 400, b"e", owner="mallory")
        assert r.status == 403
        async with s.head(url, headers=auth("mallory")) as r2:
            assert r2.status == 403
        # exactly the rest completes it
        r = await patch(s, url, 400, b"f" * 600)
        assert r.status == 204 and r.headers["Upload-Offset"] == "1000"
        done = (srv.hooks.done_dir / upload_id(url)).read_bytes()
        assert done == b"a" * 400 + b"f" * 600


@pytest.mark.parametrize("algo", ["sha1", "md5", "sha256", "crc32"])
async def test_checksum(tmp_path: Path, algo: str) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(DATA), metadata={"sha256": sha256(DATA)})
        part = srv.upload_dir / f"{upload_id(url)}.part"
        chunk = DATA[:200_000]

        def header(data: bytes, name: str = algo) -> str:
            if algo == "crc32":  # 4 bytes, big-endian
                digest = zlib.crc32(data).to_bytes(4, "big")
            else:
                digest = hashlib.new(algo, data).digest()
            return f"{name} {base64.b64encode(digest).decode()}"

        r = await patch(s, url, 0, chunk, **{"Upload-Checksum": header(chunk)})
        assert r.status == 204 and r.headers["Upload-Offset"] == "200000"
        rest = DATA[200_000:]
        corrupt = bytes([rest[0] ^ 1]) + rest[1:]
        r = await patch(s, url, 200_000, corrupt, **{"Upload-Checksum": header(rest)})
        assert r.status == 460 and r.reason == "Checksum Mismatch"
        assert await head_offset(s, url) == 200_000
        assert part.stat().st_size == 200_000  # the chunk's bytes were dropped
        r = await patch(s, url, 200_000, rest, **{"Upload-Checksum": "sha512 AAAAAA=="})
        assert r.status == 400
        r = await patch(s, url, 200_000, rest, **{"Upload-Checksum": f"{algo} %%%"})
        assert r.status == 400
        r = await patch(s, url, 200_000, rest, **{"Upload-Checksum": header(rest)})
        assert r.status == 204
        assert srv.hooks.completed == [(upload_id(url), sha256(DATA))]


async def test_unsupported_checksum_names_supported(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 10)
        async with s.patch(
            url,
            data=b"0123456789",
            headers={
                **auth("alice"),
                "Upload-Offset": "0",
                "Content-Type": OCTET,
                "Upload-Checksum": "sha512 AAAAAA==",
            },
        ) as r:
            assert r.status == 400
            msg = (await r.json())["error"]["message"]
            assert "sha512" in msg and "crc32" in msg and "sha1" in msg and "sha256" in msg
        assert await head_offset(s, url) == 0


async def test_verification_failure_is_kept_as_failed(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 100, metadata={"sha256": "0" * 64})
        async with s.patch(
            url,
            data=b"z" * 100,
            headers={**auth("alice"), "Upload-Offset": "0", "Content-Type": OCTET},
        ) as r:
            assert r.status == 422
            body = await r.json()
            assert body["error"]["code"] == "upload_rejected"
            assert "metadata says 000" in body["error"]["message"]
        async with s.head(url, headers=auth("alice")) as r:
            assert r.status == 422  # not presented as complete
            assert r.headers["X-Tutti-Upload-State"] == "failed"
            assert "metadata says" in r.headers["X-Tutti-Upload-Error"]
        r = await patch(s, url, 100, b"")
        assert r.status == 422
        assert srv.hooks.completed == []
        assert (srv.upload_dir / f"{upload_id(url)}.part").stat().st_size == 100


async def test_delete_terminates(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 100)
        assert (await patch(s, url, 0, b"q" * 50)).status == 204
        async with s.delete(url, headers=auth("bob")) as r:
            assert r.status == 403
        async with s.delete(url, headers=auth("alice")) as r:
            assert r.status == 204 and r.headers["Tus-Resumable"] == "1.0.0"
        async with s.head(url, headers=auth("alice")) as r:
            assert r.status == 404
        assert (await patch(s, url, 50, b"q" * 50)).status == 404
        assert list(srv.upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "path",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "..",
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef0123456789abcde.",
    ],
)
async def test_bad_ids_are_404(tmp_path: Path, path: str) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = f"http://{srv.host}:{srv.port}/files/{path}"
        async with s.head(URL(url, encoded=True), headers=auth("alice")) as r:
            assert r.status == 404
        async with s.patch(
            URL(url, encoded=True),
            data=b"x",
            headers={**auth("alice"), "Upload-Offset": "0", "Content-Type": OCTET},
        ) as r:
            assert r.status == 404


async def test_concurrent_patch_is_409(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 1000)
        path = "/files/" + upload_id(url)
        reader, writer = await raw_patch_open(srv.host, srv.port, path, 0, 1000, b"x" * 300)
        try:
            for _ in range(200):  # until the first PATCH holds the upload
                r = await patch(s, url, 0, b"y" * 10)
                if r.status == 409:
                    break
                await asyncio.sleep(0.01)
            assert r.status == 409
            async with s.patch(
                url,
                data=b"y",
                headers={**auth("alice"), "Upload-Offset": "0", "Content-Type": OCTET},
            ) as r2:
                assert (await r2.json())["error"]["code"] == "upload_busy"
            async with s.delete(url, headers=auth("alice")) as r2:
                assert r2.status == 409
            writer.write(b"x" * 700)
            await writer.drain()
            status_line = await reader.readline()
            assert status_line.startswith(b"HTTP/1.1 204")
        finally:
            writer.close()
            await writer.wait_closed()
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == b"x" * 1000


async def test_expiry(tmp_path: Path) -> None:
    clock = Clock()
    async with tus_server(tmp_path, clock=clock, expiry_s=100) as srv, aiohttp.ClientSession() as s:
        stale = await create(s, srv.url, 100)
        active = await create(s, srv.url, 100)
        finished = await create(s, srv.url, 10)
        assert (await patch(s, finished, 0, b"0123456789")).status == 204
        clock.now += 60
        assert (await patch(s, active, 0, b"a" * 10)).status == 204  # moves its deadline
        async with s.head(active, headers=auth("alice")) as r:
            expires = email.utils.parsedate_to_datetime(r.headers["Upload-Expires"])
            assert expires.timestamp() == clock.now + 100
        clock.now += 50  # stale: 110 s idle; active: 50 s idle
        async with s.head(stale, headers=auth("alice")) as r:
            assert r.status == 410
        r = await patch(s, stale, 0, b"s")
        assert r.status == 410
        assert (await r.json())["error"]["code"] == "upload_expired"
        assert await head_offset(s, active) == 10
        assert srv.handler.expire_now() == 1
        async with s.head(stale, headers=auth("alice")) as r:
            assert r.status == 404
        assert not (srv.upload_dir / f"{upload_id(stale)}.part").exists()
        clock.now += 10_000  # completed uploads never expire
        assert srv.handler.expire_now() == 1  # only `active`
        async with s.head(finished, headers=auth("alice")) as r:
            assert r.status == 200 and r.headers["X-Tutti-Upload-State"] == "completed"
        assert [p.name for p in srv.upload_dir.iterdir()] == [f"{upload_id(finished)}.json"]


async def test_empty_upload_completes_on_creation(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 0)
        assert srv.hooks.completed == [(upload_id(url), hashlib.sha256().hexdigest())]
        async with s.head(url, headers=auth("alice")) as r:
            assert r.headers["X-Tutti-Upload-State"] == "completed"


async def test_tus_resumable_on_router_errors(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        async with s.get(srv.url + "0" * 32, headers=TUS) as r:
            assert r.status == 405 and r.headers["Tus-Resumable"] == "1.0.0"
        async with s.head(srv.url + "a/b", headers=TUS) as r:
            assert r.status == 404 and r.headers["Tus-Resumable"] == "1.0.0"


async def test_background_expiry(tmp_path: Path) -> None:
    """The cleanup context removes expired partial uploads by itself (real clock)."""
    import time

    async with (
        tus_server(tmp_path, expiry_s=1.0, clock=time.time) as srv,
        aiohttp.ClientSession() as s,
    ):
        url = await create(s, srv.url, 100)
        part = srv.upload_dir / f"{upload_id(url)}.part"
        assert part.exists()
        for _ in range(40):
            await asyncio.sleep(0.1)
            if not part.exists():
                break
        assert not part.exists()
        async with s.head(url, headers=auth("alice")) as r:
            assert r.status == 404


async def test_completion_retried_after_hook_error(tmp_path: Path) -> None:
    """A completion hook that fails for another reason than verification leaves the upload
    fully received; an empty PATCH at the final offset retries it."""
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 100)
        srv.hooks.fail_next = 1
        r = await patch(s, url, 0, b"r" * 100)
        assert r.status == 500 and r.headers["Upload-Offset"] == "100"
        async with s.head(url, headers=auth("alice")) as h:
            assert h.headers["X-Tutti-Upload-State"] == "receiving"
        assert (await patch(s, url, 100, b"more")).status == 413
        r = await patch(s, url, 100, b"")
        assert r.status == 204
        assert srv.hooks.completed == [(upload_id(url), sha256(b"r" * 100))]
        async with s.head(url, headers=auth("alice")) as h:
            assert h.headers["X-Tutti-Upload-State"] == "completed"


async def test_method_override(tmp_path: Path) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 20)
        base = {**auth("alice"), "Content-Type": OCTET}
        async with s.post(
            url,
            data=b"0123456789",
            headers={**base, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"},
        ) as r:
            assert r.status == 204 and r.headers["Upload-Offset"] == "10"
        async with s.post(url, headers={**auth("alice"), "X-HTTP-Method-Override": "HEAD"}) as r:
            assert r.status == 200 and r.headers["Upload-Offset"] == "10"
        async with s.post(url, headers={**auth("alice"), "X-HTTP-Method-Override": "GET"}) as r:
            assert r.status == 405
        async with s.post(url, headers=auth("alice")) as r:
            assert r.status == 405
        async with s.post(url, headers={**auth("alice"), "X-HTTP-Method-Override": "DELETE"}) as r:
            assert r.status == 204
        assert list(srv.upload_dir.iterdir()) == []


async def test_creation_refused_when_disk_cannot_hold_it(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    async with tus_server(tmp_path, max_size=free * 2) as srv, aiohttp.ClientSession() as s:
        async with s.post(srv.url, headers={**auth("a"), "Upload-Length": str(free)}) as r:
            assert r.status == 507
            assert (await r.json())["error"]["code"] == "insufficient_storage"
        assert list(srv.upload_dir.iterdir()) == []


async def test_created_hook_runs_once_per_stored_upload_and_its_failure_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 10, owner="alice")
        assert srv.hooks.created_ids == [upload_id(url)]
        # the owner's unfinished uploads are counted until one completes or is terminated
        url2 = await create(s, srv.url, 4, owner="alice")
        await create(s, srv.url, 4, owner="bob")
        assert srv.handler.open_uploads("alice") == 2 and srv.handler.open_uploads("bob") == 1
        assert (await patch(s, url2, 0, b"done")).status == 204
        assert srv.handler.open_uploads("alice") == 1
        async with s.delete(url, headers=auth("alice")) as r:
            assert r.status == 204
        assert srv.handler.open_uploads("alice") == 0

        async def broken(upload_id: str, metadata: dict[str, str], owner: str) -> None:
            raise RuntimeError("announcing failed")

        srv.hooks.created = broken  # type: ignore[method-assign]
        url3 = await create(s, srv.url, 10, owner="alice")  # still 201: the upload exists
        assert "the created hook failed" in caplog.text
        assert await head_offset(s, url3, "alice") == 0
        assert srv.handler.open_uploads("alice") == 1


def test_crc32_in_pieces_is_zlibs() -> None:
    """The server's CRC-32 (ISA-L's when installed) is zlib's, fed in pieces of any size."""
    data = os.urandom(1 << 20)
    crc = Crc32()
    for a, b in zip((0, 1, 7, 4096, 65_537), (1, 7, 4096, 65_537, len(data)), strict=True):
        crc.update(data[a:b])
    assert crc.digest() == zlib.crc32(data).to_bytes(4, "big")
    assert crc.copy().hexdigest() == crc.hexdigest()
