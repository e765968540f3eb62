"""Async HTTP client for the leader's endpoints of a tutti server.

One :class:`LeaderClient` per server URL and leader token.  Every method is a coroutine that
makes one request (or a short series, for file transfers) and returns plain JSON data or a small
typed record.  Whatever goes wrong — the server unreachable, not a tutti server, an unknown
token, a refused action — is translated in one place (:meth:`LeaderClient._request`) into a
:class:`LeaderError` whose message is the server's own sentence (or ours, when the server never
answered), so the command line can print it as is.

File transfers stream: a backing track is uploaded from disk in chunks with a progress
callback; a take file is downloaded into ``<name>.part`` and resumed with ``Range`` from the
size already on disk, then checked against the sha256 the manifest gives before it is renamed
into place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import aiohttp

from tutti import wire
from tutti.errors import ExitCode, TuttiError

__all__ = [
    "LeaderError",
    "LeaderClient",
    "Progress",
    "normalize_server_url",
    "CHUNK_BYTES",
]

#: Header carrying the host's session key on session creation (see docs/hosting.md).
SESSION_KEY_HEADER = "X-Tutti-Session-Key"

#: Bytes per chunk when streaming files up or down.
CHUNK_BYTES: Final = 256 * 1024

#: ``progress(done_bytes, total_bytes_or_None)``; called after every chunk.
Progress = Callable[[int, int | None], None]


class LeaderError(TuttiError):
    """A leader action failed.  ``str()`` is a sentence meant for the leader.

    Attributes
    ----------
    status : int or None
        HTTP status of the server's answer; ``None`` when the server never answered.
    code : str
        The server's snake_case error code, or one of ours: ``"unreachable"``,
        ``"not_tutti"``, ``"checksum_mismatch"``, ``"bad_url"``, ``"no_session"``.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message, exit_code=_exit_code(status, code))
        self.status = status
        self.code = code


def _exit_code(status: int | None, code: str) -> ExitCode:
    if code == "bad_url":
        return ExitCode.USAGE
    if code in ("unreachable", "not_tutti"):
        return ExitCode.UNREACHABLE
    return ExitCode.FAILED


R = TypeVar("R", bound=wire.Record)


def _q(segment: str) -> str:
    """One path segment, quoted."""
    return quote(segment, safe="")


