"""The singers' waiting room: who is here, the leader's note and waves, coalesced per session.

Singers' sockets join the room ``w:<session_id>``.  A join, a leave or a new note marks the
session changed; at most every :data:`LOBBY_INTERVAL_S` one ``lobby`` snapshot (first names
and parts of those connected, counts per part, the note) goes to that room, newest wins.  So
1,000 singers joining within a second cost 1,000 messages (one snapshot to each), not one
per join to everyone (a million).  Waves are gathered the same way into one ``waves`` a
second; each singer may wave once every :data:`WAVE_EVERY_S`.

With several server processes (``--workers``, Redis) the changes are marked in Redis and a
session's snapshot is sent by one process per second, whichever takes its turn first
(:meth:`Presence.lobby_turn`), read from the shared presence: a session gets at most one
``lobby`` a second in all, not one from each process (four processes made four times the
messages); ``at`` (the server clock) lets a client keep the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from tutti.fsutil import write_json_atomic
from tutti.wire import (
    LOBBY_NAMES_MAX,
    WAVE_EVERY_S,
    WAVES_NAMES_MAX,
    Ev,
    Lobby,
    LobbySinger,
    Note,
    Record,
    Waves,
    WireError,
)

from .presence import Presence
from .store import SessionStore

__all__ = [
    "WaitingRoom",
    "NoteStore",
    "TooSoon",
    "LOBBY_INTERVAL_S",
    "lobby_every_s",
    "WAVE_EVERY_S",
    "waiting_room",
    "first_name",
]

log = logging.getLogger(__name__)

#: Seconds between two ``lobby`` (and two ``waves``) of one session from one process.
LOBBY_INTERVAL_S: Final = 1.0
#: Bytes a second a session's ``lobby`` may send over all its singers: a snapshot goes to
#: every singer, so 1,000 singers at 8 kB were 8 MB a second while they joined
LOBBY_BUDGET_BYTES_S: Final = 2_000_000
#: The longest (s) a waiting room's change waits, however big the room
LOBBY_MAX_INTERVAL_S: Final = 10.0

_Send = Callable[[str, str, Record], Awaitable[None]]


class TooSoon(Exception):
    """A singer waved again before :data:`WAVE_EVERY_S` passed; the message says when."""


def lobby_every_s(singers: int, lobby_bytes: int) -> float:
    """Seconds until a session's next ``lobby``: :data:`LOBBY_INTERVAL_S`, longer when
    ``singers`` copies of ``lobby_bytes`` would pass :data:`LOBBY_BUDGET_BYTES_S`."""
    spread = singers * lobby_bytes / LOBBY_BUDGET_BYTES_S
    return min(LOBBY_MAX_INTERVAL_S, max(LOBBY_INTERVAL_S, spread))


def waiting_room(session_id: str) -> str:
    """The Socket.IO room of a session's singers."""
    return f"w:{session_id}"


def first_name(name: str) -> str:
    """What the other singers see of a name: its first word."""
    return (name.split() or [name])[0]


class NoteStore:
    """The leader's note, one JSON file in the session's folder (so every process and a
    restarted server read the same one, and it goes when the session goes).  Blocking
    file I/O: call from a thread."""

    def __init__(self, sessions_dir: Path) -> None:
        self.sessions_dir = sessions_dir

    def _path(self, session_id: str) -> Path:
        return self.sessions_dir / session_id / "note.json"

    def put(self, session_id: str, note: str) -> None:
        path = self._path(session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, Note(note).to_dict())

    def get(self, session_id: str) -> str:
        try:
            raw = self._path(session_id).read_text(encoding="utf-8")
            return Note.from_dict(json.loads(raw), "note").note
        except FileNotFoundError:
            return ""
        except (ValueError, WireError) as exc:  # reads as none: the leader writes it again
            log.warning("event=note_unreadable session=%s: %s", session_id, exc)
            return ""


