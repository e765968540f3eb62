"""Crash-safe local takes: write as it arrives, survive ``kill -9``, delete only when confirmed.

Each take gets a folder under ``<data dir>/takes/``::

    journal.json     state, the take's metadata and timeline numbers (replaced atomically)
    audio.f32        the recording so far: raw float32, interleaved, appended as it arrives
    lock             held (flock) by the writing process; the kernel drops it on any exit
    <name>.flac      the finished take (by :meth:`TakeWriter.finish` or :meth:`TakeStore.recover`)
    recording.json   its :class:`tutti.takeformat.Recording` entry, sha256 included

A :class:`TakeWriter` runs a writer thread: blocks from the engine's drain thread are
appended to ``audio.f32`` at once, and at least every ``sync_interval`` (0.5 s) the file is
fsynced and the journal rewritten with the number of frames on disk and what the engine
measured so far (gaps, counters; a gap at once, before the frames after it) — so a crashed
process loses only what the engine had not yet drained (tens of ms) and a power cut at most
~0.5 s, and a recovered take still lists its losses.
:meth:`TakeStore.recover` finalises every take left unfinished by a dead process;
nothing is deleted until :meth:`TakeStore.confirm_uploaded` is given the right sha256.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

from tutti.audio.types import AudioArray
from tutti.client.config import data_dir
from tutti.errors import TuttiError
from tutti.fsutil import file_sha256, fsync_dir, write_json_atomic
from tutti.takeformat import Recording, parse_recording

__all__ = ["TakeStoreError", "FinishedTake", "TakeWriter", "TakeStore", "sha256_file"]

sha256_file = file_sha256  # the name this module has always exported

JOURNAL = "journal.json"
RAW = "audio.f32"
LOCK = "lock"
RECORDING = "recording.json"
FORMAT = "tutti-local-take"
_CHUNK = 1 << 16  # frames per chunk when converting


class TakeStoreError(TuttiError):
    """A local take cannot be written, finished or confirmed; the message says which and why."""


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return s[:40] or "take"


@dataclass(frozen=True)
class FinishedTake:
    """A take finished on disk and waiting for upload.

    Attributes
    ----------
    folder : Path
        The take's local folder.
    path : Path
        The audio file (FLAC or WAV) to upload.
    recording : Recording
        Its manifest entry: timeline numbers, frames, rate, sha256, ...
    take_id, session, server : str
        Which take of which session on which server it belongs to.
    recovered : bool
        True if it was finalised by :meth:`TakeStore.recover` after a crash.
    """

    folder: Path
    path: Path
    recording: Recording
    take_id: str
    session: str = ""
    server: str = ""
    recovered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return self.recording.sha256


class TakeWriter:
    """Writes one take to its folder from a background thread (see the module docstring).

    Made by :meth:`TakeStore.begin`; implements the engine's ``TakeSink``
    (:meth:`set_start_offset`, :meth:`write`, :meth:`note_loss`).  Call :meth:`finish` when
    the take is done.
    """

    def __init__(self, folder: Path, journal: dict[str, Any], *, sync_interval: float = 0.5):
        self.folder = folder
        self.sync_interval = sync_interval
        self.channels = int(journal["meta"]["channels"])
        self.frames_written = 0
        self.frames_durable = 0
        self.error: str | None = None
        self._journal = journal
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._lockfh = (folder / LOCK).open("a+b")
        fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._raw: BinaryIO = (folder / RAW).open("ab")
        write_json_atomic(folder / JOURNAL, journal)
        self._finished: FinishedTake | None = None
        self._progress: Callable[[int], dict[str, Any]] | None = None
        self._thread = threading.Thread(target=self._run, name="tutti-take-writer", daemon=True)
        self._thread.start()

    # --- the engine's TakeSink ---------------------------------------------------

    def set_start_offset(self, frames: int) -> None:
        """Record ``r0 - o0`` (journaled and fsynced before any audio)."""
        self._q.put(("offset", int(frames)))

    def write(self, block: AudioArray) -> None:
        """Queue recorded frames, float32 (frames, channels); returns at once."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            self.error = f"a block of shape {block.shape} does not fit {self.channels} channel(s)"
            return
        self._q.put(("audio", block))

    def note_loss(self) -> None:
        """Journal the take's measurements before the frames queued after this call."""
        self._q.put(("sync", None))

    def journal_progress(self, progress: Callable[[int], dict[str, Any]]) -> None:
        """Journal ``progress(frames)`` (``counters`` and ``timeline`` as :meth:`finish` takes
        them, up to recording frame ``frames``) at every sync, so that a take recovered after
        a crash keeps its gaps and counters."""
        self._progress = progress

    # --- writer thread -------------------------------------------------------------

    def _sync(self) -> None:
        if self._progress is not None:
            self._journal.update(self._progress(self.frames_written))
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self.frames_durable = self.frames_written
        self._journal["frames_durable"] = self.frames_durable
        self._journal["updated"] = time.time()
        write_json_atomic(self.folder / JOURNAL, self._journal)

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            try:
                kind, item = self._q.get(timeout=self.sync_interval / 2)
            except queue.Empty:
                kind, item = "tick", None
            try:
                if kind == "audio":
                    data = np.ascontiguousarray(item, dtype=np.float32)
                    self._raw.write(data.tobytes())
                    self.frames_written += data.shape[0]
                elif kind == "offset":
                    self._journal["start_offset"] = item
                    self._sync()
                    last_sync = time.monotonic()
                elif kind == "sync":
                    self._sync()
                    last_sync = time.monotonic()
                if kind == "stop" or time.monotonic() - last_sync >= self.sync_interval:
                    if self.frames_durable != self.frames_written or kind == "stop":
                        self._sync()
                    last_sync = time.monotonic()
            except OSError as exc:
                self.error = f"cannot write the take to {self.folder}: {exc.strerror or exc}"
            if kind == "stop":
                return

    # --- finishing -------------------------------------------------------------------

    def finish(
        self,
        *,
        overflows: int = 0,
        underflows: int = 0,
        dropped_frames: int = 0,
        timeline: dict[str, Any] | None = None,
    ) -> FinishedTake:
        """Flush, close and turn the take into its final audio file with metadata.

        Parameters
        ----------
        overflows, underflows, dropped_frames : int
            The engine's counters for the take (stored in the recording entry).
        timeline : dict | None
            What the engine measured of the take's timeline: take-format ``gaps``,
            ``slips``, ``clock_map`` and ``shared_clock`` (stored in the recording entry).

        Raises
        ------
        TakeStoreError
            Writing failed, or the take never started (no start offset).
        """
        if self._finished is not None:
            return self._finished
        self._q.put(("stop", None))
        self._thread.join()
        self._raw.close()
        if self.error:
            self._release()
            raise TakeStoreError(self.error)
        self._journal["counters"] = {
            "overflows": int(overflows),
            "underflows": int(underflows),
            "dropped_frames": int(dropped_frames),
        }
        if timeline is not None:
            self._journal["timeline"] = timeline
        write_json_atomic(self.folder / JOURNAL, self._journal)
        try:
            done = _finalise(self.folder, self._journal, recovered=False)
        finally:
            self._release()
        if done is None:
            raise TakeStoreError(
                f"take {self._journal['meta']['take_id']!r} never started recording; "
                "nothing to finish"
            )
        self._finished = done
        return done

    def _release(self) -> None:
        try:
            fcntl.flock(self._lockfh.fileno(), fcntl.LOCK_UN)
        finally:
            self._lockfh.close()


