"""``tutti join`` as a real subprocess against a real server process (no audio device needed).

Errors: unreachable server, bad code, bad name, no/wrong device → a clear message and a
distinct exit code.  Flow (``--no-audio``): join, clock report on the leader's roster, a take
broadcast reaches the client, a dropped connection reconnects as the *same* participant,
closing the session ends the client with exit 0.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.client.net_helpers import Leader
from tests.support.jitter_proxy import JitterProxy
from tests.support.server import ROOT, ServerProcess


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUTTI_CONFIG_DIR=str(tmp_path / "cfg"),
        TUTTI_DATA_DIR=str(tmp_path / "local"),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    # no JACK server here: make sure a stray default server is never started
    env["JACK_NO_START_SERVER"] = "1"
    env["JACK_DEFAULT_SERVER"] = f"tutti-none-{os.getpid()}"
    return env


def _join(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tutti", "join", *args],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data")
    await asyncio.to_thread(srv.start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


def test_unreachable_server_is_exit_3(tmp_path: Path) -> None:
    r = _join(tmp_path, "http://127.0.0.1:9", "--code", "ABCDEF", "--name", "Di", "--part", "S")
    assert r.returncode == 3, r.stderr
    assert "cannot reach the tutti server at http://127.0.0.1:9" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_arguments_are_exit_2(tmp_path: Path) -> None:
    r = _join(tmp_path, "ftp://x", "--code", "A", "--name", "Di")
    assert r.returncode == 2 and "server URL 'ftp://x' is not valid" in r.stderr
    r = _join(tmp_path, "http://127.0.0.1:9", "--code", "A", "--name", "a/b")
    assert r.returncode == 2 and "name: 1–64 printable characters" in r.stderr
    r = _join(tmp_path, "http://127.0.0.1:9", "--code", "A", "--name", "Di", "--part", "S/A")
    assert r.returncode == 2 and "part:" in r.stderr


async def test_bad_code_and_bad_part_are_exit_4(server: ServerProcess, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        leader = await Leader(http, server.url).create()
    r = await asyncio.to_thread(
        _join, tmp_path, server.url, "--code", "ZZZZZZ", "--name", "Di", "--part", "S", "--no-audio"
    )
    assert r.returncode == 4, r.stderr
    assert "the join code 'ZZZZZZ' is not known to this server" in r.stderr
    r = await asyncio.to_thread(
        _join,
        tmp_path,
        server.url,
        "--code",
        leader.code,
        "--name",
        "Di",
        "--part",
        "X",
        "--no-audio",
    )
    assert r.returncode == 4, r.stderr
    assert "'X' is not one of this session's parts" in r.stderr


async def test_no_audio_device_is_exit_5(server: ServerProcess, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        leader = await Leader(http, server.url).create()
    r = await asyncio.to_thread(
        _join,
        tmp_path,
        server.url,
        "--code",
        leader.code,
        "--name",
        "Di",
        "--part",
        "S",
        "--device",
        "no-such-headset",
    )
    assert r.returncode == 5, r.stdout + r.stderr
    assert "audio device problem" in r.stderr
    assert "Traceback" not in r.stderr


async def _wait_for(pred: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_session_flow_reconnect_and_close(server: ServerProcess, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        leader = await Leader(http, server.url).create()
        async with JitterProxy("127.0.0.1", server.port, delay=0.0, jitter=0.0) as proxy:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tutti",
                "join",
                f"http://127.0.0.1:{proxy.port}",
                "--code",
                leader.code,
                "--name",
                "Eve",
                "--part",
                "A",
                "--no-audio",
                "--plain",
                cwd=ROOT,
                env=_env(tmp_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:

                async def synced() -> bool:
                    ps = await leader.roster()
                    return len(ps) == 1 and ps[0]["connected"] and ps[0]["clock"] is not None

                await _wait_for(synced, 30)
                first = (await leader.roster())[0]
                assert first["name"] == "Eve" and first["part"] == "A"
                assert first["clock"]["error_bound"] < 0.005

                proxy.drop_all()  # Wi-Fi drop

                async def back() -> bool:
                    ps = await leader.roster()
                    return len(ps) == 1 and bool(ps[0]["connected"])

                await asyncio.sleep(0.3)
                await _wait_for(back, 20)
                again = await leader.roster()
                assert [p["participant_id"] for p in again] == [first["participant_id"]]

                take_id = await leader.arm()
                await leader.start(take_id, lead_s=1.0)
                await leader.wait_state(take_id, first["participant_id"], "failed", timeout=20)

                async with http.post(f"{server.url}/api/session/close", headers=leader.auth) as r:
                    assert r.status == 200
                rc = await asyncio.wait_for(proc.wait(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            out = (await proc.stdout.read()).decode() if proc.stdout else ""
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert rc == 0, err
    assert "joined 'test choir' as Eve (A)" in out
    assert "reconnected" in out
    assert f"take {take_id} starts at local" in out
    assert "the leader closed the session" in out
