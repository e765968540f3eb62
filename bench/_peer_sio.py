"""The broadcast peer: a bare python-socketio server on aiohttp with tutti's room and one emit.

``python -m bench._peer_sio`` prints ``peer serving on http://127.0.0.1:PORT`` once listening
and runs until killed.  Every socket joins room ``s:bench`` and gets ``welcome``;
``POST /start`` emits one ``take.start`` (tutti's payload shape, ``sent_at`` =
``time.monotonic()`` just before the emit, as tutti does) to the room; ``clock.probe`` is
acked with ``time.monotonic()`` as tutti does; ``level`` and the other reports are taken and
dropped, and the singers are told the same level rate as tutti's budget gives (``welcome``
``level_hz``, ``level.rate`` to the room when it changes), so both carry the same traffic.
``--inline-handlers``: python-socketio's ``async_handlers=False`` (for the clock experiment
in ``docs/benchmarks-server.md``).  ``--redis URL --port P --singers N``: one of several peer
processes sharing emits through python-socketio's ``AsyncRedisManager`` (the cluster peer of
``bench/bench_cluster.py``), on port P, telling the level rate of N singers in all.  No auth,
database or roster: what is left is python-socketio's and aiohttp's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import socketio
from aiohttp import web

from tutti.server.realtime import level_rate
from tutti.wire import ClockReply, Ev, LevelRate, SessionSettings, TakeStart, parse_clock_probe

ROOM = "s:bench"


def make_app(
    async_handlers: bool = True, redis: str | None = None, singers: int = 0
) -> web.Application:
    """The peer app: Socket.IO at /socket.io/ and ``POST /start``.

    ``async_handlers=False`` runs each event handler inline in the socket's read loop instead
    of in a new task (python-socketio's default is a task per event, as tutti uses).
    ``redis``: emits go through Redis to every peer process; ``singers``: the number of
    singers the level rate is told for (0: this process's sockets).
    """
    manager = None if redis is None else socketio.AsyncRedisManager(redis)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        logger=False,
        engineio_logger=False,
        async_handlers=async_handlers,
        client_manager=manager,
    )
    app = web.Application()
    sio.attach(app)
    settings = SessionSettings(title="bench")
    count = [0]

    sockets: set[str] = set()
    rate = [0.0]

    async def retune() -> float:
        hz = level_rate(singers or len(sockets), True)
        if hz != rate[0]:
            rate[0] = hz
            await sio.emit(Ev.LEVEL_RATE, LevelRate(hz).to_dict(), room=ROOM)
        return hz

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, ROOM)
        sockets.add(sid)
        hz = await retune()
        welcome = {"role": "singer", "server_time": time.monotonic(), "level_hz": hz}
        await sio.emit(Ev.WELCOME, welcome, to=sid)

    async def disconnect(sid: str, *reason: Any) -> None:
        sockets.discard(sid)
        await retune()

    async def taken(sid: str, payload: Any = None) -> None:
        """What tutti stores or relays (levels, reports): here dropped."""

    async def start(request: web.Request) -> web.Response:
        count[0] += 1
        msg = TakeStart(
            take_id=f"peer{count[0]}",
            t0=time.monotonic() + 1.0,
            settings=settings,
            sent_at=time.monotonic(),
        )
        await sio.emit(Ev.TAKE_START, msg.to_dict(), room=ROOM)
        return web.json_response({"take_id": msg.take_id})

    async def clock_probe(sid: str, payload: Any) -> dict[str, float]:
        now = time.monotonic()
        return ClockReply(t0=parse_clock_probe(payload), server_time=now).to_dict()

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    sio.on(Ev.CLOCK_PROBE, clock_probe)
    for event in (Ev.LEVEL, Ev.CLOCK_REPORT, Ev.CALIBRATION, Ev.TAKE_STATE):
        sio.on(event, taken)
    app.router.add_post("/start", start)
    return app


async def main(args: argparse.Namespace) -> None:
    app = make_app(not args.inline_handlers, args.redis, args.singers)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print(f"peer serving on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench._peer_sio", description=__doc__)
    p.add_argument("--inline-handlers", action="store_true")
    p.add_argument("--redis", default=None, help="Redis URL shared by several peer processes")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--singers", type=int, default=0, help="singers in all (for the level rate)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
