"""Who is connected and how they are doing right now, seen alike by every server process.

The live half of the roster (which singers have a socket, their clock quality, latest level and
loss counters) is not stored in the database.  :class:`LocalPresence` keeps it in this
process's memory (one process: the embedded default); :class:`RedisPresence` keeps it in Redis,
so a leader connected to one process sees the singers connected to every other
(``tutti serve --redis URL``).  A process that dies without saying goodbye (``kill -9``) stops
refreshing its heartbeat key, and the sockets it held stop counting as connected within
:data:`NODE_TTL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from aiohttp import web

from tutti.wire import LevelReport, LiveClock

from .store import shown_url

__all__ = [
    "Live",
    "Presence",
    "LocalPresence",
    "RedisPresence",
    "NODE_TTL_S",
    "node_id",
    "DeploymentError",
    "claim_node",
    "NodeInfo",
    "conflict",
]

log = logging.getLogger(__name__)

#: Seconds after its last heartbeat that a process's sockets stop counting as connected.
NODE_TTL_S = 15.0
#: Live state of a session nobody updates is dropped from Redis after this long.
_KEEP_S = 24 * 3600
#: The sessions whose waiting room changed and has not been sent since (a Redis set).
_LOBBY_CHANGED = "tutti:lobby:changed"
#: Redis connections of one process's presence at most; more callers at once wait for one
#: (redis-py's default pool raises at 100 in use: 500 singers on a process reach that).
REDIS_CONNECTIONS = 32
#: How long a caller waits for a free connection before the Redis call fails.
REDIS_WAIT_S = 30.0


@dataclass
class Live:
    """What the server knows of a participant right now (not stored in the database)."""

    connected: bool = False  # any socket on any live process (set when read)
    clock: LiveClock | None = None
    level: LevelReport | None = None
    overflows: int = 0
    underflows: int = 0
    lost_frames: int = 0  # the singer's own losses, from its frame accounting
    dropouts: int = 0
    skipped_frames: int = 0
    last_seen: float | None = None  # wall-clock seconds since the epoch

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        del d["connected"]
        d["clock"] = None if self.clock is None else self.clock.to_dict()
        d["level"] = None if self.level is None else self.level.to_dict()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str | bytes, connected: bool) -> Live:
        d: dict[str, Any] = json.loads(text)
        clock = None if d.get("clock") is None else LiveClock.from_dict(d["clock"])
        level = None if d.get("level") is None else LevelReport.from_dict(d["level"])
        return cls(**{**d, "clock": clock, "level": level, "connected": connected})


class Presence(Protocol):
    """Sockets and live state of the participants of every session.  Coroutines."""

    async def joined(self, session_id: str, participant_id: str, sid: str) -> None: ...

    async def left(self, session_id: str, participant_id: str, sid: str) -> bool:
        """Forget socket ``sid``; whether the participant still has a socket anywhere."""
        ...

    async def put(self, session_id: str, lives: dict[str, Live]) -> None:
        """Publish the live state of some participants (``connected`` is not taken)."""
        ...

    async def get(self, session_id: str, participant_ids: Iterable[str]) -> dict[str, Live]:
        """Live state of these participants (a fresh :class:`Live` for one never seen)."""
        ...

    async def connected(self, session_id: str, participant_ids: Iterable[str]) -> set[str]:
        """Those of these participants with a socket on any live process (no live state
        read: the waiting room's count needs only this)."""
        ...

    async def singers_here(self, session_id: str, count: int) -> int:
        """Say this process holds ``count`` singer sockets of the session; how many all
        live processes hold (the level budget is the session's, not each process's)."""
        ...

    async def lobby_turn(self, changed: set[str], every_s: float) -> list[str]:
        """The sessions whose waiting room this process sends now: of those whose waiting
        room changed here (``changed``) or anywhere, each at most once per ``every_s`` over
        all processes; a change not sent now stays marked for the next turn."""
        ...

    async def lobby_hold(self, session_id: str, seconds: float) -> None:
        """No process takes this session's waiting-room turn for ``seconds`` from now (its
        changes stay marked): a big room's snapshots are spaced out."""
        ...

    async def sockets(self, session_id: str) -> set[str]:
        """Every socket of the session's participants, on any process."""
        ...

    async def forget(self, session_id: str) -> None: ...

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: whatever the presence needs while the server runs."""
        yield


class LocalPresence:
    """:class:`Presence` in this process's memory (one server process)."""

    def __init__(self) -> None:
        self._sids: dict[str, dict[str, set[str]]] = {}  # session → participant → sockets
        self._live: dict[str, dict[str, Live]] = {}
        self._lobby_marked: set[str] = set()
        self._lobby_held: dict[str, float] = {}  # session → time.monotonic() its hold ends

    async def joined(self, session_id: str, participant_id: str, sid: str) -> None:
        self._sids.setdefault(session_id, {}).setdefault(participant_id, set()).add(sid)

    async def left(self, session_id: str, participant_id: str, sid: str) -> bool:
        people = self._sids.get(session_id, {})
        sids = people.get(participant_id, set())
        sids.discard(sid)
        if not sids:
            people.pop(participant_id, None)
        return bool(sids)

    async def put(self, session_id: str, lives: dict[str, Live]) -> None:
        self._live.setdefault(session_id, {}).update(lives)  # this process's own records

    async def get(self, session_id: str, participant_ids: Iterable[str]) -> dict[str, Live]:
        mine, here = self._live.get(session_id, {}), self._sids.get(session_id, {})
        return {
            pid: dataclasses.replace(mine.get(pid) or Live(), connected=pid in here)
            for pid in participant_ids
        }

    async def connected(self, session_id: str, participant_ids: Iterable[str]) -> set[str]:
        here = self._sids.get(session_id, {})
        return {pid for pid in participant_ids if pid in here}

    async def singers_here(self, session_id: str, count: int) -> int:
        return count

    async def lobby_turn(self, changed: set[str], every_s: float) -> list[str]:
        # one process: it is always this one's turn, unless the session is held
        self._lobby_marked |= changed
        now = time.monotonic()
        due = sorted(s for s in self._lobby_marked if self._lobby_held.get(s, 0.0) <= now)
        self._lobby_marked.difference_update(due)
        return due

    async def lobby_hold(self, session_id: str, seconds: float) -> None:
        self._lobby_held[session_id] = time.monotonic() + seconds

    async def sockets(self, session_id: str) -> set[str]:
        return {sid for sids in self._sids.get(session_id, {}).values() for sid in sids}

    async def forget(self, session_id: str) -> None:
        self._live.pop(session_id, None)
        self._sids.pop(session_id, None)
        self._lobby_marked.discard(session_id)
        self._lobby_held.pop(session_id, None)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        yield


class DeploymentError(RuntimeError):
    """This process cannot join the deployment: Redis is unreachable, or the processes
    already running read another clock or store."""


@dataclass(frozen=True)
class NodeInfo:
    """What a process tells the others in its heartbeat."""

    host: str
    clock: str  # tutti serve --clock
    store: str  # "sqlite" or "postgresql"


def conflict(mine: NodeInfo, others: Iterable[NodeInfo]) -> str | None:
    """Why a process ``mine`` cannot join processes ``others``, None if it can.

    Singers synchronise to the process they are connected to and a take's ``t0`` reaches all
    of them, so every process must read one clock (``monotonic`` is one host's own); and
    every process must see one store (a SQLite file serves the processes of one host)."""
    for other in others:
        if other.clock != mine.clock:
            return (
                f"a process on {other.host} runs with --clock {other.clock}, this one with "
                f"--clock {mine.clock}; give every process of a deployment the same --clock"
            )
        if other.store != mine.store:
            return (
                f"a process on {other.host} keeps sessions in {other.store}, this one in "
                f"{mine.store}; give every process of a deployment the same --database"
            )
        if other.host == mine.host:
            continue
        if mine.clock == "monotonic":
            return (
                f"a process on {other.host} shares this deployment: processes on several "
                "hosts need --clock realtime (their clocks kept in step by NTP), since "
                "--clock monotonic is one host's own clock"
            )
        if mine.store == "sqlite":
            return (
                f"a process on {other.host} shares this deployment: processes on several "
                "hosts need --database postgresql://... (a SQLite file serves one host)"
            )
    return None


def claim_node(uploads: Path, node: str) -> IO[bytes]:
    """Lock ``uploads/<node>.lock`` for as long as the returned file stays open, so no two
    processes of a deployment keep unfinished uploads in one folder; :class:`DeploymentError`
    if another process holds it."""
    uploads.mkdir(parents=True, exist_ok=True)
    lock = open(uploads / f"{node}.lock", "ab")  # held open while serving
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise DeploymentError(
            f"another process serves as node {node!r} (it holds {uploads / node}); give each "
            "process of a deployment its own --node"
        ) from None
    return lock


def node_id() -> str:
    """This process's name in Redis: host name and process id (unique while it runs)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RedisPresence:
    """:class:`Presence` in Redis, shared by every server process of a deployment.

    Keys: ``tutti:<session>:sockets:<participant>`` (hash: socket id → process),
    ``tutti:<session>:live`` (hash: participant → :meth:`Live.to_json`) and
    ``tutti:node:<process>`` (a heartbeat that expires :data:`NODE_TTL_S` after the process
    stops refreshing it, holding :class:`NodeInfo`).

    Parameters
    ----------
    url : str
        ``redis://host:port/db`` (``rediss://`` for TLS).
    node : str, optional
        This process's name (default :func:`node_id`).
    node_ttl_s : float
        Seconds after this process's last heartbeat that its sockets stop counting.
    clock, store : str
        This process's server clock (``tutti serve --clock``) and kind of store ("sqlite" or
        "postgresql"), told in its heartbeat so that a process that cannot agree with the
        others refuses to start (:func:`conflict`).
    """

    def __init__(
        self,
        url: str,
        node: str | None = None,
        node_ttl_s: float = NODE_TTL_S,
        clock: str = "monotonic",
        store: str = "sqlite",
    ) -> None:
        import redis.asyncio as aioredis  # only with --redis: the `cluster` extra

        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_WAIT_S
        )
        self.redis: Any = aioredis.Redis.from_pool(pool)  # the client closes the pool
        self.url = url
        self.node = node or node_id()
        self.node_ttl_s = node_ttl_s
        self.info = NodeInfo(socket.gethostname(), clock, store)

    @staticmethod
    def _live_key(session_id: str) -> str:
        return f"tutti:{session_id}:live"

    @staticmethod
    def _sockets_key(session_id: str, participant_id: str) -> str:
        return f"tutti:{session_id}:sockets:{participant_id}"

    async def joined(self, session_id: str, participant_id: str, sid: str) -> None:
        key = self._sockets_key(session_id, participant_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, sid, self.node)
            pipe.expire(key, _KEEP_S)
            await pipe.execute()

    async def left(self, session_id: str, participant_id: str, sid: str) -> bool:
        await self.redis.hdel(self._sockets_key(session_id, participant_id), sid)
        return participant_id in await self._connected(session_id, [participant_id])

    async def _connected(self, session_id: str, pids: list[str]) -> set[str]:
        """Those of ``pids`` with a socket on a process whose heartbeat is alive (the
        sockets of dead processes are dropped)."""
        keys = [self._sockets_key(session_id, pid) for pid in pids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            held: list[dict[bytes, bytes]] = await pipe.execute()
        nodes = {node for sockets in held for node in sockets.values()}
        if not nodes:
            return set()
        alive = await self._alive(nodes)
        found = set()
        for pid, key, sockets in zip(pids, keys, held, strict=True):
            dead = [sid for sid, node in sockets.items() if node not in alive]
            if dead:
                await self.redis.hdel(key, *dead)
            if len(dead) < len(sockets):
                found.add(pid)
        return found

    async def put(self, session_id: str, lives: dict[str, Live]) -> None:
        if not lives:
            return
        key = self._live_key(session_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={pid: live.to_json() for pid, live in lives.items()})
            pipe.expire(key, _KEEP_S)
            await pipe.execute()

    async def get(self, session_id: str, participant_ids: Iterable[str]) -> dict[str, Live]:
        pids = list(participant_ids)
        if not pids:
            return {}
        connected = await self._connected(session_id, pids)
        found = await self.redis.hmget(self._live_key(session_id), pids)
        return {
            pid: Live(connected=pid in connected)
            if text is None
            else Live.from_json(text, pid in connected)
            for pid, text in zip(pids, found, strict=True)
        }

    async def connected(self, session_id: str, participant_ids: Iterable[str]) -> set[str]:
        pids = list(participant_ids)
        return await self._connected(session_id, pids) if pids else set()

    async def singers_here(self, session_id: str, count: int) -> int:
        key = f"tutti:{session_id}:singers"  # process → its singer sockets
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, self.node, count)
            pipe.expire(key, _KEEP_S)
            pipe.hgetall(key)
            held: dict[bytes, bytes] = (await pipe.execute())[-1]
        return sum(int(held[n]) for n in await self._alive(set(held)))

    async def _alive(self, nodes: set[bytes]) -> set[bytes]:
        """Those of ``nodes`` (process names) whose heartbeat has not expired."""
        names = sorted(nodes)
        beats = await self.redis.mget([b"tutti:node:" + n for n in names])
        return {n for n, beat in zip(names, beats, strict=True) if beat is not None}

    async def lobby_turn(self, changed: set[str], every_s: float) -> list[str]:
        # the marks are shared, and a session's turn is a key only one process can set per
        # interval; a mark is taken off before that process reads the presence, so a change
        # made after the read is marked again and goes out at the next turn
        async with self.redis.pipeline(transaction=False) as pipe:
            if changed:
                pipe.sadd(_LOBBY_CHANGED, *changed)
            pipe.smembers(_LOBBY_CHANGED)
            marked: set[bytes] = (await pipe.execute())[-1]
        ttl_ms = max(1, round(every_s * 1000))
        due = []
        for session_id in sorted(m.decode() for m in marked):
            if await self.redis.set(f"tutti:{session_id}:lobby_turn", self.node, nx=True,
                                    px=ttl_ms):  # fmt: skip
                await self.redis.srem(_LOBBY_CHANGED, session_id)
                due.append(session_id)
        return due

    async def lobby_hold(self, session_id: str, seconds: float) -> None:
        # the turn's key, set again for longer: no process's set(nx=True) succeeds meanwhile
        ms = max(1, round(seconds * 1000))
        await self.redis.set(f"tutti:{session_id}:lobby_turn", self.node, px=ms)

    async def sockets(self, session_id: str) -> set[str]:
        found: set[str] = set()
        async for key in self.redis.scan_iter(match=self._sockets_key(session_id, "*")):
            found |= {sid.decode() for sid in await self.redis.hkeys(key)}
        return found

    async def forget(self, session_id: str) -> None:
        keys = [self._live_key(session_id)]
        async for key in self.redis.scan_iter(match=self._sockets_key(session_id, "*")):
            keys.append(key)
        await self.redis.delete(*keys)

    async def beat(self) -> None:
        """Coroutine: say this process is alive for the next ``node_ttl_s`` seconds."""
        ttl_ms = max(1, round(self.node_ttl_s * 1000))
        me = json.dumps(dataclasses.asdict(self.info))
        await self.redis.set(f"tutti:node:{self.node}", me, px=ttl_ms)

    async def check_deployment(self) -> None:
        """Coroutine: raise :class:`DeploymentError` when Redis cannot be reached, or a live
        process of the deployment reads a clock or a store this one cannot agree with."""
        from redis.exceptions import RedisError

        others = []
        try:
            async for key in self.redis.scan_iter(match="tutti:node:*", count=500):
                text = await self.redis.get(key)
                if text is not None and key != f"tutti:node:{self.node}".encode():
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        others.append(NodeInfo(**json.loads(text)))
        except RedisError as exc:
            await self.redis.aclose()
            raise DeploymentError(f"cannot use Redis at {shown_url(self.url)}: {exc}") from None
        why = conflict(self.info, others)
        if why is not None:
            await self.redis.aclose()
            raise DeploymentError(why)

    async def _beat(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:  # Redis away for a moment: try again on the next beat
                log.exception("presence heartbeat to Redis failed")
            await asyncio.sleep(self.node_ttl_s / 3)

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        await self.check_deployment()
        task = asyncio.create_task(self._beat())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await self.redis.delete(f"tutti:node:{self.node}")
        await self.redis.aclose()
