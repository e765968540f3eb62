"""``tutti serve`` as a command: its start line, and clear failures."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from yarl import URL

from tests.support.server import ServeProcess


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
