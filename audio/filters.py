"""High-pass filter against rumble (traffic, handling noise, breath pops), run block by block.

A Butterworth high-pass as second-order sections (:func:`scipy.signal.butter`), applied with
:func:`scipy.signal.sosfilt` and its state carried from one block to the next, so filtering a
signal in blocks gives the same samples as filtering it whole.  The filter is linear and
time-invariant, which lets the mixer apply it once to the sum of the voices instead of to
every voice.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import signal

from tutti.audio.types import AudioArray, AudioError

__all__ = ["DEFAULT_CUTOFF_HZ", "HighPass"]

#: Default cut-off (Hz): below the lowest sung bass note in most choir repertoire (E2 ≈ 82 Hz
#: lies just above; the 2nd-order slope costs it under 1 dB).
DEFAULT_CUTOFF_HZ = 70.0


class HighPass:
    """Streaming Butterworth high-pass.

    Parameters
    ----------
    rate : int
        Sample rate in Hz.
    channels : int
        Channel count of the blocks.
    cutoff_hz : float
        −3 dB frequency in Hz (10 Hz to a quarter of the rate).
    order : int
        Filter order (slope 6 dB/octave per order); 2–8.
    """

    def __init__(
        self, rate: int, channels: int, cutoff_hz: float = DEFAULT_CUTOFF_HZ, order: int = 2
    ) -> None:
        if not 10.0 <= cutoff_hz <= rate / 4:
            raise AudioError(
                f"high-pass: cut-off {cutoff_hz} Hz; accepted: 10 Hz to {rate // 4} Hz"
            )
        if not 2 <= order <= 8:
            raise AudioError(f"high-pass: order {order}; accepted: 2–8")
        self.sos: npt.NDArray[np.float64] = signal.butter(
            order, cutoff_hz, btype="highpass", fs=rate, output="sos"
        )
        self.channels = channels
        self._zi = np.zeros((self.sos.shape[0], 2, channels), dtype=np.float64)

    def process(self, block: AudioArray) -> AudioArray:
        """Filter the next block (frames, channels); returns float32 of the same shape."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise AudioError(
                f"high-pass: block shape {block.shape}; expected (frames, {self.channels})"
            )
        if block.shape[0] == 0:
            return block.astype(np.float32)
        out, self._zi = signal.sosfilt(self.sos, block, axis=0, zi=self._zi)
        return np.asarray(out, dtype=np.float32)
