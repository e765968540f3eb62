"""Helpers for the singer-side network tests: a real ``tutti serve`` subprocess and a leader.

The server runs as ``python -m tutti serve --port 0 --data DIR`` in its own process (so it
can be ``kill -9``-ed and restarted on the same data dir, and so its clock work does not
share an event loop with the client under test); the leader is plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

__all__ = ["ServerProcess", "Leader", "wav_bytes", "ROOT"]

ROOT = Path(__file__).resolve().parents[2]
_LINE = re.compile(r"tutti serving on (http://\S+):(\d+)")


class ServerProcess:
    """``tutti serve`` in a subprocess on a free port; :meth:`kill` + :meth:`start` restart it."""

    def __init__(self, data_dir: Path, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log: list[str] = []
        self._drainer: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> str:
        """Start (or restart on the same port) and return the base URL."""
        cmd = [
            sys.executable,
            "-m",
            "tutti",
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data_dir),
            *self.extra,
        ]
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
            m = _LINE.search(line)
            if m:
                self.port = int(m.group(2))
                self.url = f"http://127.0.0.1:{self.port}"
                # keep reading its output so a chatty server never blocks on a full pipe
                self._drainer = threading.Thread(
                    target=_drain, args=(self.proc.stdout, self.log), daemon=True
                )
                self._drainer.start()
                return self.url
        self.kill()
        raise RuntimeError("tutti serve did not start: " + "".join(lines))

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` the server (no clean shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._reap()

    def _reap(self) -> None:
        if self._drainer is not None:
            self._drainer.join(10)
            self._drainer = None
        elif self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reap()


def _drain(stream: Any, log: list[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            log.append(line)
            del log[:-200]
    stream.close()


def wav_bytes(frames: int, rate: int = 48000, channels: int = 2, seed: int = 1) -> bytes:
    """A WAV file (PCM_16) of quiet noise, as bytes."""
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((frames, channels)) * 0.05).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class Leader:
    """A leader over plain HTTP (what ``tutti lead`` does, kept minimal for tests)."""

    http: aiohttp.ClientSession
    url: str
    token: str = ""
    code: str = ""
    session_id: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def create(self, **settings: Any) -> Leader:
        body = {"title": "test choir", **settings}
        async with self.http.post(f"{self.url}/api/sessions", json=body) as r:
            assert r.status == 201, await r.text()
            d = await r.json()
        self.token, self.code, self.session_id = d["leader_token"], d["code"], d["session_id"]
        return self

    async def put_track(self, part: str, data: bytes) -> dict[str, Any]:
        async with self.http.put(
            f"{self.url}/api/session/tracks/{part}", data=io.BytesIO(data), headers=self.auth
        ) as r:
            assert r.status == 201, await r.text()
            out: dict[str, Any] = await r.json()
            return out

    async def arm(self) -> str:
        async with self.http.post(f"{self.url}/api/session/takes", headers=self.auth) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["take_id"])

    async def start(self, take_id: str, lead_s: float = 2.0) -> dict[str, Any]:
        async with self.http.post(
            f"{self.url}/api/session/takes/{take_id}/start",
            json={"lead_s": lead_s},
            headers=self.auth,
        ) as r:
            assert r.status == 200, await r.text()
            out: dict[str, Any] = await r.json()
            return out

    async def stop(self, take_id: str) -> None:
        async with self.http.post(
            f"{self.url}/api/session/takes/{take_id}/stop", headers=self.auth
        ) as r:
            assert r.status == 200, await r.text()

    async def takes(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/api/session/takes", headers=self.auth) as r:
            assert r.status == 200, await r.text()
            return list((await r.json())["takes"])

    async def roster(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.url}/api/session/roster", headers=self.auth) as r:
            assert r.status == 200, await r.text()
            return list((await r.json())["participants"])

    async def singer_state(self, take_id: str, participant_id: str) -> str:
        for t in await self.takes():
            if t["take_id"] == take_id:
                for s in t["singers"]:
                    if s["participant_id"] == participant_id:
                        return str(s["state"])
        return ""

    async def wait_state(self, take_id: str, pid: str, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = await self.singer_state(take_id, pid)
            if last == state:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"singer {pid} of take {take_id} is {last!r}, not {state!r}")
