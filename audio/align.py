"""Where a take is placed on the timeline: padding/trimming, refinement, markers, resampling.

A recording's sample ``j`` sits at timeline frame ``j + timeline_start`` with
``timeline_start = start_offset − latency`` from the take manifest (DESIGN.md).
:func:`place` applies that; :func:`refine_offset` optionally corrects it by cross-correlation
against a reference within a bounded window; :func:`find_markers` finds the onsets of
clicks or claps near where they are expected (the input of :mod:`tutti.audio.drift`);
:func:`resample` brings a recording made at another rate to the session rate.  Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import scipy.ndimage
import scipy.signal

from .resample import resample_whole
from .types import AudioArray, AudioError, as_audio

__all__ = ["place", "place_range", "refine_offset", "find_markers", "resample"]

#: A marker's envelope falls back below half-way within this (s): a click decays in 8 ms, a
#: clap in a room in a few tens; a sung note stays loud, and its onset is not a marker.
MARKER_FALL_S = 0.1


def place(recording: AudioArray, timeline_start: int, length: int) -> AudioArray:
    """Pad or trim a recording so that its sample 0 is timeline sample 0.

    Parameters
    ----------
    recording : AudioArray
        float32 (frames, channels).
    timeline_start : int
        Timeline frame of the recording's first sample (negative: it began before the
        count-in, and that part is cut).
    length : int
        Frames of the result.

    Returns
    -------
    AudioArray
        float32 (length, channels): ``out[k] = recording[k − timeline_start]`` where that
        exists, 0 elsewhere.
    """
    rec = as_audio(recording, name="recording")
    if length < 0:
        raise AudioError(f"place: length must be ≥ 0, got {length}")
    return place_range(lambda a, b: rec[a:b], rec.shape, timeline_start, 0, length)


def place_range(
    read: Callable[[int, int], AudioArray],
    shape: tuple[int, int],
    timeline_start: int,
    lo: int,
    hi: int,
) -> AudioArray:
    """Timeline frames [lo, hi) of a placed recording (what :func:`place` returns there).

    ``read(a, b)`` hands out the recording's frames [a, b) (an array slice, or a scratch file
    read by ``tutti mix``); ``shape`` is the recording's (frames, channels)."""
    frames, channels = shape
    out = np.zeros((hi - lo, channels), np.float32)
    a, b = max(lo, timeline_start), min(hi, timeline_start + frames)
    if b > a:
        out[a - lo : b - lo] = read(a - timeline_start, b - timeline_start)
    return out


def _mono64(a: AudioArray) -> npt.NDArray[np.float64]:
    return np.asarray(a.mean(axis=1, dtype=np.float64))


def _slice_padded(x: npt.NDArray[np.float64], lo: int, hi: int) -> npt.NDArray[np.float64]:
    """``x[lo:hi]`` with zeros where the range leaves ``x``."""
    out = np.zeros(max(0, hi - lo))
    a, b = max(lo, 0), min(hi, x.shape[0])
    if b > a:
        out[a - lo : b - lo] = x[a:b]
    return out


def refine_offset(
    recording: AudioArray,
    reference: AudioArray,
    timeline_start: int,
    *,
    window: int,
    segment: tuple[int, int] | None = None,
) -> int:
    """Correct a recording's timeline start by cross-correlation with a reference.

    Parameters
    ----------
    recording : AudioArray
        float32 (frames, channels); channels are averaged.
    reference : AudioArray
        What the recording should line up with, on the timeline (its sample 0 is timeline 0),
        e.g. the headset mix or the click; channels are averaged.
    timeline_start : int
        The recording's timeline start from its metadata.
    window : int
        Largest correction searched, frames (the result is within ±window of
        ``timeline_start``).
    segment : (int, int), optional
        Only recording frames ``[a, b)`` are correlated (e.g. the count-in); default all.

    Returns
    -------
    int
        The timeline start that maximises the correlation.

    Raises
    ------
    AudioError
        Negative window, empty or silent inputs.
    """
    if window < 0:
        raise AudioError(f"refine_offset: window must be ≥ 0 frames, got {window}")
    rec = _mono64(as_audio(recording, name="recording"))
    ref = _mono64(as_audio(reference, name="reference"))
    a, b = segment if segment is not None else (0, rec.shape[0])
    a, b = max(0, a), min(rec.shape[0], b)
    if b <= a:
        raise AudioError(f"refine_offset: the segment [{a}, {b}) of the recording is empty")
    seg = rec[a:b]
    if not np.any(seg):
        raise AudioError("refine_offset: the recording is silent in the segment used")
    start = timeline_start + a
    ref_win = _slice_padded(ref, start - window, start + (b - a) + window)
    if not np.any(ref_win):
        raise AudioError("refine_offset: the reference is silent where the recording lies")
    corr = scipy.signal.correlate(ref_win, seg, mode="valid", method="fft")
    return timeline_start + int(np.argmax(corr)) - window


