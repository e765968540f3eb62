"""A swarm of simulated singers in one process: ``python -m bench._singers URL --count N ...``.

Each singer is a real python-socketio ``AsyncClient`` over a websocket (``--client raw``:
Engine.IO frames read straight off an aiohttp websocket, see :class:`RawSinger`).  In
``tutti`` mode a singer first joins over HTTP (``POST /api/join`` with the session code, a
name and a part) and connects with its token; in ``peer`` mode (against ``bench._peer_sio``)
it connects without auth.  Both wait for ``welcome``.

The orchestrator (``bench/bench_server.py``) drives the swarm line by line on stdin and reads
one JSON object per line on stdout:

``join``
    join every singer (at most ``--concurrency`` at a time) →
    ``{"type": "joined", "times": [s, ...], "start": t, "end": t, "failed": k, "error": str}``
    (per-singer seconds from the HTTP join to ``welcome``; start/end in ``time.monotonic()``).
``collect TAKE_ID TIMEOUT``
    wait until every connected singer has received ``take.start`` of that take →
    ``{"type": "delays", "take_id": ..., "delays": [s, ...], "missing": k}``, a delay being
    the singer's ``time.monotonic()`` on receipt minus the payload's ``sent_at`` (the server's
    ``time.monotonic()``; one machine, so one clock); ``armed``: the receipt times
    (``time.monotonic()``) of that take's ``take.armed``, where one came.
``stats``
    what the singers sent and lost so far → ``{"type": "stats", "probes", "probes_lost",
    "probes_lost_dropped", "levels", "reports", "synced", "disconnects", "reconnects",
    "away_s": [s, ...], "connected", "level_hz": {hz: singers}}`` (``synced``: singers that
    reported a clock estimate; ``probes_lost_dropped``: lost by singers whose socket
    dropped; ``away_s``: from each drop to the next ``welcome``).
``quit``
    disconnect everyone and exit.

With ``--traffic real`` (the default; python-socketio singers only) each singer, once
welcomed, sends what ``tutti join`` sends, from the client's own constants and classes: a
``calibration``, a clock burst of ``JOIN_PROBES`` through ``ClockSync`` with its
``clock.report``, re-syncs of ``RESYNC_PROBES`` paced by ``ResyncPacer``, ``level``
reports (``LevelReport``) at the rate the server sets (``level_hz``, ``level.rate``; the
client's ``LEVEL_HZ`` until told), and a ``take.state`` on each ``take.start`` and
``take.stop`` (``TAKE_STATE_ON``).  ``--traffic idle`` only listens.

For a cluster behind a sticky proxy (``bench/bench_cluster.py``): ``--from-addresses`` gives
each singer its own loopback address (the proxy keeps a client on one process by its address),
and ``--reconnect`` connects a dropped socket again as the client does (its pauses and
wait, ``tutti.client.connection.reconnect_pauses`` and ``RECONNECT_WAIT_S``) and re-syncs as
``tutti join`` does; ``collect`` then waits for the reconnecting singers too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from typing import Any

import aiohttp
import socketio

from tutti.client.clock import RESYNC_MIN_S, ClockError, ClockSync, ResyncPacer
from tutti.client.connection import RECONNECT_WAIT_S, reconnect_pauses
from tutti.client.join import JOIN_PROBES, LEVEL_HZ, RESYNC_PROBES
from tutti.wire import PROTOCOL_VERSION, CalibrationReport, Ev, LevelReport, TakeState


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Singer:
    """One simulated singer: timestamps ``take.armed`` and ``take.start`` on receipt.

    Subclasses provide the transport: :class:`SioSinger` (python-socketio, the real client
    library) or :class:`RawSinger` (Engine.IO v4 frames over an aiohttp websocket, no
    Socket.IO client library: it takes the receipt time before any decoding, so it tells
    the server's share of the delay apart from the client library's).
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.welcomed = asyncio.Event()
        self.refused = ""
        self.arrivals: dict[str, float] = {}  # take_id -> receipt − sent_at (s)
        self.armed: dict[str, float] = {}  # take_id -> receipt time of take.armed
        self.http: aiohttp.ClientSession | None = None  # its own (from its own address)

    def on_event(self, event: str, data: Any, now: float) -> None:
        if event == Ev.WELCOME:
            self.welcomed.set()
        elif event == Ev.TAKE_START:
            self.arrivals[str(data["take_id"])] = now - float(data["sent_at"])
        elif event == Ev.TAKE_ARMED:
            self.armed[str(data["take_id"])] = now

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    async def connect(self, url: str, auth: dict[str, Any] | None, timeout: float) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def join(
        self, url: str, http: aiohttp.ClientSession | None, code: str, part: str, timeout: float
    ) -> float:
        """Coroutine: join (HTTP, tutti mode; on the singer's own session when it has one) and
        connect until ``welcome``; seconds taken."""
        t = time.monotonic()
        auth: dict[str, Any] | None = None
        if http is not None:  # tutti mode
            http = self.http or http
            async with http.post(
                f"{url}/api/join",
                json={"code": code, "name": f"Singer {self.index:04d}", "part": part},
            ) as r:
                if r.status != 200:
                    raise RuntimeError(f"join: HTTP {r.status} {(await r.text())[:200]}")
                auth = {"token": (await r.json())["token"], "protocol": PROTOCOL_VERSION}
        await self.connect(url, auth, timeout)
        await asyncio.wait_for(self.welcomed.wait(), timeout)
        if self.refused:
            raise RuntimeError(f"connection refused: {self.refused}")
        return time.monotonic() - t