def normalize_server_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash.

    A bare ``host:port`` gets ``http://``.  Raises :class:`LeaderError` (code ``bad_url``) for
    anything else, naming what is accepted.
    """
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LeaderError(
            f"{url!r} is not a server URL; give one like http://127.0.0.1:8765 or "
            "https://choir.example.org",
            code="bad_url",
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise LeaderError(f"{url!r} has an invalid port number", code="bad_url") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


async def _file_chunks(path: Path, progress: Progress | None, total: int) -> AsyncIterator[bytes]:
    done = 0
    with path.open("rb") as fh:
        while True:
            chunk = await asyncio.to_thread(fh.read, CHUNK_BYTES)
            if not chunk:
                break
            done += len(chunk)
            yield chunk
            if progress is not None:
                progress(done, total)


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LeaderClient:
    """The leader's side of the HTTP API.  Use as ``async with LeaderClient(url, token) as c``.

    Parameters
    ----------
    server : str
        Server URL (normalized with :func:`normalize_server_url`).
    token : str or None
        Leader token; ``None`` only for :meth:`health` and :meth:`create_session`.
    timeout : float
        Seconds to wait for a connection and for each read of an answer.
    """

    def __init__(self, server: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.server = normalize_server_url(server)
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LeaderClient:
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- plumbing ---------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if extra:
            h.update(extra)
        return h

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("LeaderClient used outside 'async with'")
        return self._http

    async def _error_from(self, resp: aiohttp.ClientResponse) -> LeaderError:
        """Translate a non-2xx answer into a LeaderError carrying the server's sentence."""
        body = await resp.read()
        message = ""
        code = ""
        ctype = resp.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                err = wire.ErrorBody.from_dict(json.loads(body)).error
                message, code = err.message, err.code
            except ValueError:  # not JSON, or not the API's error shape (WireError)
                pass
        if not message:
            if resp.status == 404 and not code:
                return LeaderError(
                    f"{self.server} answered {resp.status} {resp.reason} for {resp.url.path}: "
                    "is this a tutti server (try its /healthz)?",
                    status=resp.status,
                    code="not_tutti",
                )
            text = body[:200].decode("utf-8", "replace").strip()
            message = f"the server answered {resp.status} {resp.reason}" + (
                f": {text}" if text else ""
            )
        if resp.status == 401 and code in ("", "unauthorized", "unknown_token", "bad_token"):
            message += (
                " (the leader token saved for this session is no longer valid — the session may"
                " have expired or the server's data been reset; create a new session with"
                " `tutti lead create`, or, if it is led from another computer, run `tutti lead"
                " token` there and `tutti lead adopt` here)"
            )
        if resp.status == 429:
            retry = resp.headers.get("Retry-After")
            if retry:
                message += f" (retry after {retry} s)"
        return LeaderError(message, status=resp.status, code=code or f"http_{resp.status}")

    def _unreachable(self, exc: BaseException) -> LeaderError:
        detail = str(exc) or type(exc).__name__
        return LeaderError(
            f"cannot reach the tutti server at {self.server} ({detail}); check the URL and that "
            "`tutti serve` is running there",
            code="unreachable",
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        expect_json: bool = True,
    ) -> Any:
        """One request; returns the parsed JSON answer (or ``None`` for an empty body)."""
        url = self.server + path
        try:
            async with self._session().request(
                method, url, json=json_body, data=data, headers=self._headers(headers)
            ) as resp:
                if resp.status >= 400:
                    raise await self._error_from(resp)
                if not expect_json:
                    return None
                body = await resp.read()
                if not body:
                    return None
                if "json" not in resp.headers.get("Content-Type", ""):
                    raise LeaderError(
                        f"{self.server}{path} did not answer with JSON "
                        f"({resp.headers.get('Content-Type', 'no content type')}); "
                        "is this a tutti server?",
                        status=resp.status,
                        code="not_tutti",
                    )
                return json.loads(body)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise self._unreachable(exc) from exc

    # -- the API ----------------------------------------------------------------------------

    async def _call(self, reply: type[R], method: str, path: str, **kw: Any) -> R:
        """One request whose answer is the contract's ``reply`` record, parsed here."""
        data = await self._request(method, path, **kw)
        try:
            return reply.from_dict(data, f"{method} {path}")
        except wire.WireError as exc:
            raise LeaderError(
                f"{self.server} answered in a form this client does not read ({exc}); "
                "is it a tutti server of the same version?",
                code="not_tutti",
            ) from None

    async def health(self) -> wire.Health:
        """``GET /healthz``: ``{"ok", "version", "protocol"}``."""
        return await self._call(wire.Health, "GET", "/healthz")

    async def create_session(
        self, settings: dict[str, Any], session_key: str | None = None
    ) -> wire.SessionCreated:
        """``POST /api/sessions``; ``settings`` as :func:`tutti.wire.parse_settings` accepts;
        ``session_key`` is the host's key (sent as ``X-Tutti-Session-Key``; none on an
        open server)."""
        headers = {SESSION_KEY_HEADER: session_key} if session_key else None
        return await self._call(
            wire.SessionCreated, "POST", "/api/sessions", json_body=settings, headers=headers
        )

    async def session(self) -> wire.SessionInfo:
        """``GET /api/session``: settings, state, tracks, join code."""
        return await self._call(wire.SessionInfo, "GET", "/api/session")

    async def update_settings(self, changes: dict[str, Any]) -> wire.SessionSettings:
        """``PATCH /api/session`` with a partial settings object; returns the new settings."""
        return await self._call(wire.SessionSettings, "PATCH", "/api/session", json_body=changes)

    async def close_session(self) -> wire.SessionState:
        """``POST /api/session/close``."""
        return await self._call(wire.SessionState, "POST", "/api/session/close")

    async def delete_take(self, take_id: str) -> wire.Deleted:
        """``DELETE /api/session/takes/{id}``: the take and its recordings, for good."""
        return await self._call(wire.Deleted, "DELETE", f"/api/session/takes/{_q(take_id)}")

    async def delete_session(self) -> wire.Deleted:
        """``DELETE /api/session``: the whole session, its singers, takes and recordings."""
        return await self._call(wire.Deleted, "DELETE", "/api/session")

    async def upload_track(
        self, part: str, path: Path, *, progress: Progress | None = None
    ) -> wire.TrackStored:
        """``PUT /api/session/tracks/{part}``: stream an audio file; returns the track info."""
        size = path.stat().st_size
        ctype = {
            ".wav": "audio/wav",
            ".flac": "audio/flac",
            ".ogg": "audio/ogg",
        }.get(path.suffix.lower(), "application/octet-stream")
        return await self._call(
            wire.TrackStored,
            "PUT",
            f"/api/session/tracks/{_q(part)}",
            data=_file_chunks(path, progress, size),
            headers={"Content-Type": ctype, "Content-Length": str(size)},
        )

    async def upload_lyrics(self, part: str, text: bytes) -> wire.Lyrics:
        """``PUT /api/session/lyrics/{part}``: a lyrics file (LRC or bar:beat cues)."""
        return await self._call(
            wire.Lyrics,
            "PUT",
            f"/api/session/lyrics/{_q(part)}",
            data=text,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    async def note(self) -> str:
        """``GET /api/session/note``: the waiting room's note ("" when none)."""
        return (await self._call(wire.Note, "GET", "/api/session/note")).note

    async def set_note(self, note: str) -> str:
        """``PUT /api/session/note``: the note singers see in the waiting room ("" clears it)."""
        body = wire.NoteRequest(note).to_dict()
        return (await self._call(wire.Note, "PUT", "/api/session/note", json_body=body)).note

    async def roster(self) -> tuple[wire.RosterEntry, ...]:
        """``GET /api/session/roster``: the participants."""
        return (await self._call(wire.Roster, "GET", "/api/session/roster")).participants

    async def arm_take(self) -> wire.TakeArmedReply:
        """``POST /api/session/takes``: the take and the singers it expects."""
        return await self._call(wire.TakeArmedReply, "POST", "/api/session/takes")

    async def start_take(self, take_id: str, lead_s: float | None = None) -> wire.TakeStarted:
        """Start an armed take ``lead_s`` seconds from now (the server's default if None)."""
        body = {} if lead_s is None else {"lead_s": lead_s}
        path = f"/api/session/takes/{_q(take_id)}/start"
        return await self._call(wire.TakeStarted, "POST", path, json_body=body)

    async def stop_take(self, take_id: str) -> wire.TakeStopped:
        """Stop a running take."""
        return await self._call(wire.TakeStopped, "POST", f"/api/session/takes/{_q(take_id)}/stop")

    async def takes(self) -> tuple[wire.TakeInfo, ...]:
        """``GET /api/session/takes``: every take with each singer's upload state."""
        return (await self._call(wire.TakeList, "GET", "/api/session/takes")).takes

    async def manifest(self, take_id: str) -> Any:
        """The take's ``take.json`` object as the server has it now (the caller parses it
        with :func:`tutti.takeformat.parse_manifest`)."""
        return await self._request("GET", f"/api/session/takes/{_q(take_id)}/manifest")

    async def download_file(
        self,
        take_id: str,
        relpath: str,
        dest: Path,
        *,
        sha256: str = "",
        progress: Progress | None = None,
    ) -> int:
        """Download one file of a take to ``dest``, resuming a previous partial download.

        The bytes go to ``dest`` + ``.part``; an existing ``.part`` is continued with a
        ``Range`` request (``If-Range`` on the ETag the server gave, so a changed file starts
        over).  When complete, the file's sha256 is checked against ``sha256`` (if given) and
        the file is fsynced and renamed to ``dest``.  A mismatch deletes the partial file and
        raises :class:`LeaderError` (code ``checksum_mismatch``).

        Returns
        -------
        int
            Bytes transferred in this call (0 when ``dest`` was already complete).
        """
        if dest.exists() and sha256 and await asyncio.to_thread(_sha256_of, dest) == sha256:
            if progress is not None:
                size = dest.stat().st_size
                progress(size, size)
            return 0
        part = dest.with_name(dest.name + ".part")
        etag_file = dest.with_name(dest.name + ".etag")
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        etag = etag_file.read_text().strip() if etag_file.exists() and have else ""
        url = (
            f"{self.server}/api/session/takes/{quote(take_id, safe='')}/files/"
            f"{quote(relpath, safe='/')}"
        )
        headers: dict[str, str] = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if etag:
                headers["If-Range"] = etag
        got = 0
        try:
            async with self._session().get(url, headers=self._headers(headers)) as resp:
                if resp.status == 416:
                    # what we have is at least the whole file; check it below
                    pass
                elif resp.status >= 400:
                    raise await self._error_from(resp)
                else:
                    if resp.status == 200:
                        have = 0  # the server sent the whole file (no or stale range)
                    total = resp.content_length
                    total = None if total is None else total + have
                    new_etag = resp.headers.get("ETag", "")
                    if new_etag:
                        etag_file.write_text(new_etag)
                    with part.open("r+b" if have else "wb") as fh:
                        fh.seek(have)
                        fh.truncate()
                        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                            await asyncio.to_thread(fh.write, chunk)
                            got += len(chunk)
                            if progress is not None:
                                progress(have + got, total)
                        fh.flush()
                        os.fsync(fh.fileno())
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise LeaderError(
                f"the download of {relpath} was interrupted ({exc or type(exc).__name__}); "
                f"{part.stat().st_size if part.exists() else 0} bytes are kept in {part} — "
                "run the same command again to resume",
                code="interrupted",
            ) from exc
        except OSError as exc:
            raise self._unreachable(exc) from exc
        if sha256:
            actual = await asyncio.to_thread(_sha256_of, part)
            if actual != sha256:
                part.unlink(missing_ok=True)
                etag_file.unlink(missing_ok=True)
                raise LeaderError(
                    f"{relpath}: sha256 {actual[:12]}… does not match the manifest's "
                    f"{sha256[:12]}…; the partial file was removed — run the command again",
                    code="checksum_mismatch",
                )
        os.replace(part, dest)
        etag_file.unlink(missing_ok=True)
        return got
