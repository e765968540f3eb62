"""The upload store: partial upload files and their durable state, on local disk.

Protocol-free.  :mod:`tutti.server.tus` speaks tus 1.0 over HTTP and uses this module to
keep bytes and offsets safe; nothing here knows about requests or headers.

Layout under the store's root directory, per upload id ``<id>`` (32 lowercase hex digits)::

    <id>.part     the bytes received so far: its size *is* the upload's offset
    <id>.json     the upload's state (:class:`UploadState`), replaced atomically, written only
                  at creation and when the status changes — never per chunk
    <id>.pending  while a PATCH with ``Upload-Checksum`` runs: the offset it started at

Durability rule: a PATCH's bytes are appended to the data file and the file is
``fdatasync``-ed once, before the new offset is acknowledged; ``fdatasync`` makes the file's
size durable with its bytes, so the size is the committed offset and no state file has to
be rewritten per chunk.  Bytes of a PATCH cut short by a crash are a prefix of what the
client sent and are kept (tus lets a server keep them; the client resumes from ``HEAD``),
except those of a PATCH that carried a checksum, which cannot be verified: its
``<id>.pending`` marker survives the crash and the file is cut back to the marker's offset
when the store is opened again.  State files are written to a temporary name, fsynced and
``os.replace``-d over the old one.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Hasher",
    "UploadStatus",
    "UploadState",
    "UploadStateError",
    "ChunkWriter",
    "UploadStore",
    "committed_offset",
    "is_upload_id",
    "new_upload_id",
]

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"[0-9a-f]{32}")
_HASH_READ = 1 << 20  # bytes per read when re-hashing a partial file after a restart
_STATE_VERSION = 2  # 2: the data file's size is the offset; 1: the state file's offset was
_READ_VERSIONS = (1, 2)


class Hasher(Protocol):
    """The part of :mod:`hashlib`'s hash objects this module uses."""

    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


class UploadStateError(ValueError):
    """A state file could not be read back; the message names the file and the problem."""


class UploadStatus(enum.StrEnum):
    """Where an upload is in its life.

    ``receiving``: bytes are still expected — or all have arrived and completion has not
    succeeded yet (``offset == length``; completion is retried).  ``completed``: the
    completion hook accepted the file and moved it away; never expired.  ``failed``: the
    completion hook refused the file; kept (with its reason) until it expires.
    """

    RECEIVING = "receiving"
    COMPLETED = "completed"
    FAILED = "failed"


def new_upload_id() -> str:
    """Return a fresh random upload id: 128 bits as 32 lowercase hex digits."""
    return secrets.token_hex(16)


def is_upload_id(text: str) -> bool:
    """Return whether ``text`` is a well-formed upload id (and so safe in a file name)."""
    return _ID_RE.fullmatch(text) is not None


def committed_offset(root: Path, upload_id: str) -> int:
    """Bytes of an unfinished upload's data file that count at this moment: its size, or
    the offset a checksummed PATCH being written started at.  For copies taken while the
    server runs (``tutti backup``); raises ``OSError`` if the data file is gone."""
    size = (root / f"{upload_id}.part").stat().st_size
    try:
        return min(size, int((root / f"{upload_id}.pending").read_text(encoding="ascii")))
    except (FileNotFoundError, ValueError):
        return size


