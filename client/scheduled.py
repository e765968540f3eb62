"""A take on the audio engine: what it was asked to play and record, and what it measured.

The engine's callback owns the ``cb_*`` fields while the take runs; everything else is set once
or read after :attr:`ScheduledTake.done`.  The timeline model is in :mod:`tutti.client.engine`.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import numpy as np

from tutti.audio.types import AudioArray
from tutti.client.frameclock import ClockTrace, clock_map, fit_clock
from tutti.errors import TuttiError

__all__ = ["EngineError", "TakeSink", "ScheduledTake", "WAITING", "RUNNING", "ENDED"]

#: Seconds between the clock samples a take keeps for its clock map.
CLOCK_TRACE_S = 0.5
#: Output slips a take keeps (more are counted in the losses but not listed).
MAX_SLIPS = 256
#: Gaps and slips listed in a recording's metadata (which travels in one HTTP header).
MAX_LISTED = 100
#: Most clock-map points a recording carries.
MAX_MAP_POINTS = 40


class EngineError(TuttiError):
    """The engine cannot do what was asked (not started, a take already running, too late)."""


class TakeSink(Protocol):
    """Where a take's recorded frames go (called from the engine's drain thread)."""

    def set_start_offset(self, frames: int) -> None:
        """``r0 - o0`` is known (before the first :meth:`write`)."""

    def write(self, block: AudioArray) -> None:
        """The next recorded frames, float32 (frames, channels); must not block for long."""

    def note_loss(self) -> None:
        """A gap was just counted: keep a record of it before the frames that follow it."""


#: States of a take, owned by the engine's callback.
WAITING, RUNNING, ENDED = 0, 1, 2


class ScheduledTake:
    """A take handed to :meth:`DuplexEngine.schedule`; filled in as it runs.

    Attributes
    ----------
    t0 : float
        Local ``time.monotonic()`` seconds at which timeline sample 0 leaves the DAC.
    o0 : int | None
        Stream frame of timeline sample 0: None until the first callback after
        :meth:`DuplexEngine.schedule`, then re-estimated every callback until the take
        starts, final from then on.
    r0 : int | None
        Input frame of the recording's first sample (None if not recording / not started).
    done : threading.Event
        Set when the take has ended and every recorded frame has been handed on.
    frames_recorded : int
        Frames handed to the sink (or kept in memory).
    overflows, underflows : int
        Input overflows / output underflows PortAudio reported while the take ran.  (With
        JACK these are the server's xrun notifications: any client's xrun counts.)
    late_frames : int
        How many frames after its scheduled frame the first timeline sample went out
        (0 when on time; the timeline position a late joiner started at).
    dropped_frames : int
        Frames lost because the drain thread fell more than RING_SECONDS behind (zeros
        were written in their place, so the timeline stays right).
    gaps : list[tuple[int, int]]
        ``(recording frame, frames)``: input frames this stream lost during the take, each
        replaced by as many frames of silence (so every later sample keeps its place).
    slips : list[tuple[int, int]]
        ``(timeline frame, frames)``: where the headset program jumped ahead because the
        output lost frames (the singer heard a skip, never a shift).
    clock_trace : ClockTrace
        Input-minus-output clock levels sampled during the take (for the clock map).
    error : str | None
        Why the take failed (e.g. scheduled in the past), else None.
    """

    def __init__(
        self,
        program: AudioArray,
        t0: float,
        *,
        record: bool,
        sink: TakeSink | None,
        tail_frames: int | None,
        in_channels: int,
    ) -> None:
        self.program = program
        self.in_channels = in_channels
        self.t0 = t0
        self.record = record
        self.sink = sink
        self.tail_frames = tail_frames
        self.done = threading.Event()
        self.o0: int | None = None
        self.r0: int | None = None
        self.frames_recorded = 0
        self.overflows = 0
        self.underflows = 0
        self.dropped_frames = 0
        self.late_frames = 0
        self.late_ok = False
        self.settle_by = 0.0  # a late joiner's start waits until then for a confirmed mapping
        self.error: str | None = None
        self.first_dac_time: float | None = None  # monotonic estimate of o0's DAC time
        self.gaps: list[tuple[int, int]] = []
        # the gap not yet written (recording frame, frames) and the audio held after it
        self.open_gap: tuple[int, int] | None = None
        self.held: list[AudioArray] = []
        self.slips: list[tuple[int, int]] = []
        self.clock_trace = ClockTrace.new(int(7200 / CLOCK_TRACE_S))
        # callback-owned state (o0 in output device frames, r0 in input device frames)
        self.cb_state = WAITING
        self.cb_end: int | None = None  # exclusive output device frame where the take ends
        self.cb_end_stream: int | None = None  # the same end as a stream frame
        self.cb_r0_stream: int | None = None  # stream frame of r0
        self.stop_requested = False
        self.cb_slip_rows = np.zeros((MAX_SLIPS, 2), np.int64)
        self.cb_slip_count = 0
        self.cb_next_trace = 0
        self.blocks: list[AudioArray] = []
        self.drained_to: int | None = None
        self._losses_seen = (0, 0, 0)  # the drain thread's, for losses_changed

    @property
    def start_offset(self) -> int:
        """``r0 - o0`` in frames (≤ 0: recording starts in the callback holding o0)."""
        if self.o0 is None or self.r0 is None:
            raise EngineError("the take has not started recording yet")
        return self.r0 - self.o0

    @property
    def ended(self) -> bool:
        return self.done.is_set()

    @property
    def lost_frames(self) -> int:
        """Input frames lost during the take (silence in the recording)."""
        return sum(f for _, f in self.gaps)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the take is done; True if it is."""
        return self.done.wait(timeout)

    def losses_changed(self) -> bool:
        """True once after the callback counted another slip or xrun (for the drain thread)."""
        mark = (self.cb_slip_count, self.overflows, self.underflows)
        changed, self._losses_seen = mark != self._losses_seen, mark
        return changed

    def slips_so_far(self) -> list[tuple[int, int]]:
        """The output slips counted until now (all of them once the take is done)."""
        if self.done.is_set():
            return list(self.slips)
        n = self.cb_slip_count  # the callback fills a row before it counts it
        return [(int(a), int(f)) for a, f in self.cb_slip_rows[:n].tolist()]

    def progress(self, latency: int, rate: int, frames: int | None = None) -> dict[str, Any]:
        """What the take has measured so far, as a take writer journals it (``counters`` and
        ``timeline``, its gaps up to recording frame ``frames``); safe to call from any
        thread while the take runs."""
        return {
            "counters": {
                "overflows": self.overflows,
                "underflows": self.underflows,
                "dropped_frames": self.dropped_frames,
            },
            "timeline": self.timeline_fields(latency, rate, frames),
        }

    def timeline_fields(self, latency: int, rate: int, frames: int | None = None) -> dict[str, Any]:
        """The take-format fields this take measured (``gaps``, ``slips``, ``clock_map``,
        ``shared_clock``), for a recording whose round trip is ``latency`` frames.

        Lists are capped (:data:`MAX_LISTED`) so the recording's metadata stays small; the
        audio itself holds every gap."""
        if self.o0 is None or self.r0 is None:
            return {}
        gaps = [(a, f) for a, f in list(self.gaps) if frames is None or a <= frames]
        shift = self.start_offset - latency  # timeline frame of recording frame 0
        fit = fit_clock(self.clock_trace.samples(), rate)
        points: list[tuple[int, int]] = []
        if not fit.shared and self.r0 is not None:
            points = clock_map(self.clock_trace.samples(), self.r0, shift, 5 * rate, MAX_MAP_POINTS)

        def timeline_of(frame: int) -> int:  # through the clock map where there is one
            if not points:
                return frame + shift
            return int(round(np.interp(frame, [p[0] for p in points], [p[1] for p in points])))

        return {
            "gaps": [{"at": timeline_of(a), "frames": f} for a, f in gaps[:MAX_LISTED]],
            "slips": [{"at": a, "frames": f} for a, f in self.slips_so_far()[:MAX_LISTED]],
            "clock_map": [{"frame": a, "timeline": t} for a, t in points],
            "shared_clock": fit.shared,
        }

    def audio(self) -> AudioArray:
        """The recording kept in memory (only when scheduled without a sink)."""
        if self.sink is not None:
            raise EngineError("this take's frames went to its sink, not to memory")
        if not self.blocks:
            return np.zeros((0, self.in_channels), np.float32)
        return np.concatenate(self.blocks, axis=0)
