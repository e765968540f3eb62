"""Raw float32 scratch files for ``tutti mix``: decoded recordings and the stereo bus on disk.

The mixer (:mod:`tutti.audio.mixdown`) reads recordings and its bus by range
(:class:`~tutti.audio.mixdown.Source`, :class:`~tutti.audio.mixdown.Bus`).  Holding them in
memory would make memory grow with the length of the take (a five-minute mono recording is
57 MB of float32, the stereo bus 115 MB), so ``tutti mix`` decodes each recording once into a
raw file of native-endian float32 frames in a scratch folder beside the output, and keeps the
bus in another.  They are read and written with ``os.preadv`` / ``os.pwrite`` — positional,
thread-safe, into preallocated arrays — not memory-mapped: pages of a mapping a process has
touched count in its resident size, pages in the kernel's file cache do not.

:func:`keep_freed_blocks` tunes glibc's allocator for this block-by-block work.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tutti.audio.types import AudioArray

__all__ = ["RawAudio", "keep_freed_blocks"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_ARENA_MAX = 2  # the mix's threads share two heaps
_MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
_TRIM_THRESHOLD = 256 << 20


def keep_freed_blocks() -> bool:
    """Let glibc's malloc reuse freed block-sized buffers instead of handing them back to the
    kernel and faulting fresh zeroed pages in for the next block.

    The mix allocates and frees arrays of 0.1–2 MB for every block (numpy, scipy and the
    decoders allocate their results).  By default glibc serves each from a fresh ``mmap`` (or
    trims its heap after the free), so every block costs page faults.  Raising the mmap
    threshold to 32 MB and the trim threshold to 256 MB keeps those buffers in the heap, with
    the same peak memory (the faults and system time saved: docs/benchmarks-mix.md).  The
    threads share two heaps: glibc gives each thread its own (up to 8 per core), and each
    kept what its thread freed, 60-100 MB more at the peak of a 32-singer mix.  Call it
    before the mix starts its threads.

    Returns
    -------
    bool
        Whether the setting was applied (glibc only; elsewhere nothing is changed).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        and mallopt(_M_ARENA_MAX, _ARENA_MAX)
    )


def stores_int16(subtype: str) -> bool:
    """Whether a file of this libsndfile ``subtype``, decoded at its own rate, is kept as
    int16 (:class:`RawAudio`): exact for 16-bit samples, and half the bytes."""
    return subtype == "PCM_16"


class RawAudio:
    """A raw file of audio frames (frames, channels), written by appending or by range, read
    as float32.

    Parameters
    ----------
    path : Path
        Created (or truncated).
    channels : int
    frames : int
        Initial length: that many frames of zeros (a sparse file; used for the bus).
    int16 : bool
        Store 16-bit integers (for 16-bit files: exact, and half the bytes); blocks are then
        written as int16 and read back as float32 in [-1, 1) (sample / 32768, as libsndfile
        reads them).

    Notes
    -----
    Reads and range writes may come from several threads at once; :meth:`append` is for
    one writer.
    """

    def __init__(self, path: Path, channels: int, frames: int = 0, *, int16: bool = False) -> None:
        self.path = path
        self.channels = channels
        self.dtype = np.dtype(np.int16 if int16 else np.float32)
        self._size = self.dtype.itemsize
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._frames = 0
        if frames:
            os.ftruncate(self._fd, frames * channels * self._size)
            self._frames = frames

    @classmethod
    def existing(cls, path: Path, channels: int, frames: int, *, int16: bool = False) -> RawAudio:
        """A raw file written earlier (kept by :mod:`tutti.mix.prepared`), opened as it is;
        ``ValueError`` when its size is not ``frames`` frames of ``channels``."""
        raw = cls.__new__(cls)
        raw.path = path
        raw.channels = channels
        raw.dtype = np.dtype(np.int16 if int16 else np.float32)
        raw._size = raw.dtype.itemsize
        raw._fd = os.open(path, os.O_RDWR)
        raw._frames = frames
        if os.fstat(raw._fd).st_size != frames * channels * raw._size:
            raw.close()
            raise ValueError(f"{path}: not {frames} frames of {channels} channel(s)")
        return raw

    @property
    def frames(self) -> int:
        """Length, frames."""
        return self._frames

    def _fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: raw audio file is closed")
        return self._fd

    def append(self, block: AudioArray | npt.NDArray[np.int16]) -> None:
        """Write ``block`` ((n, channels), of :attr:`dtype`) after the last frame."""
        self.write(self._frames, block)

    def write(self, lo: int, block: AudioArray | npt.NDArray[np.int16]) -> None:
        """Overwrite (or extend to) frames [lo, lo + len(block))."""
        if block.shape[0] == 0:
            return
        if block.dtype != self.dtype:
            raise ValueError(f"{self.path}: {block.dtype} block; expected {self.dtype}")
        data = np.ascontiguousarray(block)
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(
                f"{self.path}: block shape {data.shape}; expected (n, {self.channels})"
            )
        view = data.reshape(-1).view(np.uint8).data
        offset = lo * self.channels * self._size
        fd = self._fileno()
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
        self._frames = max(self._frames, lo + data.shape[0])

    def read(self, lo: int, hi: int) -> AudioArray:
        """Frames [lo, hi) as float32 (hi - lo, channels); zeros beyond the file's end."""
        out = np.zeros((max(0, hi - lo), self.channels), dtype=self.dtype)
        stop = min(hi, self._frames)
        if stop > lo:
            self._read_into(out[: stop - lo], lo)
        if self.dtype == np.float32:
            return out
        return np.multiply(out, np.float32(1.0 / 32768.0), dtype=np.float32)

    def read_mono(self, lo: int, hi: int) -> AudioArray:
        """Frames [lo, hi) folded to mono (the mean of the channels), (hi - lo,)."""
        block = self.read(lo, hi)
        if self.channels == 1:
            return block[:, 0]
        out: AudioArray = block.mean(axis=1, dtype=np.float32)
        return out

    def read_scaled(self, lo: int, hi: int) -> tuple[np.ndarray, float]:
        """Frames [lo, hi) as stored (:attr:`dtype`; zeros beyond the file's end) and the
        factor that makes them float32 samples (1/32768 for int16, 1 for float32)."""
        out = np.empty((max(0, hi - lo), self.channels), dtype=self.dtype)
        stop = min(hi, self._frames)
        if stop > lo:
            self._read_into(out[: stop - lo], lo)
        out[max(0, stop - lo) :] = 0
        return out, (1.0 if self.dtype == np.float32 else 1.0 / 32768.0)

    def _read_into(self, out: np.ndarray, lo: int) -> None:
        view = out.reshape(-1).view(np.uint8).data
        offset = lo * self.channels * self._size
        fd = self._fileno()
        while view:
            got = os.preadv(fd, [view], offset)
            if got == 0:
                raise OSError(f"{self.path}: ended early (short read at byte {offset})")
            view, offset = view[got:], offset + got

    def close(self) -> None:
        """Close the file (it is left on disk: the scratch folder's owner removes it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
