"""The take lifecycle: arm, start at a scheduled server time, stop; list; manifest; files.

A take snapshots the session's settings and backing tracks when it is armed, and expects
every singer who has joined the session by then.  Starting schedules timeline sample 0 at
server monotonic time ``t0 = now + lead_s`` (``lead_s`` ≥ :data:`tutti.wire.MIN_START_LEAD_S`)
and broadcasts :class:`tutti.wire.TakeStart` once to the session room.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tutti.audio.click import backing_start_frame
from tutti.takeformat import Backing, TakeFormatError, TakeManifest, check_relpath
from tutti.wire import (
    Ev,
    StartRequest,
    TakeArmed,
    TakeArmedReply,
    TakeInfo,
    TakeList,
    TakeStart,
    TakeStarted,
    TakeStop,
    TakeStopped,
)

from .auth import new_id
from .errors import BadRequest, Conflict, NotFound
from .models import Fanout, Principal, Take, TakeSinger
from .sessions import Sessions
from .store import SessionStore

log = logging.getLogger("tutti.takes")

__all__ = ["Takes"]


class Takes:
    """Take rules over the store; files of completed recordings live under ``takes_dir``.

    Layout: ``<takes_dir>/<session_id>/<take_id>/recordings/<participant_id>.<ext>``.
    """

    def __init__(
        self,
        store: SessionStore,
        sessions: Sessions,
        fanout: Fanout,
        takes_dir: Path,
        keep_days: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        #: The server clock takes are scheduled on (:data:`tutti.server.realtime.SERVER_CLOCKS`).
        self.clock = clock
        self.sessions = sessions
        self.fanout = fanout
        self.takes_dir = takes_dir
        takes_dir.mkdir(parents=True, exist_ok=True)
        #: Seconds a stopped take is kept (the host's ``--keep-days``; see server/retention.py).
        self.keep_s = keep_days * 86400.0
        #: Told a take's id once it is stopped (the server's mix, server/mixing.py), or None.
        self.stopped: Callable[[str], Awaitable[None]] | None = None
        #: Told when takes were removed for good (the server's mix frees what it held).
        self.removed: Callable[[], Awaitable[None]] | None = None

    def folder(self, session_id: str, take_id: str) -> Path:
        return self.takes_dir / session_id / take_id

    def get(self, p: Principal, take_id: str) -> Take:
        """The take, if it belongs to ``p``'s session; 404 otherwise."""
        take = self.store.get_take(take_id) if len(take_id) <= 64 else None
        if take is None or take.session_id != p.session_id:
            raise NotFound(f"no take {take_id[:64]!r} in this session", code="no_take")
        return take

    async def arm(self, p: Principal) -> TakeArmedReply:
        """Coroutine: arm a new take expecting every joined singer; broadcast TAKE_ARMED."""
        self.sessions.require_leader(p, "arm a take")
        s = self.sessions.open_session(p.session_id)
        busy = [t for t in self.store.takes(s.session_id) if t.state in ("armed", "running")]
        if busy:
            raise Conflict(
                f"take {busy[-1].take_id} is {busy[-1].state}; stop it first", code="take_active"
            )
        singers = self.store.participants(s.session_id)
        if not singers:
            raise Conflict(
                "nobody has joined the session yet; a take needs at least one singer",
                code="no_singers",
            )
        take = Take(
            take_id=new_id(),
            session_id=s.session_id,
            state="armed",
            created_at=time.time(),
            settings=s.settings,
            tracks=self.store.tracks(s.session_id),
            singers=tuple(
                TakeSinger(x.participant_id, x.name, x.part, "expected") for x in singers
            ),
        )
        busy_now = self.store.create_take(take)
        if busy_now is not None:  # another process armed one meanwhile
            raise Conflict(
                f"take {busy_now[0]} is {busy_now[1]}; stop it first", code="take_active"
            )
        expected = [x.participant_id for x in take.singers]
        # Singers need only the take and its settings; the list of expected singers (N ids to
        # each of N sockets) stays with the leader, in this reply and in GET /takes.
        await self.fanout.to_session(
            s.session_id,
            Ev.TAKE_ARMED,
            TakeArmed(take.take_id, len(expected), s.settings),
        )
        log.info(
            "event=armed session=%s take=%s singers=%d", p.session_id, take.take_id, len(expected)
        )
        return TakeArmedReply(take.take_id, "armed", tuple(expected))

    async def start(self, p: Principal, take_id: str, payload: Any) -> TakeStarted:
        """Coroutine: schedule the armed take at ``t0`` and broadcast TAKE_START."""
        self.sessions.require_leader(p, "start a take")
        self.sessions.open_session(p.session_id)
        take = self.get(p, take_id)
        if take.state != "armed":
            raise Conflict(
                f"take {take_id} is {take.state}; only an armed take can start",
                code="take_not_armed",
            )
        lead = StartRequest.from_dict({} if payload is None else payload, "start").lead_s
        now = self.clock()
        t0 = now + lead
        if not self.store.set_take_state(take.take_id, "running", t0=t0, only_from=("armed",)):
            raise Conflict(  # another process started or stopped it meanwhile
                f"take {take_id} is no longer armed; only an armed take can start",
                code="take_not_armed",
            )
        msg = TakeStart(
            take_id=take.take_id,
            t0=t0,
            settings=take.settings,
            sent_at=self.clock(),
            tracks={part: t.sha256 for part, t in take.tracks.items()},
        )
        await self.fanout.to_session(p.session_id, Ev.TAKE_START, msg)
        log.info("event=started session=%s take=%s lead_s=%.2f", p.session_id, take.take_id, lead)
        return TakeStarted(take.take_id, t0, now)

    async def stop(self, p: Principal, take_id: str) -> TakeStopped:
        """Coroutine: stop an armed or running take; broadcast TAKE_STOP."""
        self.sessions.require_leader(p, "stop a take")
        await self.fanout.flush_take_updates(p.session_id)  # who is recording, written
        take = self.get(p, take_id)
        if take.state == "stopped":
            raise Conflict(f"take {take_id} is already stopped", code="take_stopped")
        stopped_at = time.time()
        if not self.store.set_take_state(
            take.take_id, "stopped", stopped_at=stopped_at, only_from=("armed", "running")
        ):  # another process stopped it meanwhile
            raise Conflict(f"take {take_id} is already stopped", code="take_stopped")
        await self.fanout.to_session(p.session_id, Ev.TAKE_STOP, TakeStop(take.take_id, stopped_at))
        await self._resolve_missed(take)
        log.info("event=stopped session=%s take=%s", p.session_id, take.take_id)
        await self._tell_stopped(take.take_id)
        return TakeStopped(take.take_id, "stopped", stopped_at)

    async def _tell_stopped(self, take_id: str) -> None:
        """Tell the server's mix (every upload may have ended before the stop); the stop never
        depends on it (a mix that fails to start is logged)."""
        if self.stopped is None:
            return
        try:
            await self.stopped(take_id)
        except Exception as exc:
            log.warning("event=mix_not_started take=%s error=%r", take_id, exc)

    async def _resolve_missed(self, take: Take) -> None:
        """At the stop, a singer still only "expected" never recorded: say so, and why."""
        why = (
            "never started: the take was stopped before it began"
            if take.state == "armed"
            else "not connected with audio while the take ran"
        )
        missed = [s.participant_id for s in take.singers if s.state == "expected"]
        # final when the stop answers: one write for all of them, the leaders told in a batch
        if missed:
            self.store.set_singer_states([(take.take_id, pid, "missed", why) for pid in missed])
        for pid in missed:
            await self.fanout.take_update(
                take.session_id, take.take_id, pid, "missed", why, stored=True
            )

    def list(self, p: Principal) -> TakeList:
        self.sessions.require_leader(p, "list the takes")
        return TakeList(tuple(self.reply(t) for t in self.store.takes(p.session_id)))

    def reply(self, take: Take) -> TakeInfo:
        """A take as the leader sees it, with when the host will remove it."""
        expires = None if take.stopped_at is None else take.stopped_at + self.keep_s
        return take.info(expires)

    # ---------------------------------------------------------- take folder view

    @staticmethod
    def backing_start(take: Take) -> int:
        """Timeline frame where the backing starts (after the count-in, plus the offset)."""
        return int(backing_start_frame(take.settings))

    def manifest(self, p: Principal, take_id: str) -> TakeManifest:
        """The take's ``take.json``: the uploaded recordings and the backing per part."""
        self.sessions.require_leader(p, "read a take's manifest")
        take = self.get(p, take_id)
        recs = tuple(s.recording for s in take.singers if s.recording is not None)
        start = self.backing_start(take)
        backing = tuple(
            Backing(
                part=part, file=f"backing/{part}.{t.ext}", sha256=t.sha256, timeline_start=start
            )
            for part, t in take.tracks.items()
        )
        return TakeManifest(
            take_id=take.take_id,
            rate=take.settings.rate,
            recordings=recs,
            settings=take.settings,
            backing=backing,
            title=take.settings.title,
        )

    def file(
        self, p: Principal, take_id: str, relpath: str, tracks_path: Any
    ) -> tuple[Path, str, str]:
        """(path on disk, sha256, content type) of a file the manifest names; 404 otherwise.

        Only names listed in the manifest resolve, so no path can leave the take folder.
        """
        self.sessions.require_leader(p, "download take files")
        take = self.get(p, take_id)
        try:
            rel = check_relpath(relpath, "path")
        except TakeFormatError as exc:
            raise BadRequest(str(exc), code="bad_path") from None
        for s in take.singers:
            rec = s.recording
            if rec is not None and rec.file == rel:
                ext = rel.rsplit(".", 1)[-1]
                ctype = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}[ext]
                return self.folder(take.session_id, take.take_id) / rel, rec.sha256, ctype
        for part, t in take.tracks.items():
            if rel == f"backing/{part}.{t.ext}":
                return tracks_path(t.sha256), t.sha256, t.content_type
        raise NotFound(
            f"take {take_id} has no file {rel!r}; the manifest lists its files", code="no_file"
        )