def _envelope(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    env: npt.NDArray[np.float64] = np.abs(scipy.signal.hilbert(x))
    return env


def find_markers(
    recording: AudioArray,
    rate: int,
    expected_frames: Sequence[int],
    *,
    window: int,
    min_snr_db: float = 12.0,
    highpass_hz: float = 300.0,
) -> list[float | None]:
    """Onsets of clicks or claps near where they are expected.

    For each expected frame ``e`` the recording frames ``[e − window, e + window]`` are
    high-passed (zero-phase Butterworth, against hum and breath), their Hilbert envelope
    is taken, and the onset is where the envelope last rises through half-way between the
    window's floor (20th percentile) and its peak before that peak, interpolated
    linearly between frames.  The envelope must fall below half-way again within
    :data:`MARKER_FALL_S` of the peak: a voice's onset in the window is no marker.  The
    same sound gives the same small bias at every marker, which a drift fit absorbs into
    its offset.

    Parameters
    ----------
    recording : AudioArray
        float32 (frames, channels); channels are averaged.
    rate : int
        Hz.
    expected_frames : sequence of int
        Expected onsets, in the recording's frames.
    window : int
        Half-width of the search window, frames.
    min_snr_db : float
        A window whose 1 ms-smoothed envelope peaks less than this above its 20th percentile
        has no marker (noise alone stays about 5 dB above).  Make ``window`` a few times
        longer than the marker sound, so that a fifth of it is quiet.
    highpass_hz : float
        High-pass corner, Hz.

    Returns
    -------
    list of float or None
        The onset (recording frames, fractional) per expected frame, or None where no
        marker stands out of the noise, the loudest sound lasts (a voice), the window lies
        outside the recording, or the onset would be within 5 ms of the recording's start or
        end (a cut, not a marker).
    """
    rec = as_audio(recording, name="recording")
    if rate <= 0 or window <= 0:
        raise AudioError(f"find_markers: rate and window must be positive, got {rate}, {window}")
    if not 0 < highpass_hz < rate / 2:
        raise AudioError(f"find_markers: highpass_hz must be in (0, rate/2), got {highpass_hz}")
    sos = scipy.signal.butter(4, highpass_hz, "highpass", fs=rate, output="sos")
    pad = max(64, round(0.005 * rate))
    smooth_len = max(1, round(0.001 * rate))
    fall = max(2, round(MARKER_FALL_S * rate))
    found: list[float | None] = []
    for e in expected_frames:
        lo, hi = int(e) - window, int(e) + window + 1
        if hi <= 0 or lo >= rec.shape[0]:
            found.append(None)
            continue
        a, b = max(0, lo - pad), min(rec.shape[0], hi + max(pad, fall))
        seg = _mono64(rec[a:b])
        if seg.shape[0] < 16 or not np.any(seg):
            found.append(None)
            continue
        env = _envelope(scipy.signal.sosfiltfilt(sos, seg))
        wa, wb = max(lo, 0) - a, min(hi, rec.shape[0]) - a
        win = env[wa:wb]
        # Decide on the 1 ms-smoothed envelope: noise's envelope has spiky maxima, a
        # click's or clap's does not.
        smooth = scipy.ndimage.uniform_filter1d(win, smooth_len)
        quiet = float(np.percentile(smooth, 20))
        if float(smooth.max()) < max(quiet, 1e-12) * 10 ** (min_snr_db / 20):
            found.append(None)
            continue
        floor = float(np.percentile(win, 20))
        i = int(np.argmax(win)) + wa
        peak = float(env[i])
        level = floor + 0.5 * (peak - floor)
        below = np.flatnonzero(env[wa : i + 1] < level)
        if below.size == 0:
            found.append(None)  # already above half-way at the window's start: no onset seen
            continue
        j = int(below[-1]) + wa  # last frame below the level; j + 1 is at or above it
        after = env[i : i + fall]
        if after.shape[0] < fall or float(after.min()) >= level or float(after.max()) > peak:
            found.append(None)  # still loud 0.1 s on, or louder past the window: not a click
            continue
        onset = a + j + (level - env[j]) / (env[j + 1] - env[j])
        if onset < pad or onset > rec.shape[0] - pad:
            found.append(None)  # at the very edge: the recording's start or end, not a marker
            continue
        found.append(float(onset))
    return found


def resample(recording: AudioArray, from_rate: int, to_rate: int) -> AudioArray:
    """Resample with soxr at its high quality ('HQ'), through the mix's own streaming
    resampler (:mod:`tutti.audio.resample`).

    Parameters
    ----------
    recording : AudioArray
        float32 (frames, channels).
    from_rate, to_rate : int
        Hz.

    Returns
    -------
    AudioArray
        float32 (≈ frames · to_rate / from_rate, channels), time-aligned with the input
        (sample 0 stays at time 0).
    """
    rec = as_audio(recording, name="recording")
    for r, what in ((from_rate, "from_rate"), (to_rate, "to_rate")):
        if isinstance(r, bool) or not isinstance(r, int) or not 1000 <= r <= 768000:
            raise AudioError(f"resample: {what} must be an integer in 1000–768000 Hz, got {r!r}")
    if from_rate == to_rate:
        return rec.copy()
    if rec.shape[0] == 0:
        return np.zeros((0, rec.shape[1]), np.float32)
    return resample_whole(rec, from_rate, to_rate)