def _finalise(folder: Path, journal: dict[str, Any], *, recovered: bool) -> FinishedTake | None:
    """Raw PCM + journal -> final audio file + recording.json; None if the take never began."""
    meta = journal["meta"]
    start_offset = journal.get("start_offset")
    if start_offset is None:
        journal["state"] = "abandoned"
        write_json_atomic(folder / JOURNAL, journal)
        return None
    channels = int(meta["channels"])
    rate = int(meta["rate"])
    raw = folder / RAW
    size = raw.stat().st_size if raw.exists() else 0
    frames = size // (4 * channels)
    fmt = meta.get("format", "flac")
    ext, sf_format, subtype = (
        (".flac", "FLAC", "PCM_24") if fmt == "flac" else (".wav", "WAV", "FLOAT")
    )
    final = folder / f"{_safe(meta.get('singer', ''))}-{_safe(meta['take_id'])}{ext}"
    tmp = folder / f".{final.name}.tmp"
    with sf.SoundFile(
        tmp, "w", samplerate=rate, channels=channels, format=sf_format, subtype=subtype
    ) as out:
        if frames:
            data = np.memmap(raw, dtype=np.float32, mode="r", shape=(frames, channels))
            for i in range(0, frames, _CHUNK):
                out.write(np.clip(data[i : i + _CHUNK], -1.0, 1.0))
            del data
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(folder)
    counters = journal.get("counters", {})
    timeline = journal.get("timeline", {})
    rec = parse_recording(
        {
            **{k: timeline[k] for k in ("gaps", "slips", "clock_map") if k in timeline},
            "file": final.name,
            "singer": meta.get("singer", ""),
            "part": meta.get("part", ""),
            "rate": rate,
            "channels": channels,
            "frames": frames,
            "start_offset": int(start_offset),
            "latency": int(meta["latency"]),
            "latency_source": meta.get("latency_source", "measured"),
            "participant_id": meta.get("participant_id", ""),
            "sha256": sha256_file(final),
            "overflows": int(counters.get("overflows", 0)),
            "underflows": int(counters.get("underflows", 0)),
            "shared_clock": bool(timeline.get("shared_clock", meta.get("shared_clock", True))),
            "device": dict(meta.get("device", {})),
        },
        "local take",
    )
    info = {
        "format": FORMAT,
        "take_id": meta["take_id"],
        "session": meta.get("session", ""),
        "server": meta.get("server", ""),
        "recovered": recovered,
        "dropped_frames": int(counters.get("dropped_frames", 0)),
        "recording": rec.to_dict(),
    }
    write_json_atomic(folder / RECORDING, info)
    journal["state"] = "finished"
    journal["final"] = {"file": final.name, "sha256": rec.sha256, "frames": frames}
    write_json_atomic(folder / JOURNAL, journal)
    return _load_finished(folder)