#: What a singer says of its level: a voice at a normal level (the server parses it as always).
LEVEL = LevelReport(rms_db=-28.0, peak_db=-14.0, overflows=0, underflows=0, clipped=False)
#: The ``take.state`` that ``tutti join`` sends on each take event: recording as soon as the
#: start is scheduled, recorded once the take file is finished after the stop (the upload,
#: and its ``uploading``, is the upload phase's).
TAKE_STATE_ON = {Ev.TAKE_START: "recording", Ev.TAKE_STOP: "recorded"}


class SioSinger(Singer):
    """A singer on a python-socketio ``AsyncClient`` (websocket transport), sending what
    ``tutti join`` sends (see the module docstring)."""

    def __init__(
        self, index: int, http: aiohttp.ClientSession | None = None, reconnect: bool = False
    ) -> None:
        super().__init__(index)
        self.http = http
        self.reconnect = reconnect
        self.sio = socketio.AsyncClient(http_session=http, reconnection=False)
        self.again: asyncio.Task[None] | None = None
        self.url, self.auth = "", None  # as connected, to connect again
        for event in (Ev.WELCOME, Ev.TAKE_ARMED, Ev.TAKE_START, Ev.TAKE_STOP, Ev.LEVEL_RATE):
            self.sio.on(event, self._handler(event))
        self.sio.on("disconnect", self._gone)
        self.sio.on("connect", self._came)
        self.sync = ClockSync(self._ack)
        self.level_hz = LEVEL_HZ
        self.levels = self.reports = self.disconnects = self.probes = self.reconnects = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.closing = False
        self.lost_at: float | None = None  # when the socket dropped, until it is back
        self.away: list[float] = []  # seconds from each drop to the next welcome
        self.back = asyncio.Event()  # connected (set), or waiting for a reconnection

    def _handler(self, event: str) -> Any:
        async def handler(data: Any) -> None:
            if event == Ev.WELCOME and self.lost_at is not None:
                self.away.append(time.monotonic() - self.lost_at)
                self.lost_at = None
            if event == Ev.WELCOME and data.get("level_hz") is not None:
                self.level_hz = float(data["level_hz"])
            elif event == Ev.LEVEL_RATE:
                self.level_hz = float(data["hz"])
            self.on_event(event, data, time.monotonic())
            if event in TAKE_STATE_ON and self.tasks:  # real traffic
                said = self._say_take_state(str(data["take_id"]), TAKE_STATE_ON[event])
                self.tasks.append(asyncio.create_task(said))

        return handler

    async def _gone(self, *reason: Any) -> None:
        self.disconnects += 1
        self.back.clear()
        if self.lost_at is None:
            self.lost_at = time.monotonic()
        if self.reconnect and not self.closing and (self.again is None or self.again.done()):
            self.again = asyncio.create_task(self._again())

    async def _again(self) -> None:
        """Connect again as ``tutti join`` does (``Connection._reconnect``, its constants)."""
        for pause in reconnect_pauses():
            await asyncio.sleep(pause)
            if self.closing or self.sio.connected:
                return
            with contextlib.suppress(socketio.exceptions.ConnectionError):
                await self.connect(self.url, self.auth, RECONNECT_WAIT_S)
                return

    async def _came(self) -> None:
        """Connected; after a drop, what ``tutti join`` does on reconnecting: a calibration
        and ``ClockSync.after_reconnect`` (``Joined._after_reconnect``)."""
        self.back.set()
        if self.disconnects and self.tasks:
            self.reconnects += 1
            self.tasks.append(asyncio.create_task(self._resync_after_reconnect()))

    async def _resync_after_reconnect(self) -> None:
        await self.sio.emit(Ev.CALIBRATION, CalibrationReport(256, "measured").to_dict())
        try:
            est = await self.sync.after_reconnect(JOIN_PROBES)  # as tutti join does
            await self.sio.emit(Ev.CLOCK_REPORT, est.report().to_dict())
        except (ClockError, ConnectionError, socketio.exceptions.SocketIOError):
            return  # no estimate, or the socket dropped again meanwhile
        self.reports += 1

    async def _say_take_state(self, take_id: str, state: str) -> None:
        with contextlib.suppress(socketio.exceptions.SocketIOError):
            await self.sio.emit(Ev.TAKE_STATE, TakeState(take_id, state).to_dict())

    async def _ack(self, event: str, payload: Any, timeout: float) -> Any:
        self.probes += 1
        try:
            return await self.sio.call(event, payload, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise TimeoutError from None
        except (socketio.exceptions.BadNamespaceError, socketio.exceptions.DisconnectedError):
            raise ConnectionError from None

    def start_traffic(self) -> None:
        self.tasks = [asyncio.create_task(self._clock()), asyncio.create_task(self._levels())]

    async def _burst(self, probes: int) -> float:
        """One clock burst and its report, as the client does; the next re-sync's delay."""
        try:
            est = await self.sync.burst(probes, until_steady=True)  # as tutti join does
            await self.sio.emit(Ev.CLOCK_REPORT, est.report().to_dict())
        except (ClockError, ConnectionError, socketio.exceptions.SocketIOError):
            return RESYNC_MIN_S  # no estimate, or the socket dropped meanwhile
        self.reports += 1
        return self.pacer.next_interval(time.monotonic(), est.offset, est.error_bound)

    async def _clock(self) -> None:
        self.pacer = ResyncPacer()
        await self.sio.emit(Ev.CALIBRATION, CalibrationReport(256, "measured").to_dict())
        interval = await self._burst(JOIN_PROBES)
        while not self.closing:
            await asyncio.sleep(interval)
            await self.back.wait()  # while it reconnects, the client does not probe
            interval = await self._burst(RESYNC_PROBES)

    async def _levels(self) -> None:
        sent_at = -1e9
        while not self.closing:
            await asyncio.sleep(1.0 / LEVEL_HZ)  # the client's meter tick
            await self.back.wait()
            now = time.monotonic()
            if self.level_hz > 0 and now - sent_at >= 1.0 / self.level_hz - 0.1 / LEVEL_HZ:
                try:
                    await self.sio.emit(Ev.LEVEL, LEVEL.to_dict())
                except socketio.exceptions.SocketIOError:
                    continue  # dropped meanwhile: the next tick waits for the reconnection
                self.levels += 1
                sent_at = now

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected)

    async def connect(self, url: str, auth: dict[str, Any] | None, timeout: float) -> None:
        self.url, self.auth = url, auth
        await self.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=timeout)

    async def close(self) -> None:
        self.closing = True
        for task in [*self.tasks, *([self.again] if self.again else [])]:
            task.cancel()
        await self.sio.disconnect()
        if self.http is not None:
            await self.http.close()


