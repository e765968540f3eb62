"""The server's mix of each take: ``tutti mix``'s pipeline run in a worker process, as FLAC
and Opus, with the leader's gains and mutes, announced with ``take.mix``.

A take is mixed when its uploads are complete (every singer it expected has uploaded, failed
or missed it, and the take is stopped), again at start-up when such a take has no mix, and
when the leader asks (``POST …/mix``: a remix with other gains and mutes).  Each mix is one
call of :func:`tutti.mix.command.mix_take` on the take folder (``take.json``, the recordings,
the backing hard-linked from the track store: exactly the folder ``tutti lead download``
writes) in a :class:`~concurrent.futures.ProcessPoolExecutor` of spawned workers, so the
event loop never waits on it.  What the mix is (its state, version, gains, files) lives in
``mix-status.json`` in the take folder, so it outlives a restart and every server process on
the data folder sees one state (:mod:`tutti.server.mixlocks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

from aiohttp import web

from tutti.fsutil import file_sha256, write_json_atomic
from tutti.mix.folder import DamagedAudio
from tutti.mix.outputs import Interrupted
from tutti.takeformat import MANIFEST_NAME, TakeManifest
from tutti.wire import Ev, MixFiles, MixRequest, TakeMix, WireError

from .errors import BadRequest, Conflict
from .mixlocks import Mixing, anyone_mixing, file_signature, state_lock
from .mixwarm import warm_up
from .mixwork import MixWork
from .models import Fanout, Principal, Take
from .opuscopy import OpusCopy
from .store import SessionStore
from .takes import Takes

_J = TypeVar("_J")
_R = TypeVar("_R")

__all__ = ["MIX_DIR", "MixMade", "Mixes", "make_mix", "prepare_folder"]

log = logging.getLogger("tutti.mixing")

#: Niceness of the mix workers: uploads, take control and the event loop go first when the
#: CPU is short; a mix only waits while they run.
MIX_NICE = 10
#: Folder of the server's mixes inside a take folder (not part of ``take.json``).
MIX_DIR = "mix"
#: The mix's state, in the take folder: not in ``mix/``, which a failing mix removes when it
#: leaves it empty (mix/outputs.py), under the state's write.
_STATUS = "mix-status.json"
#: Where it was kept before (still read, for a take folder that has none in its place).
_OLD_STATUS = f"{MIX_DIR}/status.json"
#: A singer's upload is settled in these states: nothing more will arrive from them ("deleted":
#: they took their recording back).
_SETTLED = frozenset({"uploaded", "failed", "missed", "deleted"})
#: The folder of the mix folder where each recording's pass 1 is kept (:mod:`tutti.mix.prepared`).
_PREPARED = "prepared"
#: Threads ``tutti mix`` uses inside one worker.
_MIX_JOBS = 2
#: Once the server stops, a worker interrupts itself this often until the pool ends it.
_STOP_REPEAT_S = 0.5


class EventLike(Protocol):
    """A stop flag the workers share: a :mod:`multiprocessing` event."""

    def set(self) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class MixJob:
    """What a worker mixes (picklable): the take folder, where the outputs go, and the
    choices by recording file (``recordings/<participant_id>.<ext>``)."""

    take_dir: str
    out_dir: str
    version: int
    gains_db: tuple[tuple[str, float], ...] = ()
    muted: tuple[str, ...] = ()
    rate: int = 48000  # the take's (the master's) rate, Hz
    files: tuple[str, ...] = ()  # every recording of the take folder's take.json
    awaited: tuple[str, ...] = ()  # recordings whose pass 1 another worker is making
    work_dir: str = ""  # where it works (kept pass 1s, scratch); "": in ``out_dir``

    @property
    def prepared(self) -> Path:
        """Where each recording's pass 1 is kept (:mod:`tutti.mix.prepared`)."""
        return Path(self.work_dir or self.out_dir) / _PREPARED


@dataclass(frozen=True)
class PrepareJob:
    """Pass 1 of one recording (its file as ``take.json`` names it), kept for the mix; then
    the sums of the groups of voices that are all kept, for the take.json the mix is
    predicted to read (``expected``: each singer's file, None for one still to come, and
    part, in order) with the last mix's choices."""

    take_dir: str
    work_dir: str  # where the take's mixes work (:attr:`MixJob.prepared`)
    file: str
    expected: tuple[tuple[str | None, str], ...] = ()
    gains_db: tuple[tuple[str, float], ...] = ()
    muted: tuple[str, ...] = ()