def _load_finished(folder: Path) -> FinishedTake:
    info = json.loads((folder / RECORDING).read_text(encoding="utf-8"))
    rec = parse_recording(info["recording"], f"{folder / RECORDING}")
    return FinishedTake(
        folder=folder,
        path=folder / rec.file,
        recording=rec,
        take_id=str(info.get("take_id", "")),
        session=str(info.get("session", "")),
        server=str(info.get("server", "")),
        recovered=bool(info.get("recovered", False)),
        extra={"dropped_frames": int(info.get("dropped_frames", 0))},
    )


class TakeStore:
    """The folder of local takes (default ``<data dir>/takes``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else data_dir() / "takes"

    def begin(
        self,
        take_id: str,
        *,
        rate: int,
        channels: int,
        singer: str,
        part: str,
        latency: int,
        latency_source: str = "measured",
        participant_id: str = "",
        session: str = "",
        server: str = "",
        device: dict[str, Any] | None = None,
        shared_clock: bool = True,
        format: str = "flac",
        sync_interval: float = 0.5,
    ) -> TakeWriter:
        """Create a take folder and start its writer.

        Parameters
        ----------
        take_id : str
            The server's take id.
        rate, channels : int
            Sample rate (Hz) and channel count of the recording.
        latency : int
            Round-trip latency L in frames; ``latency_source`` is "measured" or "reported".
        format : str
            "flac" (24-bit) or "wav" (32-bit float) for the final file.
        """
        if format not in ("flac", "wav"):
            raise TakeStoreError(f"format must be 'flac' or 'wav', not {format!r}")
        if latency_source not in ("measured", "reported"):
            raise TakeStoreError("latency_source must be 'measured' or 'reported'")
        if not isinstance(latency, int) or latency < 0:
            raise TakeStoreError(f"latency must be a whole number of frames ≥ 0, not {latency!r}")
        if not 1 <= channels <= 8 or not 8000 <= rate <= 192000:
            raise TakeStoreError(f"unsupported take: {channels} channel(s) at {rate} Hz")
        if not take_id:
            raise TakeStoreError("take_id must not be empty")
        self.root.mkdir(parents=True, exist_ok=True)
        folder = (
            self.root / f"{time.strftime('%Y%m%dT%H%M%S')}-{_safe(take_id)}-{uuid.uuid4().hex[:8]}"
        )
        folder.mkdir()
        fsync_dir(self.root)
        journal: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "state": "recording",
            "start_offset": None,
            "frames_durable": 0,
            "created": time.time(),
            "meta": {
                "take_id": take_id,
                "rate": rate,
                "channels": channels,
                "singer": singer,
                "part": part,
                "latency": latency,
                "latency_source": latency_source,
                "participant_id": participant_id,
                "session": session,
                "server": server,
                "device": dict(device or {}),
                "shared_clock": shared_clock,
                "format": format,
            },
        }
        return TakeWriter(folder, journal, sync_interval=sync_interval)

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if (p / JOURNAL).is_file())

    @staticmethod
    def _journal(folder: Path) -> dict[str, Any] | None:
        try:
            j = json.loads((folder / JOURNAL).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return j if isinstance(j, dict) and j.get("format") == FORMAT else None

    def recover(self) -> list[FinishedTake]:
        """Finalise takes whose writer died (crash, kill -9); returns them.

        Takes still held by a live writer (their lock is taken) are left alone.
        """
        out: list[FinishedTake] = []
        for folder in self._folders():
            j = self._journal(folder)
            if j is None or j.get("state") != "recording":
                continue
            with (folder / LOCK).open("a+b") as lock:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is writing it
                try:
                    done = _finalise(folder, j, recovered=True)
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            if done is not None:
                out.append(done)
        return out

    def pending(self) -> list[FinishedTake]:
        """Finished takes not yet confirmed by the server (oldest first)."""
        out = []
        for folder in self._folders():
            j = self._journal(folder)
            if j is not None and j.get("state") == "finished" and (folder / RECORDING).is_file():
                out.append(_load_finished(folder))
        return out

    def confirm_uploaded(self, take: FinishedTake | Path, sha256: str) -> None:
        """The server holds the take with this sha256: delete the local copy.

        Raises
        ------
        TakeStoreError
            The sha256 differs from the local file's (nothing is deleted).
        """
        folder = take.folder if isinstance(take, FinishedTake) else Path(take)
        if folder.parent.resolve() != self.root.resolve():
            raise TakeStoreError(f"{folder} is not a take in {self.root}")
        done = _load_finished(folder)
        local = sha256_file(done.path)
        if sha256.lower() != local:
            raise TakeStoreError(
                f"the server's sha256 {sha256[:12]}… does not match the local take "
                f"{local[:12]}… ({done.path.name}); keeping it for another upload"
            )
        shutil.rmtree(folder)
        fsync_dir(self.root)
