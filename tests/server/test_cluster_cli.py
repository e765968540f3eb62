"""``tutti serve --workers N --redis URL``: N processes on one data folder, started again
when one dies; and the cluster options' clear failures."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.server.helpers import create_session, join
from tests.server.test_cli import run_serve
from tests.support.ports import unused_port
from tests.support.server import ROOT, ServeProcess
from tutti.server import cli

_SERVING = re.compile(r"^tutti serving on (http://\S+) ")


class Supervisor:
    """``tutti serve --workers N`` as a child process, its output read by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tutti", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def urls(self) -> list[str]:
        return [m.group(1) for line in self.lines if (m := _SERVING.match(line))]

    async def until(self, what: str, ready: Callable[[], bool], timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, f"{what}; output:\n" + "\n".join(self.lines[-30:])
            await asyncio.sleep(0.05)

    def workers(self) -> list[psutil.Process]:
        children: list[psutil.Process] = psutil.Process(self.proc.pid).children()
        return children

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                for child in self.workers():
                    child.kill()
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture
def supervisor(tmp_path: Path, redis_url: str) -> Iterator[Supervisor]:
    sup = Supervisor("--workers", "2", "--redis", redis_url, "--port", "0", "--open",
                     "--data", str(tmp_path / "data"))  # fmt: skip
    try:
        yield sup
    finally:
        sup.stop()


async def test_workers_share_one_deployment_and_come_back(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    await supervisor.until("two workers serving", lambda: len(supervisor.urls()) == 2)
    first, second = supervisor.urls()
    assert first != second
    async with aiohttp.ClientSession(first) as a, aiohttp.ClientSession(second) as b:
        leader = await create_session(a)  # SQLite in the shared data folder, one host
        singer = await join(b, leader.code, "Ann", "S")
        async with b.get("/api/session/roster", headers=leader.headers) as r:
            names = [e["name"] for e in (await r.json())["participants"]]
        assert names == ["Ann"] and singer.name == "Ann"
    uploads = tmp_path / "data" / "uploads"
    assert sorted(p.name for p in uploads.iterdir() if p.is_dir()) == sorted(
        f"{os.uname().nodename}-{i}" for i in range(2)
    )

    workers = supervisor.workers()
    assert len(workers) == 2
    workers[0].kill()  # kill -9 one worker: the supervisor starts it again
    await supervisor.until("a third serving line", lambda: len(supervisor.urls()) == 3)
    assert "worker" in "\n".join(supervisor.lines) and "starting it again" in "\n".join(
        supervisor.lines
    )
    await supervisor.until("two workers again", lambda: len(supervisor.workers()) == 2)
    async with aiohttp.ClientSession(supervisor.urls()[-1]) as again:
        async with again.get("/healthz") as r:
            assert r.status == 200

    children = supervisor.workers()
    assert supervisor.stop() == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


async def test_cluster_options_fail_clearly(tmp_path: Path) -> None:
    code, _, err = await run_serve("--workers", "2", "--data", str(tmp_path))
    assert code == 2 and "--workers needs --redis URL" in err
    code, _, err = await run_serve("--database", "mysql://db/tutti", "--data", str(tmp_path))
    assert code == 2 and "is not a URL of the form postgresql://... or postgres://..." in err
    code, _, err = await run_serve("--redis", "localhost:6379", "--data", str(tmp_path))
    assert code == 2 and "redis://..." in err
    code, _, err = await run_serve("--node", "a/b", "--data", str(tmp_path))
    assert code == 2 and "a node name is 1-64 letters" in err


async def test_a_process_on_another_clock_refuses_to_start(tmp_path: Path, redis_url: str) -> None:
    first = ServeProcess(tmp_path / "data", "--redis", redis_url, "--clock", "realtime")
    try:
        await first.start()
        code, out, err = await run_serve(
            "--redis", redis_url, "--node", "second", "--open", "--data", str(tmp_path / "data")
        )
        assert code == 1 and "serving" not in out
        assert "runs with --clock realtime, this one with --clock monotonic" in err
    finally:
        assert await first.stop() == 0


async def test_an_unreachable_redis_or_database_is_a_clear_error(tmp_path: Path) -> None:
    port = unused_port()
    code, out, err = await run_serve(
        "--redis", f"redis://:secret@127.0.0.1:{port}/0", "--data", str(tmp_path)
    )
    assert code == 1 and "serving" not in out
    assert f"cannot use Redis at redis://:***@127.0.0.1:{port}/0" in err
    assert "secret" not in err and "Traceback" not in err
    database = f"postgresql://tutti:secret@127.0.0.1:{port}/tutti"
    redis_url = f"redis://127.0.0.1:{unused_port()}/0"
    for workers in ("1", "2"):  # the supervisor stops rather than start them over and over
        code, out, err = await run_serve(
            "--database", database, "--redis", redis_url, "--workers", workers,
            "--data", str(tmp_path),
        )  # fmt: skip
        assert code == 1 and "serving" not in out
        assert f"cannot use the database at postgresql://tutti:***@127.0.0.1:{port}/tutti" in err
        assert "secret" not in err and "Traceback" not in err


async def test_two_processes_as_one_node_refuse(tmp_path: Path, redis_url: str) -> None:
    """Two processes with one --node would keep unfinished uploads in one folder."""
    first = ServeProcess(tmp_path / "data", "--redis", redis_url, "--node", "same")
    try:
        await first.start()
        code, out, err = await run_serve(
            "--redis", redis_url, "--node", "same", "--open", "--data", str(tmp_path / "data")
        )
        assert code == 1 and "serving" not in out
        assert "another process serves as node 'same'" in err and "its own --node" in err
    finally:
        assert await first.stop() == 0


def test_a_workers_line_reaches_shared_stdout_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers share one stdout; unbuffered (PYTHONUNBUFFERED), print writes a line and its
    newline apart, and a CI run saw two workers' serving lines run together."""
    writes: list[bytes] = []

    class Pipe(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            writes.append(bytes(b))
            return len(b)

    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(Pipe(), write_through=True))  # type: ignore[type-var]
    cli._say("tutti serving on http://127.0.0.1:1 (data: d)")
    assert writes == [b"tutti serving on http://127.0.0.1:1 (data: d)\n"]
