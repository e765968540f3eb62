"""Round-trip latency: a test signal, and the estimator that finds it in a recording.

``tutti calibrate`` plays :func:`test_signal` through the device while recording the loopback
(ear cup to mic, or a cable) and hands both to :func:`estimate_latency`, which returns the
delay ``L`` in frames such that a sample played at output frame ``n`` comes back at input
frame ``n + L`` (DESIGN.md).

Method (docs/audio.md): regularised deconvolution of the recording by the played signal in
the frequency domain, ``H = R·P* / (|P|² + ε)``, gives the loop's impulse response ``h`` over
its band, whatever the spectrum of the test signal; the largest ``|h|`` within
``[0, max_latency]`` is the direct path.  The sub-sample delay is the maximum of the
band-limited interpolation of ``h`` (evaluated exactly from the DFT, not a parabola on the
samples).  Confidence is the peak-to-sidelobe ratio (peak over the largest value outside
the main lobe and the peak's own reverb tail); the SNR compares the recording with the part
of it that the estimated impulse response explains.  Pure: arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft
import scipy.optimize
import scipy.signal

from .types import AudioArray, AudioError, as_audio

__all__ = ["LatencyError", "LatencyEstimate", "test_signal", "estimate_latency"]


class LatencyError(AudioError):
    """The latency cannot be measured from these signals; the message says why and what to do."""


@dataclass(frozen=True)
class LatencyEstimate:
    """A measured round-trip delay.

    Attributes
    ----------
    frames : int
        The delay rounded to whole frames (``round(subsample)``).
    subsample : float
        The delay in frames with its fractional part.
    confidence : float
        Peak-to-sidelobe ratio (linear): the impulse-response peak over the largest value
        outside its main lobe (±0.5 ms) and its reverb tail (``reverb_s``).  ≥ 4 is
        required; a clean loop gives over a hundred, noise alone about 1.
    snr_db : float
        Recording power explained by the delayed, filtered test signal over the rest (dB),
        measured where the test signal is sounding.
    inverted : bool
        True if the loop inverts polarity (the peak is negative).
    """

    frames: int
    subsample: float
    confidence: float
    snr_db: float
    inverted: bool = False

    def ms(self, rate: int) -> float:
        """The delay in milliseconds at ``rate`` Hz."""
        return 1000.0 * self.subsample / rate


def test_signal(
    rate: int,
    *,
    duration_s: float = 1.0,
    f_lo: float = 40.0,
    f_hi: float | None = None,
    level_db: float = -12.0,
    lead_s: float = 0.1,
    tail_s: float = 1.0,
) -> AudioArray:
    """A logarithmic sine sweep with silence around it, to play for a latency measurement.

    Parameters
    ----------
    rate : int
        Hz.
    duration_s : float
        Length of the sweep in seconds.
    f_lo, f_hi : float
        Sweep band in Hz; ``f_hi`` defaults to ``min(20 kHz, 0.45 · rate)``.
    level_db : float
        Peak level in dBFS (≤ 0).
    lead_s, tail_s : float
        Silence before and after the sweep, seconds.  Keep ``tail_s`` at least the largest
        latency you expect, so the recording catches the end of the sweep.

    Returns
    -------
    AudioArray
        float32, shape (frames, 1).
    """
    if rate <= 0:
        raise AudioError(f"test_signal: rate must be positive, got {rate}")
    hi = min(20000.0, 0.45 * rate) if f_hi is None else f_hi
    if not 0 < f_lo < hi < rate / 2:
        raise AudioError(f"test_signal: need 0 < f_lo < f_hi < rate/2, got {f_lo}, {hi}, {rate}")
    if duration_s <= 0 or lead_s < 0 or tail_s < 0 or level_db > 0:
        raise AudioError("test_signal: durations must be positive and level_db ≤ 0")
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    sweep = scipy.signal.chirp(t, f_lo, t[-1], hi, method="logarithmic", phi=-90)
    # Fade in over 10 ms and out over 5 ms so the ends do not splatter.
    fin, fout = min(n // 4, round(0.01 * rate)), min(n // 4, round(0.005 * rate))
    sweep[:fin] *= np.sin(0.5 * np.pi * np.arange(fin) / fin) ** 2
    sweep[n - fout :] *= np.cos(0.5 * np.pi * np.arange(1, fout + 1) / fout) ** 2
    sweep *= 10 ** (level_db / 20)
    out = np.zeros((round(lead_s * rate) + n + round(tail_s * rate), 1), np.float32)
    lead = round(lead_s * rate)
    out[lead : lead + n, 0] = sweep
    return out


# pytest would otherwise collect this function when a test module imports it.
test_signal.__test__ = False  # type: ignore[attr-defined]


def _mono(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    a = as_audio(x, name=name)
    if a.shape[1] != 1:
        raise LatencyError(
            f"{name}: expected one channel, got {a.shape[1]}; pick the loopback channel"
        )
    if a.shape[0] == 0:
        raise LatencyError(f"{name}: is empty")
    return a[:, 0].astype(np.float64)


def estimate_latency(
    played: AudioArray,
    recorded: AudioArray,
    rate: int,
    *,
    max_latency_s: float = 1.0,
    min_confidence: float = 4.0,
    clip_level: float = 0.999,
    silence_db: float = -80.0,
    reverb_s: float = 0.05,
) -> LatencyEstimate:
    """Find the delay of ``played`` inside ``recorded``.

    Parameters
    ----------
    played : AudioArray
        What was output, float32 (n, 1), starting at output frame 0.
    recorded : AudioArray
        What came back, float32 (m, 1), starting at input frame 0 of the same stream.
    rate : int
        Hz.
    max_latency_s : float
        Largest delay searched, seconds.
    min_confidence : float
        Smallest peak-to-sidelobe ratio accepted.
    clip_level : float
        Recorded samples at or above this magnitude count as clipped; more than two of them
        is an error (the loop is overdriven).
    silence_db : float
        A recording whose peak is below this (dBFS) is silent.
    reverb_s : float
        Length of impulse response after the peak that belongs to it (the room's tail):
        counted as signal for ``snr_db`` and not as a sidelobe for ``confidence``.

    Returns
    -------
    LatencyEstimate

    Raises
    ------
    LatencyError
        Silent or clipped recording, silent test signal, or no clear peak (noise only, or
        the sound did not come back within ``max_latency_s``).
    """
    if rate <= 0:
        raise LatencyError(f"rate must be positive, got {rate}")
    p = _mono(played, "played signal")
    r = _mono(recorded, "recording")
    if not np.any(p):
        raise LatencyError("played signal: is all zeros; play the test signal")
    peak = float(np.max(np.abs(r)))
    if peak == 0.0 or 20 * np.log10(peak) < silence_db:
        level = "-inf" if peak == 0.0 else f"{20 * np.log10(peak):.1f}"
        raise LatencyError(
            f"recording is silent (peak {level} dBFS): nothing came back; check that the "
            "output reaches the input (ear cup on the mic, or a loopback cable) and the input level"
        )
    clipped = int(np.count_nonzero(np.abs(r) >= clip_level))
    if clipped > 2:
        raise LatencyError(
            f"recording clips ({clipped} samples at full scale): lower the output volume or "
            "the input gain and measure again"
        )
    max_lag = min(int(round(max_latency_s * rate)), r.shape[0] - 1)
    if max_lag < 0:
        raise LatencyError(f"max_latency_s must be ≥ 0, got {max_latency_s}")

    n = scipy.fft.next_fast_len(p.shape[0] + r.shape[0], real=True)
    P = scipy.fft.rfft(p, n)
    R = scipy.fft.rfft(r, n)
    power = (P * P.conj()).real
    eps = 1e-2 * float(power.max())
    G = R * P.conj() / (power + eps)
    h = scipy.fft.irfft(G, n)

    search = np.abs(h[: max_lag + 1])
    idx = int(np.argmax(search))
    main = max(8, round(0.0005 * rate))
    # Sidelobes: everything but the main lobe and the peak's own reverb tail.
    tail = max(main, round(reverb_s * rate))
    side = np.concatenate([search[: max(0, idx - main)], search[idx + tail + 1 :]])
    sidelobe = float(side.max()) if side.size else 0.0
    confidence = float(search[idx] / sidelobe) if sidelobe > 0 else float("inf")
    if confidence < min_confidence:
        raise LatencyError(
            f"no clear peak (peak-to-sidelobe ratio {confidence:.2f}, need ≥ {min_confidence}): "
            f"the test signal was not found within {max_latency_s} s; the recording is noise, "
            "or the loop is too quiet or too reverberant"
        )
    sign = 1.0 if h[idx] >= 0 else -1.0

    # Band-limited interpolation of h at fractional lag tau, straight from the DFT.
    weights = np.full(G.shape[0], 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    gw = G * weights / n
    k = np.arange(G.shape[0])

    def neg_h(tau: float) -> float:
        return -sign * float(np.real(np.dot(gw, np.exp(2j * np.pi * k * tau / n))))

    res = scipy.optimize.minimize_scalar(
        neg_h, bounds=(idx - 1.0, idx + 1.0), method="bounded", options={"xatol": 1e-4}
    )
    sub = float(res.x)

    # For the SNR, a nearly unregularised deconvolution: it models the whole band the test
    # signal covers, including its quiet top octave, and nothing outside it.
    h_fine = scipy.fft.irfft(R * P.conj() / (power + 1e-6 * float(power.max())), n)
    snr_db = _snr_db(p, r, h_fine, P, n, idx, main, round(reverb_s * rate))
    return LatencyEstimate(
        frames=int(round(sub)),
        subsample=sub,
        confidence=confidence,
        snr_db=snr_db,
        inverted=sign < 0,
    )


def _snr_db(
    p: npt.NDArray[np.float64],
    r: npt.NDArray[np.float64],
    h: npt.NDArray[np.float64],
    P: npt.NDArray[np.complex128],
    n: int,
    idx: int,
    main: int,
    reverb: int,
) -> float:
    """Explained over unexplained power of ``r`` while the delayed ``p`` sounds (dB)."""
    hw = np.zeros(n)
    half = max(main, reverb)
    taps = np.arange(idx - half, idx + half + 1) % n  # circular: band-edge ringing both sides
    hw[taps] = h[taps]
    model = scipy.fft.irfft(P * scipy.fft.rfft(hw), n)[: r.shape[0]]
    nz = np.flatnonzero(p)
    a = min(r.shape[0], idx + int(nz[0]))
    b = min(r.shape[0], idx + int(nz[-1]) + 1)
    if b <= a:
        return float("-inf")
    sig = float(np.sum(model[a:b] ** 2))
    noise = float(np.sum((r[a:b] - model[a:b]) ** 2))
    if noise == 0.0:
        return float("inf")
    if sig == 0.0:
        return float("-inf")
    return float(10 * np.log10(sig / noise))
