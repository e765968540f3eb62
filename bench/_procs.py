"""Child processes of the server benchmark: ``tutti serve``, the peers, the singer swarms.

Every child writes its stderr to a log file (never a pipe nobody reads, which would stall it
once full), announces itself with one line on stdout, and is ended by its own process id.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["Child", "start_child", "Swarm", "ROOT"]

ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")


class Child:
    """A started child process, its URL (if it serves) and its stderr log."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, url: str = "") -> None:
        self.proc = proc
        self.log = log
        self.url = url

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0) -> None:
        """Coroutine: SIGTERM this child (SIGKILL after ``timeout``) and reap it."""
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_child(
    args: list[str], log: Path, *, serves: bool = True, timeout: float = 30.0
) -> Child:
    """Coroutine: run ``python -m ...args`` from the repository root.

    With ``serves``, wait for its ``... serving on http://127.0.0.1:PORT`` line and keep the URL.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    child = Child(proc, log)
    if serves:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        except TimeoutError:
            await child.stop()
            raise RuntimeError(f"{args[0]} printed nothing in {timeout} s") from None
        m = _URL.search(line.decode(errors="replace"))
        if m is None:
            await child.stop()
            raise RuntimeError(f"{args[0]} did not start: {line!r}\n{child.log_tail()}")
        child.url = m.group(1)
    return child


class Swarm:
    """``count`` simulated singers spread over ``procs`` child processes (``bench._singers``).

    Parameters
    ----------
    url : str
        Server base URL.
    mode : {"tutti", "peer"}
    code : str
        Join code (tutti mode).
    count, procs, concurrency : int
        Singers in all, child processes, joins in flight per process.
    logdir : Path
        Where the children's stderr goes.
    client : {"socketio", "raw"}
        The singers' client (see ``bench._singers``).
    options : tuple of str
        More of ``bench._singers``' options (``--from-addresses``, ``--reconnect``).
    """

    def __init__(
        self,
        url: str,
        mode: str,
        code: str,
        count: int,
        procs: int,
        concurrency: int,
        logdir: Path,
        client: str = "socketio",
        options: tuple[str, ...] = (),
    ) -> None:
        self.url, self.mode, self.code, self.client = url, mode, code, client
        self.options = options  # more of bench._singers' options
        self.count, self.procs, self.concurrency = count, max(1, min(procs, count)), concurrency
        self.logdir = logdir
        self.children: list[Child] = []

    async def start(self) -> None:
        """Coroutine: spawn the children and wait until each has made its clients."""
        base, extra = divmod(self.count, self.procs)
        first = 0
        for k in range(self.procs):
            n = base + (1 if k < extra else 0)
            child = await start_child(
                [
                    "bench._singers",
                    self.url,
                    "--mode",
                    self.mode,
                    "--code",
                    self.code,
                    "--client",
                    self.client,
                    "--count",
                    str(n),
                    "--first",
                    str(first),
                    "--concurrency",
                    str(self.concurrency),
                    *self.options,
                ],
                self.logdir / f"singers-{self.mode}-{self.client}-{k}.log",
                serves=False,
            )
            self.children.append(child)
            first += n
        for c in self.children:
            msg = await self._read(c, 60.0)
            if msg.get("type") != "spawned":
                raise RuntimeError(f"singer process said {msg}")

    async def _send(self, line: str) -> None:
        for c in self.children:
            assert c.proc.stdin is not None
            c.proc.stdin.write(line.encode() + b"\n")
            await c.proc.stdin.drain()

    async def _read(self, c: Child, timeout: float) -> dict[str, Any]:
        assert c.proc.stdout is not None
        try:
            line = await asyncio.wait_for(c.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(
                f"a singer process did not answer within {timeout} s:\n{c.log_tail()}"
            ) from None
        if not line:
            raise RuntimeError(f"a singer process exited:\n{c.log_tail()}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def join(self, timeout: float = 300.0) -> dict[str, Any]:
        """Coroutine: every singer joins; per-singer seconds, wall seconds, failures."""
        t = time.monotonic()
        await self._send("join")
        parts = [await self._read(c, timeout) for c in self.children]
        return {
            "times": [x for p in parts for x in p["times"]],
            "wall": max(p["end"] for p in parts) - t,
            "failed": sum(p["failed"] for p in parts),
            "error": next((p["error"] for p in parts if p["error"]), ""),
        }

    async def collect(
        self, take_id: str, timeout: float = 30.0
    ) -> tuple[list[float], list[float], int]:
        """Coroutine: one take's take.start delivery delays (s), take.armed receipt times
        (``time.monotonic()``), and how many singers missed the take.start."""
        await self._send(f"collect {take_id} {timeout}")
        parts = [await self._read(c, timeout + 30) for c in self.children]
        return (
            [x for p in parts for x in p["delays"]],
            [x for p in parts for x in p["armed"]],
            sum(p["missing"] for p in parts),
        )

    async def stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """Coroutine: what the singers sent and lost so far, summed over the children."""
        await self._send("stats")
        parts = [await self._read(c, timeout) for c in self.children]
        rates: dict[str, int] = {}
        for p in parts:
            for hz, k in p["level_hz"].items():
                rates[hz] = rates.get(hz, 0) + int(k)
        keys = ("probes", "probes_lost", "probes_lost_dropped", "levels", "reports", "synced",
                "disconnects", "reconnects", "connected")  # fmt: skip
        out: dict[str, Any] = {k: sum(int(p[k]) for p in parts) for k in keys}
        out["away_s"] = [a for p in parts for a in p["away_s"]]
        out["level_hz"] = rates
        return out

    async def close(self) -> None:
        """Coroutine: tell every child to disconnect and exit; end stragglers."""
        try:
            await self._send("quit")
        except (BrokenPipeError, ConnectionResetError):
            pass
        for c in self.children:
            try:
                await asyncio.wait_for(c.proc.wait(), 60)
            except TimeoutError:
                await c.stop()
        self.children.clear()
