"""Dropout gaps in a recording: silence inside, short fades at their edges so they do not click.

A recorder that lost input frames (an overflow, a stalled process) stores exactly that many
frames of silence in their place, so everything after stays on the timeline
(docs/take-format.md, ``gaps``).  Cutting from a voice to silence and back is a step: the mixer
multiplies the recording by :func:`gap_envelope`, which is 0 inside every gap and rises or falls
along a raised-cosine ramp of a few milliseconds just outside it.  Placement is unchanged.  Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .types import AudioError

__all__ = ["FADE_S", "gap_envelope", "gap_regions"]

#: Length of the fade into and out of a gap, seconds (long enough not to click, short
#: enough to keep the sung note on either side).
FADE_S = 0.005


def _check(gaps: Sequence[tuple[int, int]], ramp: int) -> None:
    if ramp < 0:
        raise AudioError(f"gap fade: ramp must be ≥ 0 frames, got {ramp}")
    if any(n <= 0 for _, n in gaps):
        raise AudioError("gap fade: every gap must be at least one frame long")


def gap_regions(gaps: Sequence[tuple[int, int]], ramp: int, frames: int) -> list[tuple[int, int]]:
    """Frame ranges ``[lo, hi)`` of a recording of ``frames`` frames that the envelope touches
    (each gap with its ramps), overlapping ones merged, clipped to the recording.

    Parameters
    ----------
    gaps : sequence of (int, int)
        ``(first frame, length)`` of each gap, in the recording's frames.
    ramp : int
        Fade length, frames.
    frames : int
        Length of the recording.
    """
    _check(gaps, ramp)
    spans = sorted((max(0, at - ramp), min(frames, at + n + ramp)) for at, n in gaps)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def gap_envelope(
    lo: int, hi: int, gaps: Sequence[tuple[int, int]], ramp: int
) -> npt.NDArray[np.float32]:
    """The gain (1 outside the gaps, 0 inside, raised-cosine fades) for frames ``[lo, hi)``.

    Parameters
    ----------
    lo, hi : int
        Frame range of the recording the gain is for.
    gaps : sequence of (int, int)
        ``(first frame, length)`` of each gap, in the recording's frames.
    ramp : int
        Fade length, frames: the ``ramp`` frames before a gap fall from 1 towards 0, the
        ``ramp`` frames after it rise from 0 towards 1 (neither reaching 0 or 1 itself).

    Returns
    -------
    ndarray
        float32, shape ``(hi − lo,)``.
    """
    _check(gaps, ramp)
    n = max(0, hi - lo)
    env = np.ones(n, np.float32)
    frame = np.arange(lo, lo + n, dtype=np.int64)
    for at, length in gaps:
        end = at + length
        if end + ramp <= lo or at - ramp >= hi:
            continue
        # k frames before the gap (1…ramp) or after it (1…ramp): gain ½(1 − cos(π k / (ramp+1)))
        before = at - frame
        after = frame - end + 1
        gain = np.ones(n, np.float64)
        gain[(frame >= at) & (frame < end)] = 0.0
        for k in (before, after):
            edge = (k >= 1) & (k <= ramp)
            gain[edge] = 0.5 * (1.0 - np.cos(np.pi * k[edge] / (ramp + 1)))
        np.minimum(env, gain.astype(np.float32), out=env)
    return env
