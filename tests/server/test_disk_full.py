"""A full disk under the server: every write refused with 507 and a clear message, nothing
stored half-way, and the server back to normal once there is room again.

The data folder lives on a small tmpfs that the test mounts (root only) and fills."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.server.helpers import SETTINGS, create_session, error_of, join
from tests.support.server import running_server


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_full_disk_gives_507_and_recovers(small_disk: Path) -> None:
    data = small_disk / "data"
    async with running_server(data) as srv, aiohttp.ClientSession(srv.url) as http:
        leader = await create_session(http)
        await join(http, leader.code, name="Ann")
        filler = _fill(small_disk)
        # every write the server tries now meets a full disk
        for attempt in range(3):
            async with http.post(
                "/api/sessions", json={**SETTINGS, "title": f"full {attempt}"}
            ) as r:
                body = await r.text()
                assert r.status in (201, 507), body  # SQLite may still fit a page or two
                if r.status == 507:
                    err = await error_of(r)
                    assert err["code"] == "disk_full" and "disk is full" in err["message"]
                    break
        else:
            raise AssertionError("three sessions fitted on a full disk")
        async with http.post(
            "/api/join", json={"code": leader.code, "name": "Bo", "part": "A"}
        ) as r:
            assert r.status in (200, 507), await r.text()
        filler.unlink()
        # room again: the server works, and what it stored before is intact
        async with http.post("/api/sessions", json={**SETTINGS, "title": "after"}) as r:
            assert r.status == 201, await r.text()
        async with http.get("/healthz") as r:
            assert r.status == 200
    with sqlite3.connect(data / "tutti.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
