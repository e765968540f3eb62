"""Compiled inner loops (numba) for the mix's two per-sample hot spots.

``tutti mix`` measures the BS.1770 loudness of every singer and the 4×-oversampled true peak
of the stereo bus.  Both are per-sample loops that scipy runs one sample after the other:

- **K-weighting** (two biquads): :func:`scipy.signal.lfilter` costs the same per sample
  whatever the filter's order — its loop, not the arithmetic, is the cost — so measuring every
  singer was a large share of the whole mix.  An IIR filter cannot be
  vectorised along time, but independent stretches of one signal can be filtered side by side:
  :func:`kweight_hop_energies` cuts a stretch into ``lanes`` chunks and runs the same biquads
  on all of them at once (one SIMD register holds several lanes).  Each chunk starts
  ``warm`` samples early from a zero state; the filter forgets its start like its slowest pole
  (radius 0.995 at 48 kHz: after 8,192 samples the difference is below 1e-13 of the signal),
  so the result equals sequential filtering to double precision.  It sums the squared output
  per 100 ms hop in the same pass, which is all the gating needs.
- **Summing the voices** into the left and right rows: :func:`pan_add` reads each sample once
  (int16 as stored) and adds it, times each side's gain, to both rows; numpy needs a product
  and a sum per row, each a pass with a temporary.
- **True-peak interpolation** (3 polyphase branches of 20 taps): :func:`true_peak_rows` runs
  each tap as a multiply-add along the whole row, which the compiler vectorises along time.

The coefficients come from the callers (pyloudnorm's K-weighting, the interpolator designed
with scipy); these functions only run them.  ``cache=True`` keeps the compiled code beside this
file (or in numba's user cache), so only the first mix on a machine pays for compiling;
``nogil=True`` lets the mix's threads run them in parallel.

Their speed against scipy's own loops is measured in docs/benchmarks-mix.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

__all__ = ["kweight_hop_energies", "pan_add", "true_peak_rows"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(fn: _F) -> _F:
    """``fn`` compiled without the GIL, cached on disk where numba finds a writable place
    (beside this file, or its per-user cache); compiled on every run where it finds none."""
    compiled: Any
    try:
        compiled = numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # "cannot cache function …: no locator available"
        compiled = numba.njit(cache=False, nogil=True, boundscheck=False)(fn)
    return cast(_F, compiled)


@_compiled
def kweight_hop_energies(
    x: npt.NDArray[Any],
    scale: float,
    start: int,
    lanes: int,
    chunk: int,
    warm: int,
    hop: int,
    sos: npt.NDArray[np.float64],
    out: npt.NDArray[np.float64],
) -> None:
    """Sum of squares of the K-weighted signal per hop, filtered in ``lanes`` side by side.

    Parameters
    ----------
    x : ndarray
        1-D samples (int16 or float32); sample ``i`` stands for ``x[i] * scale``.
    scale : float
        Factor to full scale (1/32768 for int16, 1.0 for float).
    start : int
        Index of the first sample measured; ``start - warm`` ≥ 0 (zeros there stand for the
        silence before a stream).
    lanes, chunk : int
        Lane ``l`` measures ``x[start + l * chunk : start + (l + 1) * chunk]``, after running
        the filter over the ``warm`` samples before that from a zero state.
    warm : int
        Samples each lane runs before it measures.
    hop : int
        Samples per hop.  ``chunk`` may end in a partial hop (its sum is written too).
    sos : ndarray
        float64 (2, 6): the two K-weighting biquads (b0, b1, b2, 1, a1, a2).
    out : ndarray
        float64 (lanes, ceil(chunk / hop)), overwritten: out[l, k] is the sum over hop ``k``
        of lane ``l``.
    """
    b00, b01, b02, a01, a02 = sos[0, 0], sos[0, 1], sos[0, 2], sos[0, 4], sos[0, 5]
    b10, b11, b12, a11, a12 = sos[1, 0], sos[1, 1], sos[1, 2], sos[1, 4], sos[1, 5]
    s00 = np.zeros(lanes)
    s01 = np.zeros(lanes)
    s10 = np.zeros(lanes)
    s11 = np.zeros(lanes)
    acc = np.zeros(lanes)
    v = np.empty(lanes)
    steps = warm + chunk
    for i in range(steps):
        base = start - warm + i
        for lane in range(lanes):
            v[lane] = x[base + lane * chunk] * scale
        for lane in range(lanes):
            w = b00 * v[lane] + s00[lane]
            s00[lane] = b01 * v[lane] - a01 * w + s01[lane]
            s01[lane] = b02 * v[lane] - a02 * w
            u = b10 * w + s10[lane]
            s10[lane] = b11 * w - a11 * u + s11[lane]
            s11[lane] = b12 * w - a12 * u
            acc[lane] += u * u
        if i < warm:
            if i == warm - 1:
                acc[:] = 0.0
            continue
        done = i - warm + 1  # samples measured so far in each lane
        if done % hop == 0 or done == chunk:
            k = (done - 1) // hop
            for lane in range(lanes):
                out[lane, k] = acc[lane]
                acc[lane] = 0.0


@_compiled
def true_peak_rows(
    rows: npt.NDArray[np.float32],
    bank: npt.NDArray[np.float32],
    centre: float,
    left: int,
    out: npt.NDArray[np.float32],
) -> None:
    """Largest absolute value over channels and the 4 interpolation phases, per frame.

    Parameters
    ----------
    rows : ndarray
        float32 (channels, frames + taps - 1): each channel with ``left`` zeros (or context)
        before its first frame and ``taps - 1 - left`` after its last.
    bank : ndarray
        float32 (3, taps): phases 1–3 as correlation taps.
    centre : float
        Phase 0's single tap (frame ``n`` itself times ``centre``).
    left : int
        Where frame 0 sits in each row.
    out : ndarray
        float32 (frames,), overwritten with the envelope.
    """
    channels = rows.shape[0]
    phases, taps = bank.shape
    frames = out.shape[0]
    out[:] = 0.0
    tmp = np.empty(frames, dtype=np.float32)
    for c in range(channels):
        row = rows[c]
        for i in range(frames):
            a = abs(row[left + i]) * centre
            if a > out[i]:
                out[i] = a
        for p in range(phases):
            tmp[:] = 0.0
            for k in range(taps):
                h = bank[p, k]
                for i in range(frames):
                    tmp[i] += h * row[i + k]
            for i in range(frames):
                a = abs(tmp[i])
                if a > out[i]:
                    out[i] = a


@_compiled
def pan_add(
    x: npt.NDArray[Any],
    left: np.float32,
    right: np.float32,
    out_left: npt.NDArray[np.float32],
    out_right: npt.NDArray[np.float32],
) -> None:
    """``out_left += left * x`` and ``out_right += right * x`` in one pass over ``x``.

    Parameters
    ----------
    x : ndarray
        1-D samples (int16 as stored, or float32), as long as the outputs.
    left, right : float32
        The gains (including int16's 1/32768).
    out_left, out_right : ndarray
        float32, 1-D, two different arrays; added to in place.
    """
    for i in range(x.shape[0]):
        v = np.float32(x[i])
        out_left[i] += left * v
        out_right[i] += right * v
