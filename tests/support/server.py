"""Run the real tutti server for tests: in-process on port 0, or as a ``tutti serve`` process.

In-process::

    async with running_server(tmp_path / "data") as srv:
        async with aiohttp.ClientSession(srv.url) as http: ...

As a subprocess that a test may ``kill -9`` and restart on the same data directory::

    proc = ServeProcess(tmp_path / "data")
    url = await proc.start()
    proc.kill9()
    url = await proc.start()   # same data dir, maybe another port
    await proc.stop()
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from tutti.server.app import init_app
from tutti.server.app_keys import Config

__all__ = ["RunningServer", "running_server", "ServeProcess"]

_LINE_RE = re.compile(r"^tutti serving on (http://\S+) \(data: (.+)\)$")


@dataclass
class RunningServer:
    """An in-process server: its base URL, the aiohttp app and its configuration."""

    url: str
    app: web.Application
    config: Config


@asynccontextmanager
async def running_server(data_dir: Path, **config: Any) -> AsyncIterator[RunningServer]:
    """Serve a fresh app on 127.0.0.1, port 0; ``config`` overrides :class:`Config` fields."""
    cfg = replace(Config(data_dir=data_dir), **config)
    app = init_app(cfg)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", app, cfg)
    finally:
        await runner.cleanup()


class ServeProcess:
    """``python -m tutti serve --port 0 --data DIR`` as a child process."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self, timeout: float = 30.0) -> str:
        """Coroutine: start the server and return its URL once it prints its line."""
        if self.proc is not None and self.proc.returncode is None:
            raise RuntimeError("already running")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tutti",
            "serve",
            "--port",
            "0",
            "--data",
            str(self.data_dir),
            *self.extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop()
            raise RuntimeError("tutti serve printed nothing within the timeout") from None
        m = _LINE_RE.match(line.decode().strip())
        if m is None:
            err = b""
            if self.proc.stderr is not None:
                await self.proc.wait()
                err = await self.proc.stderr.read()
            raise RuntimeError(f"unexpected first line {line!r}; stderr: {err.decode()[-2000:]}")
        self.url = m.group(1)
        return self.url

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill9(self) -> None:
        """Coroutine: SIGKILL the server (no cleanup runs) and reap it."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        await self._drain()

    async def stop(self) -> int | None:
        """Coroutine: SIGTERM (then SIGKILL after 10 s) and reap; return the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._drain()
        return self.proc.returncode

    async def _drain(self) -> None:
        assert self.proc is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                await stream.read()