@dataclass(frozen=True)
class MixMade:
    """A finished mix: its version, length (seconds) and the sha256 of each file."""

    version: int
    duration_s: float
    sha256: dict[str, str]
    files: tuple[str, ...] = ()  # the recordings in it, as take.json names them

    def path(self, out_dir: Path, fmt: str) -> Path:
        return out_dir / f"mix-{self.version}.{fmt}"


def make_mix(job: MixJob) -> MixMade:
    """Worker process: mix the take folder as ``tutti mix`` does, with the Opus copy."""
    import soundfile as sf

    from tutti.mix.command import mix_take

    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = MixMade(job.version, 0.0, {}, job.files)
    flac, opus = made.path(out, "flac"), made.path(out, "opus")
    argv = _mix_argv(job.take_dir, flac, job.gains_db, job.muted)
    with OpusCopy(opus, job.rate) as copy:  # encoded in threads while the master is written
        files = mix_take(argv, job.prepared, also=copy, awaited=job.awaited)
        info = sf.info(str(flac))
        flac_sum = file_sha256(flac)  # while the copy's last packets are encoded
    sums = {"flac": flac_sum, "opus": file_sha256(opus)}
    # what take.json held when the mix read it: another job of the take may have rewritten it
    return MixMade(job.version, info.frames / info.samplerate, sums, tuple(sorted(files)))


def _mix_argv(
    take_dir: str, out: Path, gains_db: tuple[tuple[str, float], ...], muted: tuple[str, ...]
) -> list[str]:
    """``tutti mix``'s arguments for the server's mix of ``take_dir`` into ``out``."""
    argv = [take_dir, "-o", str(out), "--jobs", str(_MIX_JOBS)]
    for file, db in gains_db:
        argv += ["--gain", f"{file}={db!r}"]
    for file in muted:
        argv += ["--mute", file]
    return argv


def prepare_recording(job: PrepareJob) -> None:
    """Worker process: pass 1 of one recording as it arrives, kept for the take's mix, and
    the groups' sums it completes."""
    from tutti.mix.command import mix_take
    from tutti.mix.groupsums import completes_group
    from tutti.mix.prepared import ended_marker, kept_files

    kept = MixJob(job.take_dir, job.work_dir, 0).prepared
    argv = _mix_argv(job.take_dir, Path(job.work_dir) / "prepare.flac", job.gains_db, job.muted)
    ended = ended_marker(kept, job.file)  # a mix waiting for this recording looks for it
    kept.mkdir(parents=True, exist_ok=True)
    ended.unlink(missing_ok=True)
    try:
        mix_take(argv, kept, only=[job.file])
    finally:
        ended.touch()
    # the last recording of its group to be kept sums it (a few reads tell; the sum is ~0.1 s)
    if job.expected and completes_group(kept_files(kept), job.expected, job.file, job.muted):
        mix_take(argv, kept, ahead=job.expected)


def _choices(take: Take, status: TakeMix) -> tuple[tuple[tuple[str, float], ...], tuple[str, ...]]:
    """The gains and mutes of ``status`` (by singer) by recording file, for ``tutti mix``."""
    recorded = {s.participant_id: s.recording.file for s in take.singers if s.recording}
    gains = tuple((recorded[p], db) for p, db in sorted(status.gains_db.items()) if p in recorded)
    return gains, tuple(recorded[p] for p in status.muted if p in recorded)


