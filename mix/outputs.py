"""Where ``tutti mix`` writes, and how it leaves nothing behind when it fails.

A mix works in one scratch folder, ``.tutti-mix-PID-XXXXXXXX`` beside its output (or in a
folder of its own: the server's mix works in memory): the recordings' raw scratch files, the
bus, and every output (the mix, the stems, the DAW projects) are written there.  Only when
all are complete are the outputs moved into place (``os.replace``, the mix last; from
another file system, copied beside their place first and renamed); if a move fails, those
already moved are taken back and the files they replaced restored.  On any failure — a bad
file, a full disk, Ctrl-C, SIGTERM — the scratch folder and every folder the mix created are
removed.

Signals: :class:`SignalGuard` turns SIGINT, SIGTERM and SIGHUP into :class:`Interrupted`, raised
in the main thread, so the same ``finally`` blocks clean up as after an error.  Creating and
removing folders and moving outputs into place run under :meth:`SignalGuard.hold`: a signal
that arrives then is raised when they are done, so they are never left half-way.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import FrameType, TracebackType

__all__ = [
    "LOSSY",
    "FORMATS",
    "BUS_NAME",
    "stem_dir_for",
    "SCRATCH_PREFIX",
    "Interrupted",
    "SignalGuard",
    "Workspace",
]

SCRATCH_PREFIX = ".tutti-mix-"
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


#: Lossy formats: ``tutti mix --format`` name -> (container, codec).
LOSSY = {"ogg": ("OGG", "VORBIS"), "opus": ("OGG", "OPUS")}
#: Every mix format: name -> (container, subtype or codec).
FORMATS = {"wav": ("WAV", "PCM_24"), "flac": ("FLAC", "PCM_24"), **LOSSY}
BUS_NAME = "bus.f32"  # the stereo bus in the scratch folder


def stem_dir_for(out_path: Path) -> Path:
    """The folder the stems of mix ``out_path`` go to."""
    return out_path.parent / f"{out_path.stem}-stems"


class Interrupted(BaseException):
    """A signal asked the mix to stop (a BaseException, like KeyboardInterrupt: no
    ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int]]:
        return (Interrupted, (self.signum,))  # a worker process hands it to its pool

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C)."""
        return 128 + self.signum


class SignalGuard:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread, once: a
    repeated signal is ignored while the cleanup runs.

    Use as a context manager around the whole command; the previous handlers come back at
    its end.  Signals a parent set to be ignored (``nohup``) stay ignored.  Outside the
    main thread (where Python cannot set handlers) it does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        #: set by :meth:`Workspace.commit`: a signal after it did not stop the outputs
        self.committed = False
        self._raised = False
        self._holding = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                old = signal.getsignal(sig)
                if old is not signal.SIG_IGN:
                    self._previous[sig] = old
                    signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._previous.clear()

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # the first one is being handled
        self.signum = signum
        if not self._holding:
            self._raised = True
            raise Interrupted(signum)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Defer a signal until the block is done (then raise it, unless raised already)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self.signum is not None and not self._raised:
            self._raised = True
            raise Interrupted(self.signum)


class Workspace:
    """The scratch folder beside ``main`` (the mix file) and the outputs written into it.

    Parameters
    ----------
    main : Path
        The mix file: its folder holds the scratch folder; it is moved into place last.
    guard : SignalGuard
        Holds signals while folders are made and removed and outputs are moved.
    scratch_in : Path, optional
        Where to make the scratch folder instead (made if missing).

    Use as a context manager: entering creates the output folder (and any missing parent)
    and the scratch folder; leaving removes the scratch folder, and after a failure also the
    folders it created (if empty).  :meth:`commit` moves the outputs into place.
    """

    def __init__(self, main: Path, guard: SignalGuard, scratch_in: Path | None = None) -> None:
        self.main = main
        self._guard = guard
        self._scratch_in = main.parent if scratch_in is None else scratch_in
        self._created: list[Path] = []  # folders this mix made, parents first
        self._pending: list[tuple[Path, Path]] = []  # (file in scratch, final path)
        self._names = itertools.count()  # stems are written from several threads
        self._before_removal: list[Callable[[], None]] = []
        self._scratch: Path | None = None

    @property
    def scratch(self) -> Path:
        """The scratch folder (exists between entering and leaving)."""
        if self._scratch is None:
            raise RuntimeError("the workspace is not open")
        return self._scratch

    def __enter__(self) -> Workspace:
        with self._guard.hold():
            try:
                self._make_dirs(self.main.parent)
                self._make_dirs(self._scratch_in)
                self._scratch = Path(
                    tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=self._scratch_in)
                )
            except BaseException:
                self._remove_created()
                raise
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._guard.hold():
            for stop_writing in self._before_removal:
                stop_writing()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
            if typ is not None:
                self._remove_created()

    def hold(self) -> AbstractContextManager[None]:
        """Defer a signal until the block is done (see :meth:`SignalGuard.hold`)."""
        return self._guard.hold()

    def before_removal(self, stop_writing: Callable[[], None]) -> None:
        """Call ``stop_writing`` before the scratch folder is removed: a thread that may still
        create files in it must stop first (or the removal could leave the folder behind)."""
        self._before_removal.append(stop_writing)

    def temp_for(self, final: Path) -> Path:
        """A new file in the scratch folder that :meth:`commit` moves to ``final``."""
        tmp = self.scratch / f"out{next(self._names):04d}{final.suffix}"
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        """Move every output into place, the mix last; all or none."""
        order = sorted(self._pending, key=lambda p: p[1] == self.main)
        moved: list[tuple[Path, Path | None]] = []  # (final, the file it replaced, kept)
        with self._guard.hold():
            try:
                for k, (tmp, final) in enumerate(order):
                    self._make_dirs(final.parent)
                    old = None
                    if final.is_symlink() or final.exists():  # kept beside it until the end
                        old = final.with_name(f"{SCRATCH_PREFIX}{os.getpid()}-old{k:04d}")
                        os.replace(final, old)
                    moved.append((final, old))
                    _move(tmp, final)
            except BaseException:
                for final, old in reversed(moved):
                    if old is not None:
                        os.replace(old, final)
                    else:
                        final.unlink(missing_ok=True)
                raise
            for _, old in moved:
                if old is not None:
                    old.unlink(missing_ok=True)
            self._pending.clear()
            self._guard.committed = True

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.is_dir():
            missing.append(folder)
            if folder.parent == folder:
                break
            folder = folder.parent
        for d in reversed(missing):
            self._created.append(d)  # first: an error in mkdir still leaves it to remove
            d.mkdir()

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                pass  # not empty (something else wrote there) or already gone
        self._created.clear()


def _move(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; from another file system, copy it beside ``final``
    first, so that ``final`` appears whole or not at all."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # a short name: a stem's own may already be as long as a file name can be
        near = final.with_name(f"{SCRATCH_PREFIX}{os.getpid()}-copy")
        try:
            shutil.copyfile(tmp, near)
            os.replace(near, final)
        except BaseException:
            near.unlink(missing_ok=True)
            raise
        tmp.unlink()
