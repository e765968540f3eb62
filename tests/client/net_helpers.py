"""Helpers for the singer-side network tests: a leader over plain HTTP and WAV bytes.

The server they talk to runs as ``python -m tutti serve`` in its own process
(:class:`tests.support.server.ServerProcess`: so it can be ``kill -9``-ed and restarted on the
same data dir, and so its clock work does not share an event loop with the client under test).
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import soundfile as sf

__all__ = ["Leader", "wav_bytes"]


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