@dataclass
class UploadState:
    """The durable record of one upload.

    Attributes
    ----------
    upload_id : str
        32 lowercase hex digits.
    length : int
        Declared total size, bytes.
    offset : int
        Bytes received and committed (fdatasynced), ``0 <= offset <= length``.  Kept in
        memory and derived from the data file's size on load; the state file holds the
        offset as of its last write, a lower bound.
    metadata : dict[str, str]
        Decoded ``Upload-Metadata`` pairs.
    owner : str
        Owner key returned by the authorisation hook (e.g. a participant id).
    created_at, expires_at : float
        Seconds since the epoch (the handler's clock).  ``expires_at`` moves forward on
        every committed PATCH (in memory; on load it is derived from the data file's
        modification time); it is ignored once the upload is completed.
    status : UploadStatus
    failure : str or None
        Why completion was refused (``status == failed``).
    sha256 : str or None
        Hex digest of the whole file, set once every byte has arrived.
    """

    upload_id: str
    length: int
    offset: int
    metadata: dict[str, str]
    owner: str
    created_at: float
    expires_at: float
    status: UploadStatus = UploadStatus.RECEIVING
    failure: str | None = None
    sha256: str | None = None

    @property
    def received_all(self) -> bool:
        """Whether every declared byte has been committed."""
        return self.offset == self.length

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON object stored in the state file."""
        return {
            "version": _STATE_VERSION,
            "upload_id": self.upload_id,
            "length": self.length,
            "offset": self.offset,
            "metadata": dict(self.metadata),
            "owner": self.owner,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "status": self.status.value,
            "failure": self.failure,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> UploadState:
        """Check and convert a state-file object; raise :class:`UploadStateError` if invalid."""

        def bad(what: str) -> UploadStateError:
            return UploadStateError(f"{where}: {what}")

        if not isinstance(obj, dict):
            raise bad("state is not a JSON object")
        if obj.get("version") not in _READ_VERSIONS:
            raise bad(f"unknown state version {obj.get('version')!r}, expected {_STATE_VERSION}")
        try:
            upload_id = obj["upload_id"]
            length = obj["length"]
            offset = obj["offset"]
            metadata = obj["metadata"]
            owner = obj["owner"]
            created_at = float(obj["created_at"])
            expires_at = float(obj["expires_at"])
            status = UploadStatus(obj["status"])
            failure = obj.get("failure")
            sha256 = obj.get("sha256")
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"missing or invalid field ({exc})") from None
        if not isinstance(upload_id, str) or not is_upload_id(upload_id):
            raise bad("invalid upload_id")
        if not (isinstance(length, int) and isinstance(offset, int) and 0 <= offset <= length):
            raise bad(f"invalid length/offset {length!r}/{offset!r}")
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise bad("metadata must map strings to strings")
        if not isinstance(owner, str):
            raise bad("owner must be a string")
        if failure is not None and not isinstance(failure, str):
            raise bad("failure must be a string or null")
        if sha256 is not None and not isinstance(sha256, str):
            raise bad("sha256 must be a string or null")
        return cls(
            upload_id,
            length,
            offset,
            metadata,
            owner,
            created_at,
            expires_at,
            status,
            failure,
            sha256,
        )


@dataclass
class ChunkWriter:
    """Writes one PATCH body into an upload's data file.  Blocking: call from a worker thread.

    The writer starts at the committed offset with a copy of the whole-file sha256 state and,
    optionally, a fresh hasher for the request's ``Upload-Checksum``; with one, it leaves a
    ``pending`` marker naming its start offset until :meth:`commit` or :meth:`rollback`, so
    that a crash mid-request cannot leave unverified bytes counted.

    Attributes
    ----------
    start : int
        Offset (bytes) this writer started at — the last committed offset.
    written : int
        Bytes written by this writer so far.
    sha256 : Hasher
        Whole-file sha256 over ``[0, start + written)``.
    checksum : Hasher or None
        Hash of this request's bytes only, for ``Upload-Checksum``.
    pending : Path or None
        The marker file, written when a checksum is given.
    """

    path: Path
    start: int
    sha256: Hasher
    checksum: Hasher | None = None
    pending: Path | None = None
    written: int = 0
    _fd: int = field(default=-1, repr=False)

    def open(self) -> None:
        """Open the data file, drop any bytes past :attr:`start`, mark an unverified request."""
        if self.checksum is not None and self.pending is not None:
            # no fsync: kill -9 keeps the page cache; see docs/uploads.md for power loss
            self.pending.write_text(str(self.start), encoding="ascii")
        self._fd = os.open(self.path, os.O_WRONLY)
        os.ftruncate(self._fd, self.start)

    def write(self, chunks: Iterable[bytes]) -> None:
        """Append ``chunks`` at ``start + written`` and feed both hashers."""
        for chunk in chunks:
            view = memoryview(chunk)
            pos = self.start + self.written
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
            self.sha256.update(chunk)
            if self.checksum is not None:
                self.checksum.update(chunk)
            self.written += len(chunk)

    def commit(self) -> int:
        """Make everything written durable (one ``fdatasync``: bytes and file size) and
        return the new offset; only then may it be acknowledged."""
        os.fdatasync(self._fd)
        self._unmark()
        return self.start + self.written

    def rollback(self) -> None:
        """Cut the file back to :attr:`start`, dropping everything this writer wrote."""
        if self._fd >= 0:
            os.ftruncate(self._fd, self.start)
            os.fdatasync(self._fd)
        self._unmark()
        self.written = 0

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _unmark(self) -> None:
        if self.pending is not None:
            self.pending.unlink(missing_ok=True)


class UploadStore:
    """Partial upload files and their state files in one directory.

    Parameters
    ----------
    root : Path
        Directory for ``<id>.part`` and ``<id>.json`` files; created if missing.

    Notes
    -----
    All methods block on disk I/O; the tus handler calls the slow ones (writes, fsync,
    re-hashing) from worker threads.  The store keeps no state in memory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def data_path(self, upload_id: str) -> Path:
        """Path of the upload's data file."""
        return self.root / f"{self._checked(upload_id)}.part"

    def state_path(self, upload_id: str) -> Path:
        """Path of the upload's state file."""
        return self.root / f"{self._checked(upload_id)}.json"

    def pending_path(self, upload_id: str) -> Path:
        """Path of the marker left while a checksummed PATCH is being written."""
        return self.root / f"{self._checked(upload_id)}.pending"

    def create(self, state: UploadState) -> None:
        """Create an empty data file and the first state file, both durable."""
        fd = os.open(self.data_path(state.upload_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.save(state)

    def save(self, state: UploadState) -> None:
        """Write ``state`` atomically: temp file, fsync, ``os.replace``, fsync the directory."""
        final = self.state_path(state.upload_id)
        tmp = final.with_suffix(".json.tmp")
        data = json.dumps(state.to_dict(), separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        self._sync_dir()

    def writer(self, state: UploadState, sha256: Hasher, checksum: Hasher | None) -> ChunkWriter:
        """Return an open :class:`ChunkWriter` positioned at ``state.offset``."""
        pending = self.pending_path(state.upload_id)
        w = ChunkWriter(self.data_path(state.upload_id), state.offset, sha256, checksum, pending)
        w.open()
        return w

    def hash_prefix(self, upload_id: str, nbytes: int) -> Hasher:
        """Return a sha256 hasher fed with the first ``nbytes`` of the data file.

        Used after a restart, when the in-memory hash state of a partial upload is gone.
        """
        h = hashlib.sha256()
        left = nbytes
        with open(self.data_path(upload_id), "rb") as f:
            while left > 0:
                block = f.read(min(_HASH_READ, left))
                if not block:
                    raise UploadStateError(
                        f"{self.data_path(upload_id)}: shorter than its committed offset {nbytes}"
                    )
                h.update(block)
                left -= len(block)
        return h

    def remove(self, upload_id: str) -> None:
        """Delete the upload's data, state and marker files (missing files are fine)."""
        paths = (
            self.data_path(upload_id),
            self.state_path(upload_id),
            self.pending_path(upload_id),
        )
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._sync_dir()

    def load_all(self, expiry_s: float = 0.0) -> list[UploadState]:
        """Read every state file and repair what a crash can leave behind.

        A partial upload's offset is its data file's size, cut back to the start of a
        checksummed PATCH that a crash interrupted (its ``.pending`` marker); its deadline is
        at least ``expiry_s`` seconds after the data file was last written.  Leftover
        temporary state files are deleted; a state file that cannot be read is renamed to
        ``<name>.corrupt`` (logged) so that it is neither used nor lost.
        """
        for tmp in self.root.glob("*.json.tmp"):
            tmp.unlink(missing_ok=True)
        states: list[UploadState] = []
        for path in sorted(self.root.glob("*.json")):
            if not is_upload_id(path.stem):
                continue
            try:
                obj = json.loads(path.read_bytes())
                state = UploadState.from_dict(obj, str(path))
                if state.upload_id != path.stem:
                    raise UploadStateError(f"{path}: names upload {state.upload_id}")
                if state.status is not UploadStatus.COMPLETED:
                    self._repair_data(state, sized=obj["version"] >= 2, expiry_s=expiry_s)
            except (OSError, ValueError) as exc:  # UploadStateError and JSON errors are ValueErrors
                log.error("upload state %s unusable, set aside as .corrupt: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".json.corrupt"))
                continue
            states.append(state)
        return states

    def _repair_data(self, state: UploadState, *, sized: bool, expiry_s: float) -> None:
        """Set ``state.offset`` from the data file (``sized``: version 2; else cut the file
        back to the saved offset, as version 1 promised) and its deadline from its mtime."""
        path = self.data_path(state.upload_id)
        pending = self.pending_path(state.upload_id)
        if state.received_all and not path.exists():
            # Crash between the completion hook moving the file away and the state saying so:
            # only the hook removes a fully received data file, so it accepted it.
            log.warning(
                "upload %s: data file gone after completion; marking completed", state.upload_id
            )
            state.status = UploadStatus.COMPLETED
            self.save(state)
            pending.unlink(missing_ok=True)
            return
        info = path.stat()  # FileNotFoundError → OSError → set aside by the caller
        keep = info.st_size if sized else state.offset
        with contextlib.suppress(FileNotFoundError, ValueError):
            keep = min(keep, int(pending.read_text(encoding="ascii")))
        if keep < state.offset or info.st_size < state.offset:
            raise UploadStateError(f"{path}: {info.st_size} bytes on disk but {state.offset} saved")
        if keep > state.length:
            raise UploadStateError(f"{path}: {keep} bytes on disk, more than {state.length}")
        if info.st_size > keep:
            log.info(
                "upload %s: dropping %d unverified bytes", state.upload_id, info.st_size - keep
            )
            with open(path, "r+b") as f:
                f.truncate(keep)
                os.fdatasync(f.fileno())
        pending.unlink(missing_ok=True)
        state.offset = keep
        state.expires_at = max(state.expires_at, info.st_mtime + expiry_s)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _checked(upload_id: str) -> str:
        if not is_upload_id(upload_id):
            raise ValueError(f"invalid upload id {upload_id!r}: expected 32 lowercase hex digits")
        return upload_id
