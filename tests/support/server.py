"""Run the real tutti server for tests: in-process on port 0, or as a ``tutti serve`` process.

In-process::

    async with running_server(tmp_path / "data") as srv:
        async with aiohttp.ClientSession(srv.url) as http: ...

As a subprocess that a test may ``kill -9`` and restart on the same data directory::

    proc = ServeProcess(tmp_path / "data")
    url = await proc.start()
    await proc.kill9()
    url = await proc.start()   # same data dir and port
    await proc.stop()

(:class:`ServerProcess` is the same without coroutines.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from tutti.server.app import init_app
from tutti.server.app_keys import Config

__all__ = ["ROOT", "RunningServer", "running_server", "ServeProcess", "ServerProcess"]

ROOT = Path(__file__).resolve().parents[2]

_LINE_RE = re.compile(r"^tutti serving on (http://\S+) \(data: (.+)\)$")


@dataclass
class RunningServer:
    """An in-process server: its base URL, the aiohttp app and its configuration."""

    url: str
    app: web.Application
    config: Config


@asynccontextmanager
async def running_server(data_dir: Path, **config: Any) -> AsyncIterator[RunningServer]:
    """Serve a fresh app on 127.0.0.1, port 0; ``config`` overrides :class:`Config` fields.

    The server is open (no session key) unless ``open_sessions=False`` is given: only the
    tests of the key are about it."""
    cfg = replace(Config(data_dir=data_dir, open_sessions=True), **config)
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


class ServerProcess:
    """``python -m tutti serve --port PORT --data DIR`` as a child process; :meth:`kill` and
    :meth:`start` restart it on the same port and data directory.

    Its output (stdout and stderr) is read all the time by a thread, so a chatty server never
    blocks on a full pipe; the last 200 lines stay in :attr:`log`.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        extra: tuple[str, ...] = (),
        *,
        open_sessions: bool = True,
    ) -> None:
        self.open_sessions = open_sessions
        self.data_dir = data_dir
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []
        self._drainer: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Start (or restart on the port it had) and return the base URL."""
        if self.is_running():
            raise RuntimeError("already running")
        # Open (no session key) unless the test is about the key: open_sessions=False.
        opened = ("--open",) if self.open_sessions else ()
        cmd = [sys.executable, "-m", "tutti", "serve", "--port", str(self.port),
               "--data", str(self.data_dir), *opened, *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = _LINE_RE.match(line.strip())
            if m:
                self.url = m.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                self._drainer = threading.Thread(
                    target=_drain, args=(self.proc.stdout, self.log), daemon=True
                )
                self._drainer.start()
                return self.url
        self.kill()
        raise RuntimeError("tutti serve did not start: " + "".join(lines)[-2000:])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the server (no clean shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reap()

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 10 s) and reap; return the exit code (None if not started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self._reap()

    def _reap(self) -> int | None:
        code = None if self.proc is None else self.proc.returncode
        if self._drainer is not None:
            self._drainer.join(10)
            self._drainer = None
        elif self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code


def _drain(stream: Any, log: list[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            log.append(line)
            del log[:-200]
    stream.close()


class ServeProcess:
    """:class:`ServerProcess` for coroutines: each call runs in a worker thread."""

    def __init__(self, data_dir: Path, *extra: str, open_sessions: bool = True) -> None:
        self._p = ServerProcess(data_dir, extra=extra, open_sessions=open_sessions)

    @property
    def data_dir(self) -> Path:
        return self._p.data_dir

    @property
    def url(self) -> str:
        return self._p.url

    @property
    def pid(self) -> int:
        return self._p.pid

    @property
    def log(self) -> list[str]:
        """The server's last 200 lines of output."""
        return self._p.log

    async def start(self, timeout: float = 30.0) -> str:
        """Coroutine: start the server (again) and return its URL once it prints its line."""
        return await asyncio.to_thread(self._p.start, timeout)

    async def kill9(self) -> None:
        """Coroutine: SIGKILL the server (no cleanup runs) and reap it."""
        await asyncio.to_thread(self._p.kill)

    async def stop(self) -> int | None:
        """Coroutine: SIGTERM (then SIGKILL after 10 s) and reap; return the exit code."""
        return await asyncio.to_thread(self._p.stop)
