"""Clock drift found without markers: a recording's lag behind known references, window by
window, and the one straight line through those lags that the clocks allow.

A recording on its own input clock holds what the singer heard and sang stretched by
``1 + ppm·1e-6`` against the timeline, so placed at its nominal start its content falls later
(or earlier) in proportion to the time since that start.  Two kinds of reference show it:

- the **program bleed** — the click and backing the singer heard, leaking from the headset
  into the mic, correlated sample-accurately with the program as rendered on the timeline
  (the recording whitened by its own spectrum, so a voice 40 dB louder does not mask it);
- the **onsets** of the rest of the take — the other singers and the program — whose onset
  envelopes (energy rises at a millisecond hop) line up with this singer's.

Each reference gives a matrix of cross-correlations (window × lag).  :func:`fit_drift` sums
it along every line ``lag = offset + ppm·1e-6·t`` in the range clocks can drift, keeps the
strongest, then refines it with a Theil–Sen fit through each window's own peak near that
line.  The strength of the summed line against all the other lines is the confidence; a
weak one is reported as "cannot tell", never as a correction.  Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.fft
import scipy.ndimage
import scipy.signal
import scipy.stats

__all__ = [
    "DriftFit",
    "LagMatrix",
    "hop_energy",
    "onset_envelope",
    "window_lags",
    "fit_drift",
    "measure_drift",
    "stretch",
    "ENV_RATE",
    "SEARCH_PPM",
]

Floats = npt.NDArray[np.float64]

#: Onset envelopes are taken at about this rate (Hz): a millisecond per value.
ENV_RATE = 1000
#: Clock drifts searched (ppm either way); USB and laptop clocks measure 20–150.
SEARCH_PPM = 400.0
#: A line at least this strong (see :attr:`DriftFit.strength`) is a measurement; else unknown.
MIN_STRENGTH = 4.0
#: At least this share of the windows must peak near the line.
MIN_AGREEING = 0.5
#: Smoothed line sums within this share of the best count as ties (see :func:`_search`).
_TIE = 0.02


@dataclass(frozen=True)
class LagMatrix:
    """Cross-correlations of a recording against a reference, one row per window.

    Attributes
    ----------
    times : Floats
        Window centres, in feature samples after the recording's nominal start.
    cc : Floats
        (windows, 2·max_lag + 1), each row scaled to zero median and unit spread; column
        ``max_lag + k`` is the match with the recording ``k`` samples late.
    rate : float
        Feature samples per second.
    """

    times: Floats
    cc: Floats
    rate: float

    @property
    def max_lag(self) -> int:
        return int(self.cc.shape[1] - 1) // 2


@dataclass(frozen=True)
class DriftFit:
    """The line ``lag = offset + ppm·1e-6 · t`` found through a :class:`LagMatrix`.

    Attributes
    ----------
    ppm : float
        How fast the recording's clock ran (positive: more frames per timeline second).
    ppm_low, ppm_high : float
        Theil–Sen's 95 % interval of ``ppm``.
    offset_s : float
        Lag at the recording's nominal start, seconds (a start error, or a singer who sings
        behind the others: not a clock).
    strength : float
        The summed correlation along the line over √windows: rows of noise give about 1 (the
        best of the many lines searched through noise stays under 5).
    agreeing, windows : int
        Windows whose own peak lies near the line, and windows with signal.
    """

    ppm: float
    ppm_low: float
    ppm_high: float
    offset_s: float
    strength: float
    agreeing: int
    windows: int

    @property
    def certain(self) -> bool:
        """Whether the line stands out and most windows agree with it."""
        return (
            self.strength >= MIN_STRENGTH
            and self.windows > 0
            and self.agreeing >= max(4, MIN_AGREEING * self.windows)
        )

    def end_error_s(self, seconds: float) -> float:
        """Half the 95 % interval carried to ``seconds`` after the start, seconds."""
        return 0.5 * (self.ppm_high - self.ppm_low) * 1e-6 * seconds


def hop_energy(x: npt.NDArray[np.float32], hop: int) -> Floats:
    """Mean square of ``x`` (mono, length a multiple of ``hop``) per ``hop`` samples."""
    frames = x.shape[0] // hop
    sq = np.square(x[: frames * hop], dtype=np.float64)
    out: Floats = sq.reshape(frames, hop).mean(axis=1)
    return out


def onset_envelope(energy: Floats, env_rate: float) -> Floats:
    """Onset strength from :func:`hop_energy`: the rise of the log energy (smoothed over
    20 ms, so a low note's own periods do not count) over the last 10 ms, never negative."""
    smooth = max(1, round(0.02 * env_rate))
    span = max(1, round(0.01 * env_rate))
    level = scipy.ndimage.uniform_filter1d(energy, smooth, mode="nearest")
    floor = 1e-10 + 1e-3 * float(np.median(level)) if level.size else 1e-10
    log = np.log10(level + floor)
    rise = np.zeros_like(log)
    rise[span:] = log[span:] - log[:-span]
    out: Floats = np.maximum(rise, 0.0)
    return out


def _whiten(seg: Floats, n: int) -> npt.NDArray[np.complex128]:
    """Spectrum of ``seg`` divided by its own smoothed power: the recording as the noise
    the bleed hides in (a matched filter for the program under that noise)."""
    spec = np.fft.rfft(seg, n)
    power = scipy.ndimage.uniform_filter1d(np.abs(spec) ** 2, 33, mode="nearest")
    out: npt.NDArray[np.complex128] = spec / (power + 1e-12 * float(power.max(initial=0.0)) + 1e-30)
    return out


def _scaled(row: Floats) -> Floats | None:
    """A correlation row to zero median and unit robust spread; None if it is flat."""
    med = float(np.median(row))
    spread = float(scipy.stats.median_abs_deviation(row, scale="normal"))
    if not spread > 0 or not math.isfinite(spread):
        return None
    out: Floats = (row - med) / spread
    return out


def window_lags(
    sig: Floats,
    ref: Floats,
    rate: float,
    *,
    window_s: float,
    max_lag_s: float,
    whiten: bool,
    active: Floats | None = None,
    smooth_s: float = 0.0,
) -> LagMatrix:
    """Cross-correlate ``sig`` (the recording at its nominal place) with ``ref`` (the
    reference on the same grid: ``sig[i]`` and ``ref[i]`` are one timeline instant if the
    clocks agree) in windows of ``window_s``, lags up to ``max_lag_s`` either way.

    ``whiten``: weigh by the recording's own spectrum (waveforms); else plain zero-mean
    correlation (envelopes).  ``active``: per-sample weight of ``sig`` (0 where it holds
    no recording); windows less than half active are left out.
    """
    win = max(8, round(window_s * rate))
    lag = max(1, round(max_lag_s * rate))
    n = min(sig.shape[0], ref.shape[0])
    times, rows = [], []
    for a in range(lag, n - win - lag + 1, win):
        if active is not None and float(active[a : a + win].mean()) < 0.5:
            continue
        seg = sig[a : a + win]
        wide = ref[a - lag : a + win + lag]
        if not (np.any(seg) and np.any(wide)):
            continue
        if whiten:
            size = scipy.fft.next_fast_len(wide.shape[0] + win)
            cc = np.fft.irfft(np.fft.rfft(wide, size) * np.conj(_whiten(seg, size)), size)
            full = cc[: 2 * lag + 1]
        else:
            full = scipy.signal.correlate(wide - wide.mean(), seg - seg.mean(), mode="valid")
        full = np.asarray(full[::-1], dtype=np.float64)  # column k: recording k late
        if smooth_s > 0:  # onsets people place ±20 ms apart: one broad peak, not a comb
            full = scipy.ndimage.gaussian_filter1d(full, smooth_s * rate)
        row = _scaled(full)
        if row is not None:
            times.append(a + win / 2)
            rows.append(row)
    cc = np.array(rows, dtype=np.float64).reshape(-1, 2 * lag + 1)
    return LagMatrix(np.array(times, dtype=np.float64), cc, rate)


def _line_sums(cc: Floats, times: Floats, slopes: Floats, reach: int) -> Floats:
    """For each slope (lag per sample of time), the best sum of ``cc`` along a line of that
    slope over offsets within ``reach`` of the centre column: (slopes,)."""
    lag = (cc.shape[1] - 1) // 2
    w = np.arange(cc.shape[0])[:, None]
    offsets = np.arange(-reach, reach + 1)[None, :]
    best = np.empty(slopes.shape[0])
    for k, s in enumerate(slopes):
        col = lag + offsets + np.round(s * times)[:, None].astype(np.int64)
        inside = (col >= 0) & (col < cc.shape[1])
        vals = np.where(inside, cc[w, np.clip(col, 0, cc.shape[1] - 1)], 0.0)
        best[k] = vals.sum(axis=0).max()
    return best


def _search(m: LagMatrix, max_offset_s: float) -> tuple[float, float]:
    """The slope (lag per sample of time) of the strongest line, and its strength: the sum
    along it in units of the spread of a sum through noise."""
    span = float(m.times.max())
    step = 0.5 / span  # a line moves by half a sample over the take between two slopes
    reach = max(0, round(max_offset_s * m.rate))
    coarse = max(1, round(0.002 * m.rate))  # a smoothed pass with 2 ms resolution first
    smooth = scipy.ndimage.maximum_filter1d(m.cc, 2 * coarse + 1, axis=1)
    top = SEARCH_PPM * 1e-6
    grid = np.arange(-top, top + step * coarse, step * coarse)
    sums = _line_sums(smooth, m.times, grid, reach)
    # the smoothed rows are flat near a sharp peak, so neighbouring slopes tie: the fine pass
    # searches every slope of the best one's plateau, not only the first of them
    left, right = _plateau(sums, int(np.argmax(sums)), _TIE * abs(float(sums.max())))
    lo, hi = grid[left] - step * coarse, grid[right] + step * coarse
    fine = np.arange(lo, hi + step * 0.0001 * coarse, step)
    fine_sums = _line_sums(m.cc, m.times, fine, reach)
    best = int(np.argmax(fine_sums))
    # rows have unit spread: a sum along a line through noise spreads as √windows
    return float(fine[best]), float(fine_sums[best]) / math.sqrt(m.cc.shape[0])


def _plateau(values: Floats, k: int, tol: float) -> tuple[int, int]:
    """The first and last index of the run around ``k`` whose values are within ``tol`` of
    ``values[k]``."""
    top = float(values[k]) - tol
    left, right = k, k
    while left > 0 and values[left - 1] >= top:
        left -= 1
    while right < values.shape[0] - 1 and values[right + 1] >= top:
        right += 1
    return left, right


def _peak_near(row: Floats, centre: float, reach: int) -> tuple[float, float] | None:
    """The largest value of ``row`` within ``reach`` of column ``centre``, to a fraction of
    a column (parabola), and its height; None at the row's edge."""
    lo = max(1, int(round(centre)) - reach)
    hi = min(row.shape[0] - 1, int(round(centre)) + reach + 1)
    if hi <= lo:
        return None
    k = lo + int(np.argmax(row[lo:hi]))
    y0, y1, y2 = row[k - 1], row[k], row[k + 1] if k + 1 < row.shape[0] else row[k]
    den = y0 - 2 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return k + float(np.clip(frac, -0.5, 0.5)), float(y1)


def fit_drift(m: LagMatrix, *, max_offset_s: float, tolerance_s: float = 0.002) -> DriftFit:
    """The drift line through a :class:`LagMatrix` (see the module's summary).

    Parameters
    ----------
    m : LagMatrix
    max_offset_s : float
        Largest lag at the start searched (seconds): a start error or a singer's habit.
    tolerance_s : float
        A window agrees when its own peak is this close to the line (seconds).
    """
    if m.cc.shape[0] < 3:
        return DriftFit(0.0, -math.inf, math.inf, 0.0, 0.0, 0, int(m.cc.shape[0]))
    slope, strength = _search(m, max_offset_s)
    reach = max(0, round(max_offset_s * m.rate))
    lag = m.max_lag
    cols = lag + np.arange(-reach, reach + 1)[None, :] + np.round(slope * m.times)[:, None]
    cols = np.clip(cols.astype(np.int64), 0, m.cc.shape[1] - 1)
    offset = int(np.argmax(m.cc[np.arange(m.cc.shape[0])[:, None], cols].sum(axis=0))) - reach
    tol = max(1, round(tolerance_s * m.rate))
    t, d = [], []
    for time, row in zip(m.times, m.cc, strict=True):
        hit = _peak_near(row, lag + offset + slope * time, tol)
        if hit is not None and hit[1] > 3.0:  # a peak above this row's noise
            t.append(time)
            d.append(hit[0] - lag)
    if len(t) < 3:
        return DriftFit(slope * 1e6, -math.inf, math.inf, offset / m.rate, strength, len(t),
                        int(m.cc.shape[0]))  # fmt: skip
    fit = scipy.stats.theilslopes(np.array(d), np.array(t), alpha=0.95)
    res = np.abs(np.array(d) - (fit.intercept + fit.slope * np.array(t)))
    agreeing = int(np.count_nonzero(res <= tol))
    return DriftFit(
        ppm=float(fit.slope) * 1e6,
        ppm_low=float(fit.low_slope) * 1e6,
        ppm_high=float(fit.high_slope) * 1e6,
        offset_s=float(fit.intercept) / m.rate,
        strength=strength,
        agreeing=agreeing,
        windows=int(m.cc.shape[0]),
    )


_STRETCH_BLOCK = 1 << 16  # output samples interpolated at a time


def stretch(sig: Floats, ppm: float) -> Floats:
    """``sig`` read on a clock ``ppm`` slower, so content that ran ``ppm`` fast sits where it
    would without drift (linear interpolation: positions kept, fine detail not needed)."""
    if ppm == 0.0:
        return sig
    n = int(sig.shape[0] / (1 + ppm * 1e-6))
    out: Floats = np.empty(n)
    for a in range(0, n, _STRETCH_BLOCK):  # in blocks: whole-length positions cost ~80 MB
        pos = np.arange(a, min(n, a + _STRETCH_BLOCK)) * (1 + ppm * 1e-6)
        lo = max(0, int(pos[0]) - 1)
        hi = min(sig.shape[0], int(pos[-1]) + 2)
        out[a : a + pos.shape[0]] = np.interp(pos, np.arange(lo, hi), sig[lo:hi])
    return out


def measure_drift(
    sig: Floats,
    ref: Floats,
    rate: float,
    *,
    window_s: float,
    max_lag_s: float,
    max_offset_s: float,
    whiten: bool,
    active: Floats | None = None,
    rounds: int = 2,
    tolerance_s: float = 0.002,
    smooth_s: float = 0.0,
) -> DriftFit:
    """:func:`fit_drift` of :func:`window_lags`, then again on ``sig`` stretched by what was
    found (``rounds`` in all): a window ``window_s`` long drifts by itself (120 ppm is a
    sample at 8 kHz every second), which blurs the peaks until the stretch takes it out."""
    total = 0.0
    fit = DriftFit(0.0, -math.inf, math.inf, 0.0, 0.0, 0, 0)
    for r in range(rounds):
        here = stretch(sig, total)
        act = None if active is None else stretch(active, total)
        m = window_lags(here, ref, rate, window_s=window_s, max_lag_s=max_lag_s, whiten=whiten,
                        active=act, smooth_s=smooth_s)  # fmt: skip
        fit = fit_drift(m, max_offset_s=max_offset_s, tolerance_s=tolerance_s)
        if r == 0 and not fit.certain and fit.strength < MIN_STRENGTH:
            return fit  # nothing stands out; a line that does may be blurred: stretch and look
        base = 1 + total * 1e-6
        total = (base * (1 + fit.ppm * 1e-6) - 1) * 1e6
    return DriftFit(total, total - fit.ppm + fit.ppm_low, total - fit.ppm + fit.ppm_high,
                    fit.offset_s, fit.strength, fit.agreeing, fit.windows)  # fmt: skip
