"""Upload load for the server benchmark: synthetic take WAVs, a tus client, a plain-PUT client.

A :class:`WavSource` is a valid 16-bit mono WAV of an exact byte size whose bytes are made on
the fly (a shared random MiB, stamped with the upload's number and the MiB's index, so no
two uploads and no two MiBs are alike and a misplaced chunk changes the sha256), so 50 × 50 MB
need no source files and no 2.5 GB of memory.

:func:`tus_upload` speaks tus 1.0 as ``docs/protocol.md`` has it: ``POST /files/`` with
``Upload-Length`` and ``Upload-Metadata`` (take_id, filename, sha256, recording JSON), then
``PATCH`` chunks with ``Upload-Checksum: sha1 <base64>``.  :func:`put_upload` sends the same
bytes as one streamed HTTP ``PUT`` (to ``bench._peer_put``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property

import aiohttp
import numpy as np

__all__ = ["WavSource", "tus_upload", "put_upload", "TUS_HEADERS"]

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
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

    @cached_property
    def sha256(self) -> str:
        """Hex sha256 of the whole file (computed once)."""
        h = hashlib.sha256()
        for off, n in self.chunks(8 * _MIB):
            h.update(self.chunk(off, n))
        return h.hexdigest()

    def recording(self) -> dict[str, object]:
        """The ``recording`` metadata a tutti client sends for this file."""
        return {
            "rate": self.rate,
            "channels": 1,
            "frames": self.frames,
            "start_offset": 0,
            "latency": 480,
            "latency_source": "measured",
            "overflows": 0,
            "underflows": 0,
            "shared_clock": True,
            "device": {"name": "bench"},
        }


def _metadata(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode('ascii')}" for k, v in meta.items())


async def tus_upload(
    http: aiohttp.ClientSession, base: str, token: str, take_id: str, src: WavSource, chunk: int
) -> float:
    """Coroutine: upload ``src`` with tus; return seconds from creation to the last 204.

    Raises ``RuntimeError`` naming the request that got an unexpected status.
    """
    auth = {**TUS_HEADERS, "Authorization": f"Bearer {token}"}
    meta = _metadata(
        {
            "take_id": take_id,
            "filename": "take.wav",
            "sha256": src.sha256,
            "recording": json.dumps(src.recording()),
        }
    )
    t = time.monotonic()
    async with http.post(
        f"{base}/files/", headers={**auth, "Upload-Length": str(src.size), "Upload-Metadata": meta}
    ) as r:
        if r.status != 201:
            raise RuntimeError(f"tus POST: HTTP {r.status} {(await r.text())[:300]}")
        location = r.headers["Location"]
    url = location if location.startswith("http") else base + location
    offset = 0
    for off, n in src.chunks(chunk):
        body = src.chunk(off, n)
        digest = base64.b64encode(hashlib.sha1(body).digest()).decode("ascii")
        async with http.patch(
            url,
            data=body,
            headers={
                **auth,
                "Upload-Offset": str(offset),
                "Upload-Checksum": f"sha1 {digest}",
                "Content-Type": "application/offset+octet-stream",
            },
        ) as r:
            if r.status != 204:
                raise RuntimeError(
                    f"tus PATCH at {offset}: HTTP {r.status} {(await r.text())[:300]}"
                )
            offset = int(r.headers["Upload-Offset"])
    if offset != src.size:
        raise RuntimeError(f"tus upload ended at offset {offset} of {src.size}")
    return time.monotonic() - t


async def put_upload(http: aiohttp.ClientSession, url: str, src: WavSource, chunk: int) -> float:
    """Coroutine: send ``src`` as one streamed ``PUT``; return seconds to the response."""

    async def body() -> AsyncIterator[bytes]:
        for off, n in src.chunks(chunk):
            yield src.chunk(off, n)

    t = time.monotonic()
    async with http.put(url, data=body(), headers={"Content-Length": str(src.size)}) as r:
        if r.status != 201:
            raise RuntimeError(f"PUT {url}: HTTP {r.status} {(await r.text())[:300]}")
    return time.monotonic() - t
