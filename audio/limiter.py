"""True-peak measurement and a look-ahead true-peak limiter.

True peak is measured as ITU-R BS.1770-4 Annex 2 suggests: the signal is oversampled four
times (the FIR of :func:`scipy.signal.resample_poly`, run as its four polyphase branches by
:func:`tutti.audio.kernels.true_peak_rows`)
and the largest absolute value of the oversampled signal is taken, in dBTP (dB relative
to full scale).

The limiter is built so that it can run on independent blocks (and so on several cores):
the gain at frame ``n`` depends only on the input within ``pad`` frames of ``n``.  For every
frame it computes the gain the frame *needs* (``ceiling / true-peak envelope``, at most 1),
takes the minimum over ``±radius`` frames (look-ahead and hold), then smooths that with two
moving averages of half-width ``radius // 2``.  Every value averaged into frame ``n`` is a
minimum over a window that contains ``n``, so the smoothed gain never exceeds what frame ``n``
needs, while it moves in ramps of about ``2 * radius`` frames instead of jumps.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

from tutti.audio.kernels import true_peak_rows
from tutti.audio.types import AudioArray, AudioError

__all__ = [
    "OVERSAMPLE",
    "true_peak_envelope",
    "true_peak_db",
    "Limiter",
]

#: Oversampling factor of the true-peak meter.
OVERSAMPLE = 4
#: Frames of context the 4× interpolator needs on each side (its FIR spans 12 input frames).
_CONTEXT = 16
#: The interpolator: the same FIR that :func:`scipy.signal.resample_poly` designs for a 4×
#: upsampling (81 taps, Kaiser β = 5, cut-off at the original Nyquist frequency, gain 4).
#: Output phase ``p`` (the value at frame ``k + p/4``) is the input convolved with taps
#: ``p, p + 4, …``; phase 0 is the input times the centre tap (its other taps are the windowed
#: sinc's zeros).  Run in float32, the result equals ``resample_poly(x, 4, 1)`` to 1e-7.
_HALF = 10 * OVERSAMPLE
_FIR = (signal.firwin(2 * _HALF + 1, 1.0 / OVERSAMPLE, window=("kaiser", 5.0)) * OVERSAMPLE).astype(
    np.float32
)
_CENTRE = np.float32(_FIR[_HALF])
_PHASES = [np.ascontiguousarray(_FIR[p::OVERSAMPLE]) for p in range(1, OVERSAMPLE)]
#: The envelope at a frame is at least the frame's absolute sample times this (phase 0).
SAMPLE_FLOOR = float(_CENTRE)
#: Phases 1–3 as correlation taps (reversed), one row each, and where frame 0 sits in them.
_BANK = np.stack([taps[::-1] for taps in _PHASES])
_TAPS = _BANK.shape[1]
_LEFT = _TAPS // 2 - 1
if float(np.abs(np.delete(_FIR[::OVERSAMPLE], _HALF // OVERSAMPLE)).max()) > 1e-6:
    raise RuntimeError("true peak: phase 0 of the interpolator is not a single tap")


def _ratio_db(value: float) -> float:
    return 20.0 * math.log10(value) if value > 0 else -math.inf


def true_peak_envelope(audio: npt.NDArray[np.floating], pad: int = 0) -> npt.NDArray[np.float32]:
    """Largest 4×-oversampled absolute value at each frame, over all channels.

    Parameters
    ----------
    audio : ndarray
        Shape (frames, channels).  The first and last ``pad`` frames are context only.
    pad : int
        Context frames on each side; should be ≥ 16 for exact values near the edges.

    Returns
    -------
    ndarray
        float32, shape (frames - 2 * pad,): for frame ``k`` the maximum over channels of the
        oversampled values at ``k, k + 1/4, k + 2/4, k + 3/4``.
    """
    if audio.ndim != 2:
        raise AudioError(f"true peak: expected (frames, channels), got shape {audio.shape}")
    n = audio.shape[0]
    if n <= 2 * pad:
        return np.zeros(0, dtype=np.float32)
    # channel-major, with the zeros the FIR reads beyond the ends
    rows = np.zeros((audio.shape[1], n + _TAPS - 1), dtype=np.float32)
    rows[:, _LEFT : _LEFT + n] = np.asarray(audio, dtype=np.float32).T
    env = np.empty(n, dtype=np.float32)
    true_peak_rows(rows, _BANK, SAMPLE_FLOOR, _LEFT, env)
    return env[pad : n - pad]


def true_peak_db(audio: AudioArray, block: int = 1 << 18) -> float:
    """True peak of a whole array in dBTP (4× oversampled), computed in blocks.

    Returns ``-inf`` for an all-zero or empty array.
    """
    n = audio.shape[0]
    peak = 0.0
    for start in range(0, n, block):
        lo, hi = max(0, start - _CONTEXT), min(n, start + block + _CONTEXT)
        env = true_peak_envelope(audio[lo:hi])
        seg = env[start - lo : start - lo + min(block, n - start)]
        if seg.size:
            peak = max(peak, float(seg.max()))
    return _ratio_db(peak)


class Limiter:
    """Look-ahead true-peak limiter whose gain is a function of a bounded neighbourhood.

    Parameters
    ----------
    rate : int
        Sample rate in Hz.
    ceiling_db : float
        Highest true peak allowed at the output, dBTP (default −1.0).
    radius_ms : float
        Look-ahead and hold, milliseconds; gain changes take about twice this.
    margin_db : float
        The limiter aims this far below ``ceiling_db`` to absorb the small difference between
        the gain-scaled envelope and the true peak of the gain-scaled signal.
    """

    def __init__(
        self,
        rate: int,
        *,
        ceiling_db: float = -1.0,
        radius_ms: float = 10.0,
        margin_db: float = 0.05,
    ) -> None:
        if ceiling_db > 0:
            raise AudioError(f"limiter: ceiling {ceiling_db} dBTP; accepted: ≤ 0 dBTP")
        self.rate = rate
        self.ceiling_db = ceiling_db
        self._ceiling = 10.0 ** ((ceiling_db - margin_db) / 20.0)
        #: Linear level above which the limiter acts (the ceiling less the margin).
        self.ceiling_linear = self._ceiling
        self.radius = max(2, int(round(radius_ms * rate / 1000.0)))
        self._avg = self.radius // 2
        #: Frames of context a block needs on each side (gain reach plus interpolator).
        self.pad = 2 * self.radius + _CONTEXT

    def needed_gain(
        self, envelope: npt.NDArray[np.float32], gain: float
    ) -> npt.NDArray[np.float32]:
        """Gain each frame needs so that ``gain * envelope`` stays under the ceiling (≤ 1)."""
        scaled = envelope * np.float32(gain)
        need = np.ones_like(scaled, dtype=np.float32)
        over = scaled > self._ceiling
        np.divide(np.float32(self._ceiling), scaled, out=need, where=over)
        return need

    def smooth(self, need: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Look-ahead/hold minimum and two moving averages; never above ``need``."""
        m = ndimage.minimum_filter1d(need, size=2 * self.radius + 1, mode="nearest")
        size = 2 * self._avg + 1
        g = ndimage.uniform_filter1d(m, size=size, mode="nearest")
        g = ndimage.uniform_filter1d(g, size=size, mode="nearest")
        return np.asarray(np.minimum(g, need), dtype=np.float32)

    def gain_curve(self, padded: npt.NDArray[np.floating], gain: float) -> npt.NDArray[np.float32]:
        """Limiter gain (linear, ≤ 1) for the centre of a padded block.

        Parameters
        ----------
        padded : ndarray
            Shape (frames + 2 * pad, channels): the block with ``pad`` frames of context on
            each side (zeros beyond the signal's ends).
        gain : float
            Linear master gain applied before the limiter.

        Returns
        -------
        ndarray
            float32, shape (frames,).
        """
        return self.gain_from_envelope(true_peak_envelope(padded, pad=_CONTEXT), gain)

    def gain_from_envelope(
        self, envelope: npt.NDArray[np.float32], gain: float
    ) -> npt.NDArray[np.float32]:
        """Limiter gain for the centre of a true-peak envelope padded by ``pad - 16`` frames.

        Lets a caller compute the envelope once (it does not depend on ``gain``) and try
        several master gains cheaply.
        """
        inner = self.pad - _CONTEXT
        g = self.smooth(self.needed_gain(envelope, gain))
        return g[inner : g.shape[0] - inner]

    def process(self, padded: npt.NDArray[np.floating], gain: float) -> AudioArray:
        """Apply master ``gain`` and the limiter to the centre of a padded block.

        Returns
        -------
        AudioArray
            float32, shape (frames, channels) with frames = ``len(padded) - 2 * pad``.
        """
        g = self.gain_curve(padded, gain) * np.float32(gain)
        centre = padded[self.pad : padded.shape[0] - self.pad]
        return np.asarray(centre * g[:, None], dtype=np.float32)

    def limit(self, audio: AudioArray, gain: float = 1.0, block: int = 1 << 16) -> AudioArray:
        """Apply ``gain`` and limit a whole array (in blocks); same shape as ``audio``."""
        n, ch = audio.shape
        padded = np.zeros((n + 2 * self.pad, ch), dtype=np.float32)
        padded[self.pad : self.pad + n] = audio
        out = np.empty_like(audio, dtype=np.float32)
        for start in range(0, n, block):
            stop = min(n, start + block)
            out[start:stop] = self.process(padded[start : stop + 2 * self.pad], gain)
        return out
