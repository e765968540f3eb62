"""Where the mixdown reads recordings and writes the mix: the :class:`Source` and :class:`Bus`
interfaces, and their versions held in memory (``tutti mix`` uses raw scratch files on disk,
:class:`tutti.mix.scratch.RawAudio`, so nothing it holds grows with the take)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tutti.audio.types import AudioArray

__all__ = ["Source", "Bus", "ArraySource", "ArrayBus"]


class Source(Protocol):
    """A recording the mixer can read by range: ``frames`` frames of float32 audio."""

    @property
    def frames(self) -> int:
        """Length, frames."""
        ...

    def read(self, lo: int, hi: int) -> AudioArray:
        """Frames [lo, hi) with 0 ≤ lo ≤ hi ≤ frames: float32 (hi - lo, channels)."""
        ...

    def read_scaled(self, lo: int, hi: int) -> tuple[npt.NDArray[Any], float]:
        """Frames [lo, hi) as stored (float32, or int16 for a 16-bit recording) and the factor
        that makes them float32 samples: ``read(lo, hi) == stored * factor``."""
        ...


class Bus(Protocol):
    """The stereo timeline the mixer sums into: ``frames`` frames of float32 (frames, 2),
    zeros until written."""

    def read(self, lo: int, hi: int) -> AudioArray:
        """Frames [lo, hi) with 0 ≤ lo ≤ hi ≤ frames: float32 (hi - lo, 2)."""
        ...

    def write(self, lo: int, block: AudioArray) -> None:
        """Overwrite frames [lo, lo + len(block)) with ``block`` (float32 (n, 2))."""
        ...


class ArraySource:
    """A recording held in memory, as a :class:`Source`."""

    def __init__(self, audio: AudioArray) -> None:
        self.audio = audio

    @property
    def frames(self) -> int:
        return int(self.audio.shape[0])

    def read(self, lo: int, hi: int) -> AudioArray:
        return self.audio[lo:hi]

    def read_scaled(self, lo: int, hi: int) -> tuple[npt.NDArray[Any], float]:
        return self.audio[lo:hi], 1.0


class ArrayBus:
    """A bus held in memory (for :func:`mix_arrays`: frames × 8 bytes)."""

    def __init__(self, frames: int) -> None:
        self.data = np.zeros((frames, 2), dtype=np.float32)

    def read(self, lo: int, hi: int) -> AudioArray:
        return self.data[lo:hi]

    def write(self, lo: int, block: AudioArray) -> None:
        self.data[lo : lo + block.shape[0]] = block
