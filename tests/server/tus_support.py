"""Helpers for the tus tests: a small real aiohttp app around :class:`TusHandler`, simple
hooks that file completed uploads into a folder, a settable clock, and raw-socket PATCHes
that cut the body off wherever a test asks.

Run as a program it serves such an app (for the ``kill -9`` test)::

    python -m tests.server.tus_support --dir DIR [--port 0]

and prints ``listening on PORT`` once the socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from tutti.server.tus import TusHandler
from tutti.server.tushooks import VerificationError
from tutti.tusheaders import TUS_VERSION, encode_metadata

TUS = {"Tus-Resumable": TUS_VERSION}
OCTET = "application/offset+octet-stream"


def auth(owner: str) -> dict[str, str]:
    """Headers of a tus request made by ``owner``."""
    return {**TUS, "Authorization": f"Bearer {owner}"}


@dataclass
class FileHooks:
    """Upload hooks: the bearer token is the owner; completed files go to ``done_dir/<id>``.

    ``complete`` refuses a file whose sha256 differs from metadata ``sha256`` (when given)
    or whose metadata has ``reject`` (its value is the reason).
    """

    done_dir: Path
    completed: list[tuple[str, str]] = field(default_factory=list)  # (upload_id, sha256)
    created_ids: list[str] = field(default_factory=list)  # in the order they were created
    fail_next: int = 0  # complete() raises OSError this many more times (e.g. a full disk)

    @staticmethod
    def _token(request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:]:
            raise web.HTTPUnauthorized(text="bearer token required")
        return header[7:]

    async def authorize_create(
        self, request: web.Request, metadata: dict[str, str], length: int
    ) -> str:
        return self._token(request)

    async def created(self, upload_id: str, metadata: dict[str, str], owner: str) -> None:
        self.created_ids.append(upload_id)

    async def authorize_access(self, request: web.Request, owner: str) -> None:
        if self._token(request) != owner:
            raise web.HTTPForbidden(text="not your upload")

    async def complete(
        self, upload_id: str, path: Path, metadata: dict[str, str], owner: str, sha256_hex: str
    ) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("simulated failure while placing the file")
        if "reject" in metadata:
            raise VerificationError(metadata["reject"])
        want = metadata.get("sha256")
        if want is not None and want != sha256_hex:
            raise VerificationError(f"sha256 is {sha256_hex}, metadata says {want}")
        self.done_dir.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.done_dir / upload_id)
        self.completed.append((upload_id, sha256_hex))


class Clock:
    """A wall clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class TusServer:
    """A running test server: its base URL, handler, hooks and upload directory."""

    url: str
    host: str
    port: int
    handler: TusHandler
    hooks: FileHooks
    upload_dir: Path


def make_app(handler: TusHandler) -> web.Application:
    """An application serving only ``handler`` at ``/files/``."""
    app = web.Application()
    handler.add_routes(app, "/files/")
    app.cleanup_ctx.append(handler.cleanup_ctx)
    return app


@asynccontextmanager
async def tus_server(
    root: Path,
    *,
    max_size: int = 64 << 20,
    expiry_s: float = 3600.0,
    clock: Callable[[], float] | None = None,
    idle_timeout_s: float = 30.0,
) -> AsyncIterator[TusServer]:
    """Serve a :class:`TusHandler` on ``root/uploads`` at a free loopback port."""
    hooks = FileHooks(root / "done")
    handler = TusHandler(
        root / "uploads",
        hooks,
        max_size=max_size,
        expiry_s=expiry_s,
        clock=clock or Clock(),
        idle_timeout_s=idle_timeout_s,
    )
    runner = web.AppRunner(make_app(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield TusServer(
            f"http://127.0.0.1:{port}/files/", "127.0.0.1", port, handler, hooks, root / "uploads"
        )
    finally:
        await runner.cleanup()


async def create(
    session: aiohttp.ClientSession,
    url: str,
    length: int,
    owner: str = "alice",
    metadata: dict[str, str] | None = None,
) -> str:
    """POST a new upload and return its absolute URL."""
    headers = {**auth(owner), "Upload-Length": str(length)}
    if metadata:
        headers["Upload-Metadata"] = encode_metadata(metadata)
    async with session.post(url, headers=headers) as r:
        assert r.status == 201, await r.text()
        return str(r.url.join(URL(r.headers["Location"])))


async def head_offset(session: aiohttp.ClientSession, url: str, owner: str = "alice") -> int:
    """HEAD the upload and return its Upload-Offset."""
    async with session.head(url, headers=auth(owner)) as r:
        assert r.status == 200, r.status
        return int(r.headers["Upload-Offset"])


async def patch(
    session: aiohttp.ClientSession,
    url: str,
    offset: int,
    body: bytes,
    owner: str = "alice",
    **extra: str,
) -> aiohttp.ClientResponse:
    """PATCH ``body`` at ``offset``; returns the (read) response."""
    headers = {**auth(owner), "Upload-Offset": str(offset), "Content-Type": OCTET, **extra}
    async with session.patch(url, data=io.BytesIO(body), headers=headers) as r:
        await r.read()
        return r


async def raw_patch_open(
    host: str,
    port: int,
    path: str,
    offset: int,
    declared: int,
    sent: bytes,
    owner: str = "alice",
    checksum: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Start a PATCH over a raw socket announcing ``declared`` body bytes, send ``sent``
    (``checksum``: an ``Upload-Checksum`` value to send along).

    Returns the open connection so the caller can cut it (``writer.close()``) or finish it.
    """
    reader, writer = await asyncio.open_connection(host, port)
    extra = f"Upload-Checksum: {checksum}\r\n" if checksum else ""
    head = (
        f"PATCH {path} HTTP/1.1\r\nHost: {host}:{port}\r\nTus-Resumable: {TUS_VERSION}\r\n"
        f"Authorization: Bearer {owner}\r\nContent-Type: {OCTET}\r\n{extra}"
        f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


async def raw_patch_cut(
    host: str,
    port: int,
    path: str,
    offset: int,
    declared: int,
    sent: bytes,
    owner: str = "alice",
    pause: float = 0.0,
) -> None:
    """A PATCH whose connection closes after ``len(sent)`` of ``declared`` body bytes,
    ``pause`` seconds after sending them (time for the server to read them all)."""
    _, writer = await raw_patch_open(host, port, path, offset, declared, sent, owner)
    await asyncio.sleep(pause)
    writer.close()
    await writer.wait_closed()


async def wait_offset(
    session: aiohttp.ClientSession, url: str, want: int, timeout: float = 10.0, owner: str = "alice"
) -> int:
    """Poll HEAD until the upload's offset is ``want`` (the server commits a cut body
    asynchronously); returns the last offset seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = await head_offset(session, url, owner)
    while got != want and loop.time() < deadline:
        await asyncio.sleep(0.02)
        got = await head_offset(session, url, owner)
    return got


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


async def _serve(directory: Path, port: int) -> None:
    hooks = FileHooks(directory / "done")
    handler = TusHandler(directory / "uploads", hooks, max_size=1 << 30, expiry_s=3600.0)
    runner = web.AppRunner(make_app(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"listening on {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    """Serve a test tus app until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.dir, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