class RawSinger(Singer):
    """A singer speaking Engine.IO v4 / Socket.IO v5 frames itself over an aiohttp websocket.

    ``ws`` is shared by all raw singers of the process (a session without a connection limit).
    """

    ws_session: aiohttp.ClientSession | None = None

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def connect(self, url: str, auth: dict[str, Any] | None, timeout: float) -> None:
        if RawSinger.ws_session is None:
            RawSinger.ws_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.ws = await RawSinger.ws_session.ws_connect(
            f"{url}/socket.io/?EIO=4&transport=websocket",
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            max_msg_size=1 << 24,
        )
        opened = await asyncio.wait_for(self.ws.receive_str(), timeout)
        if not opened.startswith("0"):
            raise RuntimeError(f"expected an Engine.IO open packet, got {opened[:80]!r}")
        await self.ws.send_str("40" + (json.dumps(auth) if auth else ""))
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            now = time.monotonic()
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame: str = msg.data
            if frame == "2":  # Engine.IO ping
                await self.ws.send_str("3")
            elif frame.startswith("42"):
                packet = json.loads(frame[2:])
                self.on_event(str(packet[0]), packet[1] if len(packet) > 1 else None, now)
            elif frame.startswith("44"):  # connect refused
                self.refused = frame[2:300]
                self.welcomed.set()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def join_all(singers: list[Singer], args: argparse.Namespace) -> dict[str, Any]:
    parts = args.parts.split(",")
    sem = asyncio.Semaphore(args.concurrency)
    times: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def one(s: Singer) -> None:
            async with sem:
                try:
                    times.append(
                        await s.join(
                            args.url,
                            http if args.mode == "tutti" else None,
                            args.code,
                            parts[s.index % len(parts)],
                            args.timeout,
                        )
                    )
                except Exception as exc:  # counted and reported, the others go on
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    return
                if args.traffic == "real" and isinstance(s, SioSinger):
                    s.start_traffic()

        start = time.monotonic()
        await asyncio.gather(*(one(s) for s in singers))
        end = time.monotonic()
    return {
        "type": "joined",
        "times": times,
        "start": start,
        "end": end,
        "failed": len(errors),
        "error": errors[0] if errors else "",
    }


