"""The master stage's pure parts: the search for the master gain that brings the limited
output to the target loudness, and the bus's true-peak envelope kept small (see
:meth:`tutti.audio.mixdown.Mixdown.master` for the stage as a whole)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Stalled", "Jump", "next_gain_step", "search_gain", "PeakEnvelope"]

_MAX_ITERATIONS = 8  # loudness measurements of the limited output, at most (and one of _UNBOUNDED)
_SATURATED_SLOPE = 0.1  # LU of output per dB of gain below which the secant step is useless
# dB of master gain at which every frame with content is pinned at the ceiling: the output's
# loudness there is the most the limiter can give (its gain is ceiling / envelope)
_UNBOUNDED_DB = 200.0
_FLAT_STEP = 6.0  # dB: the step on a stretch where the output got no louder at all
_MAX_STEP = 60.0  # dB: no single step larger than this
# LU per dB: gain changes loudness at most 1:1 (the limiter only takes away), except where
# 400 ms blocks cross BS.1770's relative gate; a bracket steeper than this holds such a jump
_JUMP_SLOPE = 1.5
_FINEST_GAIN = 0.005  # dB: a bracket this narrow that still misses holds a jump


@dataclass(frozen=True)
class Stalled:
    """The limited output's loudness has (nearly) stopped following the gain: before going
    on, measure the most the limiter can give (the output at ``_UNBOUNDED_DB``)."""


@dataclass(frozen=True)
class Jump:
    """The target lies in a jump of the gated loudness: no gain lands on it."""


def narrowest_bracket(
    tried: Sequence[tuple[float, float]], target: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The narrowest pair of gains, adjacent among those tried, whose outputs lie on either
    side of ``target`` (lower gain first), or None."""
    pts = sorted(tried)
    pairs = [
        (a, b)
        for a, b in zip(pts, pts[1:], strict=False)
        if (a[1] - target) * (b[1] - target) < 0 and b[0] > a[0]
    ]
    return min(pairs, key=lambda ab: ab[1][0] - ab[0][0]) if pairs else None


def _power_step(g0: float, o0: float, g1: float, o1: float, target: float) -> float | None:
    """The gain step (dB) from ``g1`` that a line through the two points in (power gain,
    output power) reaches ``target`` on, or None when the output got no louder.

    Where the limiter pins the loud parts at the ceiling and the rest follows the gain, the
    output's power is about ``A + B * 10 ** (g / 10)``: on such a flat stretch the loudness
    in dB barely moves, while the quiet parts still grow 1:1 and will, with enough gain,
    carry it to the target.  The power is concave in the power gain, so the line lands
    short of the target rather than past it.
    """
    u0, u1 = 10.0 ** (g0 / 10.0), 10.0 ** (g1 / 10.0)
    p0, p1, pt = 10.0 ** (o0 / 10.0), 10.0 ** (o1 / 10.0), 10.0 ** (target / 10.0)
    if u1 == u0 or (p1 - p0) / (u1 - u0) <= 0:
        return None
    u = u1 + (pt - p1) * (u1 - u0) / (p1 - p0)
    return 10.0 * math.log10(u / u1) if u > 0 else None


def next_gain_step(
    tried: Sequence[tuple[float, float]],
    target: float,
    tolerance: float,
    loudest: float | None = None,
) -> float | Stalled | Jump | None:
    """The next master-gain correction (dB) from the (gain dB, output LUFS) pairs measured so
    far.

    None when the last one is within half the tolerance of ``target``.  Once two gains
    bracket the target, the next one stays inside the bracket: interpolated, or halfway when
    the bracket is steeper than gain can make loudness move (blocks crossing the gate: the
    loudness jumps there); :class:`Jump` when such a bracket is down to ``_FINEST_GAIN``.
    Before that, a secant step (the limiter makes the output follow the gain less than 1:1,
    so a plain ``target - out`` step creeps up on the target), at most twice the miss.
    Where the output follows the gain by less than ``_SATURATED_SLOPE`` LU/dB: :class:`Stalled`
    while ``loudest`` (the most the limiter can give, LUFS) is unknown; once it is known
    (and the target below it), a secant step in power (:func:`_power_step`), which crosses
    a flat stretch in one or two measurements.
    """
    gain, out = tried[-1]
    miss = target - out
    if abs(miss) <= tolerance / 2:
        return None
    if len(tried) < 2:
        return miss
    bracket = narrowest_bracket(tried, target)
    if bracket is not None:
        (g0, o0), (g1, o1) = bracket
        slope = (o1 - o0) / (g1 - g0)
        if slope > _JUMP_SLOPE or slope <= 0:
            if g1 - g0 <= _FINEST_GAIN:
                return Jump()
            return (g0 + g1) / 2 - gain
        return g0 + (target - o0) / slope - gain
    g0, o0 = tried[-2]
    slope = (out - o0) / (gain - g0) if gain != g0 else 0.0
    if slope < _SATURATED_SLOPE and miss > 0:
        if loudest is None:
            return Stalled()
        step = _power_step(g0, o0, gain, out, target)
        return min(_MAX_STEP, max(miss, _FLAT_STEP if step is None else step))
    step = miss / max(slope, _SATURATED_SLOPE)
    return max(step, 2 * miss) if miss < 0 else min(step, 2 * miss)


