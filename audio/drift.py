"""Clock drift between a recording and the timeline: found from markers, corrected by resampling.

When a singer records and plays through separate devices (a USB mic and laptop headphones),
the two clocks differ by tens of ppm: 100 ppm is 60 ms over ten minutes.  Markers heard by
the mic at both ends of the take (the count-in clicks, or claps) are found with
:func:`tutti.audio.align.find_markers`; a straight line through ``(expected, found)``

    found = offset_frames + (1 + ppm · 1e-6) · expected

gives the drift, and :func:`correct_drift` resamples the recording by ``1 / (1 + ppm · 1e-6)``
with soxr so that its clock matches the timeline.  A recorder that measured its two clocks
writes a clock map instead (file frame ↔ timeline frame); :func:`drift_from_clock_map` turns
it into the same :class:`DriftEstimate`, so no marker is needed.  Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

from .resample import resample_whole
from .types import AudioArray, AudioError, as_audio

__all__ = ["DriftEstimate", "estimate_drift", "drift_from_clock_map", "correct_drift"]

#: Drift larger than this (ppm) is not a clock difference but a wrong rate or wrong markers.
MAX_PPM = 2000.0


@dataclass(frozen=True)
class DriftEstimate:
    """A fitted line ``found = offset_frames + (1 + ppm·1e-6) · expected``.

    Attributes
    ----------
    ppm : float
        Parts per million by which the recording's clock runs fast (positive: the recording
        has more frames per timeline second).
    offset_frames : float
        Where the recording has the marker expected at its frame 0, minus 0: add it to
        the expected position to get the found one (before drift).
    markers_used : int
        Markers left after outlier rejection.
    residual_frames : float
        Largest |found − fitted| of the markers used, frames.
    """

    ppm: float
    offset_frames: float
    markers_used: int
    residual_frames: float

    def corrected_timeline_start(self, timeline_start: int) -> int:
        """Timeline start of the recording after :func:`correct_drift` and the offset fix.

        A corrected sample ``j'`` holds recording sample ``j = (1 + ppm·1e-6)·j'``, which is
        at timeline ``timeline_start + (j − offset_frames) / (1 + ppm·1e-6)``, i.e.
        ``timeline_start − offset_frames / (1 + ppm·1e-6) + j'``.
        """
        return int(round(timeline_start - self.offset_frames / (1 + self.ppm * 1e-6)))


def _fit(x: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """Least-squares ``d = intercept + slope · x``."""
    slope, intercept = np.polyfit(x, d, 1)
    return float(slope), float(intercept)


def _check_span(x: np.ndarray, min_span: float, what: str) -> None:
    span = float(x.max() - x.min())
    if span < min_span:
        raise AudioError(
            f"drift: {what} span only {span:.0f} frames (need {min_span:.0f}); "
            "the mic must pick up count-in clicks (or claps) at the start and the end"
        )


def estimate_drift(
    found: Sequence[tuple[float, float]],
    *,
    max_residual: float = 24.0,
    min_span: float = 1.0,
) -> DriftEstimate:
    """Fit drift and offset through (expected, found) marker pairs.

    The deviation ``found − expected`` is fitted against ``expected``: first robustly
    (Theil–Sen: the median of pairwise slopes, then the median intercept, which a minority
    of wrong markers cannot move), then markers more than ``max_residual`` frames off that
    line are dropped and the rest are fitted by least squares.

    Parameters
    ----------
    found : sequence of (float, float)
        ``(expected, found)`` positions in recording frames, from markers at both ends of the
        take (pairs whose marker was not found are left out by the caller).
    max_residual : float
        Markers farther than this (frames) from the robust line are not markers (a cough is
        not a click).  If more than half of them are, the markers disagree: an error.
    min_span : float
        Smallest distance (frames) between the first and last expected position used.

    Returns
    -------
    DriftEstimate

    Raises
    ------
    AudioError
        Fewer than two markers, markers that do not span ``min_span``, markers that disagree,
        non-finite values, or a drift beyond ±2000 ppm.
    """
    pts = np.asarray(list(found), dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] < 2:
        raise AudioError(
            f"drift: need markers at both ends of the take, found {pts.shape[0]}; "
            "the mic must pick up count-in clicks (or claps) at the start and the end"
        )
    if not np.isfinite(pts).all():
        raise AudioError("drift: marker positions must be finite numbers")
    if max_residual <= 0:
        raise AudioError(f"drift: max_residual must be positive, got {max_residual}")
    x, d = pts[:, 0], pts[:, 1] - pts[:, 0]
    _check_span(x, min_span, "the markers")
    if x.shape[0] > 2:
        slope0 = float(scipy.stats.theilslopes(d, x).slope)
        line = d - slope0 * x
        keep = np.abs(line - float(np.median(line))) <= max_residual
        if int(keep.sum()) < 2 or 2 * int(keep.sum()) < x.shape[0]:
            raise AudioError(
                f"drift: the markers disagree (only {int(keep.sum())} of {x.shape[0]} lie "
                f"within {max_residual:.0f} frames of one line); they are not all clicks"
            )
        x, d = x[keep], d[keep]
        _check_span(x, min_span, "the markers that agree")
    slope, intercept = _fit(x, d)
    res = np.abs(d - (intercept + slope * x))
    ppm = slope * 1e6
    if not abs(ppm) <= MAX_PPM:
        raise AudioError(
            f"drift: {ppm:.0f} ppm is not clock drift (accepted: ±{MAX_PPM:.0f} ppm); check the "
            "recording's sample rate and the markers"
        )
    return DriftEstimate(
        ppm=ppm,
        offset_frames=intercept,
        markers_used=int(x.shape[0]),
        residual_frames=float(res.max()),
    )


#: A clock map whose best line misses a point by more than this (seconds) bends: said so.
MAP_BEND_S = 0.25e-3


def drift_from_clock_map(
    points: Sequence[tuple[float, float]], timeline_start: float
) -> DriftEstimate:
    """The drift of a recording from its clock map, as :func:`estimate_drift` gives it.

    The map's points are measurements (the recorder read both clocks), not detections, so a
    plain least-squares line ``timeline = a + b · frame`` is fitted through all of them.  In
    the terms of :class:`DriftEstimate` (recording frame found for the frame expected from
    ``timeline_start`` without drift): ``found = (timeline_start − a) / b + expected / b``, so
    ``ppm = (1/b − 1)·1e6`` and ``corrected_timeline_start`` gives ``round(a)``.

    Parameters
    ----------
    points : sequence of (float, float)
        ``(file frame, timeline frame)`` pairs, file frames increasing, at one rate.
    timeline_start : float
        Timeline frame of the recording's sample 0 from ``start_offset − latency``.

    Returns
    -------
    DriftEstimate
        ``residual_frames`` is the largest |timeline − line| of the points (compare with
        :data:`MAP_BEND_S`: a map that bends more is not one straight clock ratio).

    Raises
    ------
    AudioError
        Fewer than two points, non-finite values, frames not increasing, or a ratio beyond
        ±2000 ppm (not clock drift: a wrong rate or a broken map).
    """
    pts = np.asarray(list(points), dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] < 2:
        raise AudioError(f"clock map: need at least two points, got {pts.shape[0]}")
    if not np.isfinite(pts).all() or not math.isfinite(timeline_start):
        raise AudioError("clock map: frames must be finite numbers")
    x, t = pts[:, 0], pts[:, 1]
    if not bool(np.all(np.diff(x) > 0)):
        raise AudioError("clock map: file frames must increase")
    x0 = float(x[0])  # fitted about the first point: the slope stays exact for long takes
    b, a0 = _fit(x - x0, t)
    a = a0 - b * x0
    res = np.abs(t - (a + b * x))
    ppm = (1.0 / b - 1.0) * 1e6 if b > 0 else math.inf
    if not abs(ppm) <= MAX_PPM:
        raise AudioError(
            f"clock map: {ppm:.0f} ppm is not clock drift (accepted: ±{MAX_PPM:.0f} ppm); "
            "check the recording's sample rate"
        )
    return DriftEstimate(
        ppm=ppm,
        offset_frames=(timeline_start - a) / b,
        markers_used=int(x.shape[0]),
        residual_frames=float(res.max()),
    )


def correct_drift(recording: AudioArray, rate: int, ppm: float) -> AudioArray:
    """Resample a recording whose clock ran ``ppm`` fast onto the timeline's clock.

    Parameters
    ----------
    recording : AudioArray
        float32 (frames, channels).
    rate : int
        Nominal rate, Hz.
    ppm : float
        From :func:`estimate_drift`.

    Returns
    -------
    AudioArray
        float32 (≈ frames / (1 + ppm·1e-6), channels); sample 0 stays sample 0.
    """
    rec = as_audio(recording, name="recording")
    if not math.isfinite(ppm) or abs(ppm) > MAX_PPM:
        raise AudioError(f"correct_drift: ppm must be finite and within ±{MAX_PPM:.0f}, got {ppm}")
    if rate <= 0:
        raise AudioError(f"correct_drift: rate must be positive, got {rate}")
    if ppm == 0.0 or rec.shape[0] == 0:
        return rec.copy()
    return resample_whole(rec, clock_rate(rate, ppm), float(rate))


def clock_rate(rate: int, ppm: float) -> float:
    """The true rate of a clock that ran ``ppm`` fast at nominal ``rate`` (what a drifting
    recording is resampled from)."""
    return rate * (1.0 + ppm * 1e-6)
