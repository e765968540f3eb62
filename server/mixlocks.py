"""One take's mix state shared by every server process on the data folder (``tutti serve
--workers N``, or several hosts on one NFS folder): file locks beside ``mix-status.json``.

- :func:`state_lock` — exclusive while a process changes the state (the next version is
  numbered, a mix is declared ready): no two processes number one version twice, and a mix
  that was overtaken by a newer remix elsewhere does not overwrite it.
- :class:`Mixing` — shared while a process is mixing the take (from ``mixing`` being
  announced until ``ready`` or ``failed``).  The kernel drops it with the process, so a
  ``mixing`` state that nobody holds it for was interrupted (:func:`anyone_mixing`).

``flock`` locks whole files; on NFS (v4) Linux maps them onto the server's byte-range locks.
Blocking calls: run them in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["STATE_LOCK", "MIXING_LOCK", "Mixing", "anyone_mixing", "file_signature", "state_lock"]

STATE_LOCK = "mix-status.lock"
MIXING_LOCK = "mixing.lock"


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _locked(path: Path, how: int) -> int:
    fd = _open(path)
    try:
        fcntl.flock(fd, how)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.asynccontextmanager
async def state_lock(folder: Path) -> AsyncIterator[None]:
    """Coroutine context: hold the take's state lock (exclusive; waited for in a thread)."""
    fd = await asyncio.to_thread(_locked, folder / STATE_LOCK, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


class Mixing:
    """The mark of a mix running in this process: a shared lock on ``mixing.lock``."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def take(cls, folder: Path) -> Mixing:
        """Mark ``folder``'s take as being mixed here (blocking: a probe holds it briefly)."""
        return cls(_locked(folder / MIXING_LOCK, fcntl.LOCK_SH))

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def anyone_mixing(folder: Path) -> bool:
    """Whether some process (this one included) holds the mixing mark of ``folder``'s take."""
    try:
        fd = _open(folder / MIXING_LOCK)
    except FileNotFoundError:  # no take folder (deleted): nobody mixes it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime in ns, size) of ``path``, None when there is none: the state file is
    replaced by a rename on every write, so a new signature means someone wrote it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
