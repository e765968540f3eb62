"""``tutti serve`` as a command: its start line, and clear failures."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.support.server import ServeProcess
from tutti.server.app_keys import MB, Config
from tutti.server.cli import add_arguments, config_from_args
from tutti.server.mixwork import default_memory


async def run_serve(*args: str) -> tuple[int, str, str]:
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tutti",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(p.communicate(), 30)
    assert p.returncode is not None
    return p.returncode, out.decode(), err.decode()


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = ServeProcess(tmp_path / "a")
    try:
        url = await first.start()
        assert url.startswith("http://127.0.0.1:")
        port = URL(url).port
        code, out, err = await run_serve("--port", str(port), "--data", str(tmp_path / "b"))
        assert code == 1 and out == ""
        assert f"cannot serve on 127.0.0.1:{port}" in err
    finally:
        assert await first.stop() == 0  # SIGTERM: a clean shutdown


async def test_bad_options(tmp_path: Path) -> None:
    code, _, err = await run_serve("--port", "70000", "--data", str(tmp_path))
    assert code == 2 and "not a TCP port" in err
    code, _, err = await run_serve("--upload-expiry", "-5", "--data", str(tmp_path))
    assert code == 2 and "positive number of seconds" in err
    code, _, err = await run_serve("--trust-proxy", "nginx.local", "--data", str(tmp_path))
    assert code == 2 and "'nginx.local' is not an IP address or CIDR network" in err
    code, _, err = await run_serve("--max-open-uploads", "0", "--data", str(tmp_path))
    assert code == 2 and "must be greater than 0" in err


async def test_trust_proxy_flag_reaches_the_join_limit(tmp_path: Path) -> None:
    proc = ServeProcess(
        tmp_path / "data", "--trust-proxy", "10.0.0.0/8", "--trust-proxy", "127.0.0.1"
    )
    try:
        url = await proc.start()
        async with aiohttp.ClientSession(url) as http:
            statuses = []
            for addr in ["203.0.113.5"] * 11 + ["203.0.113.6"]:
                async with http.post(
                    "/api/join",
                    json={"code": "WRONG2", "name": "Eve", "part": "S"},
                    headers={"X-Forwarded-For": addr},
                ) as r:
                    statuses.append(r.status)
        assert statuses == [404] * 10 + [429, 404]
    finally:
        assert await proc.stop() == 0


def test_the_mixes_work_in_memory_by_default_for_one_process(tmp_path: Path) -> None:
    def config(*args: str) -> Config:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return config_from_args(parser.parse_args(["--data", str(tmp_path), *args]))

    found = default_memory()
    if found is None:
        pytest.skip("no /dev/shm here: the mixes work on disk")
    one = config()
    assert (one.mix_memory, one.mix_memory_bytes) == found and found[1] > 0
    assert config("--mix-memory", "0.5").mix_memory_bytes == 512 * MB
    assert config("--mix-memory", "0").mix_memory is None  # on disk
    # processes behind Redis read each other's prepared recordings: on the shared disk
    assert config("--redis", "redis://127.0.0.1:6379/0").mix_memory is None
    assert config("--redis", "redis://x:6379/0", "--mix-memory", "1").mix_memory_bytes == 1024 * MB


async def test_a_bad_mix_memory_is_refused(tmp_path: Path) -> None:
    code, _, err = await run_serve("--mix-memory", "-1", "--data", str(tmp_path))
    assert code == 2 and "must be 0 or a positive number of GiB" in err
