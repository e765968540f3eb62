"""A generated concert-hall impulse response and streaming convolution reverb.

The impulse response is synthetic (no recorded hall ships with tutti): a few discrete early
reflections after a short pre-delay, then a diffuse tail of decorrelated noise per channel
whose level falls by 60 dB over ``rt60`` seconds, with the high band dying faster than the
low band (air and wall absorption) so the tail darkens as it decays.

Convolution is done with FFTs (:mod:`scipy.fft`), block by block with overlap-add: each
block's full convolution is added to the tail carried from earlier blocks, so the result
equals convolving the whole signal at once.  The IR's spectrum is computed once per FFT size.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import fft, signal

from tutti.audio.types import AudioArray, AudioError

__all__ = ["hall_ir", "ConvolutionReverb"]


def hall_ir(
    rate: int,
    *,
    rt60: float = 1.8,
    predelay_ms: float = 18.0,
    channels: int = 2,
    seed: int = 1,
) -> AudioArray:
    """A synthetic hall impulse response.

    Parameters
    ----------
    rate : int
        Sample rate in Hz.
    rt60 : float
        Reverberation time in seconds (time for the low band to fall by 60 dB), 0.2–6 s.
    predelay_ms : float
        Delay of the first reflection, milliseconds.
    channels : int
        Output channels; each gets an independent (decorrelated) tail.
    seed : int
        Seed of the noise generator: the same arguments give the same IR.

    Returns
    -------
    AudioArray
        float32, shape (frames, channels), frames ≈ ``(rt60 + predelay) * rate``; energy
        normalised so that each channel's sum of squares is 1 (a wet level of 1 is then about
        as loud as the dry signal).
    """
    if not 0.2 <= rt60 <= 6.0:
        raise AudioError(f"reverb: rt60 {rt60} s; accepted: 0.2–6 s")
    rng = np.random.default_rng(seed)
    pre = int(predelay_ms * rate / 1000.0)
    n = pre + int(rt60 * rate)
    t = np.arange(n - pre) / rate
    low_sos = signal.butter(2, 2500.0, btype="lowpass", fs=rate, output="sos")
    ir = np.zeros((n, channels), dtype=np.float64)
    for c in range(channels):
        noise = rng.standard_normal(n - pre)
        low = signal.sosfilt(low_sos, noise)
        high = noise - low
        # 60 dB over rt60 for the low band, over rt60 / 2.5 for the high band
        tail = low * 10.0 ** (-3.0 * t / rt60) + high * 10.0 ** (-3.0 * t / (rt60 / 2.5))
        tail *= 1.0 - np.exp(-t / 0.03)  # diffuse build-up over the first tens of ms
        ir[pre:, c] = tail
        for _k in range(6):  # early reflections, 5–60 ms after the pre-delay
            d = pre + int(rate * rng.uniform(0.005, 0.06))
            ir[d, c] += rng.uniform(0.3, 0.7) * rng.choice((-1.0, 1.0)) * 20.0
    ir /= np.sqrt(np.sum(ir**2, axis=0, keepdims=True))
    return ir.astype(np.float32)


class ConvolutionReverb:
    """Streaming convolution with an impulse response; returns the wet signal only.

    Parameters
    ----------
    ir : AudioArray
        Impulse response, shape (frames, channels); channel ``c`` of the input is convolved
        with channel ``c`` of the IR.
    wet : float
        Linear gain of the wet signal (0–4).
    """

    def __init__(self, ir: AudioArray, wet: float) -> None:
        if not 0.0 <= wet <= 4.0:
            raise AudioError(f"reverb: wet level {wet}; accepted: 0–4")
        if ir.ndim != 2 or ir.shape[0] == 0:
            raise AudioError(
                f"reverb: impulse response shape {ir.shape}; expected (frames, channels)"
            )
        self.ir = ir
        self.wet = wet
        self.channels = ir.shape[1]
        #: Frames of tail the reverb adds after the input ends.
        self.tail_frames = ir.shape[0] - 1
        self._carry = np.zeros((self.tail_frames, self.channels), dtype=np.float64)
        self._spectra: dict[int, npt.NDArray[np.complex128]] = {}

    def _spectrum(self, size: int) -> npt.NDArray[np.complex128]:
        if size not in self._spectra:
            self._spectra = {size: fft.rfft(self.ir, n=size, axis=0)}
        return self._spectra[size]

    def process(self, block: AudioArray) -> AudioArray:
        """Wet signal for the next dry block (frames, channels); float32, same shape."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise AudioError(
                f"reverb: block shape {block.shape}; expected (frames, {self.channels})"
            )
        n = block.shape[0]
        if n == 0:
            return np.zeros((0, self.channels), dtype=np.float32)
        size = fft.next_fast_len(n + self.tail_frames, real=True)
        spec = fft.rfft(block, n=size, axis=0) * self._spectrum(size)
        full = fft.irfft(spec, n=size, axis=0, workers=-1)[: n + self.tail_frames]
        full[: self.tail_frames] += self._carry
        out = full[:n]
        self._carry = full[n : n + self.tail_frames].copy()
        return np.asarray(out * self.wet, dtype=np.float32)

    def flush(self) -> AudioArray:
        """The remaining tail (``tail_frames`` frames) after the last block; resets the state."""
        out = np.asarray(self._carry * self.wet, dtype=np.float32)
        self._carry = np.zeros_like(self._carry)
        return out
