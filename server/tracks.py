"""Backing tracks: received streamed to disk under a size cap, checked, stored by sha256.

A leader's ``PUT /api/session/tracks/{part}`` body goes to a temporary file in the data
directory while its sha256 is computed; it is then checked with :func:`check_audio` (1 or 2
channels), fsynced and renamed to ``tracks/<sha256>``.  The same content uploaded twice (or
for two parts) is stored once.  An MP3, or a file at another sample rate than the
session's (most backings are CDs' and MP3s' 44.1 kHz), is converted on the server, as a
leader would otherwise have to with a tool they may not have: decoded, resampled with soxr
(the project's one resampler, :mod:`tutti.audio.resample`), lowered if that put a peak above
full scale, and stored as 24-bit FLAC at the session's rate under the new file's sha256.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
from pathlib import Path

import numpy as np
import soundfile as sf
from aiohttp import web

from tutti.audio.resample import StreamResampler
from tutti.audio.types import AudioArray
from tutti.fsutil import file_sha256, fsync_dir
from tutti.mix.scratch import RawAudio
from tutti.wire import SessionSettings

from .audiocheck import AudioCheckError, AudioInfo, check_audio
from .errors import InsufficientStorage, TooLarge, Unprocessable, UnsupportedMedia
from .models import TRACK_FORMATS, Track

__all__ = ["TrackStore", "fsync_dir", "receive_body"]

_BATCH = 1 << 20
_RESAMPLE_BLOCK = 1 << 16  # frames converted at a time (a backing is never held whole)
_ACCEPTED_TYPES = ("audio/", "application/octet-stream")


async def receive_body(request: web.Request, dest: Path, cap: int) -> tuple[str, int]:
    """Coroutine: stream the request body into ``dest`` (fsynced); return (sha256 hex, bytes).

    Raises :class:`TooLarge` (413) as soon as more than ``cap`` bytes are announced or arrive;
    ``dest`` is removed then.
    """
    declared = request.content_length
    if declared is not None and declared > cap:
        raise TooLarge(f"the body is {declared} bytes; at most {cap} bytes are accepted here")
    digest = hashlib.sha256()
    size = 0
    f = await asyncio.to_thread(open, dest, "wb")
    try:
        batch: list[bytes] = []
        pending = 0

        def flush(chunks: list[bytes]) -> None:
            for c in chunks:
                f.write(c)

        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > cap:
                raise TooLarge(f"the body exceeds {cap} bytes, the most accepted here")
            digest.update(chunk)
            batch.append(chunk)
            pending += len(chunk)
            if pending >= _BATCH:
                await asyncio.to_thread(flush, batch)
                batch, pending = [], 0
        await asyncio.to_thread(flush, batch)

        def sync() -> None:
            f.flush()
            os.fsync(f.fileno())

        await asyncio.to_thread(sync)
    except OSError as exc:
        with contextlib.suppress(OSError):
            f.close()
        dest.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(
                "the server's disk is full; nothing was stored. Tell the server's host, "
                "who must free space before uploads work again"
            ) from None
        raise
    except BaseException:
        f.close()
        dest.unlink(missing_ok=True)
        raise
    f.close()
    return digest.hexdigest(), size


class TrackStore:
    """Backing-track files under ``<data>/tracks``, named by their sha256.

    Parameters
    ----------
    data_dir : Path
        The server's data directory; ``tracks/`` and ``tmp/`` are made inside it.
    max_bytes : int
        Largest track accepted, bytes.
    """

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.root = data_dir / "tracks"
        self.tmp = data_dir / "tmp"
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.glob("*.part"):  # from a run killed mid-upload
            leftover.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the track with this sha256 is stored."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256

    async def receive(self, request: web.Request, part: str, settings: SessionSettings) -> Track:
        """Coroutine: store the request body as ``part``'s backing track and return it.

        Raises 415 for a non-audio Content-Type, 413 over the cap, 422 for a file that is
        not acceptable audio or not mono/stereo.
        """
        ctype = request.content_type
        if not any(ctype.startswith(t) for t in _ACCEPTED_TYPES):
            raise UnsupportedMedia(
                f"Content-Type {ctype!r} is not accepted for a backing track; send the file "
                "as audio/wav, audio/flac, audio/ogg or application/octet-stream"
            )
        tmp = self.tmp / f"{secrets.token_hex(8)}.part"
        sha, size = await receive_body(request, tmp, self.max_bytes)
        try:
            return await self.accept(tmp, sha, size, part, settings)
        finally:
            tmp.unlink(missing_ok=True)

    async def accept(
        self, path: Path, sha: str, size: int, part: str, settings: SessionSettings
    ) -> Track:
        """Coroutine: check the received file ``path`` (fsynced, ``size`` bytes, sha256
        ``sha``) and move it into place as ``part``'s backing track.

        Raises 422 for a file that is not acceptable audio or not mono/stereo; ``path`` is
        then left where it is.  A file at another rate is converted to the session's
        (``path`` is left where it is then too).
        """
        try:
            info = await asyncio.to_thread(check_audio, path, max_channels=8, mp3=True)
        except AudioCheckError as exc:
            raise Unprocessable(f"backing track for {part!r}: {exc}", code="bad_audio") from None
        if info.channels not in (1, 2):
            raise Unprocessable(
                f"backing track for {part!r} has {info.channels} channels; accepted: "
                "1 (mono) or 2 (stereo)",
                code="wrong_channels",
            )
        if info.rate != settings.rate or info.format not in TRACK_FORMATS:
            converted = self.tmp / f"{secrets.token_hex(8)}.flac.part"
            try:
                info, sha, size = await asyncio.to_thread(
                    _convert, path, info, settings.rate, converted
                )
                await asyncio.to_thread(self._place, converted, self.path(sha))
            except (RuntimeError, ValueError, sf.LibsndfileError) as exc:  # what the check let by
                raise Unprocessable(
                    f"backing track for {part!r} could not be converted to the session's "
                    f"{settings.rate} Hz ({exc}); try saving it as WAV or FLAC",
                    code="bad_audio",
                ) from None
            finally:
                converted.unlink(missing_ok=True)
        else:
            await asyncio.to_thread(self._place, path, self.path(sha))
        return Track(
            part=part,
            sha256=sha,
            frames=info.frames,
            rate=info.rate,
            channels=info.channels,
            size=size,
            format=info.format,
        )

    def _place(self, tmp: Path, final: Path) -> None:
        if final.exists() and final.stat().st_size == tmp.stat().st_size:
            return  # same content already stored
        os.replace(tmp, final)
        fsync_dir(self.root)


def _convert(source: Path, info: AudioInfo, rate: int, dest: Path) -> tuple[AudioInfo, str, int]:
    """Convert the checked audio file ``source`` to 24-bit FLAC at ``rate`` in ``dest``
    (fsynced; blocking): what it holds, its sha256 and its size.  Decoded (and resampled)
    once into a float scratch file beside ``dest`` while its peak is found, then written
    lowered by as much as that peak is above full scale (soxr's filter rings past a
    full-scale original's peaks, an MP3 decodes past them too; clipping would distort)."""
    from tutti.mix.passes import open_out  # the mix's reader and writer: loaded when needed
    from tutti.mix.read import read_blocks

    scratch = dest.with_name(dest.name + ".f32.part")
    raw = RawAudio(scratch, info.channels)
    try:
        resample = StreamResampler(info.rate, rate, info.channels) if info.rate != rate else None
        peak = 0.0
        for block in read_blocks(source, sf.info(str(source)), _RESAMPLE_BLOCK, int16=False):
            peak = _append(raw, block if resample is None else resample(block), peak)
        if resample is not None:
            peak = _append(raw, resample.flush(), peak)
        gain = np.float32(1.0 if peak <= 1.0 else 1.0 / peak)
        with open_out(dest, "flac", rate, info.channels) as out_file:
            for a in range(0, raw.frames, _RESAMPLE_BLOCK):
                out_file.write(raw.read(a, min(raw.frames, a + _RESAMPLE_BLOCK)) * gain)
        with open(dest, "rb+") as fh:
            os.fsync(fh.fileno())
        converted = AudioInfo("FLAC", "PCM_24", rate, info.channels, raw.frames)
        return converted, file_sha256(dest), dest.stat().st_size
    finally:
        raw.close()
        scratch.unlink(missing_ok=True)


def _append(raw: RawAudio, block: AudioArray, peak: float) -> float:
    """Append ``block`` to ``raw``; the peak so far."""
    raw.append(block)
    return max(peak, float(np.max(np.abs(block), initial=0.0)))
