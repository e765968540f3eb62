"""``tutti sing`` as a command: what it prints, how it ends, its exit codes (no audio needed).

A real ``tutti sing`` process against a real server on port 0: it prints the window's address,
the window answers there, and SIGTERM (what closing the terminal sends) ends it with 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.server import ROOT


async def _sing(*argv: str, env_dir: Path) -> asyncio.subprocess.Process:
    env = {"TUTTI_CONFIG_DIR": str(env_dir / "cfg"), "TUTTI_DATA_DIR": str(env_dir / "data")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tutti", "sing", *argv, cwd=ROOT,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_a_wrong_link_is_exit_2_and_an_unreachable_server_exit_3(tmp_path: Path) -> None:
    for link, code, words in [
        ("choir.example.org", 2, "not an invite link"),
        ("http://127.0.0.1:1/j/ABC123", 3, "cannot reach the tutti server"),
    ]:
        proc = await _sing(link, "--no-browser", env_dir=tmp_path)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == code, (link, out, err)
        assert words in err.decode() and "Traceback" not in err.decode()


async def test_it_prints_the_address_and_ends_on_sigterm(tmp_path: Path, server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server}/api/sessions", json={"title": "Choir"}) as r:
            code = (await r.json())["code"]
        proc = await _sing(f"{server}/j/{code}", "--no-browser", env_dir=tmp_path)
        try:
            assert proc.stdout is not None
            first = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert b"open this address in your browser" in first
            address = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?s=[\w-]{20,}", address), address
            async with http.get(address, allow_redirects=False) as r:
                assert r.status == 303 and "HttpOnly" in r.headers["Set-Cookie"]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10
