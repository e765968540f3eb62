"""Socket.IO: connections, the clock probe, live roster data, and the event fan-out.

Rooms: every member's socket joins ``s:<session_id>``; leader sockets also join
``l:<session_id>``.  Broadcasts are one ``emit`` per room (python-socketio encodes the
packet once for the room); nothing on the broadcast path reads the database.

Live state (connected sockets, clock quality, last level, xrun counts) is kept per
participant apart from the participant's stored identity, in a
:class:`tutti.server.presence.Presence` (this process's memory, or Redis when several
processes serve one deployment; then python-socketio's ``AsyncRedisManager`` carries every
room emit to the sockets of the other processes).  Levels are batched: the latest level of
each singer connected here is relayed to the leader room at most every
:data:`LEVEL_INTERVAL_S` as one :data:`Ev.LEVELS` event (one per process), and published to
the presence (the roster's snapshot) every :data:`PRESENCE_LEVEL_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from aiohttp import web

from tutti.wire import (
    MAX_EVENT_BYTES,
    MAX_LEVEL_HZ,
    PROTOCOL_VERSION,
    ClockReply,
    Clocks,
    ConnectAuth,
    ErrorReport,
    Ev,
    LevelRate,
    LevelReport,
    Levels,
    LiveClock,
    LiveLevel,
    Record,
    Refusal,
    Roster,
    RosterEntry,
    TakeStart,
    TakeUpdates,
    TakeView,
    Wave,
    Welcome,
    WireError,
    clock_band,
    parse_calibration,
    parse_clock_probe,
    parse_clock_report,
    parse_level_report,
    parse_take_state,
)

from .auth import hash_token
from .models import Participant, Principal, session_view
from .presence import Live, LocalPresence, Presence
from .store import SessionStore
from .waitroom import NoteStore, TooSoon, WaitingRoom, waiting_room
from .wirejson import SocketJSON
from .wirelog import WireLog

__all__ = ["Realtime", "LEVEL_INTERVAL_S", "SERVER_CLOCKS", "session_room", "leader_room"]

log = logging.getLogger(__name__)

LEVEL_INTERVAL_S = 0.1
#: Seconds between publishing levels to the presence (the roster's snapshot; leaders get
#: every batch as :data:`Ev.LEVELS`).
PRESENCE_LEVEL_INTERVAL_S = 1.0
#: ``level`` reports per second one process takes from one session's singers together: each
#: singer is told (``level.rate``) to send this many over their number, at most
#: ``MAX_LEVEL_HZ``, and none while no leader watches.  What a report costs the server, and
#: what this budget buys at 1,000 singers: docs/benchmarks-server.md.
LEVEL_BUDGET_PER_S = 100.0
#: The rates a singer may be told (a rate changes only when the count crosses a step).
LEVEL_STEPS = (10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1)
#: A ``clock.report`` reaches the leaders when it is a singer's first, when its error bound
#: (the one clock figure a leader's view shows) falls in another of :data:`CLOCK_BANDS_S`, or,
#: at most every :data:`CLOCK_SHOWN_EVERY_S`, when it moved by this share of the one shown and
#: :data:`CLOCK_SHOWN_MIN_S`: under load the bounds of 1,000 singers' re-syncs swing by
#: milliseconds, and were most of a leader's view.
CLOCK_SHOWN_SHARE = 0.25
CLOCK_SHOWN_MIN_S = 0.0005
CLOCK_SHOWN_EVERY_S = 30.0


def clock_news(shown: LiveClock | None, new: LiveClock, shown_s_ago: float) -> bool:
    """Whether a singer's new clock estimate changes what the leaders were last shown."""
    if shown is None:
        return True
    if clock_band(new.error_bound) != clock_band(shown.error_bound):
        return True
    moved = abs(new.error_bound - shown.error_bound)
    big = moved >= max(CLOCK_SHOWN_MIN_S, CLOCK_SHOWN_SHARE * shown.error_bound)
    return big and shown_s_ago >= CLOCK_SHOWN_EVERY_S


def level_rate(singers: int, watching: bool) -> float:
    """How often each of ``singers`` sends ``level`` (per second): the budget shared, rounded
    down to a step; 0 when no leader is ``watching``."""
    if not watching:
        return 0.0
    fair = min(MAX_LEVEL_HZ, LEVEL_BUDGET_PER_S / max(1, singers))
    return next((s for s in LEVEL_STEPS if s <= fair), LEVEL_STEPS[-1])


