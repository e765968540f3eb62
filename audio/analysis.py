"""What a recording measures before it is mixed: BS.1770 loudness, sample peak, clipped samples
(block by block, as it is decoded: :class:`VoiceAnalyser`; or at once: :func:`analyse`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tutti.audio.loudness import LoudnessMeter
from tutti.audio.types import AudioArray, AudioError

__all__ = ["SILENT_LUFS", "CLIP_LEVEL", "VoiceAnalysis", "VoiceAnalyser", "analyse"]

#: A recording quieter than this (integrated, LUFS) is reported as silent.
SILENT_LUFS = -60.0
#: A sample at or above this absolute value counts as clipped.
CLIP_LEVEL = 0.999


@dataclass(frozen=True)
class VoiceAnalysis:
    """What a recording measures: loudness (LUFS), sample peak (dBFS), clipped samples."""

    loudness_lufs: float
    peak_dbfs: float
    clipped: int

    @property
    def silent(self) -> bool:
        return not self.loudness_lufs > SILENT_LUFS


class VoiceAnalyser:
    """What :func:`analyse` measures, fed block by block (a recording as it is decoded).

    Parameters
    ----------
    rate : int
        Hz.
    channels : int
        Channels of the blocks fed.
    mono : bool
        Measure the loudness of the mono fold (the mean of the channels, as the mixer uses
        it) instead of the channels as a 1–5 channel programme (L, R, C, Ls, Rs).  Peak and
        clipping always look at every channel.
    """

    def __init__(self, rate: int, channels: int, *, mono: bool = True) -> None:
        self._mono = mono or channels > 5
        self._meter = LoudnessMeter(rate, 1 if self._mono else channels)
        self._peak = 0.0
        self._clipped = 0

    def feed(self, block: npt.NDArray[Any]) -> None:
        """Add the next block, (frames, channels): float32 samples, or the int16 samples of
        a 16-bit file (which stand for ``sample / 32768``, as libsndfile reads them).

        Raises
        ------
        AudioError
            The block holds NaN or infinite samples (possible only in float files).
        """
        if block.shape[0] == 0:
            return
        scale = 1.0 / 32768.0 if block.dtype == np.int16 else 1.0
        # max and min of the stored values: for int16 half the bytes of float32
        peak = max(float(block.max()), -float(block.min())) * scale
        if not math.isfinite(peak):
            raise AudioError("contains NaN or infinite samples")
        if peak >= CLIP_LEVEL:
            level = CLIP_LEVEL / scale
            self._clipped += int(np.count_nonzero((block >= level) | (block <= -level)))
        self._peak = max(self._peak, peak)
        if self._mono and block.shape[1] > 1:
            self._meter.feed(np.multiply(block.mean(axis=1, dtype=np.float64), scale)[:, None])
        else:  # the meter takes int16 samples as they are
            self._meter.feed(block)

    def result(self) -> VoiceAnalysis:
        """The analysis of everything fed so far."""
        peak_db = 20.0 * math.log10(self._peak) if self._peak > 0 else -math.inf
        return VoiceAnalysis(self._meter.integrated(), peak_db, self._clipped)


def analyse(
    audio: AudioArray, rate: int, block: int = 1 << 16, *, mono: bool = False
) -> VoiceAnalysis:
    """Loudness, sample peak and clipped-sample count of a recording (frames, channels).

    Parameters
    ----------
    audio : AudioArray
        The recording, (frames, channels).
    rate : int
        Hz.
    block : int
        Frames per block of the measurement.
    mono : bool
        See :class:`VoiceAnalyser`.

    Raises
    ------
    AudioError
        The recording holds NaN or infinite samples (possible only in float files).
    """
    meter = VoiceAnalyser(rate, audio.shape[1], mono=mono)
    for start in range(0, audio.shape[0], block):
        meter.feed(audio[start : start + block])
    return meter.result()
