"""Upload load for the server benchmark: synthetic takes (WAV or FLAC) and a plain-PUT client.

A :class:`WavSource` is a valid 16-bit mono WAV of an exact byte size whose bytes are made on
the fly (a shared random MiB, stamped with the upload's number and the MiB's index, so no
two uploads and no two MiBs are alike and a misplaced chunk changes the sha256); the
benchmark writes each to a file once, and both sides send that file: tutti's own uploader
(:class:`tutti.client.uploader.TusUploader` with its defaults) over tus, and
:func:`put_file` as one streamed HTTP ``PUT`` to the peer (``bench._peer_put``).  A
:class:`FlacSource` is the format ``tutti join`` uploads, encoded for real, whose audio
check costs the server a full decode.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

__all__ = ["FlacSource", "UploadSource", "WavSource", "put_file", "file_sha256"]

_HEADER = 44
_MIB = 1 << 20
_BLOCK = np.random.default_rng(20261123).integers(0, 256, _MIB, dtype=np.uint8).tobytes()


@dataclass(frozen=True)
class WavSource:
    """A synthetic take: a PCM 16-bit mono WAV of ``size`` bytes (header included).

    Parameters
    ----------
    index : int
        Upload number (stamped into every MiB of audio data).
    size : int
        Total file size in bytes (even, ≥ 46).
    rate : int
        Sample rate in Hz written into the header.
    """

    index: int
    size: int
    rate: int = 48000

    def __post_init__(self) -> None:
        if self.size < _HEADER + 2 or self.size % 2:
            raise ValueError(f"WAV size must be even and at least {_HEADER + 2} bytes")

    @property
    def frames(self) -> int:
        """Audio frames in the file (2 bytes each)."""
        return (self.size - _HEADER) // 2

    def header(self) -> bytes:
        data = self.size - _HEADER
        return (
            b"RIFF"
            + struct.pack("<I", 36 + data)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, self.rate, self.rate * 2, 2, 16)
            + b"data"
            + struct.pack("<I", data)
        )

    def chunk(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the file."""
        end = min(offset + length, self.size)
        out = bytearray()
        if offset < _HEADER:
            out += self.header()[offset : min(end, _HEADER)]
            offset = _HEADER
        while offset < end:
            mib, within = divmod(offset - _HEADER, _MIB)
            block = struct.pack("<QQ", self.index, mib) + _BLOCK[16:]
            n = min(_MIB - within, end - offset)
            out += block[within : within + n]
            offset += n
        return bytes(out)

    def chunks(self, size: int) -> list[tuple[int, int]]:
        """``(offset, length)`` of consecutive chunks of at most ``size`` bytes."""
        return [(o, min(size, self.size - o)) for o in range(0, self.size, size)]

    def write(self, path: Path) -> None:
        """Write the file to ``path`` (8 MiB at a time)."""
        with open(path, "wb") as f:
            for off, n in self.chunks(8 * _MIB):
                f.write(self.chunk(off, n))

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the whole file (computed once)."""
        h = hashlib.sha256()
        for off, n in self.chunks(8 * _MIB):
            h.update(self.chunk(off, n))
        return h.hexdigest()

    def recording(self) -> dict[str, object]:
        """The ``recording`` metadata a tutti client sends for this file."""
        return recording_metadata(self.rate, self.frames)


class FlacSource:
    """A synthetic take as ``tutti join`` stores it: 24-bit mono FLAC
    (:mod:`tutti.client.takestore`) of about ``size`` bytes, a tone under noise seeded by
    ``index``, so the server's audio check decodes what it would decode for a singer.

    Parameters
    ----------
    index : int
        Upload number (seeds the noise: no two files alike).
    size : int
        Bytes wanted; the file is within a few per cent of it.
    rate : int
        Sample rate in Hz.
    """

    #: FLAC bytes per second of this signal at 48 kHz, 24-bit (measured: 57 MB for 480 s).
    BYTES_PER_S = 118_000
    _BLOCK_S = 10

    def __init__(self, index: int, size: int, rate: int = 48000) -> None:
        self.index, self.rate = index, rate
        self.frames = int(size / self.BYTES_PER_S * rate)
        self._path: Path | None = None

    def write(self, path: Path) -> None:
        """Encode the file to ``path`` (10 s at a time)."""
        rng = np.random.default_rng(self.index)
        step = self._BLOCK_S * self.rate
        with sf.SoundFile(path, "w", self.rate, 1, "PCM_24", format="FLAC") as f:
            for start in range(0, self.frames, step):
                t = np.arange(start, min(start + step, self.frames)) / self.rate
                tone = 0.1 * np.sin(2 * np.pi * (220 + self.index) * t)
                f.write((tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32))
        self._path = path

    @property
    def size(self) -> int:
        """Bytes of the written file."""
        assert self._path is not None, "write() first"
        return self._path.stat().st_size

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the written file (computed once)."""
        assert self._path is not None, "write() first"
        return file_sha256(self._path)

    def recording(self) -> dict[str, object]:
        """The ``recording`` metadata a tutti client sends for this file."""
        return recording_metadata(self.rate, self.frames)


#: Either kind of synthetic take.
UploadSource = WavSource | FlacSource


def recording_metadata(rate: int, frames: int) -> dict[str, object]:
    """The ``recording`` metadata a tutti client sends for a mono file of ``frames``."""
    return {
        "rate": rate,
        "channels": 1,
        "frames": frames,
        "start_offset": 0,
        "latency": 480,
        "latency_source": "measured",
        "overflows": 0,
        "underflows": 0,
        "shared_clock": True,
        "device": {"name": "bench"},
    }


async def put_file(http: aiohttp.ClientSession, url: str, path: Path) -> float:
    """Coroutine: send the file at ``path`` as one streamed ``PUT`` (1 MiB reads in a worker
    thread, as tutti's uploader reads its chunks); return seconds to the response."""

    async def body() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            while block := await asyncio.to_thread(f.read, _MIB):
                yield block

    t = time.monotonic()
    size = path.stat().st_size
    async with http.put(url, data=body(), headers={"Content-Length": str(size)}) as r:
        if r.status != 201:
            raise RuntimeError(f"PUT {url}: HTTP {r.status} {(await r.text())[:300]}")
    return time.monotonic() - t


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_MIB):
            h.update(block)
    return h.hexdigest()
