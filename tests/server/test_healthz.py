"""``GET /healthz`` against a real server: 200 while the data directory takes new files,
503 with a clear JSON error while it does not, and 200 again once the cause is gone."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest

from tests.server.helpers import error_of
from tests.support.server import RunningServer, running_server
from tutti.server.http_api import HEALTHZ_PROBE


async def _healthz(http: aiohttp.ClientSession) -> tuple[int, dict[str, object]]:
    async with http.get("/healthz") as r:
        if r.status == 200:
            return r.status, dict(await r.json())
        return r.status, await error_of(r)


async def test_probe_blocked_by_a_directory_gives_503_then_recovers(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    data = server.config.data_dir
    status, body = await _healthz(http)
    assert status == 200 and body["ok"] is True
    assert (data / HEALTHZ_PROBE).read_bytes() == b"ok"

    # a directory where the probe file goes: the rename onto it fails, even as root
    (data / HEALTHZ_PROBE).unlink()
    (data / HEALTHZ_PROBE).mkdir()
    (data / HEALTHZ_PROBE / "keep").write_bytes(b"x")  # non-empty: no rename can replace it
    status, err = await _healthz(http)
    assert status == 503
    assert err["code"] == "data_dir_unwritable"
    message = str(err["message"])
    assert "data directory" in message and HEALTHZ_PROBE in message
    assert "directory" in message.split("(")[1]  # the OS reason, e.g. "Is a directory"
    assert str(data) not in message  # no server paths handed to anyone who asks
    leftovers = [p.name for p in data.iterdir() if p.name.startswith(".healthz-")]
    assert leftovers == []  # the failed probe's temporary file was removed

    shutil.rmtree(data / HEALTHZ_PROBE)
    status, body = await _healthz(http)
    assert status == 200 and body["ok"] is True
    assert (data / HEALTHZ_PROBE).is_file()


def _read_only_dirs_stop_writes() -> bool:
    """Whether this process is stopped by a directory's mode (root with CAP_DAC_OVERRIDE is not)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        try:
            Path(d, "x").write_bytes(b"")
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o755)
        return False


@pytest.mark.skipif(
    not _read_only_dirs_stop_writes(),
    reason="this process writes into read-only directories (root)",
)
async def test_read_only_data_dir_gives_503_even_with_an_existing_probe_file(
    server: RunningServer, http: aiohttp.ClientSession
) -> None:
    data = server.config.data_dir
    assert (await _healthz(http))[0] == 200  # the probe file now exists and is writable
    mode = data.stat().st_mode
    data.chmod(0o555)
    try:
        status, err = await _healthz(http)
    finally:
        data.chmod(mode)
    assert status == 503 and err["code"] == "data_dir_unwritable"
    assert "Permission denied" in str(err["message"])
    assert (await _healthz(http))[0] == 200


async def test_a_killed_servers_probe_file_is_removed_at_start(tmp_path: Path) -> None:
    """A server killed between creating its probe and renaming it leaves a ``.healthz-*``
    file behind; the next start removes it (and nothing else).  A fresh one may be another
    process's, writing its probe into the shared data directory: it stays."""
    data = tmp_path / "data"
    data.mkdir()
    (data / ".healthz-k9x2_a1").write_bytes(b"ok")
    (data / ".healthz-other").write_bytes(b"")
    for name in (".healthz-k9x2_a1", ".healthz-other"):
        os.utime(data / name, (1e9, 1e9))  # long ago
    (data / ".healthz-in-use").write_bytes(b"")
    (data / "keep-me").write_bytes(b"x")
    async with running_server(data) as srv, aiohttp.ClientSession(srv.url) as http:
        assert sorted(p.name for p in data.glob(".healthz-*")) == [".healthz-in-use"]
        assert (data / "keep-me").read_bytes() == b"x"
        status, _ = await _healthz(http)
        assert status == 200
