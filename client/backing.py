"""The part's backing track: download once, resume after a drop, check, cache.

Cache layout under ``<client data dir>/backing/``::

    <sha256>.<ext>        a complete, checked track (content-addressed: the name is the proof)
    <sha256>.<ext>.part   bytes received so far

:func:`fetch_backing` asks ``GET /api/session/tracks/{part}`` with ``Range: bytes=N-`` and
``If-Range: "<sha256>"`` when a partial file exists (a changed track answers 200 with the whole
new file, so stale bytes are never glued to new ones), checks the whole file's sha256 against
the one the server announced, then renames it into place.  A cached track is re-hashed before
use, so a damaged cache is noticed and fetched again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

import aiohttp

from tutti.client.connection import PartTrack
from tutti.errors import TuttiError
from tutti.fsutil import file_sha256
from tutti.wire import error_message

__all__ = ["BackingError", "fetch_backing", "cache_path"]

_CHUNK: Final = 64 * 1024
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_read=30)
_EXT = {"wav": "wav", "flac": "flac", "ogg": "ogg", "audio/wav": "wav", "audio/flac": "flac"}

Progress = Callable[[int, int], None]


class BackingError(TuttiError):
    """The backing track could not be fetched or failed its check; the message says which."""


def cache_path(cache_dir: Path, track: PartTrack) -> Path:
    """Where a complete, checked copy of ``track`` lives."""
    ext = _EXT.get(track.info.format.lower(), "audio")
    return cache_dir / "backing" / f"{track.info.sha256}.{ext}"


async def fetch_backing(
    http: aiohttp.ClientSession,
    base_url: str,
    token: str,
    track: PartTrack,
    cache_dir: Path,
    *,
    progress: Progress | None = None,
    attempts: int = 5,
) -> Path:
    """Coroutine: return the path of a checked local copy of ``track``, downloading what is missing.

    Parameters
    ----------
    progress : callable ``(bytes_done, bytes_total)``, optional
    attempts : int
        Network failures tolerated (each resumes where the last one stopped).

    Raises
    ------
    BackingError
        The server refused, the download kept failing, or the bytes do not hash to
        ``track.info.sha256`` even after a fresh download.
    """
    final = cache_path(cache_dir, track)
    if final.exists():
        if await asyncio.to_thread(file_sha256, final) == track.info.sha256:
            if progress is not None:
                progress(track.info.size, track.info.size)
            return final
        final.unlink()  # damaged cache: fetch again
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url = f"{base_url}/api/session/tracks/{track.part}"
    fresh_restarts = 0
    failures = 0
    while True:
        try:
            await _download(http, url, token, track, part, progress)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            failures += 1
            if failures >= attempts:
                raise BackingError(
                    f"downloading the backing for part {track.part!r} failed {failures} times "
                    f"({exc.__class__.__name__}: {exc}); the partial file is kept for next time"
                ) from exc
            await asyncio.sleep(min(5.0, 0.2 * 2**failures))
            continue
        digest = await asyncio.to_thread(file_sha256, part)
        if digest == track.info.sha256:
            os.replace(part, final)
            return final
        part.unlink(missing_ok=True)
        fresh_restarts += 1
        if fresh_restarts > 1:
            raise BackingError(
                f"the backing for part {track.part!r} does not match its sha256 (expected "
                f"{track.info.sha256[:12]}…, got {digest[:12]}…) even after a fresh download"
            )


async def _download(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    track: PartTrack,
    part: Path,
    progress: Progress | None,
) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Authorization": f"Bearer {token}"}
    if have > 0:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = f'"{track.info.sha256}"'
    async with http.get(url, headers=headers, timeout=_TIMEOUT) as resp:
        if resp.status == 416:
            return  # nothing more to fetch: the partial file is whole (or wrong: the hash says)
        if resp.status == 200:
            have = 0
            mode = "wb"
        elif resp.status == 206:
            mode = "ab"
        else:
            msg = ""
            try:
                body = await resp.json(content_type=None)
                msg = error_message(body)
            except (ValueError, aiohttp.ClientError):
                pass
            raise BackingError(
                f"the server refused the backing for part {track.part!r}: "
                f"HTTP {resp.status} {msg}".strip()
            )
        etag = resp.headers.get("ETag", "").strip('W/"')
        if etag and etag != track.info.sha256:
            raise BackingError(
                f"the server sent a different backing for part {track.part!r} than announced "
                f"(ETag {etag[:12]}…); rejoin to get the current track"
            )
        total = track.info.size
        with open(part, mode) as fh:
            done = have
            async for block in resp.content.iter_chunked(_CHUNK):
                fh.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
            fh.flush()
            os.fsync(fh.fileno())
