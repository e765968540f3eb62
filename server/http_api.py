"""HTTP views: thin functions that authenticate, parse, call the session rules, answer JSON.

Routes are listed in :func:`add_routes`; the contract is in ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from tutti import __version__
from tutti.cues import parse_lyrics
from tutti.wire import (
    PROTOCOL_VERSION,
    Deleted,
    Ev,
    Health,
    Lyrics,
    Note,
    NoteRequest,
    Record,
    SessionSettings,
    TrackStored,
    WireError,
    check_part,
)

from .app_keys import SERVICES
from .auth import bearer_token
from .client_address import client_address
from .download import send_file
from .edge import EdgeError, loads_json
from .errors import BadRequest, NotFound, ServiceUnavailable
from .lyrics import LyricsStore
from .models import Principal
from .wirejson import record_response

__all__ = ["add_routes", "HEALTHZ_PROBE", "remove_stale_probes"]

#: File in the data directory that ``GET /healthz`` rewrites to prove it can store files.
HEALTHZ_PROBE = ".healthz"


async def _json(request: web.Request, *, optional: bool = False) -> Any:
    if optional and not request.can_read_body:
        return None
    if request.content_type != "application/json":
        raise BadRequest(
            f"send a JSON body with Content-Type application/json (got {request.content_type!r})",
            code="bad_content_type",
        )
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond)
    if optional and not raw.strip():
        return None
    try:
        return loads_json(raw, "the body")
    except EdgeError as exc:
        raise BadRequest(str(exc), code="bad_json") from None


def _me(request: web.Request) -> Principal:
    return request.app[SERVICES].sessions.principal(bearer_token(request))


def _client_key(request: web.Request) -> str:
    return client_address(request, request.app[SERVICES].proxies)


def _part(request: web.Request) -> str:
    try:
        return check_part(request.match_info["part"])
    except WireError as exc:
        raise BadRequest(str(exc), code="bad_part") from None


def _probe_data_dir(data_dir: Path) -> None:
    """Create a fresh file in ``data_dir``, fsync it and rename it over ``.healthz``.

    Creating a new name is what uploads, tracks and takes need; rewriting an existing file
    would still succeed in a directory that became read-only.  Blocking: run in a thread.
    """
    fd, tmp = tempfile.mkstemp(prefix=".healthz-", dir=data_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, data_dir / HEALTHZ_PROBE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_stale_probes(data_dir: Path, older_than_s: float = 60.0) -> int:
    """Remove probe files a server killed during ``/healthz`` left behind; returns how many.
    Only old ones: another process sharing the data directory may be writing a new one."""
    gone = 0
    for stale in data_dir.glob(".healthz-*"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - stale.stat().st_mtime > older_than_s:
                stale.unlink()
                gone += 1
    return gone


def _reply(body: Record, status: int = 200) -> web.Response:
    """A JSON reply: always one of the contract's records (tutti.wire.replies)."""
    return record_response(body, status)


async def healthz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    try:
        await asyncio.to_thread(svc.store.ping)
    except Exception as exc:
        raise ServiceUnavailable(
            f"the server cannot use its database ({type(exc).__name__})",
            code="database_unavailable",
        ) from None
    try:
        await asyncio.to_thread(_probe_data_dir, svc.config.data_dir)
    except OSError as exc:
        raise ServiceUnavailable(
            f"the server cannot write to its data directory: creating and renaming a probe "
            f"file onto {HEALTHZ_PROBE} failed ({exc.strerror or type(exc).__name__}); "
            "uploads, tracks and takes cannot be stored until it is writable again",
            code="data_dir_unwritable",
        ) from None
    return _reply(Health(True, __version__, PROTOCOL_VERSION))


