"""Resampling with soxr at its high quality (20-bit, sox's own default), streaming: the one
resampler of the project.

``tutti mix`` feeds recordings through :class:`StreamResampler` block by block (a rate other
than the take's, or a clock that drifted); :func:`resample_whole` runs the same stream over
an array in memory (:func:`tutti.audio.align.resample`, :func:`tutti.audio.drift.correct_drift`).
"""

from __future__ import annotations

import numpy as np
import soxr

from .types import AudioArray

__all__ = ["StreamResampler", "resample_whole", "BLOCK", "QUALITY"]

BLOCK = 1 << 16  # frames per chunk when a whole array goes through the stream
#: soxr's 'HQ': its error lies 120 dB down, below any microphone's noise; 'VHQ' (28-bit)
#: costs a quarter more CPU in every drifting recording's pass 1 (docs/benchmarks-mix.md).
QUALITY = "HQ"


class StreamResampler:
    """soxr's streaming resampler (:data:`QUALITY`) for blocks of float32 (frames, channels);
    sample 0 stays at time 0.  Rates may be fractional (a drifting clock's true rate)."""

    def __init__(self, from_rate: float, to_rate: float, channels: int) -> None:
        self.channels = channels
        self._stream = soxr.ResampleStream(from_rate, to_rate, channels, quality=QUALITY)

    def __call__(self, block: AudioArray, last: bool = False) -> AudioArray:
        """The output for the next input ``block`` (``last``: and everything still held)."""
        out = self._stream.resample_chunk(np.ascontiguousarray(block, np.float32), last=last)
        return np.asarray(out, dtype=np.float32).reshape(-1, self.channels)

    def flush(self) -> AudioArray:
        """The output still held after the last block."""
        return self(np.zeros((0, self.channels), np.float32), last=True)


def resample_whole(audio: AudioArray, from_rate: float, to_rate: float) -> AudioArray:
    """``audio`` through a :class:`StreamResampler`, in blocks, as ``tutti mix`` does it."""
    stream = StreamResampler(from_rate, to_rate, audio.shape[1])
    parts = [stream(audio[a : a + BLOCK]) for a in range(0, audio.shape[0], BLOCK)]
    parts.append(stream.flush())
    return np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)
