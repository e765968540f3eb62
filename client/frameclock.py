"""Frame accounting: which frames a stream really passed, read from its own time information.

A stream callback counts the frames it is handed (``n``); the device counts the frames it
played and captured.  The two part when frames are lost: an input overflow, an output
underflow, a process that stalled (a laptop under load, a GC pause, swapping) or a JACK
client that missed cycles.  PortAudio's ADC/DAC timestamps keep the device's count, so
``reading = time · rate − (n + lost)`` stays level while nothing is lost and steps up by the
lost frames when something is.  Wake-up jitter only ever reads late, so the level is the
reading's lower envelope over a short window; a step is believed only once it has held for a
few callbacks (a single late wake-up falls back).  On JACK whole periods are skipped, so a
step is rounded to whole callbacks there.

:class:`FrameAccount` runs inside the audio callback (no allocation, no locks: it only fills
preallocated arrays); :func:`clock_map` turns what two accounts saw during a take into the
input-frame ↔ timeline map of a recording made with separate input and output clocks.
See docs/client.md, "Dropouts and clocks".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FrameAccount", "ClockTrace", "ClockFit", "fit_clock", "clock_map"]

#: Callbacks over which the lower envelope of the reading is taken (~0.35 s at 256 frames).
WINDOW = 64
#: Callbacks whose readings must all sit above the accounted level before frames count as
#: lost (~40 ms at 256 frames): a late wake-up or two never does.
CONFIRM = 8
#: Callbacks a loss may wait for its readings to agree (a process catching up after a stall
#: reads late for a while) before it is measured as it stands (~2 s at 256 frames).
SETTLE_MAX = 375
#: Readings of a pending run kept to place its loss (the run's first ones are enough).
RUN = 64
#: Most loss events an account keeps (each take reads them as they come).
MAX_EVENTS = 4096


class FrameAccount:
    """Frames one direction of a stream lost, from its timestamps (callback-safe).

    The reading ``x = t · rate − n`` of every callback is the device's frame count minus the
    stream's, plus noise: a late wake-up reads later, and JACK's clock filter wanders by up
    to about a period on a busy machine, so one step cannot be trusted to a period, but the
    reading's level is right over time.  So on JACK losses are counted against the first
    level ``x0``: once the last CONFIRM readings agree (within half a quantum) and their lowest
    sits ``k`` quanta above ``x0 + lost``, ``k`` quanta were lost, placed where that run of high
    readings began.  Elsewhere (one-frame quanta, and input and output possibly on clocks of
    their own that drift apart) a loss is measured from the level just before the step.

    Parameters
    ----------
    rate : int
        Stream rate (Hz).
    quantum : int
        Losses come in whole multiples of this many frames (a JACK period); 1 elsewhere.

    Attributes
    ----------
    lost : int
        Frames lost so far (confirmed).  Device frame of stream frame ``n`` is ``n + lost``.
    settled : int
        Stream frame before which every loss is known (a suspected step holds it back).
    level : float
        Current lower envelope of ``time · rate − (n + lost)`` in frames.
    given_back : int
        Frames counted lost and later given back (exact readings only, below).
    unplaced : int
        Frames the stream saw but could not place (exact readings only): a callback that ran
        late after missing cycles holds one of those cycles, and which one is unknown, so its
        frames are recorded as a loss (an event of the loss plus them, then one giving them
        back, which the reader skips).
    events : int
        Losses recorded so far; ``event_at[i]``, ``event_frames[i]`` (for ``i % MAX_EVENTS``)
        give the stream frame before which ``event_frames[i]`` frames were lost.  A negative
        count gives frames back: with exact readings (JACK's own cycle count) a reading below
        the accounted level proves that a run of late callbacks was counted as a loss and the
        stream has caught up since, so the stream frames from there on sit that much earlier.
    """

    def __init__(self, rate: int, quantum: int = 1) -> None:
        self.rate = rate
        self.set_quantum(quantum)
        self.lost = 0
        self.given_back = 0
        self.unplaced = 0
        self.settled = 0
        self.level = float("nan")
        self.events = 0
        self.event_at = np.zeros(MAX_EVENTS, np.int64)
        self.event_frames = np.zeros(MAX_EVENTS, np.int64)
        self._window = np.full(WINDOW, np.inf)
        self._recent = np.full(CONFIRM, np.inf)
        self._pushed = 0
        self._origin = np.inf  # x0: the lowest reading of the first WINDOW callbacks
        self._pending = False
        self._pend_n = 0
        self._pend_count = 0
        self._pend_base = 0.0
        self._run_n = np.zeros(RUN, np.int64)  # the pending run's callbacks and readings
        self._run_x = np.zeros(RUN)
        self._follow_n = np.zeros(CONFIRM, np.int64)  # exact: the last callbacks, undecided
        self._follow_x = np.full(CONFIRM, np.inf)  # and their readings against no loss

    def set_quantum(self, quantum: int, exact: bool = False) -> None:
        """Losses come in multiples of ``quantum`` frames (a JACK period) or of one frame;
        a reading half a quantum (at least 1 ms) above the accounted level is suspect.
        ``exact``: readings are the server's own cycle count (JACK's last frame time), which
        a late callback reads late but never early."""
        self.quantum = max(1, quantum)
        self.threshold = max(self.quantum / 2, 1e-3 * self.rate)
        self.exact = exact and self.quantum > 1

    @property
    def trusted(self) -> bool:
        """Every loss so far is counted: the first level is known and no loss is pending."""
        return self._pushed > WINDOW and not self._pending

    def update(self, n: int, frames: int, t: float) -> int:
        """Account the callback holding stream frames ``n … n+frames`` whose first frame met
        the device at stream time ``t`` (seconds); returns frames newly confirmed lost
        (negative: given back)."""
        x = t * self.rate - n - self.lost  # the reading against what is accounted
        i = self._pushed
        self._pushed = i + 1
        found = 0
        if self.exact and i > WINDOW and self._origin - x >= self.quantum - self.threshold:
            found = self._give_back(x, n)
            x -= found  # against the smaller count: higher
        if self.exact and i >= WINDOW:
            q = self._follow(i, n, frames, x)
            found += q
            x -= q
        elif i >= WINDOW:
            if not self._pending:
                # JACK has one clock, so its first level holds for good; elsewhere the
                # input and output clocks may drift apart, so a loss is a step from the
                # level just before it
                base = self._origin if self.quantum > 1 else float(self._recent.min())
                if x - base > self.threshold:
                    self._pending, self._pend_n, self._pend_count = True, n, 0
                    self._pend_base = base
            else:
                self._pend_count += 1
            k = min(self._pend_count, RUN - 1)
            self._run_n[k], self._run_x[k] = n, x
        self._recent[i % CONFIRM] = x
        self._window[i % WINDOW] = x
        self.level = float(self._window.min())
        if i < WINDOW:
            self._origin = min(self._origin, x)
            self._follow_n[i % CONFIRM], self._follow_x[i % CONFIRM] = n, x
        elif self._pending and not self.exact:
            r = self._recent
            if x - self._pend_base <= self.threshold:
                self._pending = False  # a reading at the accounted level: late wake-ups
            else:
                steady = r.max() - r.min() < self.threshold or self._pend_count > SETTLE_MAX
                above = float(r.min()) - self._pend_base
                q = int(round(above / self.quantum)) * self.quantum
                if q > 0 and above > self.threshold and steady:
                    found += self._confirm(q)
        if not self.exact:
            self.settled = self._pend_n if self._pending else n + frames
        return found

    def _follow(self, i: int, n: int, frames: int, x: float) -> int:
        """Exact readings: each callback sits at its lowest later reading (a late callback
        reads a later cycle, never an earlier one), decided CONFIRM callbacks later, so a loss
        is counted in the steps it happened in, however long a busy spell lasts."""
        k = i % CONFIRM  # the oldest callback held: decided now, then replaced
        held_n, held_x = int(self._follow_n[k]), float(self._follow_x[k])
        self._follow_n[k], self._follow_x[k] = n, x + self.lost  # against no loss at all
        low = min(held_x, float(self._follow_x.min())) - self._origin
        level = int(round(low / self.quantum)) * self.quantum
        self._pending = low - self.lost > self.threshold
        self.settled = held_n + frames  # (callbacks are one period each on JACK)
        if level <= self.lost:
            return 0
        q = level - self.lost
        if held_x - self._origin > level + self.threshold:
            # it read a later cycle than it is placed at: its frames belong to one of the
            # cycles it jumped over, which one is unknown, so they are left out as lost too
            self._record(held_n, q + frames)
            self._record(held_n, -frames)
            self.unplaced += frames
        else:
            self._record(held_n, q)
        self.lost = level
        self._window -= q
        self._recent -= q
        return q

    def _give_back(self, x: float, n: int) -> int:
        """An exact reading below the accounted level: a run of late callbacks was counted
        as lost and the stream has since caught up.  Returns minus the frames given back."""
        q = min(self.lost, int(round((self._origin - x) / self.quantum)) * self.quantum)
        if q <= 0:
            return 0
        self._pending = False
        self.lost -= q
        self.given_back += q
        self._record(n, -q)
        self._window += q  # readings taken against the larger count
        self._recent += q
        return -q

    def _confirm(self, q: int) -> int:
        self._pending = False
        # the loss came before the first reading that holds it (earlier ones were late)
        run = min(self._pend_count, RUN - 1) + 1
        held = np.flatnonzero(self._run_x[:run] >= self._pend_base + q - self.threshold)
        self._record(int(self._run_n[held[0]]) if held.size else self._pend_n, q)
        self.lost += q
        self._window -= q  # readings taken before the loss was known
        self._recent -= q
        return q

    def _record(self, at: int, frames: int) -> None:
        i = self.events % MAX_EVENTS
        self.event_at[i] = at
        self.event_frames[i] = frames
        self.events += 1


@dataclass
class ClockTrace:
    """What the callback samples during a take for the clock map (preallocated).

    Each row: input device frame, input level minus output level (frames).
    """

    rows: npt.NDArray[np.float64]
    count: int = 0

    @classmethod
    def new(cls, capacity: int) -> ClockTrace:
        return cls(np.zeros((capacity, 2), np.float64))

    def add(self, in_frame: int, difference: float) -> None:
        """Append one sample (callback-safe: writes into the preallocated rows)."""
        if self.count < self.rows.shape[0]:
            self.rows[self.count, 0] = in_frame
            self.rows[self.count, 1] = difference
            self.count += 1

    def samples(self) -> npt.NDArray[np.float64]:
        return self.rows[: self.count]


@dataclass(frozen=True)
class ClockFit:
    """How the input clock ran against the output clock over a take.

    Attributes
    ----------
    ppm : float
        Input frames per output frame, minus one, in parts per million (positive: the input
        clock runs fast).
    spread : float
        Largest distance (frames) of a sample from the fitted line.
    shared : bool
        Whether the two run on one clock (no measurable rate difference).
    """

    ppm: float
    spread: float
    shared: bool


#: Rate differences below this (ppm) are one clock read twice; crystals differ by 20–150.
SHARED_PPM = 5.0
#: Shortest stretch (seconds) over which a rate difference is believed.
MIN_SPAN_S = 4.0


def fit_clock(trace: npt.NDArray[np.float64], rate: int) -> ClockFit:
    """Fit the input-minus-output level ``d`` against the input frame.

    ``d`` falls by ``ppm · 1e-6`` frames per input frame when the input clock runs fast.
    A trace shorter than ``MIN_SPAN_S`` or a flat one counts as one clock.
    """
    if trace.shape[0] < 3 or trace[-1, 0] - trace[0, 0] < MIN_SPAN_S * rate:
        return ClockFit(0.0, 0.0, True)
    x = trace[:, 0] - trace[0, 0]
    d = trace[:, 1]
    slope, icept = np.polyfit(x, d, 1)
    spread = float(np.max(np.abs(d - (icept + slope * x))))
    ppm = float(-slope * 1e6)
    return ClockFit(ppm, spread, abs(ppm) < SHARED_PPM and spread < 0.5e-3 * rate)


def clock_map(
    trace: npt.NDArray[np.float64], r0: int, timeline_start: int, step: int, max_points: int
) -> list[tuple[int, int]]:
    """``(file frame, timeline frame)`` pairs for a recording whose input clock is its own.

    Parameters
    ----------
    trace : array (rows, 2)
        :class:`ClockTrace` samples: input device frame, input level minus output level.
    r0 : int
        Input device frame of the recording's first sample.
    timeline_start : int
        Timeline frame of the recording's first sample (``start_offset - latency``).
    step : int
        Input frames between points (the points are spread further to stay within
        ``max_points``).
    """
    if trace.shape[0] < 2:
        return []
    frames = trace[:, 0] - r0
    d = trace[:, 1] - trace[0, 1]
    last = float(frames[-1])
    step = max(step, int(np.ceil(last / max(1, max_points - 1))))
    at = np.arange(0.0, last, float(step))
    at = np.append(at, last) if at.size == 0 or at[-1] < last else at
    dd = np.interp(at, frames, d)
    return [(int(a), int(round(timeline_start + a + v))) for a, v in zip(at, dd, strict=True)]