def _start_worker(parent: int, stop: EventLike) -> None:
    """Worker process initializer: yield the CPU to the server; when the server stops (it
    sets ``stop``), interrupt the job running here, so that a stop never waits for a mix;
    and end this worker when the server is gone (killed with SIGKILL, it cannot shut its
    pool down), instead of lingering as an orphan.

    SIGTERM (and SIGINT: Ctrl-C reaches the workers too) interrupts a job, whose own
    ``SignalGuard`` cleans up what it wrote; between jobs it is ignored, and the pool's
    shutdown ends the worker."""
    global _worker_stop
    _worker_stop = stop
    os.nice(MIX_NICE)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _between_jobs)

    def watch() -> None:
        while os.getppid() == parent:
            if stop.wait(1.0):  # again and again: a queued job may start after the first
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(_STOP_REPEAT_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: In a worker process: the server's stop flag, and whether a job runs.
_worker_stop: EventLike | None = None
_in_job = False


def _between_jobs(signum: int, _frame: FrameType | None) -> None:
    """A worker's handler where a mix's own is not installed: a job that has not reached
    it yet (its imports take a second) ends once the server stops; between jobs, nothing."""
    if _in_job and _worker_stop is not None and _worker_stop.wait(0):
        raise Interrupted(signum)


def _job(fn: Callable[..., _R], *args: Any) -> _R:
    """Worker process: run one job, marked as running for :func:`_between_jobs`."""
    global _in_job
    _in_job = True
    try:
        return fn(*args)
    finally:
        _in_job = False


def prepare_folder(folder: Path, manifest: TakeManifest, track_path: Callable[[str], Path]) -> None:
    """Make the take folder a ``tutti mix`` folder: ``take.json`` and ``backing/`` (hard links
    to the track store; copies where links cannot be made).  Blocking: run in a thread."""
    for b in manifest.backing:
        dest = folder / b.file
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = track_path(b.sha256)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    write_json_atomic(folder / MANIFEST_NAME, manifest.to_dict(), indent=2)


@dataclass
class _TakeMixes:
    """One take's mix: what is announced, and the last one made (its files are served)."""

    status: TakeMix
    made: MixMade | None = None
    #: the recordings (files) the latest version started with: a later one makes a new mix
    included: frozenset[str] = frozenset()
    #: the state file as last read or written here (mixlocks.file_signature)
    seen: tuple[int, int, int] | None = None


class Mixes:
    """Every take's server mix: state, the worker pool, and the ``take.mix`` announcements."""

    def __init__(
        self,
        store: SessionStore,
        takes: Takes,
        fanout: Fanout,
        track_path: Callable[[str], Path],
        *,
        workers: int = 2,
        memory: Path | None = None,
        memory_bytes: int = 0,
    ) -> None:
        self.store = store
        self.takes = takes
        self.fanout = fanout
        self.track_path = track_path
        self.workers = workers
        #: A folder in memory (tmpfs) where the takes' mixes work, and how many bytes they
        #: may hold there (:class:`tutti.server.mixwork.MixWork`); None: in each take's folder.
        self.work = None if memory is None else MixWork(memory, memory_bytes)
        self._mixing: dict[str, int] = {}  # mixes submitted and not done, by take
        self._pool: ProcessPoolExecutor | None = None
        self._stop: EventLike = threading.Event()  # the pool's, once it starts: set to stop
        self._running = False
        self._jobs: set[Future[Any]] = set()  # submitted to the workers, not done yet
        #: pass 1 jobs by take, not done yet, with their recordings
        self._preparing: dict[str, dict[Future[None], str]] = {}
        self._mixes: dict[str, _TakeMixes] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # references to running mix tasks
        #: Refuses a singer's stored recording that its pass 1 could not decode, given the
        #: take, the singer, the file and why (:meth:`TakeUploadHooks.refuse_damaged`).
        self.refuse: Callable[[str, str, str, str], Awaitable[bool]] | None = None

    @property
    def busy(self) -> bool:
        """Whether a mix or a recording's pass 1 is being made (or waits for a worker)."""
        return bool(self._tasks) or bool(self._jobs)

    # ------------------------------------------------------------------ where

    def out_dir(self, take: Take) -> Path:
        return self.takes.folder(take.session_id, take.take_id) / MIX_DIR

    def work_dir(self, take: Take) -> Path:
        """Where the take's mixes work: their scratch and each recording's kept pass 1 (in
        memory when the take fits there)."""
        if self.work is None or not self.work.fits(take.take_id, _recorded_bytes(take)):
            return self.out_dir(take)
        return self.work.folder(take.take_id)

    def prepared(self, take: Take) -> Path:
        """Where the take's recordings are kept for its mixes (:mod:`tutti.mix.prepared`)."""
        return self.work_dir(take) / _PREPARED

    def file(self, take: Take, fmt: str) -> tuple[Path, str] | None:
        """(path, sha256) of the take's last finished mix in ``fmt``, None if there is none."""
        made = self._load(take).made
        if made is None:
            return None
        return made.path(self.out_dir(take), fmt), made.sha256[fmt]

    # ------------------------------------------------------------------ state

    def status(self, take: Take) -> TakeMix:
        """The take's mix as the API and ``take.mix`` show it."""
        status = self._load(take).status
        if status.state == "waiting":
            return replace(status, detail=self._waiting_for(take))
        return status

    @staticmethod
    def _waiting_for(take: Take) -> str:
        left = [s for s in take.singers if s.state not in _SETTLED]
        if take.state != "stopped":
            return f"the take is {take.state}; the mix is made once it stops and uploads end"
        if not left:  # settled without one recording: nothing will ever be mixed
            return "no recording was uploaded: nothing to mix"
        return f"waiting for {len(left)} of {len(take.singers)} recordings to upload"

    def _load(self, take: Take) -> _TakeMixes:
        """The take's mix state, read again when another process wrote it since (the object
        stays the same, so a mix that holds it sees the news).  Blocking, but only a stat
        unless the file changed."""
        path = self.takes.folder(take.session_id, take.take_id) / _STATUS
        mixes = self._mixes.get(take.take_id)
        if mixes is None:
            mixes = self._mixes[take.take_id] = self._read(take)
        elif mixes.seen != file_signature(path) and path.exists():
            fresh = self._read(take)
            mixes.status, mixes.made, mixes.included = fresh.status, fresh.made, fresh.included
            mixes.seen = fresh.seen
        return mixes

    def _read(self, take: Take) -> _TakeMixes:
        """The take's mix as its state file holds it (waiting when there is none)."""
        blank = _TakeMixes(TakeMix(take.take_id, "waiting"))
        folder = self.takes.folder(take.session_id, take.take_id)
        try:
            path = folder / _STATUS
            if not path.exists():
                path = folder / _OLD_STATUS
            seen = file_signature(path)
            raw = json.loads(path.read_text(encoding="utf-8"))
            status = TakeMix.from_dict(raw["status"], path.name)
            made = raw["made"]  # written by _save: always there, null before a mix is made
            if made is not None:
                made = MixMade(
                    int(made["version"]),
                    float(made["duration_s"]),
                    dict(made["sha256"]),
                    tuple(made["files"]),
                )
            # written by _save since the shared state; an older file has no such key
            included = frozenset(str(f) for f in (raw["included"] if "included" in raw else ()))
        except FileNotFoundError:
            return blank
        except (OSError, ValueError, KeyError, TypeError, WireError) as exc:
            log.warning("event=mix_status_unreadable take=%s error=%s", take.take_id, exc)
            return blank
        if status.state == "mixing" and not anyone_mixing(folder):
            # the process mixing it stopped (a restart, a crash): it is made again
            status = replace(status, state="failed", detail="interrupted by a server restart")
        return _TakeMixes(status, made, included, seen)

    def _save(self, take: Take, mixes: _TakeMixes) -> None:
        made = mixes.made
        doc: dict[str, Any] = {
            "status": mixes.status.to_dict(),
            "made": None
            if made is None
            else {
                "version": made.version,
                "duration_s": made.duration_s,
                "sha256": made.sha256,
                "files": list(made.files),
            },
            "included": sorted(mixes.included),
        }
        path = self.takes.folder(take.session_id, take.take_id) / _STATUS
        write_json_atomic(path, doc)
        mixes.seen = file_signature(path)

    async def _announce(self, take: Take, mixes: _TakeMixes, status: TakeMix) -> None:
        """Coroutine: make ``status`` the take's mix state (at once: a remix asked for while
        it is written counts from it), write it, then tell the session."""
        previous, mixes.status = mixes.status, status
        if self.store.get_take(take.take_id) is None:  # deleted meanwhile: leave nothing
            self._mixes.pop(take.take_id, None)
            folder = self.takes.folder(take.session_id, take.take_id)
            await asyncio.to_thread(_remove_deleted, folder)
            return
        try:
            await asyncio.to_thread(self._save, take, mixes)
        except BaseException:
            if mixes.status is status:  # never show a state the file does not hold
                mixes.status = previous
            raise
        await self.fanout.to_session(take.session_id, Ev.TAKE_MIX, self.status(take))

    async def forget_removed(self, take: Take) -> None:
        """Coroutine: a singer deleted their recording of ``take``: the mixes holding it and
        its prepared pass 1 go at once, and the take is mixed again without it."""
        mixes = self._load(take)
        now = {s.recording.file for s in take.singers if s.recording is not None}
        made = mixes.made
        if made is None or set(made.files) <= now:
            return
        log.info(
            "event=mix_forgets take=%s recordings=%d", take.take_id, len(made.files) - len(now)
        )
        mixes.made = None
        await asyncio.to_thread(_forget, self.out_dir(take), self.prepared(take), now)
        if now and self.uploads_complete(take):
            await self.start(take)
        else:
            await self._announce(
                take, mixes, TakeMix(take.take_id, "waiting", version=made.version)
            )

    # ------------------------------------------------------------------ when

    @staticmethod
    def uploads_complete(take: Take) -> bool:
        """Whether nothing more will arrive for ``take``: stopped, every singer settled."""
        return take.state == "stopped" and all(s.state in _SETTLED for s in take.singers)

    async def upload_settled(self, take_id: str, participant_id: str) -> None:
        """Coroutine: a singer's upload of ``take_id`` ended (stored or refused).  A stored
        recording's pass 1 is queued for the workers at once; when it was the last upload,
        the take is mixed, and the mix makes its pass 1 (one job fewer to wait for)."""
        take = self.store.get_take(take_id)
        if take is None:
            return
        me = take.singer(participant_id)
        file = None if me is None or me.recording is None else me.recording.file
        if not self.uploads_complete(take):
            if file is not None:
                await self._prepare(take, file)
            return
        # the last upload starts the mix; uploads ending together all see the take complete,
        # so a recording the latest mix already has starts nothing (a late one: a new mix)
        mixes = self._load(take)
        late = file is not None and file not in mixes.included
        if mixes.status.state in ("waiting", "failed") or late:
            await self.start(take)

    async def take_stopped(self, take_id: str) -> None:
        """Coroutine: ``take_id`` was stopped; when every upload ended before that (or the
        stop settled the last singers as missed), the stop is what completes it: mix it."""
        take = self.store.get_take(take_id)
        if take is None or not self.uploads_complete(take):
            return
        if not any(s.recording is not None for s in take.singers):
            return
        if self._load(take).status.state in ("waiting", "failed"):
            await self.start(take)

    async def remix(self, p: Principal, take_id: str, payload: Any) -> TakeMix:
        """Coroutine: mix ``take_id`` again with the leader's gains and mutes (202)."""
        take = self.takes.get(p, take_id)
        try:
            req = MixRequest.from_dict({} if payload is None else payload, "the body")
            gains = req.checked_gains()
        except WireError as exc:
            raise BadRequest(str(exc), code="bad_mix") from None
        singers = {s.participant_id for s in take.singers if s.recording is not None}
        unknown = sorted((set(gains) | set(req.muted)) - singers)
        if unknown:
            raise BadRequest(self._not_in_mix(take, unknown), code="bad_mix")
        if not singers:
            raise Conflict(
                f"take {take_id} has no uploaded recording to mix", code="nothing_to_mix"
            )
        gains = {pid: db for pid, db in gains.items() if db != 0.0}
        return await self.start(take, gains, tuple(sorted(set(req.muted))))

    def _not_in_mix(self, take: Take, unknown: list[str]) -> str:
        """Why a remix naming ``unknown`` (participant ids) is refused, in the singers' names
        (a leader never sees an id)."""
        by_id = {s.participant_id: s for s in take.singers}
        said = []
        for pid in unknown[:5]:
            singer = by_id.get(pid)
            person = self.store.get_participant(pid) if singer is None else None
            if singer is not None:
                said.append(f"{singer.name} ({singer.state})")
            elif person is not None and person.session_id == take.session_id:
                said.append(f"{person.name} (not in this take)")
            else:
                said.append("someone who is not in this session")
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        names = sorted(s.name for s in take.singers if s.recording is not None)
        can = ", ".join(names[:50]) + (", …" if len(names) > 50 else "")
        return (
            f"no recording of this take from {', '.join(said)}{more}; "
            f"singers whose level you can change: {can or 'none yet'}"
        )

    async def start(
        self,
        take: Take,
        gains_db: dict[str, float] | None = None,
        muted: tuple[str, ...] | None = None,
    ) -> TakeMix:
        """Coroutine: announce ``mixing`` and start the next version of the take's mix in a
        worker (gains and mutes as the last mix's when not given).  The version is numbered
        under the take's state lock, so processes sharing the data folder never number one
        twice."""
        mixes = self._load(take)
        status = self._next(take, mixes, gains_db, muted)
        # claimed at once: uploads ending together see the take mixing and start nothing
        previous, mixes.status = mixes.status, status
        folder = self.takes.folder(take.session_id, take.take_id)
        try:
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            async with state_lock(folder):
                seen = mixes.seen
                self._load(take)
                if mixes.seen != seen:  # another process wrote the state: number after it
                    status = self._next(take, mixes, gains_db, muted)
                mark = await asyncio.to_thread(Mixing.take, folder)
                try:
                    await self._announce(take, mixes, status)
                except BaseException:
                    mark.release()
                    raise
        except BaseException:
            if mixes.status is status:
                mixes.status = previous
            raise
        task = asyncio.create_task(self._marked(take, status, mark))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return status

    def _next(
        self,
        take: Take,
        mixes: _TakeMixes,
        gains_db: dict[str, float] | None,
        muted: tuple[str, ...] | None,
    ) -> TakeMix:
        """The next version after ``mixes``' (gains and mutes as its when not given); the
        recordings it starts with become ``mixes.included``."""
        now = self.store.get_take(take.take_id) or take
        mixes.included = frozenset(s.recording.file for s in now.singers if s.recording)
        last = mixes.status
        gains = last.gains_db if gains_db is None else gains_db
        mute = last.muted if muted is None else muted
        return TakeMix(take.take_id, "mixing", "mixing on the server", last.version + 1,
                       gains, mute)  # fmt: skip

    async def _marked(self, take: Take, status: TakeMix, mark: Mixing) -> None:
        """Coroutine: :meth:`_run`, holding the take's mixing mark until it ends.

        A signal may reach the worker without the server (Ctrl-C reaches the whole process
        group, systemd signals every process of the unit): while the server runs on, the mix
        is made again at once; a server that stops makes it at its next start."""
        try:
            await self._run(take, status)
        except Interrupted as exc:
            again = self._running
            log.info("event=mix_interrupted take=%s version=%d signal=%s again=%s",
                     take.take_id, status.version, exc, again)  # fmt: skip
        else:
            again = False
        finally:
            mark.release()
        if again:
            await self.start(take)

    async def _settle(
        self, take: Take, mixes: _TakeMixes, status: TakeMix, made: MixMade | None = None
    ) -> bool:
        """Coroutine: announce how version ``status.version`` ended (with the mix it
        ``made``), unless a newer version was started meanwhile (here or by another
        process): whether it was announced."""
        folder = self.takes.folder(take.session_id, take.take_id)
        async with state_lock(folder):
            self._load(take)  # as the other processes left it
            if mixes.status.version != status.version:
                return False
            if made is not None:
                mixes.made = made
            await self._announce(take, mixes, status)
        return True

    async def _run(self, take: Take, status: TakeMix) -> None:
        mixes = self._load(take)
        take = self.store.get_take(take.take_id) or take
        recorded = _recorded(take)
        if not recorded:
            failed = replace(
                status, state="failed", detail="no recording was uploaded: nothing to mix"
            )
            await self._announce(take, mixes, failed)
            return
        folder = self.takes.folder(take.session_id, take.take_id)
        manifest = self.takes.manifest(Principal("leader", take.session_id), take.take_id)
        job = MixJob(str(folder), str(self.out_dir(take)), status.version,
                     *_choices(take, status), manifest.rate,
                     tuple(sorted(recorded.values())),
                     work_dir=str(self.work_dir(take)))  # fmt: skip
        self._mixing[take.take_id] = self._mixing.get(take.take_id, 0) + 1
        try:
            await asyncio.to_thread(prepare_folder, folder, manifest, self.track_path)
            queued = time.monotonic()
            job = replace(job, awaited=self._in_flight(take.take_id))
            made = await asyncio.wrap_future(await self._submit_for(take, make_mix, job))
        except Exception as exc:  # the mix's own errors say what was wrong in one line
            if await self._mix_again_without(take, exc, recorded):
                return
            log.warning("event=mix_failed take=%s error=%s", take.take_id, exc)
            failed = replace(status, state="failed", detail=_plain_words(exc))
            await self._settle(take, mixes, failed)
            return
        finally:
            self._mixing[take.take_id] -= 1
            if not self._mixing[take.take_id]:
                del self._mixing[take.take_id]
            if self.store.get_take(take.take_id) is None:  # removed while it was mixed
                await self.takes_removed()
        files = MixFiles(*(self._url(take, fmt) for fmt in ("opus", "flac")))
        ready = replace(status, state="ready", detail="", duration_s=made.duration_s, files=files)
        if not await self._settle(take, mixes, ready, made):
            return  # a newer remix was asked for meanwhile: it is the one announced
        await asyncio.to_thread(_remove_other_versions, self.out_dir(take), made)
        waited = time.monotonic() - queued
        log.info("event=mix_ready take=%s version=%d queued_to_done_s=%.2f", take.take_id,
                 made.version, waited)  # fmt: skip
        now = self.store.get_take(take.take_id)
        if now is not None and set(_recorded(now).values()) - set(made.files):
            # its take.json was rewritten by an older job of the take, without a later one
            log.warning("event=mix_again_with take=%s", take.take_id)
            await self.start(now)

    async def _prepare(self, take: Take, file: str) -> None:
        """Coroutine: queue pass 1 of one recording (a failure is the mix's to report)."""
        folder = self.takes.folder(take.session_id, take.take_id)
        manifest = self.takes.manifest(Principal("leader", take.session_id), take.take_id)
        try:
            await asyncio.to_thread(prepare_folder, folder, manifest, self.track_path)
        except OSError as exc:
            log.warning("event=prepare_failed take=%s error=%s", take.take_id, exc)
            return
        # the take.json the mix will read if every singer still to come uploads
        expected = tuple(
            (None if s.recording is None else s.recording.file, s.part)
            for s in take.singers
            if s.recording is not None or s.state not in _SETTLED
        )
        status = self._load(take).status
        job = PrepareJob(str(folder), str(self.work_dir(take)), file, expected,
                         *_choices(take, status))  # fmt: skip
        queued = time.monotonic()
        future = await self._submit_for(take, prepare_recording, job)
        future.add_done_callback(partial(_prepared, job, queued))
        self._preparing.setdefault(take.take_id, {})[future] = file
        loop = asyncio.get_running_loop()

        def ended(done: Future[None]) -> None:  # in the pool's thread: handed to the loop
            with contextlib.suppress(RuntimeError):  # the loop closed (the server stopped)
                loop.call_soon_threadsafe(self._prepare_ended, take.take_id, done)

        future.add_done_callback(ended)

    def _prepare_ended(self, take_id: str, future: Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if isinstance(exc, DamagedAudio) and self._running:
            self._spawn(self._refused_on_arrival(take_id, exc))
        pending = self._preparing.get(take_id)
        if pending is not None:
            pending.pop(future, None)
            if not pending:
                del self._preparing[take_id]
        if self._running and self.store.get_take(take_id) is None:  # removed meanwhile
            self._spawn(self.takes_removed())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ damaged recordings

    async def _refuse_damaged(
        self, take_id: str, exc: DamagedAudio, recorded: dict[str, str]
    ) -> str | None:
        """Coroutine: refuse the recording of ``recorded`` (files by singer) that ``exc``
        found damaged (unless refused before): its singer, None for a backing's."""
        owner = _owner(recorded, exc)
        if owner is not None and self.refuse is not None:
            await self.refuse(take_id, owner, recorded[owner], str(exc))
            await self._rewrite_manifest(take_id)
        return owner

    async def _rewrite_manifest(self, take_id: str) -> None:
        """Coroutine: write the take folder's ``take.json`` as the take now is (the next pass 1
        to read it must not look for a recording refused since)."""
        take = self.store.get_take(take_id)
        if take is None:
            return
        folder = self.takes.folder(take.session_id, take_id)
        manifest = self.takes.manifest(Principal("leader", take.session_id), take_id)
        with contextlib.suppress(OSError):  # the next mix or pass 1 writes it again
            await asyncio.to_thread(prepare_folder, folder, manifest, self.track_path)

    async def _refused_on_arrival(self, take_id: str, exc: DamagedAudio) -> None:
        """Coroutine: a recording's pass 1 found it damaged: refuse it; when it was the last
        one awaited, the take is mixed without it."""
        take = self.store.get_take(take_id)
        if take is None:
            return
        owner = await self._refuse_damaged(take_id, exc, _recorded(take))
        if owner is not None:
            await self.upload_settled(take_id, owner)

    async def _mix_again_without(
        self, take: Take, exc: Exception, recorded: dict[str, str]
    ) -> bool:
        """Coroutine: when the mix failed on a recording found damaged, or one of the
        recordings it started with (``recorded``) was refused or deleted while it ran, start
        the take's next mix without it (a damaged one refused first): whether it did."""
        now = self.store.get_take(take.take_id)
        if now is not None and isinstance(exc, DamagedAudio):
            # another mix of the take may have rewritten take.json with later recordings
            await self._refuse_damaged(take.take_id, exc, {**recorded, **_recorded(now)})
            now = self.store.get_take(take.take_id)
        if now is None:
            return False
        current = _recorded(now)
        gone = isinstance(exc, DamagedAudio) and _owner(current, exc) is None
        if not gone and set(recorded.values()) <= set(current.values()):
            return False  # the same recordings would fail the same way: this mix says why
        log.warning("event=mix_again_without take=%s error=%s", take.take_id, exc)
        await self.start(now)
        return True

    def _in_flight(self, take_id: str) -> tuple[str, ...]:
        """The take's recordings whose pass 1 jobs are queued or running: the mix, queued
        after them, waits for each one's kept pass 1 rather than making it again beside it
        (on a busy machine a second core is not free: the same work twice only delays it)."""
        return tuple(sorted(set(self._preparing.get(take_id, {}).values())))

    @staticmethod
    def _url(take: Take, fmt: str) -> str:
        return f"/api/session/takes/{take.take_id}/mix/mix.{fmt}"

    # ------------------------------------------------------------------ workers

    async def takes_removed(self) -> None:
        """Coroutine: takes were removed for good; what their mixes held in memory goes
        (a take still being mixed: once its jobs end)."""
        if self.work is None:
            return
        async with self.work.lock:
            busy = set(self._preparing) | set(self._mixing)
            await self.work.trim(busy, lambda take_id: self.store.get_take(take_id) is None)

    async def _submit_for(self, take: Take, fn: Callable[[_J], _R], job: _J) -> Future[_R]:
        """Coroutine: :meth:`_submit` a job of ``take``; with the mixes working in memory,
        the takes that went and the least recently used ones beyond its bytes go first
        (never one whose jobs are queued or running: a submitted job counts from here)."""
        if self.work is None:
            return self._submit(fn, job)
        async with self.work.lock:
            busy = set(self._preparing) | set(self._mixing) | {take.take_id}
            await self.work.trim(busy, lambda take_id: self.store.get_take(take_id) is None)
            return self._submit(fn, job)

    def _submit(self, fn: Callable[[_J], _R], job: _J) -> Future[_R]:
        if not self._running:
            raise RuntimeError("the mix workers are not running (Mixes.run not entered)")
        if self._pool is None:  # started with the first job: a server that mixes nothing
            ctx = multiprocessing.get_context("spawn")  # no copy of the event loop's state
            self._stop = ctx.Event()
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_start_worker,
                initargs=(os.getpid(), self._stop),
            )
            for _ in range(self.workers):  # one each: the pool starts a process per job
                self._pool.submit(_job, warm_up)
        future = self._pool.submit(_job, fn, job)
        self._jobs.add(future)
        future.add_done_callback(self._jobs.discard)
        return future

    async def run(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: mix the takes whose uploads completed while the server
        was down; at the end, stop the workers (started by the first job)."""
        self._running = True
        if self.work is not None:
            await asyncio.to_thread(self.work.open)
        await self._resume()
        try:
            yield
        finally:
            self._running = False
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            pool, self._pool = self._pool, None
            if pool is not None:
                # a mix cut short is made again at the next start (its state says interrupted)
                self._stop.set()
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
            if self.work is not None:
                await asyncio.to_thread(self.work.close)

    async def _resume(self) -> None:
        """Mix every take whose uploads are complete and which has no finished mix."""
        takes_dir = self.takes.takes_dir
        folders = await asyncio.to_thread(lambda: sorted(takes_dir.glob("*/*")))
        for folder in folders:
            take = self.store.get_take(folder.name)
            if take is None or not self.uploads_complete(take):
                continue
            if not any(s.recording is not None for s in take.singers):
                continue
            mixes = self._load(take)
            if mixes.status.state not in ("ready", "mixing"):  # mixing: by a live process
                log.info("event=mix_resumed take=%s", take.take_id)
                await self.start(take)


def _recorded(take: Take) -> dict[str, str]:
    """The take's stored recordings: their files (as take.json names them) by singer."""
    return {s.participant_id: s.recording.file for s in take.singers if s.recording}


def _owner(recorded: dict[str, str], exc: DamagedAudio) -> str | None:
    """The singer of ``recorded`` (files by singer) whose file ``exc`` found damaged, None
    when it is none of theirs (a backing's)."""
    name = Path(exc.path).name
    return next((pid for pid, file in recorded.items() if Path(file).name == name), None)


def _recorded_bytes(take: Take) -> int:
    """What the take's recordings hold as float32 samples (mono), from its length: stopped
    (arm to stop), or the longest it may run."""
    seconds = float(take.settings.max_take_seconds)
    if take.stopped_at is not None:
        seconds = min(seconds, max(0.0, take.stopped_at - take.created_at))
    return int(len(take.singers) * seconds * take.settings.rate * 4)


def _remove_deleted(folder: Path) -> None:
    """What a mix of a take deleted meanwhile made goes, with the folders it recreated."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # the session's folder, if nothing else is in it
        folder.parent.rmdir()


def _forget(out: Path, kept: Path, keep_files: set[str]) -> None:
    """Every mix file in ``out``, and the pass 1 kept in ``kept`` of recordings not in
    ``keep_files``, go."""
    from tutti.mix import prepared

    for old in out.glob("mix-*.*"):
        old.unlink(missing_ok=True)
    prepared.forget(kept, keep_files)


def _remove_other_versions(out: Path, made: MixMade) -> None:
    """The files of every mix but ``made`` (the one served from now on) go."""
    keep = {made.path(out, fmt) for fmt in made.sha256}
    for old in out.glob("mix-*.*"):
        if old not in keep:
            old.unlink(missing_ok=True)


def _prepared(job: PrepareJob, queued: float, future: Future[None]) -> None:
    """A recording's pass 1 ended: a failure is logged (the mix meets it again and says it)."""
    exc = None if future.cancelled() else future.exception()
    if isinstance(exc, Interrupted):  # the server stopped: the mix makes its pass 1 again
        log.info("event=prepare_interrupted file=%s", job.file)
    elif exc is not None:
        log.warning("event=prepare_failed file=%s error=%s", job.file, exc)
    else:
        waited = time.monotonic() - queued
        log.info("event=prepared file=%s queued_to_done_s=%.2f", job.file, waited)


def _plain_words(exc: BaseException) -> str:
    """A failed mix's detail for the leader: the mix's own sentence, or what kind of error."""
    text = str(exc).strip() or type(exc).__name__
    return f"the mix failed: {text}"[:2000]
