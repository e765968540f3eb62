"""Backing-track uploads over tus, and the router that sends each upload to its hooks.

The leader's web page uploads a part's backing through ``/files/`` (resumable, unlike
``PUT /api/session/tracks/{part}``) with the metadata of :class:`BackingMetadata`.
:class:`UploadRouter` is the :class:`tutti.server.tushooks.UploadHooks` the tus handler
holds: uploads whose metadata says ``kind: backing``
(:class:`tutti.wire.BackingUploadMetadata`; and whose owner is a session's
backing, ``backing:<session_id>``) go to :class:`TrackUploadHooks`; every other upload is a
take recording for :class:`tutti.server.take_uploads.TakeUploadHooks`.

- create: only the session's leader, for one of its parts, no larger than the track cap and
  within the storage quota;
- access: only a leader of the session the upload belongs to;
- complete: the file is checked like a ``PUT`` track (audio at the session rate, mono or
  stereo), stored by sha256, and the session is told its tracks changed (``session``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from tutti.wire import BackingUploadMetadata, Ev, WireError, check_part, is_backing_upload

from .auth import bearer_token
from .errors import ApiError, BadRequest, Conflict, Forbidden, TooLarge
from .models import Fanout
from .quota import StorageQuota
from .sessions import Sessions
from .store import SessionStore
from .tracks import TrackStore
from .tushooks import UploadHooks, VerificationError

__all__ = ["backing_metadata", "TrackUploadHooks", "UploadRouter"]

_OWNER_PREFIX = "backing:"


def backing_metadata(metadata: dict[str, str]) -> BackingUploadMetadata:
    """The metadata as a record (400 ``bad_metadata`` naming what is wrong)."""
    try:
        meta = BackingUploadMetadata.from_dict(metadata, "upload metadata")
        check_part(meta.part)
    except WireError as exc:
        raise BadRequest(str(exc), code="bad_metadata") from None
    return meta


class TrackUploadHooks:
    """The application side of tus uploads of backing tracks (one owner per session)."""

    def __init__(
        self,
        store: SessionStore,
        sessions: Sessions,
        tracks: TrackStore,
        fanout: Fanout,
        quota: StorageQuota,
        *,
        max_open_uploads: int = 16,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.tracks = tracks
        self.fanout = fanout
        self.quota = quota
        self.max_open_uploads = max_open_uploads
        #: Unfinished uploads of an owner, wired to the tus handler by the app factory.
        self.open_uploads: Callable[[str], int] = lambda owner: 0

    async def authorize_create(
        self, request: web.Request, metadata: dict[str, str], length: int
    ) -> str:
        try:
            p = self.sessions.principal(bearer_token(request))
            self.sessions.require_leader(p, "upload backing tracks")
            session = self.sessions.open_session(p.session_id)
            part = backing_metadata(metadata).part
            if part not in session.settings.parts:
                raise BadRequest(
                    f"part {part!r} is not one of this session's parts "
                    f"{list(session.settings.parts)}",
                    code="bad_part",
                )
            if length > self.tracks.max_bytes:
                raise TooLarge(
                    f"the backing track is {length} bytes; this server accepts at most "
                    f"{self.tracks.max_bytes} bytes per track (shorten it or use FLAC)"
                )
            held = sum(t.size for t in self.store.tracks(p.session_id).values())
            await self.quota.check(p.session_id, held, length)
            owner = _OWNER_PREFIX + p.session_id
            if self.open_uploads(owner) >= self.max_open_uploads:
                raise Conflict(
                    f"{self.max_open_uploads} backing uploads of this session are unfinished; "
                    "finish or cancel one first",
                    code="too_many_open_uploads",
                )
        except ApiError as exc:
            raise exc.to_http() from None
        return owner

    async def created(self, upload_id: str, metadata: dict[str, str], owner: str) -> None:
        return None  # the session hears of the track when it is stored

    async def authorize_access(self, request: web.Request, owner: str) -> None:
        try:
            p = self.sessions.principal(bearer_token(request))
            if not p.is_leader or owner != _OWNER_PREFIX + p.session_id:
                raise Forbidden("this upload belongs to another session", code="not_owner")
        except ApiError as exc:
            raise exc.to_http() from None

    async def complete(
        self, upload_id: str, path: Path, metadata: dict[str, str], owner: str, sha256_hex: str
    ) -> None:
        session_id = owner.removeprefix(_OWNER_PREFIX)
        try:
            session = self.sessions.open_session(session_id)
            part = backing_metadata(metadata).part
            track = await self.tracks.accept(
                path, sha256_hex, path.stat().st_size, part, session.settings
            )
        except ApiError as exc:
            raise VerificationError(exc.message) from None
        path.unlink(missing_ok=True)  # already stored under its sha256 (same content twice)
        self.store.put_track(session_id, track)
        await self.fanout.to_session(session_id, Ev.SESSION, self.sessions.public(session_id))


class UploadRouter:
    """The tus handler's hooks: backing uploads to ``tracks``, all others to ``takes``."""

    def __init__(self, takes: UploadHooks, tracks: TrackUploadHooks) -> None:
        self.takes = takes
        self.tracks = tracks

    def _by_owner(self, owner: str) -> UploadHooks:
        return self.tracks if owner.startswith(_OWNER_PREFIX) else self.takes

    def _by_metadata(self, metadata: dict[str, str]) -> UploadHooks:
        return self.tracks if is_backing_upload(metadata) else self.takes

    async def authorize_create(
        self, request: web.Request, metadata: dict[str, str], length: int
    ) -> str:
        return await self._by_metadata(metadata).authorize_create(request, metadata, length)

    async def created(self, upload_id: str, metadata: dict[str, str], owner: str) -> None:
        await self._by_owner(owner).created(upload_id, metadata, owner)

    async def authorize_access(self, request: web.Request, owner: str) -> None:
        await self._by_owner(owner).authorize_access(request, owner)

    async def complete(
        self, upload_id: str, path: Path, metadata: dict[str, str], owner: str, sha256_hex: str
    ) -> None:
        await self._by_owner(owner).complete(upload_id, path, metadata, owner, sha256_hex)
