"""How long recordings live: deletion on request, retention by the host, a singer's own copy.

A leader deletes a take or the whole session; a singer deletes their own recordings and may
download a copy of everything the session holds of them.  The host keeps stopped takes
``--keep-days`` days (then they are removed, files and rows) and a session's remaining rows
until its lifetime and that retention have both passed.  Deleted means gone from the data
folder — take folders, the recordings in them, unfinished uploads, backing tracks no other
session uses — so no later download, mix or backup can hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tutti.wire import Deleted, MyRecordingsDeleted, UploadMetadata, WireError

from .errors import Conflict, Forbidden
from .models import Principal
from .realtime import Realtime
from .sessions import Sessions
from .store import SessionStore
from .takes import Takes
from .tracks import TrackStore
from .uploads import UploadState

__all__ = ["Retention"]

log = logging.getLogger("tutti.takes")

#: Seconds between retention passes.
PASS_S = 3600.0


def _take_of(metadata: dict[str, str]) -> str:
    """The take an upload is for ("" when its metadata never named one: a refused upload)."""
    try:
        return UploadMetadata.from_dict(metadata).take_id
    except WireError:
        return ""


class Retention:
    """Deletion and retention over the store, the take folders, tracks and uploads."""

    def __init__(
        self,
        store: SessionStore,
        sessions: Sessions,
        takes: Takes,
        tracks: TrackStore,
        realtime: Realtime,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.takes = takes
        self.tracks = tracks
        self.realtime = realtime
        #: Removes the uploads a predicate selects (the tus handler's ``discard``).
        self.discard_uploads: Callable[[Callable[[UploadState], bool]], int] = lambda m: 0

    # ------------------------------------------------------------------ on request

    async def delete_take(self, p: Principal, take_id: str) -> Deleted:
        self.sessions.require_leader(p, "delete a take")
        take = self.takes.get(p, take_id)
        if take.state == "running":
            raise Conflict(
                "the take is running: stop it first, then delete it", code="take_running"
            )
        await self._remove_take(take.session_id, take.take_id)
        log.info("event=deleted session=%s take=%s by=leader", p.session_id, take_id)
        return Deleted(True, take_id=take_id)

    async def delete_session(self, p: Principal) -> Deleted:
        self.sessions.require_leader(p, "delete the session")
        await self._remove_session(p.session_id)
        log.info("event=session_deleted session=%s by=leader", p.session_id)
        return Deleted(True, session_id=p.session_id)

    async def delete_my_recordings(self, p: Principal) -> MyRecordingsDeleted:
        pid = self._singer(p, "delete their recordings")
        removed = 0
        for take in self.store.takes(p.session_id):
            me = take.singer(pid)
            if me is None or me.recording is None:
                continue
            path = self.takes.folder(take.session_id, take.take_id) / me.recording.file
            self.store.clear_recording(
                take.take_id, pid, "deleted", "deleted at the singer's request"
            )
            await asyncio.to_thread(_unlink, path)
            removed += 1
        uploads = self.discard_uploads(lambda st: st.owner == pid)
        log.info("event=recordings_deleted session=%s singer=%s n=%d", p.session_id, pid, removed)
        return MyRecordingsDeleted(removed, uploads)

    async def my_data(self, p: Principal) -> Path:
        """A zip of what the session holds of this singer: ``me.json`` and their recordings.
        The caller sends it and removes it."""
        pid = self._singer(p, "download their data")
        me = self.store.get_participant(pid)
        assert me is not None  # the token named them
        takes, files = [], []
        for take in self.store.takes(p.session_id):
            s = take.singer(pid)
            if s is None:
                continue
            takes.append(
                {**s.info().to_dict(), "take_id": take.take_id, "created_at": take.created_at}
            )
            if s.recording is not None:
                path = self.takes.folder(take.session_id, take.take_id) / s.recording.file
                files.append((path, f"{take.take_id}/{s.recording.file}"))
        doc = {
            "name": me.name,
            "part": me.part,
            "joined_at": me.created_at,
            "latency_frames": me.latency_frames,
            "takes": takes,
        }
        return await asyncio.to_thread(_zip, self.tracks.tmp, doc, files)

    # ------------------------------------------------------------------ retention

    async def expire(self) -> int:
        """Remove the takes stopped longer ago than the host keeps them, and sessions past
        both their lifetime and that retention; returns how many takes went."""
        now = self.sessions.clock()
        gone = 0
        for session_id, take_id in self.store.stopped_before(now - self.takes.keep_s):
            await self._remove_take(session_id, take_id)
            log.info("event=expired session=%s take=%s", session_id, take_id)
            gone += 1
        old = now - self.sessions.lifetime_s - self.takes.keep_s
        for session_id in self.store.sessions_created_before(old):
            gone += len(self.store.takes(session_id))
            await self._remove_session(session_id)
            log.info("event=session_expired session=%s", session_id)
        return gone

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: a retention pass at start and every PASS_S seconds."""

        async def passes() -> None:
            while True:
                try:
                    await self.expire()
                except OSError:
                    log.exception("retention pass failed; retrying in %.0f s", PASS_S)
                await asyncio.sleep(PASS_S)

        task = asyncio.create_task(passes())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _singer(p: Principal, action: str) -> str:
        if p.is_leader or p.participant_id is None:
            raise Forbidden(f"only a singer may {action}, with their own token", code="singer_only")
        return p.participant_id

    async def _remove_take(self, session_id: str, take_id: str) -> None:
        self.store.delete_take(take_id)
        folder = self.takes.folder(session_id, take_id)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        self.discard_uploads(lambda st: _take_of(st.metadata) == take_id)
        if self.takes.removed is not None:
            await self.takes.removed()

    async def _remove_session(self, session_id: str) -> None:
        people = {p.participant_id for p in self.store.participants(session_id)}
        await self.realtime.disconnect_session(session_id)
        self.store.delete_session(session_id)
        await asyncio.to_thread(shutil.rmtree, self.takes.takes_dir / session_id, True)
        self.discard_uploads(lambda st: st.owner in people)
        if self.takes.removed is not None:
            await self.takes.removed()
        in_use = self.store.track_hashes()
        for path in list(self.tracks.root.iterdir()) if self.tracks.root.is_dir() else []:
            if path.name not in in_use:
                await asyncio.to_thread(_unlink, path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _zip(scratch: Path, doc: dict[str, Any], files: list[tuple[Path, str]]) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="my-data-", suffix=".zip", dir=scratch)
    with open(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as z:
        z.writestr("me.json", json.dumps(doc, indent=1))
        for path, arc in files:
            if path.exists():
                z.write(path, f"recordings/{arc}")  # audio is compressed already: stored
    return Path(name)
