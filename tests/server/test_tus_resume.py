"""Interrupted tus uploads resume byte-identically: cut connections, server restarts,
``kill -9``, and a standard client (tuspy)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.server.tus_support import (
    OCTET,
    auth,
    create,
    head_offset,
    patch,
    raw_patch_cut,
    raw_patch_open,
    sha256,
    tus_server,
    wait_offset,
)
from tutti.server.tus import READ_CHUNK

ROOT = Path(__file__).resolve().parents[2]


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def settle(s: aiohttp.ClientSession, url: str) -> int:
    """Wait until no PATCH holds the upload (an empty PATCH at the HEAD offset is then
    accepted, not refused as busy); return the settled offset."""
    for _ in range(500):
        offset = await head_offset(s, url)
        r = await patch(s, url, offset, b"")
        if r.status == 204:
            return offset
        assert r.status == 409, r.status  # busy, or its commit moved the offset meanwhile
        await asyncio.sleep(0.01)
    raise AssertionError("upload stayed busy")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_cuts_resume_identical(tmp_path: Path, seed: int) -> None:
    """PATCH bodies cut at random points (inside the server's read batches and across
    them); the client resumes from HEAD each time, like a real one.  The server keeps a
    prefix of what was sent (what it had read when the connection dropped) and the finished
    file is byte-identical."""
    rng = random.Random(seed)
    data = rng.randbytes(3 * READ_CHUNK + 12_345)
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(data), metadata={"sha256": sha256(data)})
        path = "/files/" + upload_id(url)
        cuts = partial_kept = 0
        offset = 0
        while offset < len(data):
            end = min(len(data), offset + rng.randint(1, 2 * READ_CHUNK))
            if cuts < 8 or rng.random() < 0.5:  # cut this request off part-way
                cut = offset + rng.randint(0, end - offset - 1)
                await raw_patch_cut(
                    srv.host, srv.port, path, offset, end - offset, data[offset:cut]
                )
                kept = await settle(s, url)
                assert offset <= kept <= cut
                cuts += 1
                partial_kept += kept > offset
            else:
                r = await patch(s, url, offset, data[offset:end])
                assert r.status == 204, r.status
            offset = await head_offset(s, url)
        assert cuts >= 8 and partial_kept >= 1
        assert srv.hooks.completed == [(upload_id(url), sha256(data))]
        assert sha256((srv.hooks.done_dir / upload_id(url)).read_bytes()) == sha256(data)


@pytest.mark.parametrize("seed", [4, 5])
async def test_cut_after_pause_keeps_every_byte(tmp_path: Path, seed: int) -> None:
    """When the server has read what was sent before the connection drops, every one of
    those bytes is kept — cut points anywhere, including inside a write batch."""
    rng = random.Random(seed)
    data = rng.randbytes(2 * READ_CHUNK + 999)
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(data))
        path = "/files/" + upload_id(url)
        offset = 0
        for _ in range(4):
            cut = offset + rng.randint(1, READ_CHUNK // 2)
            _, writer = await raw_patch_open(
                srv.host, srv.port, path, offset, len(data) - offset, data[offset:cut]
            )
            await asyncio.sleep(0.3)  # the server reads it all, then the line drops
            writer.close()
            await writer.wait_closed()
            assert await wait_offset(s, url, cut) == cut
            offset = cut
        assert (await patch(s, url, offset, data[offset:])).status == 204
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == data


async def test_streaming_body_that_fails_midway(tmp_path: Path) -> None:
    """A chunked PATCH whose body generator raises: the server keeps what arrived."""
    data = os.urandom(2 * READ_CHUNK + 777)
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(data))
        sent = READ_CHUNK + 4321

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, sent, 65536):
                yield data[i : min(i + 65536, sent)]
            await asyncio.sleep(0.3)  # the server reads them all before the failure
            raise RuntimeError("microphone cable pulled")

        with pytest.raises((aiohttp.ClientError, RuntimeError)):
            async with s.patch(
                url,
                data=body(),
                headers={**auth("alice"), "Upload-Offset": "0", "Content-Type": OCTET},
            ) as r:
                await r.read()
        assert await wait_offset(s, url, sent) == sent
        r = await patch(s, url, sent, data[sent:])
        assert r.status == 204
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == data


async def test_cut_with_checksum_keeps_nothing(tmp_path: Path) -> None:
    """A cut-off PATCH that carried Upload-Checksum cannot be verified, so it is dropped."""
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, 1000)
        assert (await patch(s, url, 0, b"a" * 100)).status == 204
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(
            f"PATCH /files/{upload_id(url)} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Authorization: Bearer alice\r\nContent-Type: {OCTET}\r\nUpload-Offset: 100\r\n"
            "Upload-Checksum: sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
            "Content-Length: 900\r\n\r\n".encode()
            + b"b" * 500
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.2)
        assert await head_offset(s, url) == 100
        assert (srv.upload_dir / f"{upload_id(url)}.part").stat().st_size == 100


async def test_restart_resumes(tmp_path: Path) -> None:
    """A new TusHandler on the same directory (server restart) picks uploads up: the data
    file's size is the offset, bytes of a checksummed PATCH a crash interrupted (its
    ``.pending`` marker left behind) are dropped, the sha256 state is rebuilt."""
    data = os.urandom(5 * READ_CHUNK // 2)
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url1 = await create(s, srv.url, len(data), metadata={"sha256": sha256(data)})
        url2 = await create(s, srv.url, len(data), metadata={"sha256": sha256(data)})
        half = len(data) // 2 + 3
        assert (await patch(s, url1, 0, data[:half])).status == 204
        await raw_patch_cut(
            srv.host, srv.port, "/files/" + upload_id(url2), 0, len(data), data[:half], pause=0.3
        )
        assert await wait_offset(s, url2, half) == half
    # what a kill -9 in the middle of a checksummed PATCH leaves: its marker, unverified bytes
    part = tmp_path / "uploads" / f"{upload_id(url1)}.part"
    with open(part, "ab") as f:
        f.write(b"bytes whose checksum was never checked" * 1000)
    (tmp_path / "uploads" / f"{upload_id(url1)}.pending").write_text(str(half))
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        assert part.stat().st_size == half
        assert not (tmp_path / "uploads" / f"{upload_id(url1)}.pending").exists()
        for url in (url1, url2):
            url = srv.url + upload_id(url)  # new port
            offset = await head_offset(s, url)
            assert offset == half
            r = await patch(s, url, offset, data[offset:])
            assert r.status == 204, r.status
            assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == data
        assert {sha for _, sha in srv.hooks.completed} == {sha256(data)}


async def test_restart_finishes_fully_received_upload(tmp_path: Path) -> None:
    """An upload whose last byte was committed but whose completion did not run (crash) is
    completed when the server starts again."""
    data = os.urandom(1000)
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(data))
        assert (await patch(s, url, 0, data)).status == 204
    # undo the completion: put the file back and mark the state as receiving
    state_path = tmp_path / "uploads" / f"{upload_id(url)}.json"
    (tmp_path / "done" / upload_id(url)).rename(tmp_path / "uploads" / f"{upload_id(url)}.part")
    state_path.write_text(state_path.read_text().replace('"completed"', '"receiving"'))
    async with tus_server(tmp_path) as srv, aiohttp.ClientSession() as s:
        assert srv.hooks.completed == [(upload_id(url), sha256(data))]
        async with s.head(srv.url + upload_id(url), headers=auth("alice")) as r:
            assert r.headers["X-Tutti-Upload-State"] == "completed"


async def test_tuspy_client(tmp_path: Path) -> None:
    """The standard Python tus client uploads through the handler, with checksums, and
    resumes an upload it stopped part-way."""
    data = os.urandom(3 * READ_CHUNK + 5)
    async with tus_server(tmp_path) as srv:

        def run() -> tuple[str, int]:
            client = tus_client.TusClient(srv.url, headers={"Authorization": "Bearer alice"})
            first = client.uploader(
                file_stream=io.BytesIO(data),
                chunk_size=700_000,
                metadata={"filename": "take.flac", "sha256": sha256(data)},
                upload_checksum=True,
            )
            first.upload(stop_at=1_400_000)
            assert first.url is not None
            stopped = first.offset
            again = client.uploader(
                file_stream=io.BytesIO(data),
                url=first.url,
                chunk_size=1 << 20,
                upload_checksum=True,
            )
            again.upload()
            return str(first.url), stopped

        url, stopped = await asyncio.to_thread(run)
        assert stopped == 1_400_000
        assert srv.hooks.completed == [(upload_id(url), sha256(data))]
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == data


def _start(directory: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.server.tus_support", "--dir", str(directory)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, int(line.split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("checksummed", [False, True])
async def test_kill_9_mid_patch(tmp_path: Path, checksummed: bool) -> None:
    """kill -9 the server while a PATCH is streaming.  After a restart HEAD reports an offset
    whose bytes are exactly what the client sent: every byte that reached the file (a plain
    PATCH), or the offset before the PATCH (one with Upload-Checksum, which cannot be
    verified); the upload resumes from there byte-identical."""
    data = os.urandom(6 * READ_CHUNK)
    committed = READ_CHUNK + 99
    sent = data[committed : committed + 3 * READ_CHUNK]
    proc, port = await asyncio.to_thread(_start, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{port}/files/"
            url = await create(s, base, len(data), metadata={"sha256": sha256(data)})
            part = tmp_path / "uploads" / f"{upload_id(url)}.part"
            assert (await patch(s, url, 0, data[:committed])).status == 204
            body = data[committed:]
            checksum = "sha256 " + base64.b64encode(hashlib.sha256(body).digest()).decode()
            _, writer = await raw_patch_open(
                "127.0.0.1",
                port,
                "/files/" + upload_id(url),
                committed,
                len(body),
                sent,
                checksum=checksum if checksummed else None,
            )
            for _ in range(500):  # until bytes of the unfinished PATCH have reached the file
                if part.stat().st_size >= committed + 2 * READ_CHUNK:
                    break
                await asyncio.sleep(0.01)
            assert part.stat().st_size >= committed + 2 * READ_CHUNK
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            assert proc.stdout is not None
            proc.stdout.close()
            writer.close()
        proc, port = await asyncio.to_thread(_start, tmp_path)
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{port}/files/{upload_id(url)}"
            offset = await head_offset(s, url)
            if checksummed:
                assert offset == committed
            else:
                assert committed + 2 * READ_CHUNK <= offset <= committed + len(sent)
            assert part.read_bytes() == data[:offset]
            r = await patch(s, url, offset, data[offset:])
            assert r.status == 204
        assert sha256((tmp_path / "done" / upload_id(url)).read_bytes()) == sha256(data)
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_stalled_patch_frees_the_upload(tmp_path: Path) -> None:
    """A PATCH whose client goes silent (no FIN ever arrives) is ended after the idle
    timeout: its bytes are kept and a resumed PATCH on a new connection is accepted."""
    data = os.urandom(300_000)
    async with tus_server(tmp_path, idle_timeout_s=0.5) as srv, aiohttp.ClientSession() as s:
        url = await create(s, srv.url, len(data))
        reader, writer = await raw_patch_open(
            srv.host, srv.port, "/files/" + upload_id(url), 0, len(data), data[:123_456]
        )
        try:
            await asyncio.sleep(0.1)
            assert (await patch(s, url, 0, b"x")).status == 409  # still held
            status = await asyncio.wait_for(reader.readline(), 5.0)
            assert status.startswith(b"HTTP/1.1 408"), status
        finally:
            writer.close()
            await writer.wait_closed()
        assert await head_offset(s, url) == 123_456
        assert (await patch(s, url, 123_456, data[123_456:])).status == 204
        assert (srv.hooks.done_dir / upload_id(url)).read_bytes() == data
