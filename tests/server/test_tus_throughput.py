"""Many concurrent tus uploads into one server process: throughput, 0 corrupt, and the
server stays responsive (HEAD latency measured while the uploads run).

Scaled for the test suite (50 × 4 MB).  For the issue's figure run::

    TUTTI_TUS_BENCH_MB=50 .venv/bin/pytest -s tests/server/test_tus_throughput.py
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.server.tus_support import OCTET, auth, create, head_offset
from tutti.fsutil import file_sha256

ROOT = Path(__file__).resolve().parents[2]
UPLOADS = 50
SIZE_MB = int(os.environ.get("TUTTI_TUS_BENCH_MB", "4"))
PATCH_BYTES = 4 << 20  # per PATCH request, like a tus client's chunk size
BLOCK = os.urandom(1 << 20)


def chunk_of(upload: int, start: int, size: int) -> bytes:
    """Deterministic, upload-specific content: a shared random block stamped per MiB."""
    out = bytearray()
    pos = start
    while pos < start + size:
        mib, within = divmod(pos, 1 << 20)
        block = struct.pack("<QQ", upload, mib) + BLOCK[16:]
        take = min(len(block) - within, start + size - pos)
        out += block[within : within + take]
        pos += take
    return bytes(out)


async def upload_one(s: aiohttp.ClientSession, base: str, i: int, size: int) -> tuple[str, str]:
    url = await create(s, base, size, owner=f"singer{i}")
    h = hashlib.sha256()
    offset = 0
    while offset < size:
        body = chunk_of(i, offset, min(PATCH_BYTES, size - offset))
        h.update(body)
        async with s.patch(
            url,
            data=io.BytesIO(body),
            headers={**auth(f"singer{i}"), "Upload-Offset": str(offset), "Content-Type": OCTET},
        ) as r:
            assert r.status == 204, (r.status, await r.text())
            offset = int(r.headers["Upload-Offset"])
    return url.rsplit("/", 1)[1], h.hexdigest()


@pytest.mark.slow
async def test_concurrent_uploads(tmp_path: Path) -> None:
    size = SIZE_MB * 1_000_000
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.server.tus_support", "--dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        base = f"http://127.0.0.1:{int(line.split()[-1])}/files/"
        connector = aiohttp.TCPConnector(limit=UPLOADS + 5)
        async with aiohttp.ClientSession(connector=connector) as s:
            probe = await create(s, base, 10, owner="probe")
            latencies: list[float] = []
            done = asyncio.Event()

            async def measure() -> None:
                while not done.is_set():
                    t = time.perf_counter()
                    assert await head_offset(s, probe, owner="probe") == 0
                    latencies.append(time.perf_counter() - t)
                    await asyncio.sleep(0.05)

            prober = asyncio.create_task(measure())
            t0 = time.perf_counter()
            results = await asyncio.gather(*(upload_one(s, base, i, size) for i in range(UPLOADS)))
            wall = time.perf_counter() - t0
            done.set()
            await prober
        corrupt = 0
        for upload_id, want in results:
            got = await asyncio.to_thread(file_sha256, tmp_path / "done" / upload_id)
            corrupt += got != want
        total_mb = UPLOADS * size / 1e6
        lat_ms = sorted(x * 1000 for x in latencies)
        p99 = lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))]
        print(
            f"\n{UPLOADS} concurrent uploads x {SIZE_MB} MB = {total_mb:.0f} MB in {wall:.2f} s"
            f" -> {total_mb / wall:.0f} MB/s; corrupt: {corrupt}; HEAD latency during the"
            f" uploads: median {statistics.median(lat_ms):.1f} ms, p99 {p99:.1f} ms,"
            f" max {lat_ms[-1]:.1f} ms over {len(lat_ms)} probes"
        )
        assert corrupt == 0
        assert len(lat_ms) >= 2
        assert lat_ms[-1] < 2000, "the server's event loop stalled during the uploads"
    finally:
        proc.kill()
        await asyncio.to_thread(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()