async def create_session(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    svc.host_key.check(request)
    return _reply(svc.sessions.create(await _json(request)), status=201)


async def join(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(svc.sessions.join(await _json(request), _client_key(request)))


async def invite(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(svc.sessions.invite(request.match_info["code"][:64], _client_key(request)))


async def get_session(request: web.Request) -> web.Response:
    return _reply(request.app[SERVICES].sessions.info(_me(request)))


async def patch_session(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "change the session's settings")
    return _reply(await svc.sessions.update_settings(p, await _json(request)))


async def close_session(request: web.Request) -> web.Response:
    return _reply(await request.app[SERVICES].sessions.close(_me(request)))


async def roster(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "see the roster")
    return _reply(await svc.realtime.roster(p.session_id))


def _session_part(request: web.Request, settings: SessionSettings) -> str:
    """The route's part, which must be one of the session's parts."""
    part = _part(request)
    if part not in settings.parts:
        raise BadRequest(
            f"part {part!r} is not one of this session's parts {list(settings.parts)}",
            code="bad_part",
        )
    return part


async def put_track(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "upload backing tracks")
    session = svc.sessions.open_session(p.session_id)
    part = _session_part(request, session.settings)
    held = sum(t.size for t in svc.store.tracks(p.session_id).values())
    await svc.quota.check(p.session_id, held, request.content_length or 0)
    track = await svc.tracks.receive(request, part, session.settings)
    svc.store.put_track(p.session_id, track)
    await svc.realtime.to_session(p.session_id, Ev.SESSION, svc.sessions.public(p.session_id))
    stored = TrackStored(**asdict(track.info()), part=part)
    return _reply(stored, status=201)


async def get_track(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    p = _me(request)
    part = _part(request)
    track = svc.store.tracks(p.session_id).get(part)
    if track is None:
        raise NotFound(f"no backing track for part {part!r} in this session", code="no_track")
    return await send_file(
        request, svc.tracks.path(track.sha256), sha256=track.sha256, content_type=track.content_type
    )


def _lyrics(request: web.Request) -> LyricsStore:
    return LyricsStore(request.app[SERVICES].takes.takes_dir)


async def put_lyrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "upload lyrics")
    session = svc.sessions.open_session(p.session_id)
    part = _session_part(request, session.settings)
    try:
        lyrics = Lyrics(part, parse_lyrics(await request.read()))
    except WireError as exc:
        raise BadRequest(str(exc), code="bad_lyrics") from None
    await asyncio.to_thread(_lyrics(request).put, p.session_id, lyrics)
    return _reply(lyrics, status=201)


async def get_lyrics(request: web.Request) -> web.Response:
    p = _me(request)
    part = _part(request)
    lyrics = await asyncio.to_thread(_lyrics(request).get, p.session_id, part)
    if lyrics is None:
        raise NotFound(f"no lyrics for part {part!r} in this session", code="no_lyrics")
    return _reply(lyrics)


async def delete_lyrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "delete lyrics")
    part = _part(request)
    if not await asyncio.to_thread(_lyrics(request).delete, p.session_id, part):
        raise NotFound(f"no lyrics for part {part!r} in this session", code="no_lyrics")
    return _reply(Deleted(True, session_id=p.session_id))


async def get_note(request: web.Request) -> web.Response:
    notes = request.app[SERVICES].realtime.waitroom.notes
    note = "" if notes is None else await asyncio.to_thread(notes.get, _me(request).session_id)
    return _reply(Note(note))


async def put_note(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "leave a note for the waiting room")
    svc.sessions.open_session(p.session_id)
    try:
        note = NoteRequest.parse(await _json(request))
    except WireError as exc:
        raise BadRequest(str(exc), code="bad_note") from None
    room = svc.realtime.waitroom
    if room.notes is None:
        raise ServiceUnavailable("this server keeps no notes", code="no_notes")
    await asyncio.to_thread(room.notes.put, p.session_id, note)
    room.changed(p.session_id)  # the singers see it within a second
    return _reply(Note(note))


async def arm_take(request: web.Request) -> web.Response:
    return _reply(await request.app[SERVICES].takes.arm(_me(request)), status=201)


async def start_take(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    p = _me(request)
    svc.sessions.require_leader(p, "start a take")
    body = await _json(request, optional=True)
    return _reply(await svc.takes.start(p, request.match_info["take_id"], body))


async def stop_take(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(await svc.takes.stop(_me(request), request.match_info["take_id"]))


async def list_takes(request: web.Request) -> web.Response:
    return _reply(request.app[SERVICES].takes.list(_me(request)))


async def manifest(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    m = svc.takes.manifest(_me(request), request.match_info["take_id"])
    return web.json_response(m.to_dict())


async def take_file(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    path, sha, ctype = svc.takes.file(
        _me(request), request.match_info["take_id"], request.match_info["path"], svc.tracks.path
    )
    if not path.exists():
        raise NotFound(
            "the file is listed but not on disk yet; retry in a moment", code="file_pending"
        )
    return await send_file(request, path, sha256=sha, content_type=ctype)


async def delete_take(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(await svc.retention.delete_take(_me(request), request.match_info["take_id"]))


async def delete_session(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(await svc.retention.delete_session(_me(request)))


async def delete_my_recordings(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    return _reply(await svc.retention.delete_my_recordings(_me(request)))


async def my_data(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    path = await svc.retention.my_data(_me(request))
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": 'attachment; filename="my-tutti-data.zip"',
            },
        )
        response.content_length = path.stat().st_size
        await response.prepare(request)
        with path.open("rb") as f:
            while block := await asyncio.to_thread(f.read, 1 << 20):
                await response.write(block)
        await response.write_eof()
        return response
    finally:
        path.unlink(missing_ok=True)


def add_routes(app: web.Application) -> None:
    """Register the HTTP API on ``app``."""
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_post("/api/sessions", create_session)
    r.add_post("/api/join", join)
    r.add_get("/api/invite/{code}", invite)
    r.add_get("/api/session", get_session)
    r.add_patch("/api/session", patch_session)
    r.add_post("/api/session/close", close_session)
    r.add_delete("/api/session", delete_session)
    r.add_delete("/api/session/recordings", delete_my_recordings)
    r.add_get("/api/session/my-data", my_data)
    r.add_get("/api/session/roster", roster)
    r.add_put("/api/session/tracks/{part}", put_track)
    r.add_get("/api/session/tracks/{part}", get_track)
    r.add_put("/api/session/lyrics/{part}", put_lyrics)
    r.add_get("/api/session/lyrics/{part}", get_lyrics)
    r.add_delete("/api/session/lyrics/{part}", delete_lyrics)
    r.add_get("/api/session/note", get_note)
    r.add_put("/api/session/note", put_note)
    r.add_post("/api/session/takes", arm_take)
    r.add_get("/api/session/takes", list_takes)
    r.add_post("/api/session/takes/{take_id}/start", start_take)
    r.add_post("/api/session/takes/{take_id}/stop", stop_take)
    r.add_get("/api/session/takes/{take_id}/manifest", manifest)
    r.add_delete("/api/session/takes/{take_id}", delete_take)
    r.add_get("/api/session/takes/{take_id}/files/{path:.+}", take_file)