#: The clock clients synchronise to and takes are scheduled on (``tutti serve --clock``):
#: CLOCK_MONOTONIC for one host (all its processes read the one clock, which never steps);
#: CLOCK_REALTIME, kept in step between hosts by NTP, for several.
SERVER_CLOCKS: dict[str, Callable[[], float]] = {"monotonic": time.monotonic, "realtime": time.time}
#: Upload states only the server sets (a client's take.state cannot claim them).
_SERVER_STATES = ("expected", "uploaded", "missed")


#: Event names python-socketio gives a meaning of its own (its server's and its client's
#: reserved names and the catch-all); a client may not send them.
_RESERVED = frozenset(
    {*socketio.AsyncServer.reserved_events, *socketio.AsyncClient.reserved_events, "*"}
)


def _reserved_message(event: str) -> str:
    return (
        f"event name {event[:64]!r} is reserved by Socket.IO and cannot be sent; clients "
        "send: clock.probe, clock.report, level, calibration, take.state, wave"
    )


def session_room(session_id: str) -> str:
    return f"s:{session_id}"


def leader_room(session_id: str) -> str:
    return f"l:{session_id}"


class Realtime:
    """The Socket.IO server of tutti and the :class:`tutti.server.models.Fanout` it provides.

    Parameters
    ----------
    store : SessionStore
        For authenticating connections and recording calibration and take states.
    cors_origins : list of str
        Origins allowed to connect from a browser; empty or None = same origin only.
    max_message_bytes : int
        Largest incoming Socket.IO message; a larger one closes that connection.
    wire_log : WireLog, optional
        Where every message sent is also written (``tutti serve --wire-log``).
    presence : Presence, optional
        Where live state is shared (default: this process's memory).
    client_manager : socketio.AsyncManager, optional
        Rooms and emits (default: this process's; ``AsyncRedisManager`` for several).
    clock : callable
        The server clock, seconds (one of :data:`SERVER_CLOCKS`).
    notes : NoteStore, optional
        Where the leader's note for the waiting room is kept (None: no notes).
    """

    def __init__(
        self,
        store: SessionStore,
        cors_origins: list[str] | None = None,
        max_message_bytes: int = MAX_EVENT_BYTES,
        wire_log: WireLog | None = None,
        presence: Presence | None = None,
        client_manager: socketio.AsyncManager | None = None,
        clock: Callable[[], float] = time.monotonic,
        notes: NoteStore | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.wire_log = wire_log
        self.presence: Presence = presence or LocalPresence()
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            client_manager=client_manager,
            # None = same origin only.  (An empty list would switch engineio's origin check
            # off altogether, letting any web page connect.)
            cors_allowed_origins=list(cors_origins) if cors_origins else None,
            max_http_buffer_size=max_message_bytes,
            json=SocketJSON,  # records written by orjson (server/wirejson.py)
            logger=False,
            engineio_logger=False,
        )
        self.conns: dict[str, Principal] = {}
        #: ``(code, message)`` why a session takes no connections, None while it is open;
        #: the app sets :meth:`Sessions.not_open`.
        self.not_open: Callable[[Any], tuple[str, str] | None] = lambda s: (
            None if s.state == "open" else ("session_closed", "the session is closed")
        )
        #: Live state of the participants with a socket on this process (published to
        #: :attr:`presence`).
        self.live: dict[str, Live] = {}
        self.identity: dict[str, Participant] = {}
        self._levels: dict[str, dict[str, LevelReport]] = {}
        self._unpublished: dict[str, set[str]] = {}  # session → singers with newer levels
        # the level budget, per session, of the sockets on this process
        self._watchers: dict[str, int] = {}  # leader sockets
        self._singer_sids: dict[str, set[str]] = {}
        self._level_hz: dict[str, float] = {}
        # singer → the clock the leaders have, and when (time.monotonic()) they got it
        self._clock_shown: dict[str, tuple[LiveClock | None, float]] = {}
        self._clocks: dict[str, dict[str, LiveClock]] = {}  # session → to show in the next batch
        # session → (take, singer) → (state, detail, stored) not yet sent to the leaders (nor,
        # unless stored, written), newest wins
        self._take_updates: dict[str, dict[tuple[str, str], tuple[str, str, bool]]] = {}
        self.waitroom = WaitingRoom(store, self.presence, notes, self.to_singers, clock)
        self._register()

    # ------------------------------------------------------------------- Fanout

    async def to_session(self, session_id: str, event: str, data: Record) -> None:
        await self._send(event, data, room=session_room(session_id))

    async def to_leaders(self, session_id: str, event: str, data: Record) -> None:
        await self._send(event, data, room=leader_room(session_id))

    async def to_singers(self, session_id: str, event: str, data: Record) -> None:
        await self._send(event, data, room=waiting_room(session_id))

    async def take_update(
        self,
        session_id: str,
        take_id: str,
        participant_id: str,
        state: str,
        detail: str = "",
        *,
        stored: bool = False,
        now: bool = False,
    ) -> None:
        """Coroutine: a singer's upload state on a take, written (unless the caller has
        ``stored`` it) and told to the leaders with the others of the next
        :data:`LEVEL_INTERVAL_S`: at 1,000 singers a take's start is 1,000 states, one
        transaction and a few messages.  ``now``: the session's batch at once."""
        pending = self._take_updates.setdefault(session_id, {})
        pending.pop((take_id, participant_id), None)  # the newest state, in arrival order
        pending[(take_id, participant_id)] = (state, detail, stored)
        if now:
            await self.flush_take_updates(session_id)

    def _pending_state(self, session_id: str, take_id: str, pid: str, stored: str) -> str:
        """A singer's state on a take: the one waiting for the next batch, else ``stored``."""
        waiting = self._take_updates.get(session_id, {}).get((take_id, pid))
        return stored if waiting is None else waiting[0]

    async def flush_take_updates(self, session_id: str) -> None:
        """Coroutine: write the session's waiting states and tell the leaders, now."""
        pending = self._take_updates.pop(session_id, {})
        unstored = [(t, pid, s, d) for (t, pid), (s, d, done) in pending.items() if not done]
        if unstored:
            self.store.set_singer_states(unstored)
        groups: dict[tuple[str, str, str], list[str]] = {}
        for (take_id, pid), (state, detail, _) in pending.items():
            groups.setdefault((take_id, state, detail), []).append(pid)
        for (take_id, state, detail), pids in groups.items():
            update = TakeUpdates(take_id, state, tuple(pids), detail)
            await self.to_leaders(session_id, Ev.TAKE_UPDATES, update)

    async def _send(self, event: str, data: Record, **target: str) -> None:
        """Every event the server sends goes out here: one record, to a room or a socket."""
        if self.wire_log is not None:
            self.wire_log.note("event", event, data.to_dict())
        # a socket of this process needs no trip through the message queue; the record
        # itself is the payload (SocketJSON writes it)
        await self.sio.emit(event, data, ignore_queue="to" in target, **target)

    # ------------------------------------------------------------------- wiring

    def attach(self, app: web.Application) -> None:
        """Serve Socket.IO at ``/socket.io/`` of ``app`` and run the level relay with it."""
        self.sio.attach(app)
        app.cleanup_ctx.append(self.presence.run)
        app.cleanup_ctx.append(self._relay_ctx)
        app.cleanup_ctx.append(self.waitroom.run)
        app.on_shutdown.append(self._disconnect_all)

    async def _disconnect_all(self, app: web.Application) -> None:
        """Close every Socket.IO connection so the server stops without waiting on them."""
        with contextlib.suppress(Exception):
            await self.sio.eio.disconnect()
        with contextlib.suppress(Exception):
            await self.sio.shutdown()

    async def disconnect_session(self, session_id: str) -> None:
        """Close every connection of a session that is being deleted, on every process
        (this process's forgotten first, so no disconnect handler looks for its rows)."""
        sids = [sid for sid, p in self.conns.items() if p.session_id == session_id]
        for sid in sids:
            p = self.conns.pop(sid)
            if p.participant_id is not None:
                self.live.pop(p.participant_id, None)
                self.identity.pop(p.participant_id, None)
        elsewhere = await self.presence.sockets(session_id) - set(sids)
        for sid in [*sids, *elsewhere]:  # python-socketio asks the process holding it
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)
        self._levels.pop(session_id, None)
        self._clocks.pop(session_id, None)
        self._unpublished.pop(session_id, None)
        self._take_updates.pop(session_id, None)
        self.waitroom.forget(session_id)
        await self.presence.forget(session_id)

    async def _relay_ctx(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._relay_levels())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _relay_levels(self) -> None:
        published = time.monotonic()
        while True:
            await asyncio.sleep(LEVEL_INTERVAL_S)
            for session_id in list(self._take_updates):
                try:
                    await self.flush_take_updates(session_id)
                except Exception:  # keep relaying for the other sessions
                    log.exception("take updates to session %s failed", session_id)
            clocks, self._clocks = self._clocks, {}
            await self._to_each_session(Ev.CLOCKS, {s: Clocks(c) for s, c in clocks.items()})
            levels, self._levels = self._levels, {}
            for session_id, batch in levels.items():
                self._unpublished.setdefault(session_id, set()).update(batch)
            await self._to_each_session(Ev.LEVELS, {s: Levels(b) for s, b in levels.items()})
            if time.monotonic() - published >= PRESENCE_LEVEL_INTERVAL_S:
                published = time.monotonic()
                await self._publish_levels()

    async def _to_each_session(self, event: str, batches: dict[str, Record]) -> None:
        """Coroutine: each session's batch to its leaders (one failing leaves the others)."""
        for session_id, batch in batches.items():
            try:
                await self.to_leaders(session_id, event, batch)
            except Exception:
                log.exception("%s to session %s failed", event, session_id)

    async def _publish_levels(self) -> None:
        """The latest levels of this process's singers into the presence (the roster's)."""
        unpublished, self._unpublished = self._unpublished, {}
        for session_id, pids in unpublished.items():
            lives = {pid: self.live[pid] for pid in pids if pid in self.live}
            try:
                await self.presence.put(session_id, lives)
            except Exception:  # Redis away for a moment: the next second brings them
                log.exception("publishing levels of session %s failed", session_id)

    def _register(self) -> None:
        sio = self.sio
        sio.on("connect", self._lifecycle("connect", self._connect))
        sio.on("disconnect", self._lifecycle("disconnect", self._disconnect))
        sio.on(Ev.CLOCK_PROBE, self._guard(Ev.CLOCK_PROBE, self._clock_probe))
        sio.on(Ev.CLOCK_REPORT, self._guard(Ev.CLOCK_REPORT, self._clock_report))
        sio.on(Ev.LEVEL, self._guard(Ev.LEVEL, self._level))
        sio.on(Ev.CALIBRATION, self._guard(Ev.CALIBRATION, self._calibration))
        sio.on(Ev.TAKE_STATE, self._guard(Ev.TAKE_STATE, self._take_state))
        sio.on(Ev.WAVE, self._guard(Ev.WAVE, self._wave))
        sio.on("*", self._unknown)

    # ----------------------------------------------------------------- roster

    @staticmethod
    def entry(p: Participant, live: Live) -> RosterEntry:
        """A participant's roster entry: stored identity plus live state."""
        level = None
        if live.level is not None:
            level = LiveLevel(live.level.rms_db, live.level.peak_db, live.level.clipped)
        return RosterEntry(
            participant_id=p.participant_id,
            name=p.name,
            part=p.part,
            connected=live.connected,
            latency_frames=p.latency_frames,
            latency_source=p.latency_source,
            clock=live.clock,
            level=level,
            overflows=live.overflows,
            underflows=live.underflows,
            lost_frames=live.lost_frames,
            dropouts=live.dropouts,
            skipped_frames=live.skipped_frames,
            last_seen=live.last_seen,
        )

    async def roster(self, session_id: str) -> Roster:
        """Coroutine: the whole roster of a session (reads the store and the presence: not
        for the broadcast path)."""
        people = self.store.participants(session_id)
        lives = await self.presence.get(session_id, [p.participant_id for p in people])
        return Roster(tuple(self.entry(p, lives[p.participant_id]) for p in people))

    async def _participant_changed(self, participant_id: str, here: Live | None = None) -> None:
        """Send the leaders a participant's entry; ``here``: its live state as this process
        holds it (the singer's socket is here), which spares a read of the presence."""
        p = self.identity.get(participant_id)
        if p is not None:
            if here is None:
                here = (await self.presence.get(p.session_id, [participant_id]))[participant_id]
            await self.to_leaders(p.session_id, Ev.PARTICIPANT, self.entry(p, here))
            self._clock_shown[participant_id] = (here.clock, time.monotonic())

    # ----------------------------------------------------------------- handlers

    def _guard(
        self, event: str, fn: Callable[[str, Any], Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """Wrap a handler: unknown sockets and bad payloads get Ev.ERROR, never a crash."""

        async def handler(sid: str, *args: Any) -> Any:
            p = self.conns.get(sid)
            try:
                if p is None:
                    raise PermissionError("not connected to a session")
                if len(args) != 1:
                    raise WireError(f"{event}: expected exactly one JSON object argument")
                return await fn(sid, args[0])
            except (WireError, PermissionError, LookupError, TooSoon) as exc:
                await self._refuse(sid, event, exc)
            except Exception as exc:
                log.exception("Socket.IO handler for %s failed", event)
                await self._refuse(sid, event, exc, internal=True)
            return None

        return handler

    def _lifecycle(
        self, event: str, fn: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """Wrap the connect/disconnect handler so that a client *event* by that name is
        refused: python-socketio dispatches it to the same handler, and a fake
        ``disconnect`` would make the server forget a socket that is still there."""

        async def handler(sid: str, *args: Any) -> Any:
            # A real connect runs while the socket is pending, a real disconnect after it
            # is marked leaving; only a client event arrives on a fully connected socket.
            if self.sio.manager.is_connected(sid, "/"):
                await self._refuse(sid, event, WireError(_reserved_message(event)))
                return None
            return await fn(sid, *args)

        return handler

    async def _refuse(self, sid: str, event: str, exc: Exception, internal: bool = False) -> None:
        if internal:
            code, message = "internal_error", "the server failed on this event; it is logged"
        elif isinstance(exc, PermissionError):
            code, message = "forbidden", str(exc)
        elif isinstance(exc, TooSoon):
            code, message = "too_soon", str(exc)
        elif isinstance(exc, LookupError):
            code, message = "not_found", str(exc.args[0] if exc.args else exc)
        else:
            code, message = "bad_payload", str(exc)
        with contextlib.suppress(Exception):
            await self._send(Ev.ERROR, ErrorReport(event, code, message), to=sid)

    async def _unknown(self, *args: Any) -> None:
        # The catch-all gets (event, sid, *data); an event literally named "*" is dispatched
        # to it directly as (sid, *data).
        if len(args) >= 2 and isinstance(args[1], str) and args[1] in self.conns:
            event, sid = str(args[0]), args[1]
        elif args and isinstance(args[0], str):
            event, sid = "*", args[0]
        else:
            return
        if event in _RESERVED:
            await self._refuse(sid, event[:64], WireError(_reserved_message(event)))
            return
        await self._refuse(
            sid,
            str(event)[:64],
            WireError(
                f"unknown event {str(event)[:64]!r}; clients send: clock.probe, clock.report, "
                "level, calibration, take.state, wave"
            ),
        )

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        def refuse(code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
            # The client's connect_error handler gets {"message": message, "data": {...}}.
            return socketio.exceptions.ConnectionRefusedError(
                message, Refusal(code, message).to_dict()
            )

        try:
            creds = ConnectAuth.from_dict(auth, "connect auth")
        except WireError as exc:
            raise refuse(
                "no_token",
                f'{exc}; connect with auth={{"token": ..., "protocol": {PROTOCOL_VERSION}}}',
            ) from None
        if creds.protocol != PROTOCOL_VERSION:
            raise refuse(
                "protocol",
                f"protocol {creds.protocol!r} is not spoken here; "
                f"this server speaks protocol {PROTOCOL_VERSION}",
            )
        p = self.store.principal(hash_token(creds.token))
        if p is None:
            raise refuse("bad_token", "unknown token")
        session = self.store.get_session(p.session_id)
        if session is None:
            raise refuse("session_closed", "the session no longer exists")
        refusal = self.not_open(session)
        if refusal is not None:
            raise refuse(*refusal)
        ident: Participant | None = None
        if not p.is_leader:
            ident = self.store.get_participant(p.participant_id or "")
            if ident is None:
                raise refuse("bad_token", "unknown participant")
        view = session_view(session, self.store.tracks(p.session_id))
        latest = self.store.latest_take(p.session_id)
        # The latest take's state lets a reconnecting singer finish a take whose stop it
        # missed (the server may have died between broadcasting the stop and sending it).
        take_view = None if latest is None else TakeView(*latest)
        welcome = Welcome(p.role, view, self.clock(), take_view)
        self.conns[sid] = p
        await self.sio.enter_room(sid, session_room(p.session_id))
        if ident is None:
            await self.sio.enter_room(sid, leader_room(p.session_id))
            await self._send(Ev.WELCOME, welcome, to=sid)
            await self._send(Ev.ROSTER, await self.roster(p.session_id), to=sid)
            self._watchers[p.session_id] = self._watchers.get(p.session_id, 0) + 1
            await self._retune_levels(p.session_id)
            return
        pid = ident.participant_id
        self.identity[pid] = ident
        live = self.live.get(pid)
        if live is None:  # first socket here: go on from what the deployment knows of them
            live = self.live[pid] = (await self.presence.get(p.session_id, [pid]))[pid]
        live.last_seen = time.time()
        await self.presence.joined(p.session_id, pid, sid)
        await self.presence.put(p.session_id, {pid: live})
        await self.sio.enter_room(sid, waiting_room(p.session_id))
        self.waitroom.changed(p.session_id)
        self._singer_sids.setdefault(p.session_id, set()).add(sid)
        hz = await self._retune_levels(p.session_id, but=sid)
        # the rate now: another connect may have changed (and told this socket) it meanwhile
        hz = self._level_hz.get(p.session_id, hz)
        welcome = dataclasses.replace(
            welcome, participant_id=pid, name=ident.name, part=ident.part, level_hz=hz
        )
        await self._send(Ev.WELCOME, welcome, to=sid)
        await self._participant_changed(pid)
        if latest is not None and latest[1] in ("armed", "running"):
            await self._catch_up(sid, p.session_id, pid, latest[0])

    async def _catch_up(self, sid: str, session_id: str, pid: str, take_id: str) -> None:
        """A singer connected while a take is armed or running: expect a recording from
        them, and hand a running take's start to them so they join it where it is now (the
        timeline is absolute: they are placed like everyone else)."""
        take = self.store.take_for(take_id, pid)
        if take is None:
            return
        me = take.singer(pid)
        if me is None:
            self.store.add_take_singer(take_id, pid, "expected", "joined after the take was armed")
            await self.take_update(session_id, take_id, pid, "expected", stored=True)
        elif self._pending_state(session_id, take_id, pid, me.state) != "expected":
            return  # already recording it (a reconnect), or done with it
        if take.state != "running" or take.t0 is None:
            return
        # the server clock outlives a server restart: an earlier t0 still holds, unless the
        # take has run longer than any take may
        now = self.clock()
        if now - take.t0 > take.settings.max_take_seconds:
            return
        start = TakeStart(
            take_id=take_id,
            t0=take.t0,
            settings=take.settings,
            sent_at=now,
            tracks={part: t.sha256 for part, t in take.tracks.items()},
        )
        await self._send(Ev.TAKE_START, start, to=sid)

    async def _disconnect(self, sid: str, *reason: Any) -> None:
        p = self.conns.pop(sid, None)
        if p is None:
            return
        if p.participant_id is None:
            left = self._watchers.get(p.session_id, 1) - 1
            self._watchers[p.session_id] = left
            if left <= 0:
                del self._watchers[p.session_id]
            await self._retune_levels(p.session_id)
            return
        self._singer_sids.get(p.session_id, set()).discard(sid)
        await self._retune_levels(p.session_id)
        pid = p.participant_id
        still_here = await self.presence.left(p.session_id, pid, sid)
        live = self.live.get(pid)
        if live is not None:
            live.last_seen = time.time()
            await self.presence.put(p.session_id, {pid: live})
            if not any(q.participant_id == pid for q in self.conns.values()):
                # no socket of theirs here: the presence has the rest (their other socket's
                # disconnect, run during the await above, may have dropped it already)
                self.live.pop(pid, None)
        if not still_here:
            self.waitroom.changed(p.session_id)
            await self._left_take(p.session_id, pid)
        await self._participant_changed(pid)
        if pid not in self.live:
            self._clock_shown.pop(pid, None)

    def _watched(self, session_id: str) -> bool:
        """Whether a leader watches the session's levels.  With several processes one sees
        only its own leaders' sockets, so there the answer is always yes (the budget holds)."""
        return not isinstance(self.presence, LocalPresence) or session_id in self._watchers

    async def _retune_levels(self, session_id: str, but: str = "") -> float:
        """Tell this process's singers of the session a new ``level.rate`` when the budget's
        share changed (``but``: a socket told in its welcome instead); returns the rate.  The
        share is of the singers on every process (each process retunes its own as its
        singers come and go)."""
        sids = self._singer_sids.get(session_id, set())
        everywhere = await self.presence.singers_here(session_id, len(sids))
        hz = level_rate(everywhere, self._watched(session_id))
        if not sids:
            self._singer_sids.pop(session_id, None)
            self._level_hz.pop(session_id, None)
            return hz
        if self._level_hz.get(session_id) != hz:
            self._level_hz[session_id] = hz
            for other in list(sids - {but}):
                await self._send(Ev.LEVEL_RATE, LevelRate(hz), to=other)
        return hz

    async def _left_take(self, session_id: str, pid: str) -> None:
        """A singer recording the running take lost their connection: say when (their
        client goes on recording, and uploads when it can)."""
        latest = self.store.latest_take(session_id)
        if latest is None or latest[1] != "running" or latest[2] is None:
            return
        take = self.store.take_for(latest[0], pid)
        me = None if take is None else take.singer(pid)
        if me is None or self._pending_state(session_id, latest[0], pid, me.state) != "recording":
            return
        at = max(0.0, self.clock() - latest[2])
        detail = f"left at {int(at // 60)}:{int(at % 60):02d} (their recording may still arrive)"
        await self.take_update(session_id, latest[0], pid, "recording", detail)

    async def _clock_probe(self, sid: str, payload: Any) -> dict[str, float]:
        now = self.clock()
        t0 = parse_clock_probe(payload)
        reply = ClockReply(t0=t0, server_time=now).to_dict()
        if self.wire_log is not None:
            self.wire_log.note("ack", Ev.CLOCK_PROBE, reply)
        return reply

    def _singer(self, sid: str) -> tuple[Principal, str]:
        p = self.conns[sid]
        if p.participant_id is None:
            raise PermissionError("only singers send this event")
        return p, p.participant_id

    async def _clock_report(self, sid: str, payload: Any) -> None:
        rep = parse_clock_report(payload)
        p, pid = self._singer(sid)
        live = self.live.setdefault(pid, Live())
        live.clock = LiveClock(rep.offset, rep.error_bound, rep.rtt_min)
        live.last_seen = time.time()
        await self.presence.put(p.session_id, {pid: live})
        shown, at = self._clock_shown.get(pid, (None, 0.0))
        if clock_news(shown, live.clock, time.monotonic() - at):
            # the clock alone, batched: a whole entry each was most of the leader's view
            self._clocks.setdefault(p.session_id, {})[pid] = live.clock
            self._clock_shown[pid] = (live.clock, time.monotonic())

    async def _level(self, sid: str, payload: Any) -> None:
        rep = parse_level_report(payload)
        p, pid = self._singer(sid)
        live = self.live.setdefault(pid, Live())
        live.level = rep
        live.overflows, live.underflows = rep.overflows, rep.underflows
        live.lost_frames, live.dropouts = rep.lost_frames, rep.dropouts
        live.skipped_frames = rep.skipped_frames
        live.last_seen = time.time()
        self._levels.setdefault(p.session_id, {})[pid] = live.level

    async def _calibration(self, sid: str, payload: Any) -> None:
        frames, source = parse_calibration(payload)
        _, pid = self._singer(sid)
        self.store.set_latency(pid, frames, source)
        ident = self.store.get_participant(pid)
        if ident is not None:
            self.identity[pid] = ident
        await self._participant_changed(pid)

    async def _wave(self, sid: str, payload: Any) -> None:
        Wave.from_dict(payload, Ev.WAVE)
        p, pid = self._singer(sid)
        ident = self.identity.get(pid)
        if ident is not None:
            self.waitroom.wave(p.session_id, pid, ident.name)

    async def _take_state(self, sid: str, payload: Any) -> None:
        take_id, state, detail = parse_take_state(payload)
        p, pid = self._singer(sid)
        if state in _SERVER_STATES:
            raise WireError(
                f"take.state: {state!r} is set by the server; clients send "
                "recording, recorded, uploading or failed"
            )
        found = self.store.singer_state(take_id, pid)
        if found is None or found[0] != p.session_id:
            raise LookupError(f"take.state: no take {take_id!r} in your session")
        if found[1] is None:
            raise PermissionError(f"take.state: take {take_id} expects no recording from you")
        if found[1] == "uploaded":
            return  # already complete on the server; a late client report changes nothing
        await self.take_update(p.session_id, take_id, pid, state, detail)