class WaitingRoom:
    """Coalesces a session's waiting-room changes into one ``lobby`` and one ``waves`` a second.

    Parameters
    ----------
    store : SessionStore
        Who joined the session (names and parts).
    presence : Presence
        Who of them is connected now, on any process.
    notes : NoteStore or None
        Where the leader's note is kept (None: no notes).
    send : coroutine function
        ``send(session_id, event, record)`` to the session's waiting room.
    clock : callable
        The server clock (seconds), stamped on each snapshot.
    """

    def __init__(
        self,
        store: SessionStore,
        presence: Presence,
        notes: NoteStore | None,
        send: _Send,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.presence, self.notes = store, presence, notes
        self.send, self.clock = send, clock
        self._changed: set[str] = set()
        self._waves: dict[str, list[str]] = {}  # session → first names, in order
        self._waved_at: dict[str, float] = {}  # participant → time.monotonic() of last wave

    def changed(self, session_id: str) -> None:
        """Someone came or left, or the note changed: a snapshot goes out within a second."""
        self._changed.add(session_id)

    def forget(self, session_id: str) -> None:
        self._changed.discard(session_id)
        self._waves.pop(session_id, None)

    def wave(self, session_id: str, participant_id: str, name: str) -> None:
        """A singer waves; :class:`TooSoon` within :data:`WAVE_EVERY_S` of their last."""
        now = time.monotonic()
        wait = self._waved_at.get(participant_id, -WAVE_EVERY_S) + WAVE_EVERY_S - now
        if wait > 0:
            raise TooSoon(f"you waved a moment ago; wave again in {int(wait) + 1} s")
        self._waved_at[participant_id] = now
        self._waves.setdefault(session_id, []).append(first_name(name))

    async def snapshot(self, session_id: str) -> Lobby:
        """Coroutine: the waiting room now (reads the store, the presence and the note)."""
        people = self.store.participants(session_id)
        connected = await self.presence.connected(session_id, [p.participant_id for p in people])
        here = [p for p in people if p.participant_id in connected]
        parts: dict[str, int] = {}
        for p in here:
            parts[p.part] = parts.get(p.part, 0) + 1
        note = "" if self.notes is None else await asyncio.to_thread(self.notes.get, session_id)
        shown = tuple(LobbySinger(first_name(p.name), p.part) for p in here[:LOBBY_NAMES_MAX])
        return Lobby(here=shown, count=len(here), parts=parts, note=note, at=self.clock())

    async def flush(self) -> None:
        """Coroutine: send what changed since the last flush (one event per session each)."""
        changed, self._changed = self._changed, set()
        waves, self._waves = self._waves, {}
        try:
            due = await self.presence.lobby_turn(changed, LOBBY_INTERVAL_S)
        except Exception:  # marked again, sent at a later turn
            log.exception("the waiting rooms' turn failed")
            self._changed |= changed
            due = []
        for session_id in due:
            try:
                lobby = await self.snapshot(session_id)
                await self.send(session_id, Ev.LOBBY, lobby)
                every = lobby_every_s(lobby.count, len(json.dumps(lobby.to_dict())))
                if every > LOBBY_INTERVAL_S:
                    await self.presence.lobby_hold(session_id, every)
            except Exception:  # keep going for the other sessions; the next change resends
                log.exception("waiting room of session %s failed", session_id)
        for session_id, names in waves.items():
            shown = tuple(dict.fromkeys(names))
            more = len(shown) - WAVES_NAMES_MAX
            try:
                await self.send(session_id, Ev.WAVES, Waves(shown[:WAVES_NAMES_MAX], max(0, more)))
            except Exception:  # a lost wave is a small loss; the other sessions still get theirs
                log.exception("waves of session %s failed", session_id)
        cutoff = time.monotonic() - WAVE_EVERY_S
        self._waved_at = {pid: t for pid, t in self._waved_at.items() if t > cutoff}

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: flush every :data:`LOBBY_INTERVAL_S` while the server runs."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(LOBBY_INTERVAL_S)
                await self.flush()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
