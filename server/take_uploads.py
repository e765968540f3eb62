"""Take uploads: the tus hooks that decide who may upload a recording and accept it when done.

:class:`TakeUploadHooks` implements :class:`tutti.server.tushooks.UploadHooks`:

- create: only a singer (its bearer token), for a take of its session in which it is
  expected and has not uploaded yet, with metadata ``take_id``, ``filename`` (``.wav``,
  ``.flac`` or ``.ogg``), ``sha256`` (hex, optional) and ``recording`` (JSON: the
  :class:`tutti.takeformat.Recording` fields minus file, singer, part);
- access: only the singer who created the upload;
- complete: sha256 matches, the file's header is valid audio at the session rate with the
  declared frames and channels and a sane duration; the recording row is stored (state
  "uploaded"), then the file is renamed atomically to
  ``takes/<session>/<take>/recordings/<participant_id>.<ext>`` and the folder fsynced.
  A compressed file's frames are decoded by its pass 1, which the server starts at once:
  should they break, :meth:`TakeUploadHooks.refuse_damaged` refuses it then (state
  "failed", the file removed), and the take is mixed without it.

Storing the row before the rename makes completion idempotent: if the server dies between
the two, the upload is still fully received, tus completes it again at start-up, and this
hook sees the stored row with the same sha256 and only redoes the rename.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from tutti.takeformat import Recording, TakeFormatError, parse_recording
from tutti.wire import UploadMetadata, WireError

from .audiocheck import AudioCheckError, AudioInfo, check_audio
from .auth import bearer_token
from .edge import EdgeError, check_recording_fields, loads_json
from .errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from .models import TRACK_FORMATS, Fanout, Participant, Take
from .quota import StorageQuota
from .sessions import Sessions
from .store import SessionStore
from .takes import Takes
from .tracks import fsync_dir
from .tushooks import VerificationError

__all__ = ["TakeUploadHooks", "DURATION_MARGIN_S"]

#: A recording may be this much longer than the session's max_take_seconds.
DURATION_MARGIN_S = 60.0
log = logging.getLogger("tutti.takes")
_EXTS = {ext: fmt for fmt, (ext, _) in TRACK_FORMATS.items()}


def upload_metadata(metadata: dict[str, str]) -> UploadMetadata:
    """An upload's tus metadata as the contract's record (400 ``bad_metadata`` if it is not)."""
    try:
        return UploadMetadata.from_dict(metadata, "upload metadata")
    except WireError as exc:
        raise BadRequest(str(exc), code="bad_metadata") from None


class TakeUploadHooks:
    """The application side of tus uploads for take recordings."""

    def __init__(
        self,
        store: SessionStore,
        sessions: Sessions,
        takes: Takes,
        fanout: Fanout,
        *,
        max_open_uploads: int = 8,
    ) -> None:
        if max_open_uploads < 1:
            raise ValueError(f"max_open_uploads must be at least 1, got {max_open_uploads}")
        self.store = store
        self.sessions = sessions
        self.takes = takes
        self.fanout = fanout
        self.max_open_uploads = max_open_uploads
        #: Unfinished uploads of an owner: the tus handler's
        #: :meth:`~tutti.server.tus.TusHandler.open_uploads`, wired in by the app factory.
        self.open_uploads: Callable[[str], int] | None = None
        #: Byte limits per session and server (None = none), wired in by the app factory.
        self.quota: StorageQuota | None = None
        #: Called with True for every take upload stored, False for every one refused.
        self.outcome: Callable[[bool], None] = lambda stored: None
        #: Called with the take and singer ids once an upload is stored or refused (the
        #: server's mix starts when it was the last one: :mod:`tutti.server.mixing`).
        self.settled: Callable[[str, str], Awaitable[None]] | None = None

    # -------------------------------------------------------------- validation

    def _target(
        self, session_id: str, participant_id: str, metadata: dict[str, str]
    ) -> tuple[Take, Participant, Recording]:
        """Take, singer and declared recording of an upload's metadata (ApiError if bad)."""
        meta = upload_metadata(metadata)
        take_id = meta.take_id
        take = self.store.get_take(take_id) if take_id else None
        if take is None or take.session_id != session_id:
            raise NotFound(
                f"upload metadata 'take_id': no take {take_id[:64]!r} in your session",
                code="no_take",
            )
        me = take.singer(participant_id)
        participant = self.store.get_participant(participant_id)
        if me is None or participant is None:
            raise Forbidden(
                f"you were not in the session when take {take_id} was armed, so "
                "it expects no recording from you",
                code="not_expected",
            )
        filename = meta.filename
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in _EXTS:
            raise BadRequest(
                f"upload metadata 'filename' {filename[:80]!r}: accepted "
                "extensions are .wav, .flac and .ogg",
                code="bad_metadata",
            )
        what = "upload metadata 'recording'"
        try:
            raw = loads_json(meta.recording, what)
        except EdgeError as exc:
            raise BadRequest(
                f"{exc}; it must be a JSON object with rate, channels, frames, "
                "start_offset, latency, ...",
                code="bad_metadata",
            ) from None
        if not isinstance(raw, dict):
            raise BadRequest(
                "upload metadata 'recording' must be a JSON object", code="bad_metadata"
            )
        fields = {
            k: v
            for k, v in raw.items()
            if k in Recording.__dataclass_fields__
            and k not in ("file", "singer", "part", "participant_id", "sha256")
        }
        fields.update(
            file=f"recordings/{participant_id}.{ext}",
            singer=participant.name,
            part=participant.part,
            participant_id=participant_id,
        )
        try:
            check_recording_fields(fields, what)
            rec = parse_recording(fields, what)
        except (TakeFormatError, ValueError, TypeError, OverflowError) as exc:
            raise BadRequest(str(exc), code="bad_metadata") from None
        if rec.rate != take.settings.rate:
            raise Unprocessable(
                f"the recording is at {rec.rate} Hz but the take runs at {take.settings.rate} Hz",
                code="wrong_rate",
            )
        return take, participant, rec

    # ------------------------------------------------------------------- hooks

    async def authorize_create(
        self, request: web.Request, metadata: dict[str, str], length: int
    ) -> str:
        try:
            p = self.sessions.principal(bearer_token(request))
            if p.is_leader or p.participant_id is None:
                raise Forbidden(
                    "only singers upload recordings, each with its own token", code="singer_only"
                )
            take, _, _ = self._target(p.session_id, p.participant_id, metadata)
            me = take.singer(p.participant_id)
            if me is not None and me.state == "uploaded":
                raise Conflict(
                    f"your recording of take {take.take_id} is already uploaded",
                    code="already_uploaded",
                )
            if take.state == "armed":
                raise Conflict(f"take {take.take_id} has not started yet", code="take_not_started")
            if self.quota is not None:
                tracks = sum(t.size for t in self.store.tracks(p.session_id).values())
                await self.quota.check(p.session_id, tracks, length)
            self._check_open_slots(p.participant_id)
        except ApiError as exc:
            raise exc.to_http() from None
        # Nothing may be awaited from the slot check to here: the handler counts the new
        # upload as soon as this returns, which keeps the cap exact under concurrent POSTs.
        return p.participant_id

    def _check_open_slots(self, participant_id: str) -> None:
        """409 ``too_many_open_uploads`` when the singer holds ``max_open_uploads`` already."""
        if self.open_uploads is None:
            raise RuntimeError("TakeUploadHooks.open_uploads is not wired to the tus handler")
        n = self.open_uploads(participant_id)
        if n >= self.max_open_uploads:
            raise Conflict(
                f"you have {n} unfinished uploads open, the most one singer may hold is "
                f"{self.max_open_uploads}; finish one (send its remaining bytes), terminate "
                "one (DELETE its upload URL) or wait for one to expire to free a slot",
                code="too_many_open_uploads",
                details={"open_uploads": n, "limit": self.max_open_uploads},
            )

    async def created(self, upload_id: str, metadata: dict[str, str], owner: str) -> None:
        take = self.store.get_take(upload_metadata(metadata).take_id)
        if take is None:
            return
        self.store.set_singer_state(take.take_id, owner, "uploading")  # as the POST answers
        await self.fanout.take_update(
            take.session_id, take.take_id, owner, "uploading", stored=True
        )

    async def authorize_access(self, request: web.Request, owner: str) -> None:
        try:
            p = self.sessions.principal(bearer_token(request))
            if p.participant_id != owner:
                raise Forbidden("this upload belongs to another singer", code="not_owner")
        except ApiError as exc:
            raise exc.to_http() from None

    async def complete(
        self, upload_id: str, path: Path, metadata: dict[str, str], owner: str, sha256_hex: str
    ) -> None:
        participant = self.store.get_participant(owner)
        if participant is None:
            raise VerificationError("the uploading singer no longer exists")
        try:
            take, _, rec = self._target(participant.session_id, owner, metadata)
        except ApiError as exc:
            raise VerificationError(exc.message) from None
        try:
            await self._verify(take, rec, path, metadata, sha256_hex)
        except VerificationError as exc:
            self.store.set_singer_state(take.take_id, owner, "failed", str(exc))
            await self._announce(take, owner, "failed", str(exc))
            self.outcome(False)
            log.info("event=upload_refused take=%s singer=%s", take.take_id, owner)
            await self._settled(take.take_id, owner)
            raise
        rec = dataclasses.replace(rec, sha256=sha256_hex)
        me = take.singer(owner)
        if me is None or me.recording is None or me.recording.sha256 != sha256_hex:
            self.store.set_recording(take.take_id, owner, rec)
        dest = self.takes.folder(take.session_id, take.take_id) / rec.file
        await asyncio.to_thread(self._place, path, dest)
        self.outcome(True)
        log.info("event=upload_stored take=%s singer=%s", take.take_id, owner)
        await self._announce(take, owner, "uploaded", "")
        await self._settled(take.take_id, owner)

    async def refuse_damaged(
        self, take_id: str, participant_id: str, file: str, reason: str
    ) -> bool:
        """Coroutine: the stored recording ``file`` of ``participant_id`` does not decode to
        its end (its pass 1 said ``reason``): refuse it as the upload's check would have,
        file removed.  False when it is no longer theirs (deleted meanwhile)."""
        take = self.store.get_take(take_id)
        me = None if take is None else take.singer(participant_id)
        if take is None or me is None or me.recording is None or me.recording.file != file:
            return False
        detail = f"the recording cannot be played to its end, so it is not in the mix: {reason}"
        self.store.clear_recording(take_id, participant_id, "failed", detail[:2000])
        path = self.takes.folder(take.session_id, take_id) / file
        await asyncio.to_thread(path.unlink, missing_ok=True)
        log.warning("event=upload_refused_on_decode take=%s singer=%s", take_id, participant_id)
        await self._announce(take, participant_id, "failed", detail[:2000])
        return True

    async def _settled(self, take_id: str, participant_id: str) -> None:
        """Tell the server's mix; the upload's outcome never depends on it (a mix that fails
        to start is logged and made again at the next look at the take)."""
        if self.settled is None:
            return
        try:
            await self.settled(take_id, participant_id)
        except Exception as exc:  # e.g. a mix folder removed under it by a failing mix
            log.warning(
                "event=mix_not_started take=%s singer=%s error=%r", take_id, participant_id, exc
            )

    async def _verify(
        self,
        take: Take,
        rec: Recording,
        path: Path,
        metadata: dict[str, str],
        sha256_hex: str,
    ) -> AudioInfo:
        declared = upload_metadata(metadata).sha256.lower()
        if declared and declared != sha256_hex:
            raise VerificationError(
                f"sha256 of the received file is {sha256_hex}, but the "
                f"metadata declared {declared[:64]}"
            )
        limit = take.settings.max_take_seconds + DURATION_MARGIN_S
        try:  # the frames are its pass 1's to decode, off the upload's path
            info = await asyncio.to_thread(check_audio, path, max_seconds=limit, decode=False)
        except AudioCheckError as exc:
            raise VerificationError(str(exc)) from None
        self._fits(take, rec, info)
        return info

    @staticmethod
    def _fits(take: Take, rec: Recording, info: AudioInfo) -> None:
        """Refuse a checked file that is not the recording its metadata declared."""
        if info.rate != take.settings.rate:
            raise VerificationError(
                f"the file is at {info.rate} Hz; the take runs at {take.settings.rate} Hz"
            )
        if info.frames != rec.frames:
            raise VerificationError(
                f"the file holds {info.frames} frames; the metadata declared {rec.frames}"
            )
        if info.channels != rec.channels:
            raise VerificationError(
                f"the file has {info.channels} channels; the metadata declared {rec.channels}"
            )
        ext = rec.file.rsplit(".", 1)[-1]
        if TRACK_FORMATS[info.format][0] != ext:
            raise VerificationError(f"the file is {info.format} but is named .{ext}")

    @staticmethod
    def _place(src: Path, dest: Path) -> None:
        made = not dest.parent.exists()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.exists():
            os.replace(src, dest)
        fsync_dir(dest.parent)
        if made:
            for d in (dest.parent.parent, dest.parent.parent.parent):
                fsync_dir(d)

    async def _announce(self, take: Take, participant_id: str, state: str, detail: str) -> None:
        # stored or refused: one singer's news, not part of a burst, and waited on
        await self.fanout.take_update(
            take.session_id, take.take_id, participant_id, state, detail, stored=True, now=True
        )
