"""Where the server's mixes work: a folder in memory, within a budget of bytes.

A take's mix writes far more than it keeps: 32 five-minute recordings leave 1.8 GB of kept
pass 1s (float32) beside their scratch files, the decoded backings, the parts' programs and
the group sums, about 3 GB per take.  On disk the kernel writes all of that back while the
next recordings arrive, and a mix waits behind the writeback (docs/benchmarks-mix.md).  None
of it needs to outlive the process: everything is made again from the take folder when it is
missing.  So one server process keeps it in a folder of its own on a tmpfs (``/dev/shm``),
``tutti-mix-<pid>-XXXXXXXX/<take_id>/``, removed when the server stops (and, after a
``kill -9``, by the next server that finds it).

The folder holds at most ``budget`` bytes: before a job is queued, the folders of deleted
takes go, and then the least recently used takes' until the rest fits (never a take whose
jobs are queued or running).  A take too large to fit beside nothing else works in its own
folder on disk (:meth:`MixWork.fits`).  A take whose folder went is mixed again from its
recordings (a remix then makes every pass 1 again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["MixWork", "default_memory", "PREFIX"]

PREFIX = "tutti-mix-"
log = logging.getLogger("tutti.mixing")
#: Bytes a take's mixes hold per byte of its recordings (as float32 samples): the kept
#: pass 1s, the decoded backings, programs and group sums, and one recording in scratch.
_PER_RECORDED_BYTE = 2.0
#: The share of the machine's memory a server keeps mixes in by default.
_DEFAULT_SHARE = 0.25


def default_memory() -> tuple[Path, int] | None:
    """``/dev/shm`` and a quarter of the machine's memory (at most half of what the tmpfs
    has free), or None when there is no such folder (the mixes then work on disk)."""
    shm = Path("/dev/shm")
    try:
        if not shm.is_dir() or not os.access(shm, os.W_OK | os.X_OK):
            return None
        fs = os.statvfs(shm)
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return None
    budget = min(int(total * _DEFAULT_SHARE), fs.f_bavail * fs.f_frsize // 2)
    return (shm, budget) if budget > 0 else None


class MixWork:
    """The takes' mix folders in memory (see the module's docstring).

    Parameters
    ----------
    memory : Path
        A folder on a tmpfs; this process makes its own folder in it.
    budget : int
        Bytes the takes' folders may hold together.
    """

    def __init__(self, memory: Path, budget: int) -> None:
        self.memory = memory
        self.budget = budget
        self.lock = asyncio.Lock()  # held while folders are trimmed and a job is queued
        self.root: Path | None = None
        self._used: dict[str, float] = {}  # take -> when a job of it was last queued
        self._on_disk: set[str] = set()  # takes too large for the budget

    def open(self) -> None:
        """Make this process's folder, after removing those of servers that are gone."""
        for old in self.memory.glob(f"{PREFIX}*"):
            pid = old.name.removeprefix(PREFIX).split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=self.memory))

    def close(self) -> None:
        """Remove this process's folder and everything in it."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def fits(self, take_id: str, recorded_bytes: int) -> bool:
        """Whether take ``take_id``, whose recordings hold ``recorded_bytes`` as float32
        samples, works here; decided at its first job and kept (its folder must not move)."""
        if take_id in self._used:
            return take_id not in self._on_disk
        if recorded_bytes * _PER_RECORDED_BYTE > self.budget:
            self._on_disk.add(take_id)
            log.info("event=mix_on_disk take=%s recorded_mb=%d budget_mb=%d", take_id,
                     recorded_bytes >> 20, self.budget >> 20)  # fmt: skip
        self._used[take_id] = 0.0
        return take_id not in self._on_disk

    def folder(self, take_id: str) -> Path:
        """The take's folder here (made by the jobs that write into it)."""
        if self.root is None:
            raise RuntimeError("the mixes' memory folder is not open (Mixes.run not entered)")
        return self.root / take_id

    async def trim(self, busy: Iterable[str], gone: Callable[[str], bool]) -> None:
        """Coroutine: remove the folders of takes ``gone`` says were deleted, then the least
        recently used until the rest holds at most the budget; ``busy`` takes stay (and
        count as used now)."""
        if self.root is None:
            return
        now = time.monotonic()
        keep = set(busy)
        for take_id in keep:
            self._used[take_id] = now
        usage = await asyncio.to_thread(_usage, self.root)
        victims = [t for t in usage if t not in keep and gone(t)]
        total = sum(b for t, b in usage.items() if t not in victims)
        for take_id in sorted(usage, key=lambda t: self._used.get(t, 0.0)):
            if total <= self.budget:
                break
            if take_id not in keep and take_id not in victims:
                victims.append(take_id)
                total -= usage[take_id]
        for take_id in victims:
            self._used.pop(take_id, None)
        if victims:
            await asyncio.to_thread(_remove, [self.root / t for t in victims])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _usage(root: Path) -> dict[str, int]:
    """Bytes each take's folder holds (blocks in use: sparse files count what they hold)."""
    return {d.name: _bytes(Path(d.path)) for d in os.scandir(root) if d.is_dir()}


def _bytes(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    total += _bytes(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