def closest_gain(tried: Sequence[tuple[float, float]], target: float) -> tuple[float, list[str]]:
    """The measured gain whose output came closest to ``target``, and, when the target sits
    in a jump of the gated loudness, a warning that says so."""
    gain, out = min(tried, key=lambda t: abs(t[1] - target))
    bracket = narrowest_bracket(tried, target)
    if bracket is None:
        return gain, []
    (g0, o0), (g1, o1) = bracket
    if (o1 - o0) / (g1 - g0) <= _JUMP_SLOPE:
        return gain, []
    return gain, [
        f"the loudness jumps from {o0:.2f} to {o1:.2f} LUFS between master gains "
        f"{g0:+.3f} and {g1:+.3f} dB: a run of equally loud 400 ms blocks (a steady "
        f"count-in, say) sits at BS.1770's relative gate and is counted or not; kept "
        f"{gain:+.2f} dB, {out:.2f} LUFS"
    ]


def _beyond_the_limiter(loudest: float, ceiling_dbtp: float, kept: str) -> str:
    """Why the output misses a target above the loudest the limiter gives; ``kept`` says
    which gain was kept."""
    return (
        f"the target is beyond the limiter: this mix gets no louder than {loudest:.2f} LUFS "
        f"at a ceiling of {ceiling_dbtp:.1f} dBTP; {kept}"
    )


def search_gain(
    gain_db: float,
    target: float,
    tolerance: float,
    *,
    limits: Callable[[float], bool],
    measure: Callable[[float], float],
    ceiling_dbtp: float,
) -> tuple[float, int, list[str]]:
    """The master gain (dB) that brings the limited output to ``target`` LUFS, starting from
    ``gain_db`` (the gain that would without limiting).

    ``limits(g)`` says whether the limiter acts at gain ``g`` (if not, the output's loudness
    is the bus's plus ``g``: nothing to measure); ``measure(g)`` is the integrated loudness
    of the limited output at gain ``g``.  When the output stops following the gain, the
    search measures it once at ``_UNBOUNDED_DB``, where the limiter pins everything at the
    ceiling: the most it can give.  A target below that is searched for across the flat
    stretch; one above it is out of reach: the search aims just under that loudest output
    instead (within the tolerance of it) and, when that misses the target, says so.

    At most ``_MAX_ITERATIONS`` measurements besides that one; the gain returned is always
    either one the limiter leaves alone or one that was measured (the closest to the aim
    when the search ends without landing).  Returns the gain, the number of measurements
    and warnings for the leader.
    """
    tried: list[tuple[float, float]] = []
    aim = target
    loudest: float | None = None
    why: list[str] = []
    while limits(gain_db):
        if len(tried) == _MAX_ITERATIONS:
            gain_db, jump = closest_gain(tried, aim)
            if why and loudest is not None:
                # the measurements ran out on the way up to the loudest
                kept = f"kept the closest of the gains tried, {dict(tried)[gain_db]:.2f} LUFS"
                why = [_beyond_the_limiter(loudest, ceiling_dbtp, kept)]
            return gain_db, len(tried) + (loudest is not None), why + jump
        tried.append((gain_db, measure(gain_db)))
        step = next_gain_step(tried, aim, tolerance, loudest)
        if isinstance(step, Stalled):
            loudest = measure(_UNBOUNDED_DB)
            if loudest < target - tolerance / 2:
                aim = loudest - tolerance / 2  # lands within the tolerance under the loudest
            if loudest < target - tolerance:
                kept = f"kept a gain that comes within {tolerance:g} LU of that"
                why = [_beyond_the_limiter(loudest, ceiling_dbtp, kept)]
            step = next_gain_step(tried, aim, tolerance, loudest)
        if loudest is not None and aim != target and tried[-1][1] >= loudest - tolerance:
            # within the tolerance of the loudest: the least gain that got there
            gain_db = min(g for g, o in tried if o >= loudest - tolerance)
            break
        if step is None:
            break
        if isinstance(step, Jump):
            gain_db, jump = closest_gain(tried, aim)
            return gain_db, len(tried) + (loudest is not None), why + jump
        assert not isinstance(step, Stalled)  # loudest is known from here on
        gain_db += step
    return gain_db, len(tried) + (loudest is not None), why


class PeakEnvelope:
    """The bus's true-peak envelope, kept small: one maximum per block, and per-frame values
    computed only for the regions where the limiter acts, the last few of them cached.

    Keeping the per-frame envelope of the whole timeline (or of every region where the
    limiter acts: all of a loud mix) would cost 4 bytes per frame, 58 MB for five minutes at
    48 kHz; memory would grow with the length of the take.  The cache holds at most
    ``_CACHED`` regions (about 9 MB with the default block); a later iteration of the master
    recomputes the envelopes it needs.
    """

    _CACHED = 32

    def __init__(
        self,
        region: Callable[[int, int], npt.NDArray[np.float32]],
        maxima: npt.NDArray[np.float64],
        block: int,
        frames: int,
    ) -> None:
        self._region = region  # per-frame envelope of frames [lo, hi)
        self._maxima = maxima
        self._block = block
        self._frames = frames
        self._cache: OrderedDict[tuple[int, int], npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def max_over(self, lo: int, hi: int) -> float:
        """Largest envelope value of frames [lo, hi), or an upper bound (whole blocks)."""
        first = max(0, lo) // self._block
        last = min(self._frames, hi) - 1
        if last < max(0, lo) or self._maxima.size == 0:
            return 0.0
        return float(self._maxima[first : last // self._block + 1].max())

    def release(self) -> None:
        """Drop the cached per-frame envelopes."""
        with self._lock:
            self._cache.clear()

    def frames(self, lo: int, hi: int) -> npt.NDArray[np.float32]:
        """Per-frame envelope of frames [lo, hi) (zeros beyond the bus); thread-safe."""
        key = (lo, hi)
        with self._lock:
            env = self._cache.get(key)
            if env is not None:
                self._cache.move_to_end(key)
                return env
        env = self._region(lo, hi)
        with self._lock:
            self._cache[key] = env
            while len(self._cache) > self._CACHED:
                self._cache.popitem(last=False)
        return env
