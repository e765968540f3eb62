"""tus 1.0 resumable uploads (core + creation + checksum + expiration + termination) for aiohttp.

Generic: it knows nothing about sessions or takes.  The application decides who may
upload what and what happens to a finished file through :class:`UploadHooks`, and wires
the handler in with :meth:`TusHandler.add_routes` and :meth:`TusHandler.cleanup_ctx`::

    tus = TusHandler(data_dir / "uploads", hooks, max_size=..., expiry_s=24 * 3600)
    tus.add_routes(app, "/files/")
    app.cleanup_ctx.append(tus.cleanup_ctx)

Bytes and offsets are kept by :mod:`tutti.server.uploads`; see ``docs/uploads.md`` for the
resume, checksum, expiry and durability rules.

Clients that cannot send PATCH/DELETE may POST to an upload with ``X-HTTP-Method-Override``.

Status codes beyond the tus spec's: error responses carry a JSON body
``{"error": {"code", "message"}}`` (except to HEAD); a PATCH to a completed upload gets 403;
an upload the completion hook refused gets 422 with the reason (also on HEAD, where the
reason is in the ``X-Tutti-Upload-Error`` header); every HEAD says ``X-Tutti-Upload-State``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tutti.tusheaders import TUS_VERSION, Crc32, encode_metadata, parse_checksum, parse_metadata

from .errors import disk_full
from .tushooks import UploadHooks, VerificationError
from .tushttp import TusError, header_safe, http_date, uint_header
from .uploads import (
    ChunkWriter,
    Hasher,
    UploadState,
    UploadStatus,
    UploadStore,
    is_upload_id,
    new_upload_id,
)

__all__ = [
    "TUS_EXTENSIONS",
    "CHECKSUM_ALGORITHMS",
    "TusHandler",
]

log = logging.getLogger(__name__)

TUS_EXTENSIONS = ("creation", "checksum", "expiration", "termination")
CHECKSUM_ALGORITHMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "md5": lambda: hashlib.md5(usedforsecurity=False),
    "sha256": hashlib.sha256,
    "crc32": Crc32,  # what tutti's uploader sends: the whole file is checked with sha256
}
OFFSET_OCTET_STREAM = "application/offset+octet-stream"

#: Largest read from a request body (bytes); reads return what has arrived, up to this.
READ_CHUNK = 1 << 20
#: Bytes gathered before one write (and hash update) in a worker thread.
WRITE_BATCH = 1 << 20

#: Disk space (bytes) a new upload must leave free beside its declared length.
DISK_RESERVE = 64 << 20

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Upload:
    """An upload as the handler holds it: durable state plus what lives only in memory."""

    state: UploadState
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sha256: Hasher | None = None  # whole-file hash over [0, offset); None until needed


class TusHandler:
    """Serves tus 1.0 uploads from ``upload_dir`` under a URL prefix.

    Parameters
    ----------
    upload_dir : Path
        Directory for partial uploads and their state (created if missing).  Existing
        uploads found there are picked up again (server restart).
    hooks : UploadHooks
        Authorisation and completion decisions of the application.
    max_size : int
        Largest ``Upload-Length`` accepted, bytes (``Tus-Max-Size``).
    expiry_s : float
        Seconds of inactivity after which an unfinished upload expires.  Every committed
        PATCH moves the deadline to now + ``expiry_s``.  Completed uploads never expire.
    clock : callable
        Wall-clock seconds since the epoch (injectable for tests).
    idle_timeout_s : float
        A PATCH whose body stalls this long (seconds without a byte) is ended as if its
        connection had dropped: what arrived is kept and the upload's lock is freed.  A
        client whose network died silently (no FIN/RST ever reaches the server) can then
        resume on a new connection instead of meeting "409 busy" until TCP gives up.
    """

    def __init__(
        self,
        upload_dir: Path,
        hooks: UploadHooks,
        *,
        max_size: int,
        expiry_s: float,
        clock: Callable[[], float] = time.time,
        idle_timeout_s: float = 30.0,
    ) -> None:
        if max_size < 0 or expiry_s <= 0 or idle_timeout_s <= 0:
            raise ValueError("max_size must be >= 0, expiry_s and idle_timeout_s > 0")
        self._idle_timeout_s = idle_timeout_s
        self._store = UploadStore(upload_dir)
        self._hooks = hooks
        self._max_size = max_size
        self._expiry_s = expiry_s
        self._clock = clock
        self._uploads = {s.upload_id: _Upload(s) for s in self._store.load_all(expiry_s)}
        self._tasks: set[asyncio.Task[web.StreamResponse]] = set()
        self._creating: dict[str, int] = {}  # owner → creations past authorize_create
        #: Called with the bytes of every chunk stored for good (the host's metrics).
        self.on_stored: Callable[[int], None] = lambda nbytes: None

    # ----------------------------------------------------------------- wiring

    def add_routes(self, app: web.Application, prefix: str = "/files/") -> None:
        """Register OPTIONS/POST on ``prefix`` and OPTIONS/HEAD/PATCH/DELETE on ``prefix<id>``."""
        if not (prefix.startswith("/") and prefix.endswith("/")):
            raise ValueError(f"prefix must start and end with '/', got {prefix!r}")
        item = prefix + "{upload_id}"
        app.router.add_route("OPTIONS", prefix, self._wrap(self._options))
        app.router.add_route("POST", prefix, self._wrap(self._create))
        app.router.add_route("OPTIONS", item, self._wrap(self._options))
        app.router.add_route("HEAD", item, self._wrap(self._head))
        app.router.add_route("PATCH", item, self._wrap(self._patch))
        app.router.add_route("DELETE", item, self._wrap(self._delete))
        app.router.add_route("POST", item, self._wrap(self._override))

        async def stamp(request: web.Request, response: web.StreamResponse) -> None:
            # Also for responses made outside the views (404/405 from the router, errors
            # translated by the application's middleware).
            if request.path.startswith(prefix):
                response.headers.setdefault("Tus-Resumable", TUS_VERSION)

        app.on_response_prepare.append(stamp)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: finish uploads left fully received, then expire periodically.

        Append it to ``app.cleanup_ctx`` after the contexts the hooks depend on.
        """
        for upload in list(self._uploads.values()):
            st = upload.state
            if st.status is UploadStatus.RECEIVING and st.received_all:
                async with upload.lock:
                    try:
                        await self._complete(upload)
                    except TusError as exc:
                        log.warning(
                            "upload %s not completed at start-up: %s", st.upload_id, exc.message
                        )
                    except web.HTTPException as exc:
                        log.warning(
                            "upload %s not completed at start-up: %s",
                            st.upload_id,
                            exc.text or exc.reason,
                        )
        task = asyncio.create_task(self._expiry_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=5.0)

    def open_uploads(self, owner: str) -> int:
        """How many unfinished uploads ``owner`` holds (each one keeps disk space).

        Unfinished: receiving (even if fully received and awaiting completion) or failed,
        and not past its deadline.  Completed, terminated and expired uploads do not count;
        creations already authorised but not yet stored do (see
        :meth:`UploadHooks.authorize_create`).  Cost: one pass over the uploads in memory.
        """
        now = self._clock()
        stored = sum(
            1
            for u in self._uploads.values()
            if u.state.owner == owner
            and u.state.status is not UploadStatus.COMPLETED
            and now < u.state.expires_at
        )
        return stored + self._creating.get(owner, 0)

    def expire_now(self) -> int:
        """Remove unfinished uploads whose deadline has passed; return how many were removed.

        Blocking (file removal); the handler's own expiry loop removes the files in a thread.
        """
        expired = self._take_expired()
        self._remove_files(expired)
        return len(expired)

    def _take_expired(self) -> list[str]:
        """Forget every unfinished upload past its deadline; return their ids."""
        now = self._clock()
        expired = []
        for upload_id, upload in list(self._uploads.items()):
            st = upload.state
            if st.status is UploadStatus.COMPLETED or now < st.expires_at or upload.lock.locked():
                continue
            del self._uploads[upload_id]
            expired.append(upload_id)
            log.info("upload %s expired (%d of %d bytes)", upload_id, st.offset, st.length)
        return expired

    def _remove_files(self, upload_ids: list[str]) -> None:
        for upload_id in upload_ids:
            try:
                self._store.remove(upload_id)
            except OSError:  # forgotten already: the next start finds it expired again
                log.exception("upload %s: its files could not be removed", upload_id)

    def discard(self, match: Callable[[UploadState], bool]) -> int:
        """Remove every upload (finished or not) that ``match`` selects, data and state:
        what a deleted take or recording left here.  Returns how many were removed."""
        removed = 0
        for upload_id, upload in list(self._uploads.items()):
            if match(upload.state):
                self._store.remove(upload_id)
                del self._uploads[upload_id]
                removed += 1
        return removed

    async def _expiry_loop(self) -> None:
        interval = min(max(self._expiry_s / 10, 1.0), 600.0)
        while True:
            await asyncio.sleep(interval)
            # forgotten in the loop, their files removed in a thread (a directory fsync each)
            await asyncio.to_thread(self._remove_files, self._take_expired())

    def _wrap(self, fn: _Handler) -> _Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                if request.method != "OPTIONS":
                    version = request.headers.get("Tus-Resumable")
                    if version != TUS_VERSION:
                        raise TusError(
                            412,
                            "tus_version",
                            f"Tus-Resumable {version!r} is not supported; "
                            f"this server speaks tus {TUS_VERSION}",
                            headers={"Tus-Version": TUS_VERSION},
                        )
                response = await fn(request)
            except TusError as exc:
                response = exc.response(request.method)
            except web.HTTPException as exc:  # refused by a hook
                exc.headers["Tus-Resumable"] = TUS_VERSION
                raise
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return handler

    # --------------------------------------------------------------- requests

    async def _options(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=204,
            headers={
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": ",".join(TUS_EXTENSIONS),
                "Tus-Max-Size": str(self._max_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
            },
        )

    async def _override(self, request: web.Request) -> web.StreamResponse:
        """POST + ``X-HTTP-Method-Override`` (tus core) for clients that cannot send PATCH."""
        method = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
        targets = {"PATCH": self._patch, "DELETE": self._delete, "HEAD": self._head}
        if method not in targets:
            raise TusError(
                405,
                "method_not_allowed",
                "POST on an upload needs X-HTTP-Method-Override: PATCH, HEAD or "
                f"DELETE (got {method[:20]!r})",
                headers={"Allow": "HEAD, PATCH, DELETE, OPTIONS, POST"},
            )
        return await targets[method](request)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        length = uint_header(request, "Upload-Length")
        if length is None:
            extra = (
                " (Upload-Defer-Length is not supported)"
                if "Upload-Defer-Length" in request.headers
                else ""
            )
            raise TusError(
                400, "missing_length", f"Upload-Length is required: the total size in bytes{extra}"
            )
        if length > self._max_size:
            raise TusError(
                413,
                "too_large",
                f"Upload-Length {length} exceeds the largest upload, {self._max_size} bytes",
            )
        try:
            metadata = parse_metadata(request.headers.get("Upload-Metadata"))
        except ValueError as exc:
            raise TusError(400, "bad_metadata", str(exc)) from None
        free = (await asyncio.to_thread(shutil.disk_usage, self._store.root)).free
        if length > free - DISK_RESERVE:
            raise TusError(
                507,
                "insufficient_storage",
                f"the server has {max(free - DISK_RESERVE, 0)} bytes of space for "
                f"uploads left; Upload-Length {length} does not fit",
            )
        owner = await self._hooks.authorize_create(request, metadata, length)
        # no await between the hook's return and this reservation (see open_uploads)
        self._creating[owner] = self._creating.get(owner, 0) + 1
        try:
            now = self._clock()
            state = UploadState(
                new_upload_id(), length, 0, metadata, owner, now, now + self._expiry_s
            )
            try:
                await asyncio.to_thread(self._store.create, state)
            except OSError as exc:
                log.error("upload %s: cannot create: %s", state.upload_id, exc)
                full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                raise TusError(
                    507 if full else 500,
                    "storage_error",
                    f"the server could not create the upload ({exc.strerror}); try again later",
                ) from None
            upload = _Upload(state, sha256=hashlib.sha256())
            self._uploads[state.upload_id] = upload
        finally:
            left = self._creating[owner] - 1
            if left:
                self._creating[owner] = left
            else:
                del self._creating[owner]
        try:
            await self._hooks.created(state.upload_id, dict(metadata), owner)
        except Exception:
            log.exception("upload %s: the created hook failed", state.upload_id)
        base = request.path if request.path.endswith("/") else request.path + "/"
        headers = {
            "Location": base + state.upload_id,
            "Upload-Expires": http_date(state.expires_at),
        }
        if length == 0:  # nothing to send: complete now
            async with upload.lock:
                state.sha256 = hashlib.sha256().hexdigest()
                try:
                    await self._complete(upload)
                except TusError as exc:
                    exc.headers.update(headers)
                    raise
        return web.Response(status=201, headers=headers)

    async def _head(self, request: web.Request) -> web.StreamResponse:
        upload = await self._lookup(request)
        st = upload.state
        headers = {
            "Upload-Offset": str(st.offset),
            "Upload-Length": str(st.length),
            "Cache-Control": "no-store",
            "X-Tutti-Upload-State": st.status.value,
        }
        if st.metadata:
            headers["Upload-Metadata"] = encode_metadata(st.metadata)
        if st.status is not UploadStatus.COMPLETED:
            headers["Upload-Expires"] = http_date(st.expires_at)
        if st.status is UploadStatus.FAILED:
            headers["X-Tutti-Upload-Error"] = header_safe(st.failure or "refused")
            return web.Response(status=422, headers=headers)
        return web.Response(status=200, headers=headers)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        upload = await self._lookup(request)
        st = upload.state
        if st.status is UploadStatus.COMPLETED:
            raise TusError(
                403,
                "upload_complete",
                f"upload {st.upload_id} is complete; it can no longer be terminated",
            )
        if upload.lock.locked():
            raise TusError(
                409,
                "upload_busy",
                f"upload {st.upload_id} is receiving a PATCH; terminate it afterwards",
            )
        if self._uploads.get(st.upload_id) is not upload:
            raise TusError(404, "no_such_upload", f"upload {st.upload_id} no longer exists")
        await asyncio.to_thread(self._store.remove, st.upload_id)
        self._uploads.pop(st.upload_id, None)
        return web.Response(status=204)

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        upload = await self._lookup(request)
        st = upload.state
        if st.status is UploadStatus.COMPLETED:
            raise TusError(
                403,
                "upload_complete",
                f"upload {st.upload_id} is already complete; nothing more is accepted",
            )
        if st.status is UploadStatus.FAILED:
            raise TusError(422, "upload_rejected", st.failure or "refused by the server")
        if request.content_type != OFFSET_OCTET_STREAM:
            raise TusError(
                415,
                "bad_content_type",
                f"PATCH needs Content-Type {OFFSET_OCTET_STREAM}, got {request.content_type!r}",
            )
        offset = uint_header(request, "Upload-Offset")
        if offset is None:
            raise TusError(400, "missing_offset", "Upload-Offset is required on PATCH")
        checksum: tuple[str, bytes] | None = None
        if "Upload-Checksum" in request.headers:
            try:
                checksum = parse_checksum(request.headers["Upload-Checksum"], CHECKSUM_ALGORITHMS)
            except ValueError as exc:
                raise TusError(400, "bad_checksum", str(exc)) from None
        if self._uploads.get(st.upload_id) is not upload:  # terminated or expired meanwhile
            raise TusError(404, "no_such_upload", f"upload {st.upload_id} no longer exists")
        if upload.lock.locked():
            raise TusError(
                409, "upload_busy", f"another PATCH to upload {st.upload_id} is in progress"
            )
        await upload.lock.acquire()  # free, so this does not suspend
        # The body is received in a task of its own, shielded from the handler's cancellation,
        # so that an offset is always either committed or rolled back before the lock is freed.
        task = asyncio.create_task(self._patch_locked(request, upload, offset, checksum))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[web.StreamResponse]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("PATCH task ended with %r", task.exception())

    # ---------------------------------------------------------------- helpers

    async def _lookup(self, request: web.Request) -> _Upload:
        upload_id = request.match_info.get("upload_id", "")
        upload = self._uploads.get(upload_id) if is_upload_id(upload_id) else None
        if upload is None:
            raise TusError(404, "no_such_upload", f"no upload {upload_id[:80]!r} here")
        await self._hooks.authorize_access(request, upload.state.owner)
        st = upload.state
        if st.status is not UploadStatus.COMPLETED and self._clock() >= st.expires_at:
            raise TusError(
                410,
                "upload_expired",
                f"upload {upload_id} expired at {http_date(st.expires_at)}; start a new upload",
            )
        return upload

    def _patch_headers(self, st: UploadState) -> dict[str, str]:
        headers = {"Upload-Offset": str(st.offset)}
        if st.status is not UploadStatus.COMPLETED:
            headers["Upload-Expires"] = http_date(st.expires_at)
        return headers

    async def _patch_locked(
        self, request: web.Request, upload: _Upload, offset: int, checksum: tuple[str, bytes] | None
    ) -> web.StreamResponse:
        try:
            st = upload.state
            if offset != st.offset:
                raise TusError(
                    409,
                    "offset_mismatch",
                    f"Upload-Offset {offset} does not match the upload's offset "
                    f"{st.offset}; ask with HEAD and resume from there",
                    headers={"Upload-Offset": str(st.offset)},
                )
            remaining = st.length - st.offset
            declared = request.content_length
            if declared is not None and declared > remaining:
                raise TusError(
                    413,
                    "beyond_length",
                    f"the body ({declared} bytes) goes past the declared "
                    f"Upload-Length {st.length}: only {remaining} bytes remain",
                    headers={"Upload-Offset": str(st.offset)},
                )
            if remaining > 0:
                await self._receive(request, upload, remaining, checksum)
            elif await request.content.read(1):
                raise TusError(
                    413, "beyond_length", f"upload {st.upload_id} has all {st.length} bytes already"
                )
            if st.received_all:
                await self._complete(upload)
            return web.Response(status=204, headers=self._patch_headers(st))
        finally:
            upload.lock.release()

    async def _receive(
        self,
        request: web.Request,
        upload: _Upload,
        remaining: int,
        checksum: tuple[str, bytes] | None,
    ) -> None:
        """Stream the body to disk, then commit it, or roll back and raise a ``TusError``."""
        st = upload.state
        if upload.sha256 is None:
            upload.sha256 = await asyncio.to_thread(
                self._store.hash_prefix, st.upload_id, st.offset
            )
        check = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        writer = await asyncio.to_thread(self._store.writer, st, upload.sha256.copy(), check)
        try:
            cut: str | None = None
            stalled = too_long = False
            batch: list[bytes] = []
            batched = 0
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout_s):
                        data = await request.content.read(READ_CHUNK)
                except TimeoutError:
                    cut = f"no data for {self._idle_timeout_s:g} s"
                    stalled = True
                    break
                except Exception as exc:  # the client went away or broke the framing
                    cut = f"{type(exc).__name__}: {exc}"
                    break
                if not data:
                    break
                if writer.written + batched + len(data) > remaining:
                    too_long = True
                    break
                batch.append(data)
                batched += len(data)
                if batched >= WRITE_BATCH:
                    await asyncio.to_thread(writer.write, batch)
                    batch, batched = [], 0
            if batch and not too_long:
                await asyncio.to_thread(writer.write, batch)
            if too_long:
                await asyncio.to_thread(writer.rollback)
                raise TusError(
                    413,
                    "beyond_length",
                    f"the body goes past the declared Upload-Length {st.length}: "
                    f"only {remaining} bytes remained; nothing was kept",
                    headers={"Upload-Offset": str(st.offset)},
                )
            if cut is not None and checksum is not None:
                await asyncio.to_thread(writer.rollback)
                raise TusError(
                    400,
                    "body_cut",
                    f"the body was cut off ({cut}) so its Upload-Checksum cannot be "
                    "checked; nothing was kept",
                    headers={"Upload-Offset": str(st.offset)},
                )
            if checksum is not None and check is not None and check.digest() != checksum[1]:
                await asyncio.to_thread(writer.rollback)
                raise TusError(
                    460,
                    "checksum_mismatch",
                    f"the body's {checksum[0]} does not match Upload-Checksum; "
                    "the chunk was dropped, resend it",
                    reason="Checksum Mismatch",
                    headers={"Upload-Offset": str(st.offset)},
                )
            await self._commit(upload, writer)
            if cut is not None:
                raise TusError(
                    408 if stalled else 400,
                    "body_cut",
                    f"the body was cut off ({cut}); {writer.written} bytes kept, "
                    f"resume at offset {st.offset}",
                    headers={**self._patch_headers(st), "Connection": "close"},
                )
        except OSError as exc:
            log.error("upload %s: disk error: %s", st.upload_id, exc)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(writer.rollback)
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise TusError(
                507 if full else 500,
                "storage_error",
                f"the server could not store the upload ({exc.strerror}); "
                f"resume at offset {st.offset} later",
                headers={"Upload-Offset": str(st.offset)},
            ) from None
        finally:
            await asyncio.to_thread(writer.close)

    async def _commit(self, upload: _Upload, writer: ChunkWriter) -> None:
        """Make the written bytes durable (one fdatasync), then move the offset in memory.

        The state file is rewritten only when the last byte arrived (its offset and digest
        are what a restart needs to finish the upload); otherwise the data file's size is
        the durable offset.
        """
        st = upload.state
        new = dataclasses.replace(
            st, offset=writer.start + writer.written, expires_at=self._clock() + self._expiry_s
        )
        if new.received_all:
            new.sha256 = writer.sha256.hexdigest()

        def durable() -> None:
            writer.commit()
            if new.received_all:
                self._store.save(new)

        await asyncio.to_thread(durable)
        self.on_stored(new.offset - st.offset)
        st.offset, st.expires_at, st.sha256 = new.offset, new.expires_at, new.sha256
        upload.sha256 = writer.sha256

    async def _complete(self, upload: _Upload) -> None:
        """Hand a fully received upload to the completion hook and record the outcome."""
        st = upload.state
        if st.sha256 is None:  # state written by an older run before the digest was stored
            st.sha256 = (
                await asyncio.to_thread(self._store.hash_prefix, st.upload_id, st.offset)
            ).hexdigest()
        try:
            await self._hooks.complete(
                st.upload_id,
                self._store.data_path(st.upload_id),
                dict(st.metadata),
                st.owner,
                st.sha256,
            )
        except VerificationError as exc:
            st.status = UploadStatus.FAILED
            st.failure = str(exc) or "refused by the server"
            await asyncio.to_thread(self._store.save, st)
            raise TusError(
                422,
                "upload_rejected",
                st.failure,
                headers={"Upload-Offset": str(st.offset)},
            ) from None
        except web.HTTPException:
            raise
        except Exception as exc:
            if disk_full(exc):
                log.error("upload %s: disk full while finishing it: %s", st.upload_id, exc)
                raise TusError(
                    507,
                    "disk_full",
                    f"upload {st.upload_id} arrived complete, but the server's disk is full; "
                    f"it is kept: retry with an empty PATCH at offset {st.offset} later",
                    headers={"Upload-Offset": str(st.offset)},
                ) from None
            log.exception("upload %s: completion hook failed", st.upload_id)
            raise TusError(
                500,
                "completion_failed",
                f"upload {st.upload_id} arrived complete but could not be finished "
                f"({type(exc).__name__}); it is kept: retry with an empty PATCH at "
                f"offset {st.offset}",
                headers={"Upload-Offset": str(st.offset)},
            ) from None
        st.status = UploadStatus.COMPLETED
        await asyncio.to_thread(self._store.save, st)
