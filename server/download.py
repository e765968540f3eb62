"""Send a stored file over HTTP with a strong ETag, ``If-None-Match``, ``If-Range`` and ``Range``.

Files are content-addressed (their sha256 is known), so the ETag is ``"<sha256>"`` and never
depends on mtimes.  One byte range per request is honoured (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``); a multi-range request gets the whole file (RFC 9110 allows it).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from aiohttp import web

__all__ = ["send_file", "parse_range"]

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The (start, end-exclusive) byte span of a single-range ``Range`` header.

    Returns ``None`` for a header this server ignores (not ``bytes=``, several ranges);
    raises ``ValueError`` for a range that cannot be satisfied (→ 416).
    """
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(size - n, 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        raise ValueError("range starts past the end")
    return start, end


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


async def send_file(
    request: web.Request, path: Path, *, sha256: str, content_type: str
) -> web.StreamResponse:
    """Coroutine: answer ``request`` with the file at ``path`` (200, 206, 304 or 416)."""
    etag = f'"{sha256}"'
    size = (await asyncio.to_thread(path.stat)).st_size
    base = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Tutti-Sha256": sha256,
        "Cache-Control": "private, no-cache",
    }
    inm = request.headers.get("If-None-Match")
    if inm is not None and _etag_matches(inm, etag):
        return web.Response(status=304, headers=base)
    span: tuple[int, int] | None = None
    rng = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if rng is not None and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(rng, size)
        except ValueError:
            return web.json_response(
                {
                    "error": {
                        "code": "range_not_satisfiable",
                        "message": f"Range {rng[:80]!r} is outside the file's {size} bytes",
                    }
                },
                status=416,
                headers={**base, "Content-Range": f"bytes */{size}"},
            )
    start, end = span if span is not None else (0, size)
    headers = {**base, "Content-Type": content_type, "Content-Length": str(end - start)}
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    resp = web.StreamResponse(status=206 if span is not None else 200, headers=headers)
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    try:
        with open(path, "rb") as f:  # noqa: ASYNC230 - reads happen in a worker thread below
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
                if not chunk:
                    break
                await resp.write(chunk)
                left -= len(chunk)
        await resp.write_eof()
    except ConnectionError:
        # The client went away mid-file (it resumes with Range): a normal disconnect.
        log.debug("download of %s ended by the client after %d bytes", path.name, end - left)
    return resp
