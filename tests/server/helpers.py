"""Helpers for server tests: HTTP shortcuts, a recording Socket.IO client, test audio files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import socketio
import soundfile as sf

from tests.server.tus_support import OCTET, TUS
from tutti.tusheaders import encode_metadata
from tutti.wire import PROTOCOL_VERSION

SETTINGS: dict[str, Any] = {
    "title": "Tuesday choir",
    "rate": 48000,
    "bpm": 120,
    "parts": ["S", "A", "T", "B"],
    "count_in_bars": 1,
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def tus_create(
    http: aiohttp.ClientSession, token: str, length: int, metadata: dict[str, str]
) -> aiohttp.ClientResponse:
    """POST /files/: a new take upload; the response, its body read."""
    headers = {
        **TUS,
        **bearer(token),
        "Upload-Length": str(length),
        "Upload-Metadata": encode_metadata(metadata),
    }
    async with http.post("/files/", headers=headers) as r:
        await r.read()
        return r


async def tus_patch(
    http: aiohttp.ClientSession, location: str, token: str, offset: int, body: bytes
) -> aiohttp.ClientResponse:
    """PATCH ``body`` at ``offset``; the response, its body read."""
    headers = {**TUS, **bearer(token), "Upload-Offset": str(offset), "Content-Type": OCTET}
    async with http.patch(location, data=io.BytesIO(body), headers=headers) as r:
        await r.read()
        return r


async def tus_head(
    http: aiohttp.ClientSession, location: str, token: str
) -> aiohttp.ClientResponse:
    """HEAD an upload."""
    async with http.head(location, headers={**TUS, **bearer(token)}) as r:
        return r


@dataclass
class Leader:
    session_id: str
    code: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class Singer:
    participant_id: str
    token: str
    name: str
    part: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def create_session(http: aiohttp.ClientSession, **settings: Any) -> Leader:
    async with http.post("/api/sessions", json={**SETTINGS, **settings}) as r:
        assert r.status == 201, await r.text()
        d = await r.json()
    return Leader(d["session_id"], d["code"], d["leader_token"])


async def join(
    http: aiohttp.ClientSession, code: str, name: str = "Ann", part: str = "S"
) -> Singer:
    async with http.post("/api/join", json={"code": code, "name": name, "part": part}) as r:
        assert r.status == 200, await r.text()
        d = await r.json()
    return Singer(d["participant_id"], d["token"], name, part)


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The ``error`` object of a JSON error response (asserts the shape)."""
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    err = body["error"]
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    return dict(err)


class Recorder:
    """A python-socketio AsyncClient that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any, float]] = []
        self.connect_error: Any = None
        self._arrived = asyncio.Event()
        self.client.on("*", self._any)
        self.client.on("connect_error", self._connect_error)

    async def _any(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None, time.monotonic()))
        self._arrived.set()

    async def _connect_error(self, data: Any = None) -> None:
        # the server refuses with {"message", "data": {"code", "message"}}
        self.connect_error = data.get("data", data) if isinstance(data, dict) else data

    async def connect(
        self,
        url: str,
        token: str,
        protocol: int = PROTOCOL_VERSION,
        headers: dict[str, str] | None = None,
    ) -> None:
        await self.client.connect(
            url,
            auth={"token": token, "protocol": protocol},
            transports=["websocket"],
            headers=headers or {},
            wait_timeout=10,
        )

    async def wait(
        self, event: str, pred: Callable[[Any], bool] = lambda d: True, timeout: float = 5.0
    ) -> Any:
        """Coroutine: the first recorded ``event`` whose payload satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for name, data, _ in self.events:
                if name == event and pred(data):
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [n for n, _, _ in self.events]
                raise AssertionError(f"no {event!r} event within {timeout} s; got {seen}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                pass

    def of(self, event: str) -> list[Any]:
        return [d for n, d, _ in self.events if n == event]

    async def close(self) -> None:
        """Coroutine: disconnect and release the client's HTTP session (also after a refusal)."""
        if self.client.connected:
            await self.client.disconnect()
        await self.client.shutdown()
        http = self.client.eio.http
        if http is not None and not http.closed:
            await http.close()


def write_audio(
    path: Path,
    *,
    rate: int = 48000,
    frames: int = 4800,
    channels: int = 1,
    fmt: str | None = None,
    subtype: str | None = None,
    seed: int = 0,
) -> str:
    """Write a noise-and-sine test file with soundfile; return its sha256 hex."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float64) / rate
    sig = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.01 * rng.standard_normal((frames, 1))
    data = np.repeat(sig, channels, axis=1).astype(np.float32)
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recording_meta(frames: int = 48000 * 3, **over: Any) -> str:
    """A take upload's ``recording`` metadata (the numbers the singer's client sends)."""
    d = {
        "rate": 48000,
        "channels": 1,
        "frames": frames,
        "start_offset": 700,
        "latency": 512,
        "latency_source": "measured",
        "overflows": 2,
        "underflows": 0,
        "shared_clock": True,
        "device": {"name": "JACK dummy"},
    }
    d.update(over)
    return json.dumps(d)


def take_meta(take_id: str, data: bytes, frames: int) -> dict[str, str]:
    """tus metadata for a singer's FLAC recording ``data`` of ``frames`` for ``take_id``."""
    return {
        "take_id": take_id,
        "filename": "t.flac",
        "sha256": hashlib.sha256(data).hexdigest(),
        "recording": recording_meta(frames),
    }


async def upload_take(
    http: aiohttp.ClientSession, token: str, take_id: str, data: bytes, frames: int
) -> None:
    """Upload a whole recording in one PATCH; it must be accepted."""
    r = await tus_create(http, token, len(data), take_meta(take_id, data, frames))
    assert r.status == 201, await r.text()
    r = await tus_patch(http, r.headers["Location"], token, 0, data)
    assert r.status == 204, await r.text()


async def put_track(http: aiohttp.ClientSession, leader: Leader, part: str, path: Path) -> None:
    """Upload a WAV backing track for ``part``; it must be accepted."""
    async with http.put(
        f"/api/session/tracks/{part}",
        data=path.read_bytes(),
        headers={**leader.headers, "Content-Type": "audio/wav"},
    ) as r:
        assert r.status == 201, await r.text()
