"""Take upload: a tus 1.0 client (creation + checksum) that survives anything short of a lost disk.

Where an upload is resumed: :meth:`TusUploader.upload`.  The upload URL of each file is kept in
a small JSON file next to the take (``<file>.tus.json``), so a *restarted* client resumes
the same upload instead of starting over.  The loop:

1. no saved URL → ``POST /files/`` (``Upload-Length``, ``Upload-Metadata`` with take_id,
   filename, sha256 and the recording's timeline numbers) → save the ``Location``;
2. ``HEAD`` → the server's ``Upload-Offset`` (``X-Tutti-Upload-State: completed`` → done;
   404/410 → the upload is gone (expired): create a new one);
3. ``PATCH`` chunks from that offset, each with ``Upload-Checksum: crc32 <base64>`` (a
   server that does not know crc32 answers 400 ``bad_checksum``: sha256 from then on);
   409 → back to ``HEAD``; 460 (checksum mismatch) → send the chunk again.  The chunk size
   adapts to the connection (:class:`ChunkSizer`): it doubles while a PATCH takes under half
   of ``TARGET_PATCH_S``, falls to what the measured rate sends in that time after a slow
   one, and halves after a lost connection or timeout, between ``MIN_CHUNK`` and ``MAX_CHUNK``;
4. any network error, timeout or 5xx (the server restarting) → wait with exponential backoff
   (with jitter, capped) and go back to 2.  Every answer moves the offset only forwards from
   what the server says, so no byte is skipped or sent twice into the file.

The upload is *confirmed* only when the server says the upload is ``completed``: the server
checked the whole file's sha256 against the one in the metadata before saying so.
A 422 (the server refused the file: wrong rate, not audio, sha mismatch) is final:
:class:`UploadRejected`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from tutti.errors import TuttiError
from tutti.fsutil import file_sha256
from tutti.tusheaders import TUS_VERSION, encode_metadata, upload_checksum
from tutti.wire import UploadMetadata, error_message

__all__ = [
    "ChunkSizer",
    "UploadError",
    "UploadRejected",
    "UploadJob",
    "UploadProgress",
    "TusUploader",
    "file_sha256",
]

log = logging.getLogger(__name__)

#: Bytes of the first PATCH; later ones adapt (see :class:`ChunkSizer`).
FIRST_CHUNK: Final = 1 << 20
#: Smallest and largest PATCH body, bytes: small enough for a phone on a weak uplink to send
#: one within the request timeout, large enough that a fast line is not held back by a
#: round trip and a server fsync per chunk.
MIN_CHUNK: Final = 256 * 1024
MAX_CHUNK: Final = 16 << 20
#: Seconds a PATCH should take: short enough that a drop loses little and progress moves,
#: long enough to hide the round trip.
TARGET_PATCH_S: Final = 2.0
_CHUNK_ALIGN = 64 * 1024
_SEND_PIECE = 1 << 20
_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=5, sock_read=30)


class UploadError(TuttiError):
    """The upload cannot go on (e.g. refused credentials); the message says why."""


class UploadRejected(UploadError):
    """The server received the whole file and refused it (HTTP 422); final."""


@dataclass(frozen=True)
class UploadJob:
    """One file to upload.

    ``recording``: the :class:`tutti.takeformat.Recording` fields minus file/singer/part
    (rate, channels, frames, start_offset, latency, latency_source, overflows, underflows,
    shared_clock, device), sent as JSON in the ``recording`` metadata key (which tus, like
    every metadata value, base64-encodes on the wire).
    """

    path: Path
    take_id: str
    sha256: str
    recording: dict[str, Any] = field(default_factory=dict)
    filename: str = ""

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class UploadProgress:
    """What the live view shows: bytes confirmed by the server, total, state, retries."""

    take_id: str
    total: int
    offset: int = 0
    state: str = "uploading"  # uploading | retrying | uploaded | failed
    retries: int = 0
    detail: str = ""


class _Retry(Exception):
    """Internal: go back to HEAD after a backoff."""


@dataclass
class ChunkSizer:
    """The size of the next PATCH body, adapted to how long the last ones took.

    Grows ×2 while a PATCH of a full chunk takes under ``target_s / 2`` seconds; after one
    that took over ``2 × target_s``, falls to what its rate sends in ``target_s``; halves
    after a PATCH lost to the network.  Always within ``[low, high]`` and a multiple of
    64 KiB (unless ``low`` is smaller).

    Parameters
    ----------
    size : int
        The current (first) chunk size, bytes.
    low, high : int
        Bounds, bytes.
    target_s : float
        Seconds a PATCH should take.
    """

    size: int = FIRST_CHUNK
    low: int = MIN_CHUNK
    high: int = MAX_CHUNK
    target_s: float = TARGET_PATCH_S

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high or self.target_s <= 0:
            raise ValueError("chunk bounds need 0 < low <= high and target_s > 0")
        self.size = self._bounded(self.size)

    def sent(self, nbytes: int, seconds: float) -> None:
        """A PATCH of ``nbytes`` was acknowledged ``seconds`` after it was sent."""
        if seconds > 2 * self.target_s:
            self.size = self._bounded(min(self.size, int(nbytes / seconds * self.target_s)))
        elif nbytes >= self.size and seconds < self.target_s / 2:  # a short last chunk says less
            self.size = self._bounded(self.size * 2)

    def failed(self) -> None:
        """A PATCH was lost to the network (connection dropped, timeout): send less next."""
        self.size = self._bounded(self.size // 2)

    def _bounded(self, size: int) -> int:
        aligned = size // _CHUNK_ALIGN * _CHUNK_ALIGN
        return max(self.low, min(self.high, aligned))


class TusUploader:
    """tus 1.0 client over an ``aiohttp.ClientSession``.

    Parameters
    ----------
    http : aiohttp.ClientSession
    base_url : str
        ``http(s)://host:port`` of the tutti server (uploads go to ``/files/``).
    token : str
        The singer's bearer token.
    chunk_size : int
        Bytes of the first PATCH; later ones adapt between ``min(MIN_CHUNK, chunk_size)``
        and ``max_chunk`` (see :class:`ChunkSizer`).
    max_chunk : int
        Largest PATCH body, bytes.
    backoff : tuple of float
        ``(first, maximum)`` wait in seconds between retries; doubles each time, ±25 % jitter.
    give_up_after : float or None
        Stop retrying after this many seconds without progress (``None``: never).
    on_progress : callable, optional
        Called with the :class:`UploadProgress` after every change.
    """

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        chunk_size: int = FIRST_CHUNK,
        max_chunk: int = MAX_CHUNK,
        backoff: tuple[float, float] = (0.2, 10.0),
        give_up_after: float | None = None,
        on_progress: Callable[[UploadProgress], None] | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.sizer = ChunkSizer(chunk_size, min(MIN_CHUNK, chunk_size, max_chunk), max_chunk)
        self.backoff = backoff
        self.give_up_after = give_up_after
        self.on_progress = on_progress
        self.checksum = "crc32"  # Upload-Checksum algorithm; sha256 for servers without crc32
        self.requests = 0  # HTTP requests made (for tests and stats)
        self.chunks: list[int] = []  # bytes of every PATCH body sent, in order (ditto)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Tus-Resumable": TUS_VERSION, "Authorization": f"Bearer {self.token}"}
        if extra:
            h.update(extra)
        return h

    def _notify(self, p: UploadProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(p)

    # -------------------------------------------------------------- state file
    @staticmethod
    def state_path(job: UploadJob) -> Path:
        """Where the upload URL of ``job`` is remembered across client restarts."""
        return job.path.with_name(job.path.name + ".tus.json")

    def _load_url(self, job: UploadJob) -> str | None:
        try:
            d = json.loads(self.state_path(job).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if d.get("sha256") == job.sha256 and d.get("server") == self.base_url:
            url = d.get("url")
            return url if isinstance(url, str) else None
        return None

    def _save_url(self, job: UploadJob, url: str | None) -> None:
        p = self.state_path(job)
        if url is None:
            p.unlink(missing_ok=True)
            return
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"url": url, "sha256": job.sha256, "server": self.base_url}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)

    # -------------------------------------------------------------- protocol
    async def _create(self, job: UploadJob) -> str:
        meta = UploadMetadata(
            take_id=job.take_id,
            filename=job.filename or job.path.name,
            recording=json.dumps(job.recording, separators=(",", ":")),
            sha256=job.sha256,
        ).to_dict()
        self.requests += 1
        async with self.http.post(
            f"{self.base_url}/files/",
            headers=self._headers(
                {"Upload-Length": str(job.size), "Upload-Metadata": encode_metadata(meta)}
            ),
            timeout=_TIMEOUT,
        ) as resp:
            if resp.status == 201 and "Location" in resp.headers:
                loc = resp.headers["Location"]
                return loc if "://" in loc else f"{self.base_url}{loc}"
            await self._raise_for(resp, "creating the upload")
        raise _Retry()  # unreachable: _raise_for always raises

    async def _head(self, url: str) -> tuple[int, str] | None:
        """``(offset, state)`` or ``None`` when the upload is gone."""
        self.requests += 1
        async with self.http.head(url, headers=self._headers(), timeout=_TIMEOUT) as resp:
            if resp.status in (404, 410):
                return None
            if resp.status == 422:
                why = resp.headers.get("X-Tutti-Upload-Error", "refused by the server")
                raise UploadRejected(f"the server refused the take: {why}")
            if resp.status != 200:
                await self._raise_for(resp, "asking for the upload's offset")
            return int(resp.headers["Upload-Offset"]), resp.headers.get(
                "X-Tutti-Upload-State", "receiving"
            )

    async def _patch(self, url: str, offset: int, chunk: bytes, checksum: str) -> int | None:
        """New offset, or ``None`` if the server says the upload is already complete."""
        self.requests += 1
        self.chunks.append(len(chunk))
        async with self.http.patch(
            url,
            data=_pieces(chunk),
            headers=self._headers(
                {
                    "Content-Length": str(len(chunk)),
                    "Content-Type": "application/offset+octet-stream",
                    "Upload-Offset": str(offset),
                    "Upload-Checksum": checksum,
                }
            ),
            timeout=_TIMEOUT,
        ) as resp:
            if resp.status == 204:
                return int(resp.headers["Upload-Offset"])
            if resp.status == 403:
                body = await resp.text()
                if "upload_complete" in body:
                    return None
            if resp.status in (409, 460):
                raise _Retry()  # offset moved (a lost answer) or chunk damaged: HEAD and resend
            if resp.status == 400 and self.checksum != "sha256":
                if "bad_checksum" in await resp.text():  # a server from before crc32
                    self.checksum = "sha256"
                    raise _Retry()
            if resp.status in (404, 410):
                raise _Gone()
            await self._raise_for(resp, "sending a chunk")
        raise _Retry()

    async def _send_chunk(self, fd: int, url: str, offset: int) -> int | None:
        """PATCH the next chunk from ``offset`` (read and hashed in a worker thread) and
        feed its timing, or its failure, to the chunk sizer; returns what :meth:`_patch` does."""
        chunk, checksum = await asyncio.to_thread(
            _read_chunk, fd, offset, self.sizer.size, self.checksum
        )
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        try:
            new = await self._patch(url, offset, chunk, checksum)  # b"": retries completion
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            self.sizer.failed()  # the line failed (a 409 or 460 says nothing about it)
            raise
        self.sizer.sent(len(chunk), loop.time() - sent_at)
        return new

    async def _raise_for(self, resp: aiohttp.ClientResponse, doing: str) -> None:
        text = ""
        try:
            body = await resp.json(content_type=None)
            text = error_message(body)
        except (ValueError, aiohttp.ClientError):
            pass
        if resp.status == 422:
            raise UploadRejected(f"the server refused the take: {text or 'invalid file'}")
        if resp.status >= 500 or resp.status == 429 or resp.status == 423:
            raise _Retry()
        raise UploadError(f"upload failed while {doing}: HTTP {resp.status} {text}".strip())

    # -------------------------------------------------------------- driver
    async def upload(self, job: UploadJob) -> str:
        """Coroutine: upload ``job`` until the server confirms it; returns the upload URL.

        Raises
        ------
        UploadRejected
            The server refused the complete file (final).
        UploadError
            Credentials refused, or no progress for ``give_up_after`` seconds.
        """
        total = job.size
        prog = UploadProgress(take_id=job.take_id, total=total)
        url = self._load_url(job)
        delay = self.backoff[0]
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        with open(job.path, "rb") as fh:
            while True:
                try:
                    if url is None:
                        url = await self._create(job)
                        await asyncio.to_thread(self._save_url, job, url)
                    head = await self._head(url)
                    if head is None:
                        log.info("upload %s is gone on the server; starting a new one", url)
                        url = None
                        await asyncio.to_thread(self._save_url, job, None)
                        continue
                    offset, state = head
                    if state == "completed":
                        break
                    if offset > total:
                        raise UploadError(f"the server holds more bytes ({offset}) than the file")
                    prog.offset, prog.state = offset, "uploading"
                    self._notify(prog)
                    while True:
                        new = await self._send_chunk(fh.fileno(), url, offset)
                        if new is None:
                            break
                        if new > offset:
                            last_progress = loop.time()
                            delay = self.backoff[0]
                        offset = new
                        prog.offset = offset
                        self._notify(prog)
                        if offset >= total:
                            head = await self._head(url)
                            if head is not None and head[1] == "completed":
                                break
                            raise _Retry()
                    break
                except _Gone:
                    url = None
                    await asyncio.to_thread(self._save_url, job, None)
                except (TimeoutError, _Retry, aiohttp.ClientError, ConnectionError) as exc:
                    if (
                        self.give_up_after is not None
                        and loop.time() - last_progress > self.give_up_after
                    ):
                        prog.state, prog.detail = "failed", f"no progress: {exc!r}"
                        self._notify(prog)
                        raise UploadError(
                            f"upload of take {job.take_id} made no progress for "
                            f"{self.give_up_after:.0f} s (last error: {exc!r}); it is kept "
                            "and retried on the next start"
                        ) from exc
                    prog.state, prog.retries = "retrying", prog.retries + 1
                    prog.detail = type(exc).__name__
                    self._notify(prog)
                    await asyncio.sleep(delay * random.uniform(0.75, 1.25))
                    delay = min(delay * 2.0, self.backoff[1])
                except UploadRejected as exc:
                    prog.state, prog.detail = "failed", str(exc)
                    self._notify(prog)
                    if url is not None:
                        await self._terminate(url)
                    raise
        prog.offset, prog.state = total, "uploaded"
        self._notify(prog)
        assert url is not None
        return url

    async def _terminate(self, url: str) -> None:
        """Best effort: delete a refused upload on the server (tus termination), so that it
        stops counting against this singer's open uploads before it expires.  The local take
        is kept."""
        try:
            async with self.http.delete(url, headers=self._headers()) as resp:
                if resp.status not in (204, 404, 410):
                    log.info("refused upload %s not deleted: HTTP %d", url, resp.status)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            log.info("refused upload %s not deleted: %r", url, exc)

    def forget(self, job: UploadJob) -> None:
        """Remove the saved upload URL (after the take is confirmed and deleted locally)."""
        self._save_url(job, None)


class _Gone(Exception):
    """Internal: the upload no longer exists on the server."""


async def _pieces(chunk: bytes) -> AsyncIterator[memoryview]:
    """The chunk as a request body in 1 MiB views: streamed without a copy, and without
    holding the event loop for the whole chunk."""
    view = memoryview(chunk)
    for start in range(0, len(view), _SEND_PIECE):
        yield view[start : start + _SEND_PIECE]


def _read_chunk(fd: int, offset: int, size: int, algorithm: str) -> tuple[bytes, str]:
    """Blocking: up to ``size`` bytes of the file at ``offset`` and their Upload-Checksum."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        block = os.pread(fd, size - got, offset + got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    chunk = b"".join(parts)
    return chunk, upload_checksum(algorithm, chunk)
