"""Two tutti processes behind real nginx with the sticky upstream of docs/deploy.md: singers
from many addresses, on Socket.IO long-polling as a browser starts (each request of a
connection must reach the process that opened it) and with tus uploads (created and
resumed on one process), spread over both processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import socketio

from tests.server.helpers import Recorder, Singer, create_session, upload_take, write_audio
from tests.support.nginx import NGINX, running_nginx, sticky_conf
from tests.support.ports import unused_port
from tests.support.server import ServeProcess
from tutti.wire import PROTOCOL_VERSION, Ev

FRAMES = 48000
#: Loopback addresses the singers connect from (all of 127/8 is this host).
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 18)]

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx not installed (apt-get install nginx)"
)


@pytest.fixture
def nginx_sticky(tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """nginx on a free port in front of two upstream ports; yields its URL and the ports."""
    ports, listen = [unused_port(), unused_port()], unused_port()
    prefix = tmp_path / "nginx"
    conf = sticky_conf(prefix, {listen: ports})
    with running_nginx(prefix, conf):
        yield f"http://127.0.0.1:{listen}", ports


@pytest.fixture
async def behind_nginx(
    nginx_sticky: tuple[str, list[int]], tmp_path: Path, redis_url: str
) -> AsyncIterator[str]:
    """Two processes (nodes a and b, SQLite on this one host) behind the sticky nginx."""
    url, ports = nginx_sticky
    procs = [
        ServeProcess(
            tmp_path / "data",
            "--port",
            str(port),
            "--redis",
            redis_url,
            "--node",
            node,
            "--trust-proxy",
            "127.0.0.1",
        )  # fmt: skip
        for port, node in zip(ports, "ab", strict=True)
    ]
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield url
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


def _from(address: str) -> aiohttp.ClientSession:
    """An HTTP client whose connections leave from ``address``."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


class PollingSinger(Recorder):
    """A :class:`Recorder` on HTTP long-polling only (as a browser starts), from an address."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        super().__init__()
        self.client = socketio.AsyncClient(reconnection=False, http_session=http)
        self.client.on("*", self._any)

    async def abort(self) -> None:
        """Coroutine: drop the connection without waiting for the long-poll in flight (a
        graceful close waits for the server's next ping, 25 s)."""
        if self.client.connected:
            await self.client.eio.disconnect(abort=True)
        await self.client.shutdown()

    async def connect_polling(self, url: str, token: str) -> None:
        await self.client.connect(
            url,
            auth={"token": token, "protocol": PROTOCOL_VERSION},
            transports=["polling"],
            wait_timeout=10,
        )


async def _nodes_holding(redis_url: str, session_id: str) -> dict[str, str]:
    """participant → node of its socket, as the presence keeps it in Redis."""
    r: Any = aioredis.Redis.from_url(redis_url)
    found = {}
    try:
        async for key in r.scan_iter(match=f"tutti:{session_id}:sockets:*"):
            (node,) = (await r.hgetall(key)).values()
            found[key.decode().rsplit(":", 1)[1]] = node.decode()
    finally:
        await r.aclose()
    return found


def _uploaded(pid: str) -> Callable[[Any], bool]:
    return lambda d: bool(pid in d["participant_ids"] and d["state"] == "uploaded")


async def test_sticky_proxy_spreads_singers_and_keeps_each_on_one_process(
    behind_nginx: str, tmp_path: Path, redis_url: str
) -> None:
    url = behind_nginx
    flac = tmp_path / "take.flac"
    write_audio(flac, frames=FRAMES, fmt="FLAC", seed=5)
    take_bytes = flac.read_bytes()
    https = [_from(a) for a in ADDRESSES]
    singers: list[Singer] = []
    socks = [PollingSinger(h) for h in https]
    lead = Recorder()
    try:
        async with aiohttp.ClientSession(url) as http:
            leader = await create_session(http)
            for i, h in enumerate(https):
                async with h.post(
                    f"{url}/api/join", json={"code": leader.code, "name": f"S{i}", "part": "S"}
                ) as r:
                    assert r.status == 200, await r.text()
                    d = await r.json()
                singers.append(Singer(d["participant_id"], d["token"], f"S{i}", "S"))
            await lead.connect(url, leader.token)
            for sock, s in zip(socks, singers, strict=True):
                await sock.connect_polling(url, s.token)
            held = await _nodes_holding(redis_url, leader.session_id)
            assert set(held) == {s.participant_id for s in singers}
            assert len(set(held.values())) == 2, f"nginx sent every singer to one: {held}"

            async with http.post("/api/session/takes", headers=leader.headers) as r:
                take_id = (await r.json())["take_id"]
            async with http.post(
                f"/api/session/takes/{take_id}/start", json={"lead_s": 2.0}, headers=leader.headers
            ) as r:
                assert r.status == 200, await r.text()
            for sock in socks:
                start = await sock.wait(Ev.TAKE_START, lambda d: d["take_id"] == take_id, 20)
                assert time.monotonic() < start["t0"], "take.start arrived after t0"

            async def upload(address: str, s: Singer) -> None:
                async with aiohttp.ClientSession(
                    url, connector=aiohttp.TCPConnector(local_addr=(address, 0))
                ) as own:  # tus creation and PATCH from the singer's address: one process
                    await upload_take(own, s.token, take_id, take_bytes, FRAMES)

            await asyncio.gather(*(upload(a, s) for a, s in zip(ADDRESSES, singers, strict=True)))
            for s in singers:
                await lead.wait(Ev.TAKE_UPDATES, _uploaded(s.participant_id), timeout=20)
    finally:
        await lead.close()
        await asyncio.gather(*(sock.abort() for sock in socks))
        for h in https:
            await h.close()