async def collect(
    singers: list[Singer], take_id: str, timeout: float, reconnecting: bool = False
) -> dict[str, Any]:
    # those that will reconnect count as well (a running take is handed to them on return)
    live = [s for s in singers if s.connected or (reconnecting and s.welcomed.is_set())]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(take_id not in s.arrivals for s in live):
        await asyncio.sleep(0.02)
    delays = [s.arrivals[take_id] for s in live if take_id in s.arrivals]
    armed = [s.armed[take_id] for s in live if take_id in s.armed]
    return {
        "type": "delays",
        "take_id": take_id,
        "delays": delays,
        "armed": armed,
        "missing": len(singers) - len(delays),
    }


def stats(singers: list[Singer]) -> dict[str, Any]:
    sio = [s for s in singers if isinstance(s, SioSinger) and s.welcomed.is_set()]
    rates: dict[str, int] = {}
    for s in sio:
        rates[f"{s.level_hz:g}"] = rates.get(f"{s.level_hz:g}", 0) + 1
    return {
        "type": "stats",
        "probes": sum(s.probes for s in sio),
        "probes_lost": sum(s.sync.lost for s in sio),
        # lost by singers whose socket dropped (a killed process's: in flight when it died)
        "probes_lost_dropped": sum(s.sync.lost for s in sio if s.disconnects),
        "levels": sum(s.levels for s in sio),
        "reports": sum(s.reports for s in sio),
        "synced": sum(1 for s in sio if s.reports),
        "disconnects": sum(s.disconnects for s in sio),
        "reconnects": sum(s.reconnects for s in sio),
        "away_s": [a for s in sio for a in s.away],
        "connected": sum(1 for s in sio if s.connected),
        "level_hz": rates,
    }


def address_of(index: int) -> str:
    """Singer ``index``'s own loopback address (all of 127/8 is this host), so that a proxy
    keeping each client on one server process by its address spreads them (5,000 at most)."""
    return f"127.1.{index // 250}.{index % 250 + 2}"


def make_singers(args: argparse.Namespace) -> list[Singer]:
    """This process's singers, as the options say."""
    indices = range(args.first, args.first + args.count)
    if args.client == "raw":
        return [RawSinger(i) for i in indices]
    timeout = aiohttp.ClientTimeout(total=args.timeout)

    def own(i: int) -> aiohttp.ClientSession | None:
        if not args.from_addresses:
            return None
        connector = aiohttp.TCPConnector(local_addr=(address_of(i), 0))
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    return [SioSinger(i, own(i), args.reconnect) for i in indices]


async def main(args: argparse.Namespace) -> int:
    raise_fd_limit()
    singers = make_singers(args)
    emit({"type": "spawned"})
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            break
        if line[0] == "join":
            emit(await join_all(singers, args))
        elif line[0] == "collect":
            emit(await collect(singers, line[1], float(line[2]), args.reconnect))
        elif line[0] == "stats":
            emit(stats(singers))
        else:
            emit({"type": "error", "error": f"unknown command {line[0]!r}"})
    await asyncio.gather(*(s.close() for s in singers if s.connected), return_exceptions=True)
    if RawSinger.ws_session is not None:
        await RawSinger.ws_session.close()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench._singers", description=__doc__)
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8765")
    p.add_argument("--mode", choices=["tutti", "peer"], default="tutti")
    p.add_argument(
        "--client",
        choices=["socketio", "raw"],
        default="socketio",
        help="python-socketio AsyncClient, or raw Engine.IO frames on aiohttp",
    )
    p.add_argument(
        "--traffic",
        choices=["real", "idle"],
        default="real",
        help="send what tutti join sends (levels, clock probes; socketio singers), or listen only",
    )
    p.add_argument("--code", default="", help="session join code (tutti mode)")
    p.add_argument("--count", type=int, required=True, help="singers in this process")
    p.add_argument("--first", type=int, default=0, help="index of the first singer (names)")
    p.add_argument("--parts", default="S,A,T,B", help="voice parts, round robin")
    p.add_argument("--concurrency", type=int, default=32, help="joins in flight at once")
    p.add_argument("--timeout", type=float, default=60.0, help="per-join timeout, seconds")
    p.add_argument(
        "--from-addresses",
        action="store_true",
        help="each singer from its own loopback address (127.1.x.y; socketio singers)",
    )
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect as tutti join does when the socket drops (socketio singers)",
    )
    args = p.parse_args(argv)
    if args.client == "raw" and (args.from_addresses or args.reconnect):
        p.error("--from-addresses and --reconnect need --client socketio")
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
