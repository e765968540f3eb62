"""Helpers for the ``tutti lead`` tests against a real server: singers and a cutting proxy.

- :func:`serve` — the real tutti server on port 0 (:mod:`tests.support.server`).
- :class:`Singer` — joins over HTTP, connects over Socket.IO, reports calibration and levels,
  and uploads a take with plain tus 1.0 requests (as any tus client would).
- :class:`CuttingProxy` — a TCP proxy that closes a connection after forwarding a given number
  of response bytes, to interrupt downloads for real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import socketio
import soundfile as sf

from tests.support.server import running_server
from tutti import wire

__all__ = ["serve", "Singer", "CuttingProxy", "write_wav", "tone"]


@contextlib.asynccontextmanager
async def serve(data_dir: Path, **config: Any) -> AsyncIterator[str]:
    """Coroutine context: the real tutti server on 127.0.0.1, port 0; yields its URL.
    ``config`` overrides server :class:`Config` fields."""
    async with running_server(data_dir, **config) as srv:
        yield srv.url


def tone(freq: float, seconds: float, rate: int = 48000, channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` Hz, amplitude 0.5: float32 (frames, channels)."""
    t = np.arange(round(seconds * rate)) / rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write_wav(path: Path, audio: np.ndarray, rate: int = 48000) -> Path:
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


@dataclass
class Singer:
    """One singer driving the real server's singer API."""

    server: str
    name: str
    part: str
    token: str = ""
    participant_id: str = ""
    sio: socketio.AsyncClient | None = None
    events: list[tuple[str, Any]] = field(default_factory=list)

    async def join(self, code: str) -> Singer:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.server}/api/join", json={"code": code, "name": self.name, "part": self.part}
            ) as r:
                body = await r.json()
                assert r.status == 200, body
        self.token, self.participant_id = body["token"], body["participant_id"]
        return self

    async def connect(self) -> None:
        sio = socketio.AsyncClient(reconnection=False)

        async def any_event(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        sio.on("*", any_event)

        await sio.connect(
            self.server, auth={"token": self.token, "protocol": wire.PROTOCOL_VERSION}
        )
        self.sio = sio

    async def report(
        self, latency: int = 512, rms_db: float = -20.0, dropouts: int = 0, overflows: int = 0
    ) -> None:
        assert self.sio is not None
        await self.sio.emit(wire.Ev.CALIBRATION, {"latency_frames": latency, "source": "measured"})
        await self.sio.emit(
            wire.Ev.CLOCK_REPORT,
            {"offset": 0.001, "error_bound": 0.0002, "rtt_min": 0.0005, "samples": 20},
        )
        await self.sio.emit(
            wire.Ev.LEVEL,
            {
                "rms_db": rms_db,
                "peak_db": rms_db + 6,
                "overflows": overflows,
                "dropouts": dropouts,
                "lost_frames": 256 * dropouts,
            },
        )

    async def close(self) -> None:
        if self.sio is not None:
            await self.sio.disconnect()
            self.sio = None

    async def upload(
        self, take_id: str, path: Path, *, start_offset: int = 100, latency: int = 512
    ) -> str:
        """Upload ``path`` as this singer's recording of ``take_id`` with tus 1.0; its sha256."""
        data = path.read_bytes()
        info = sf.info(str(path))
        sha = hashlib.sha256(data).hexdigest()
        rec = {
            "rate": info.samplerate,
            "channels": info.channels,
            "frames": info.frames,
            "start_offset": start_offset,
            "latency": latency,
            "latency_source": "measured",
            "overflows": 0,
            "underflows": 0,
            "shared_clock": True,
            "device": {},
        }
        meta = {
            "take_id": take_id,
            "filename": f"take{path.suffix}",
            "sha256": sha,
            "recording": json.dumps(rec),
        }
        header = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        auth = {"Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{self.server}/files/",
                headers={**auth, "Upload-Length": str(len(data)), "Upload-Metadata": header},
            ) as r:
                assert r.status == 201, await r.text()
                location = r.headers["Location"]
            url = location if location.startswith("http") else self.server + location
            async with http.patch(
                url,
                data=io.BytesIO(data),
                headers={
                    **auth,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            ) as r:
                assert r.status == 204, await r.text()
        return sha


class CuttingProxy:
    """TCP proxy to ``upstream_port`` that drops each connection after ``cut_after`` bytes
    of response (``None``: never).  ``requests`` keeps the first line and headers of each
    request seen."""

    def __init__(self, upstream_port: int, cut_after: int | None) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await cr.read(65536):
                    self.requests.append(chunk)
                    uw.write(chunk)
                    await uw.drain()

        async def down() -> None:
            sent = 0
            with contextlib.suppress(ConnectionError):
                while chunk := await ur.read(65536):
                    if self.cut_after is not None and sent + len(chunk) > self.cut_after:
                        cw.write(chunk[: self.cut_after - sent])
                        await cw.drain()
                        return
                    sent += len(chunk)
                    cw.write(chunk)
                    await cw.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (cw, uw):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
        await asyncio.gather(*tasks, return_exceptions=True)
