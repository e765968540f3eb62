"""``tutti backup``: a consistent copy of a server's data folder while it runs, and its restore.

The database is copied with SQLite's online backup API, so the copy is one consistent moment
even while the server writes.  Files are copied after it: a recording or backing track is
placed in the data folder (an atomic rename) *after* the row that names it is committed, so
every file the copied database names is already there; an unfinished tus upload is copied state
first, then its data up to the state's offset (bytes past it never count).  Every file is
hashed as it is read and checked again in the copy; the copy is written beside its destination
and renamed into place last, so a half-written backup is never mistaken for a complete one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tutti import __version__
from tutti.fsutil import fsync_dir

from .uploads import committed_offset

__all__ = ["BackupError", "Backup", "create_backup", "verify_backup", "restore_backup"]

MANIFEST = "backup.json"
DB = "tutti.db"
FORMAT = 1
#: Left out: the live database (copied through SQLite instead), scratch space, probes and
#: the singer's install (rebuilt from the source folder on demand).
_SKIP_TOP = {DB, f"{DB}-wal", f"{DB}-shm", f"{DB}.open-lock", "tmp", ".healthz", "install"}
_CHUNK = 1 << 20


class BackupError(RuntimeError):
    """A backup cannot be made, checked or restored; the message says why and what to do."""


@dataclass(frozen=True)
class Backup:
    """What a backup holds: ``files`` maps each relative path to ``(sha256, bytes)``."""

    created_at: float
    version: str
    files: dict[str, tuple[str, int]]

    @property
    def total_bytes(self) -> int:
        return sum(n for _, n in self.files.values())


def _copy(src: Path, dest: Path, limit: int | None = None) -> tuple[str, int]:
    """Copy ``src`` (its first ``limit`` bytes) to ``dest``, fsynced; its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as fin, dest.open("wb") as fout:
        while limit is None or size < limit:
            block = fin.read(_CHUNK if limit is None else min(_CHUNK, limit - size))
            if not block:
                break
            digest.update(block)
            fout.write(block)
            size += len(block)
        fout.flush()
        os.fsync(fout.fileno())
    if limit is not None and size < limit:
        raise BackupError(f"{src} holds {size} bytes, fewer than its upload state's {limit}")
    return digest.hexdigest(), size


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _copy_database(data: Path, dest: Path) -> None:
    src_path = data / DB
    if not src_path.is_file():
        raise BackupError(f"{data} holds no {DB}: is it a tutti data folder?")
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    try:
        out = sqlite3.connect(dest / DB)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def _copy_uploads(data: Path, work: Path, files: dict[str, tuple[str, int]]) -> None:
    """Unfinished uploads: each state as read once, then its data up to its committed offset
    (the data file's size, for states of the store's version 2)."""
    for state in sorted((data / "uploads").glob("*.json")):
        try:
            raw = state.read_bytes()
            saved = json.loads(raw)
            offset = int(saved["offset"])
            if saved["version"] >= 2:
                offset = committed_offset(data / "uploads", state.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # finished, expired or being replaced this moment: not backed up
        rel = state.relative_to(data)
        part = rel.with_suffix(".part")
        try:
            files[str(part)] = _copy(data / part, work / part, offset)
        except FileNotFoundError:
            continue  # finished meanwhile: its recording is copied with the take folders
        (work / rel).write_bytes(raw)
        files[str(rel)] = (hashlib.sha256(raw).hexdigest(), len(raw))


def _other_files(data: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(data):
        rel = Path(root).relative_to(data)
        if rel == Path("."):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_TOP and d != "uploads")
            files = [f for f in files if f not in _SKIP_TOP and not f.startswith(".healthz")]
        dirs.sort()
        found += [str(rel / f) for f in sorted(files) if not f.endswith(".tmp")]
    return found


def create_backup(data: Path, dest: Path) -> Backup:
    """Copy the data folder ``data`` (a server may be running on it) to the new folder ``dest``."""
    if dest.exists():
        raise BackupError(f"{dest} exists already: give a new folder for the backup")
    work = dest.with_name(dest.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        _copy_database(data, work)
        files = {DB: _hash(work / DB)}
        _copy_uploads(data, work, files)
        for rel in _other_files(data):
            try:
                files[rel] = _copy(data / rel, work / rel)
            except FileNotFoundError:
                continue  # an upload's scratch file that moved on meanwhile
        backup = Backup(time.time(), __version__, files)
        _write_manifest(work, backup)
        _check(work, backup)
        fsync_dir(work)
        work.rename(dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return backup


def _write_manifest(folder: Path, backup: Backup) -> None:
    doc = {
        "format": FORMAT,
        "created_at": backup.created_at,
        "tutti": backup.version,
        "files": {rel: {"sha256": h, "bytes": n} for rel, (h, n) in backup.files.items()},
    }
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True))


def _read_manifest(folder: Path) -> Backup:
    try:
        doc = json.loads((folder / MANIFEST).read_text())
        if doc["format"] != FORMAT:
            raise BackupError(
                f"{folder}: backup format {doc['format']!r}; this tutti reads {FORMAT}"
            )
        files = {str(rel): (str(v["sha256"]), int(v["bytes"])) for rel, v in doc["files"].items()}
        return Backup(float(doc["created_at"]), str(doc["tutti"]), files)
    except FileNotFoundError:
        raise BackupError(
            f"{folder} holds no {MANIFEST}: it is not a finished tutti backup"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"{folder}/{MANIFEST} is damaged ({exc})") from None


def _check(folder: Path, backup: Backup) -> None:
    for rel, want in backup.files.items():
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BackupError(f"{folder}/{MANIFEST} names a file outside the backup: {rel!r}")
        if not path.is_file():
            raise BackupError(f"{path} is missing from the backup")
        if _hash(path) != want:
            raise BackupError(f"{path} does not match its checksum: the backup is damaged")


def verify_backup(folder: Path) -> Backup:
    """Check every file of a backup against its checksum; the backup, or BackupError."""
    backup = _read_manifest(folder)
    _check(folder, backup)
    return backup


def restore_backup(folder: Path, data: Path) -> Backup:
    """Check the backup in ``folder`` and copy it into the new or empty data folder ``data``."""
    backup = verify_backup(folder)
    if data.exists() and any(data.iterdir()):
        raise BackupError(f"{data} is not empty: restore into a new or empty folder")
    data.mkdir(parents=True, exist_ok=True)
    for rel, want in backup.files.items():
        if _copy(folder / rel, data / rel) != want:
            raise BackupError(f"{rel} changed while it was restored: try again")
    fsync_dir(data)
    return backup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "exit codes: 0 done, 1 the backup could not be made, checked or restored"
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    make = sub.add_parser("create", help="copy a data folder, also while its server runs")
    make.add_argument("dest", type=Path, help="the new folder to write the backup to")
    make.add_argument("--data", type=Path, default=Path("tutti-data"), help="the data folder")
    check = sub.add_parser("verify", help="check every file of a backup against its checksum")
    check.add_argument("backup", type=Path)
    back = sub.add_parser("restore", help="restore a backup into a new, empty data folder")
    back.add_argument("backup", type=Path)
    back.add_argument("--data", type=Path, required=True, help="the new data folder")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "create":
            b = create_backup(args.data, args.dest)
            print(f"backed up {len(b.files)} files ({b.total_bytes / 1e6:.1f} MB) to {args.dest}")
        elif args.action == "verify":
            b = verify_backup(args.backup)
            print(f"{args.backup}: {len(b.files)} files, every checksum right")
        else:
            b = restore_backup(args.backup, args.data)
            print(
                f"restored {len(b.files)} files into {args.data}; start the server on it with "
                f"`tutti serve --data {args.data}`"
            )
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"tutti backup: {exc}", file=sys.stderr)
        return 1
    return 0
