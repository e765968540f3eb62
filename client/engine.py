"""The singer's audio engine: one full-duplex stream and sample-accurate scheduled takes.

Timeline model (DESIGN.md): stream frames are counted ``n = 0, 1, ...`` from the first
callback; input and output share that count.  A take is scheduled at a *local*
``time.monotonic()`` instant ``t0``.  Every callback measures where its frames meet the DAC
on ``time.monotonic()``: it reads ``time.monotonic()`` on entry and adds PortAudio's
``outputBufferDacTime - currentTime`` (both on the stream clock); the smallest value of the
last few cycles (a late wake-up only ever reads later) maps stream frames to monotonic time.
Until the take starts, each callback recomputes the output frame ``o0`` whose DAC time is
``t0`` with that fresh mapping — stream clocks drift against ``time.monotonic()`` (JACK's
dummy driver loses ~1 % under load) and xruns skip frames, so a mapping measured once
seconds earlier would not do.  Timeline sample ``k`` plays at stream frame ``o0 + k``; the
recording starts at input frame ``r0``, the first frame of the callback that contains ``o0``.
The recording's timeline numbers are ``start_offset = r0 - o0`` and the round-trip latency
``L`` measured by ``tutti calibrate``.

Real-time rules: the callback only copies — input into a preallocated ring, output from the
pre-rendered program — and updates a few integers.  It takes no locks, does no I/O and
allocates no arrays.  A drain thread reads the ring, hands the take's frames to a
:class:`TakeSink` (e.g. the crash-safe :class:`tutti.client.takestore.TakeWriter`) and keeps
the input level meter.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import sounddevice as sd

from tutti.audio.types import AudioArray, as_audio
from tutti.client.devices import (
    DeviceError,
    DeviceSpec,
    check_duplex,
    device_key,
    resolve_device,
    set_jack_client_name,
)
from tutti.client.frameclock import CONFIRM, MAX_EVENTS, FrameAccount
from tutti.client.jackframes import JackFrames, open_jack_frames
from tutti.client.scheduled import (
    CLOCK_TRACE_S,
    ENDED,
    MAX_SLIPS,
    RUNNING,
    WAITING,
    EngineError,
    ScheduledTake,
    TakeSink,
)
from tutti.client.streamclock import ClockMapping, measure_clock

__all__ = [
    "EngineError",
    "InputLevel",
    "TakeSink",
    "ScheduledTake",
    "DuplexEngine",
    "TimerMapping",
]

#: Seconds of input the ring holds: how long the drain thread may stall without loss.
RING_SECONDS = 10.0
#: How often the drain thread wakes (seconds).
DRAIN_PERIOD = 0.02
#: Seconds between re-readings of JACK's clock against time.monotonic() (NTP slews one)
JACK_OFFSET_S = 2.0
#: Recorded audio between two input losses shorter than this (s) is silenced with them: one
#: gap, not a stutter of many (a storm loses a period every few callbacks), so the take's
#: list of gaps stays short and whole, and the mix fades once.
MERGE_GAPS_S = 0.1
#: How far (s) JACK's frame timer may read earlier than the callbacks' own wake-up mapping and
#: still be used: a callback wakes up to this much after its cycle began on a busy machine
JACK_AGREE_S = 1e-3
#: How far (s) JACK's frame timer may read later than a wake-up (which cannot precede its
#: cycle): a healthy timer read 23–400 µs earlier than the wake-ups here, never later
JACK_LATE_S = 0.25e-3
#: How long (s) the last good frame-timer mapping stands in while the timer is off (it moved
#: 20 ppm against the wall clock on the dummy driver: 10 µs in this time)
JACK_HOLD_S = 0.5
#: Callbacks over which the DAC-time mapping takes its minimum (~85 ms at 256 frames): longer
#: than a loss waits to be counted (CONFIRM), so the minimum always holds a reading from before
#: a loss not yet counted (the readings after it are late by the loss)
HISTORY = 2 * CONFIRM
#: How far (s) the last HISTORY wake-ups may disagree and still confirm the mapping where no
#: JACK timer does: a late joiner starts on a confirmed mapping
WAKE_AGREE_S = 1e-3
#: Longest (s) a late joiner waits for a confirmed mapping before it starts on the one it has
LATE_SETTLE_S = 1.0

_JACK_NAME_ENV = "TUTTI_JACK_CLIENT_NAME"
_jack_name_applied = False


def _is_jack(hostapi: str) -> bool:
    """Whether a host API is JACK (which loses whole periods, never parts of one)."""
    return "JACK" in hostapi


class TimerMapping:
    """Which mapping (monotonic time of device output frame 0) a cycle uses: JACK's frame
    timer, checked against this client's own wake-ups (which can only read late).

    The timer reads alike in every client's same cycle, where wake-ups do not, but it jumps
    when the server itself runs late (+5.4 ms for 8 cycles under a CPU hog; one 8-singer
    start skewed by 1481 frames on it at load 10).  A reading later than a wake-up, or far
    earlier, is not used; the last good one stands in meanwhile, alike for every client, where
    each one's wake-ups differ (an 8-singer start split 54 frames so).
    """

    def __init__(self) -> None:
        self._held: tuple[float, float] | None = None  # last good mapping, and when

    def pick(self, wakeups: float, timer: float, now: float) -> tuple[float, bool]:
        """``(mapping, confirmed)`` for this cycle, from the two readings at ``now``."""
        if -JACK_AGREE_S <= timer - wakeups <= JACK_LATE_S:
            self._held = (timer, now)
            return timer, True
        if self._held is not None and now - self._held[1] <= JACK_HOLD_S:
            return self._held[0], True
        return wakeups, False

    def shift(self, seconds: float) -> None:
        """Move the held mapping with frames the stream gave back."""
        if self._held is not None:
            self._held = (self._held[0] + seconds, self._held[1])


@dataclass(frozen=True)
class InputLevel:
    """Input level over the last drained block (~20–100 ms), linear full scale.

    ``clips`` counts blocks so far with a sample at or above 0.999 in magnitude.
    """

    peak: float
    rms: float
    clips: int


class DuplexEngine:
    """One full-duplex sounddevice stream that plays programs and records takes.

    Parameters
    ----------
    rate : int
        Sample rate in Hz (the session rate).
    device
        Device number, part of a name, or an (input, output) pair; None for the defaults.
    out_channels, in_channels : int
        Headset output channels (the program's channels) and microphone channels.
    blocksize : int
        Frames per callback; 0 lets the host choose (lowest latency).  Calibration is only
        valid for the blocksize it was measured with.
    latency : float | str | None
        Passed to sounddevice ("low", "high" or seconds).

    Set ``TUTTI_JACK_CLIENT_NAME`` to name this process's JACK client (harnesses use it).
    """

    def __init__(
        self,
        *,
        rate: int,
        device: DeviceSpec = None,
        out_channels: int = 2,
        in_channels: int = 1,
        blocksize: int = 0,
        latency: float | str | None = None,
    ) -> None:
        global _jack_name_applied
        name = os.environ.get(_JACK_NAME_ENV)
        if name and not _jack_name_applied:
            set_jack_client_name(name)
            _jack_name_applied = True
        for what, v, lo, hi in (
            ("out_channels", out_channels, 1, 8),
            ("in_channels", in_channels, 1, 8),
            ("blocksize", blocksize, 0, 8192),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise EngineError(f"{what} must be a whole number in {lo}–{hi}, not {v!r}")
        self.input_device, self.output_device = resolve_device(device)
        check_duplex(
            self.input_device,
            self.output_device,
            rate=rate,
            in_channels=in_channels,
            out_channels=out_channels,
        )
        self.rate = rate
        self.out_channels = out_channels
        self.in_channels = in_channels
        self.blocksize = blocksize
        self.latency = latency
        self.device_key = device_key(self.input_device, self.output_device)
        self.overflows = 0
        self.underflows = 0
        self.clock: ClockMapping | None = None
        self._stream: sd.Stream | None = None
        self._n = 0
        self._callbacks = 0
        cap = int(RING_SECONDS * rate)
        self._ring = np.zeros((cap, in_channels), np.float32)
        self._ring_w = 0
        self._ring_r = 0
        self._take: ScheduledTake | None = None  # the callback's view
        self._draining: ScheduledTake | None = None  # the drain thread's view
        self._closing = threading.Event()
        self._drain_thread: threading.Thread | None = None
        self._level = InputLevel(0.0, 0.0, 0)
        self._hist = np.full(HISTORY, np.inf)
        self._out_latency = 0.0
        # JACK skips whole periods; elsewhere a loss may be any number of frames
        self._jack = _is_jack(self.output_device.hostapi)
        self._jack_frames: JackFrames | None = None  # JACK's exact counter, when it answers
        self._use_jack_frames = False
        self._timer = TimerMapping()  # JACK's frame timer, checked against the wake-ups
        self.input_account = FrameAccount(rate)
        self.output_account = FrameAccount(rate)
        self._in_events_read = 0
        self._out_new_events = 0  # output loss events the latest callback recorded
        self._drain_lost = 0  # input frames lost before the drain's read position
        self._skip_in = 0  # input frames still to leave out: a loss given back (frameclock)
        # TUTTI_CLOCK_TRACE=FILE.npy keeps every callback's timing for a look at dropouts
        # ("{pid}" in FILE: one file per process)
        path = os.environ.get("TUTTI_CLOCK_TRACE")
        self._trace_path = path.replace("{pid}", str(os.getpid())) if path else None
        self._trace = np.zeros((200_000 if self._trace_path else 0, 10))

    # ------------------------------------------------------------------ lifecycle

    @property
    def device_info(self) -> dict[str, Any]:
        """What a take records about the device (names, host API, rate, blocksize)."""
        return {
            "key": self.device_key,
            "input": self.input_device.name,
            "output": self.output_device.name,
            "hostapi": self.output_device.hostapi,
            "rate": self.rate,
            "blocksize": self.blocksize,
        }

    @property
    def reported_latency(self) -> int:
        """Round trip the host API *reports* for the open stream, in frames."""
        if self._stream is None:
            raise EngineError("the engine is not started")
        lin, lout = self._stream.latency
        return int(round((lin + lout) * self.rate))

    @property
    def frame(self) -> int:
        """Stream frames processed so far."""
        return self._n

    def start(self) -> None:
        """Open and start the stream (silence while idle) and measure the clock mapping.

        Raises
        ------
        DeviceError
            The device cannot be opened or delivers no callbacks.
        """
        if self._stream is not None:
            raise EngineError("the engine is already started")
        if self._jack:
            self._jack_frames = open_jack_frames()
        try:
            self._stream = sd.Stream(
                samplerate=self.rate,
                blocksize=self.blocksize,
                device=(self.input_device.index, self.output_device.index),
                channels=(self.in_channels, self.out_channels),
                dtype="float32",
                latency=self.latency,
                callback=self._callback,
                prime_output_buffers_using_stream_callback=False,
            )
            self._out_latency = float(self._stream.latency[1])
            self._stream.start()
        except sd.PortAudioError as exc:
            self._stream = None
            self._close_jack_frames()
            raise DeviceError(
                f"cannot open {self.device_key!r} at {self.rate} Hz "
                f"({self.in_channels} in / {self.out_channels} out): {exc}"
            ) from exc
        deadline = time.monotonic() + 3.0
        while self._callbacks < 4:
            if time.monotonic() > deadline:
                self.close()
                raise DeviceError(f"{self.device_key!r} started but delivers no audio callbacks")
            time.sleep(0.005)
        self.clock = measure_clock(self._stream, self.rate)
        self._drain_thread = threading.Thread(
            target=self._drain_loop, name="tutti-drain", daemon=True
        )
        self._drain_thread.start()

    def close(self) -> None:
        """Stop and close the stream; a running take ends where the stream stopped."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
            finally:
                stream.close()
        take = self._draining
        if take is not None and take.cb_end is None:
            take.cb_end = self._n
            if take.cb_state == WAITING:
                take.error = take.error or "the engine was closed before the take started"
            take.cb_state = ENDED
        self._closing.set()
        if self._drain_thread is not None:
            self._drain_thread.join(5.0)
            self._drain_thread = None
        self._close_jack_frames()
        if self._trace_path:
            np.save(self._trace_path, self._trace[: self._callbacks])

    def _close_jack_frames(self) -> None:
        jf, self._jack_frames = self._jack_frames, None
        if jf is not None:
            jf.close()

    def __enter__(self) -> DuplexEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ takes

    def remeasure_clock(self) -> ClockMapping:
        """Measure the stream-clock mapping now (a diagnostic: scheduling uses the mapping
        the callback measures every cycle, see :meth:`dac_mapping`)."""
        if self._stream is None:
            raise EngineError("the engine is not started")
        self.clock = measure_clock(self._stream, self.rate)
        return self.clock

    def dac_mapping(self) -> tuple[float, float]:
        """``(a, spread)``: stream frame ``n`` leaves the DAC at ``a + n / rate`` seconds of
        ``time.monotonic()``, as the last few callbacks measured it; ``spread`` (s) is how
        much those callbacks disagreed (their wake-up jitter)."""
        h = self._hist
        finite = h[np.isfinite(h)]
        if finite.size == 0:
            raise EngineError("no callbacks yet")
        return float(finite.min()), float(finite.max() - finite.min())

    def schedule(
        self,
        program: AudioArray,
        t0: float,
        *,
        record: bool = True,
        writer: TakeSink | None = None,
        tail: float | None = 1.0,
        late_ok: bool = False,
    ) -> ScheduledTake:
        """Play ``program`` so that its sample 0 leaves the DAC at local time ``t0``.

        Parameters
        ----------
        program : AudioArray
            Headset mix on the timeline, float32 (frames, out_channels).
        t0 : float
            Local ``time.monotonic()`` seconds of timeline sample 0 at the DAC.  Must be far
            enough ahead that one callback passes before it (≥ ~50 ms).
        record : bool
            Record the input from the callback that contains ``o0``.
        writer : TakeSink | None
            Receives the recorded frames; None keeps them in memory (:meth:`ScheduledTake.audio`).
        tail : float | None
            Seconds to keep recording after the program ends, then stop by itself; None
            records until :meth:`stop_take`.
        late_ok : bool
            ``t0`` may be past (a singer joining a running take): play and record from
            where the timeline is now; the take's numbers place it like any other.

        Raises
        ------
        EngineError
            Not started, a take already running, t0 already past, or bad program.
        """
        if self._stream is None:
            raise EngineError("start the engine before scheduling a take")
        if self._draining is not None and not self._draining.done.is_set():
            raise EngineError("a take is already scheduled or running; stop it first")
        program = as_audio(program, channels=self.out_channels, name="program")
        if tail is not None and not (0.0 <= tail <= 3600.0):
            raise EngineError(f"tail must be 0–3600 seconds or None, not {tail!r}")
        now = time.monotonic()
        if t0 <= now and not late_ok:
            raise EngineError(f"t0 is {now - t0:.3f} s in the past; schedule takes ahead of time")
        take = ScheduledTake(
            program,
            t0,
            record=record,
            sink=writer,
            tail_frames=None if tail is None else int(round(tail * self.rate)),
            in_channels=self.in_channels,
        )
        take.late_ok = late_ok
        take.settle_by = now + LATE_SETTLE_S if late_ok and t0 <= now else 0.0
        self._skip_in = 0  # a give-back left over from the take before is not this one's
        self._draining = take
        self._take = take  # the callback picks it up from here
        return take

    def stop_take(self) -> None:
        """End the running take at the next callback (its recording stops there)."""
        take = self._draining
        if take is not None:
            take.stop_requested = True

    def input_level(self) -> InputLevel:
        """The latest input level (updated by the drain thread, ~every 20 ms)."""
        return self._level

    # ------------------------------------------------------------------ real-time

    def _callback(
        self, indata: Any, outdata: Any, frames: int, time_info: Any, status: sd.CallbackFlags
    ) -> None:
        now = time.monotonic()
        n = self._n
        take = self._take
        if status.input_overflow:
            self.overflows += 1
            if take is not None:
                take.overflows += 1
        if status.output_underflow:
            self.underflows += 1
            if take is not None:
                take.underflows += 1
        # input -> ring
        ring = self._ring
        cap = ring.shape[0]
        i = n % cap
        j = i + frames
        if j <= cap:
            ring[i:j] = indata
        else:
            k = cap - i
            ring[i:] = indata[:k]
            ring[: j - cap] = indata[k:]
        # Account for frames the device passed that this stream never saw, each direction
        # on its own timestamps (PortAudio's JACK xrun flags are server-wide: useless here).
        if self._callbacks == 0 and self._jack:
            # one callback per JACK cycle: the server's cycle count places every frame
            jf = self._jack_frames
            self._use_jack_frames = jf is not None and jf.buffer_size == frames
            self.input_account.set_quantum(frames, exact=self._use_jack_frames)
            self.output_account.set_quantum(frames, exact=self._use_jack_frames)
        dac = time_info.outputBufferDacTime
        cur = time_info.currentTime
        adc = time_info.inputBufferAdcTime
        ahead = dac - cur if dac > 0.0 else self._out_latency
        cycle = None
        if self._use_jack_frames and self._jack_frames is not None:
            t_in = t_out = self._jack_frames.frame() / self.rate
            cycle = self._jack_frames.cycle_time()
        else:
            t_in, t_out = (adc if adc != 0.0 else cur), cur + ahead  # adc 0: not known
        self.input_account.update(n, frames, t_in)
        out_events = self.output_account.events
        slipped = self.output_account.update(n, frames, t_out)
        self._out_new_events = self.output_account.events - out_events
        d_in = n + self.input_account.lost
        d_out = n + self.output_account.lost
        # Where device output frame d meets the DAC on time.monotonic(), measured this very
        # cycle: now + (DAC time - current time) - d / rate.  A callback that woke late reads
        # a later "now", never an earlier one, so the smallest of the last HISTORY cycles is
        # the truest; a short window follows stream clocks that drift.
        hist = self._hist
        if slipped < 0:  # frames given back: the earlier readings counted them, and read early
            hist += -slipped / self.rate
            self._timer.shift(-slipped / self.rate)
        hist[self._callbacks % HISTORY] = now + ahead - d_out / self.rate
        base = hist.min()
        if cycle is not None:
            base, confirmed = self._timer.pick(base, cycle + ahead - d_out / self.rate, now)
        else:
            confirmed = hist.max() - base <= WAKE_AGREE_S
        if self._callbacks < self._trace.shape[0]:
            at = np.nan if cycle is None else cycle
            self._trace[self._callbacks] = (n, frames, cur, adc, dac, now, t_out, d_out, base, at)
        outdata.fill(0)
        if take is not None:
            if take.cb_state == WAITING and (confirmed or now >= take.settle_by):
                self._maybe_start(take, n, frames, d_in, d_out, base)
            if take.cb_state == RUNNING and take.o0 is not None:
                if self._out_new_events:
                    self._note_slip(take)
                self._play(take, outdata, n, frames, d_in, d_out)
            if take.cb_state == ENDED:
                self._take = None
        # publish the input frames last, so the drain thread sees r0 / the end with them
        self._ring_w = n + frames
        self._n = n + frames
        self._callbacks += 1

    def _maybe_start(
        self, take: ScheduledTake, n: int, frames: int, d_in: int, d_out: int, base: float
    ) -> None:
        """Waiting take: recompute o0 with this cycle's mapping; start when it is due."""
        if take.late_ok and not self.output_account.trusted:
            return  # frames may have been lost: the mapping is late until they are counted
        o0 = round((take.t0 - base) * self.rate)
        too_late = take.o0 is None and o0 < d_out and not take.late_ok
        over = take.late_ok and o0 + take.program.shape[0] + (take.tail_frames or 0) <= d_out
        if take.stop_requested or too_late or over:
            take.cb_end = d_out
            take.cb_end_stream = n
            take.cb_state = ENDED
            if take.stop_requested:
                take.error = "stopped before it started"
            elif over:
                take.error = "the take was already over when this singer's audio was ready"
            else:
                take.error = (
                    f"t0 was {(d_out - o0) / self.rate * 1000:.1f} ms in the past when "
                    "the stream first saw it; schedule further ahead"
                )
            return
        # o0 is recomputed every callback until it starts, so lost frames while waiting
        # cannot shift the start.
        take.o0 = o0
        take.first_dac_time = base + o0 / self.rate
        if o0 < d_out + frames:
            take.late_frames = d_out - o0 if o0 < d_out else 0
            if take.record:
                take.r0 = d_in
                take.cb_r0_stream = n
            if take.tail_frames is not None:
                take.cb_end = o0 + take.program.shape[0] + take.tail_frames
            take.cb_state = RUNNING

    def _note_slip(self, take: ScheduledTake) -> None:
        """The output lost frames (this callback's loss events, one or more steps): the
        program jumps with the device (no allocation).  Frames given back (negative) come off
        the latest skips: the program went back."""
        assert take.o0 is not None
        acct = self.output_account
        first = acct.events - self._out_new_events
        lost = acct.lost - sum(  # before this callback's events
            int(acct.event_frames[e % MAX_EVENTS]) for e in range(first, acct.events)
        )
        for e in range(first, acct.events):
            at, f = int(acct.event_at[e % MAX_EVENTS]), int(acct.event_frames[e % MAX_EVENTS])
            if f < 0:
                self._net_slips(take, -f)
            elif take.cb_slip_count < MAX_SLIPS:
                k = take.cb_slip_count
                take.cb_slip_rows[k, 0] = at + lost - take.o0  # program frame it skipped from
                take.cb_slip_rows[k, 1] = f
                take.cb_slip_count = k + 1
            lost += f

    @staticmethod
    def _net_slips(take: ScheduledTake, frames: int) -> None:
        k = take.cb_slip_count
        while frames > 0 and k > 0:
            cut = min(frames, int(take.cb_slip_rows[k - 1, 1]))
            take.cb_slip_rows[k - 1, 1] -= cut
            frames -= cut
            if take.cb_slip_rows[k - 1, 1] == 0:
                k -= 1
        take.cb_slip_count = k

    def _play(
        self, take: ScheduledTake, outdata: Any, n: int, frames: int, d_in: int, d_out: int
    ) -> None:
        """Copy the program's frames due in this callback (device frames d_out…)."""
        o0 = take.o0
        assert o0 is not None
        if take.stop_requested and (take.cb_end is None or take.cb_end > d_out):
            take.cb_end = d_out
        end = take.cb_end
        hi = o0 + take.program.shape[0]
        if end is not None and end < hi:
            hi = end
        if d_out + frames < hi:
            hi = d_out + frames
        lo = o0 if o0 > d_out else d_out
        if hi > lo:
            outdata[lo - d_out : hi - d_out] = take.program[lo - o0 : hi - o0]
        if take.r0 is not None and d_in >= take.cb_next_trace:
            take.clock_trace.add(d_in, self.input_account.level - self.output_account.level)
            take.cb_next_trace = d_in + int(CLOCK_TRACE_S * self.rate)
        if end is not None and d_out + frames >= end:
            take.cb_end_stream = n + max(0, end - d_out)
            take.cb_state = ENDED

    # ------------------------------------------------------------------ drain thread

    def _drain_loop(self) -> None:
        next_offset = time.monotonic() + JACK_OFFSET_S
        while True:
            closing = self._closing.wait(DRAIN_PERIOD)
            self._drain_once(final=closing)
            jf = self._jack_frames
            if jf is not None and time.monotonic() >= next_offset:
                jf.measure_offset()  # JACK's clock is not Python's: follow their slewing
                next_offset = time.monotonic() + JACK_OFFSET_S
            if closing:
                take = self._draining
                if take is not None and not take.done.is_set():
                    take.error = take.error or "the engine closed during the take"
                    self._close_gap(take)
                    take.done.set()
                return

    def _drain_once(self, final: bool = False) -> None:
        """Hand on the input frames whose losses are all known (``settled``), with silence
        in place of every loss, so recorded frames keep their device positions."""
        settled = self.input_account.settled  # read before the events: they precede it
        w = self._ring_w if final else min(self._ring_w, settled)
        r = self._ring_r
        take = self._draining
        if w > r:
            block, overwritten = self._read_ring(r, w)
            self._ring_r = w
            self._meter(block[overwritten:])
            if take is not None:
                take.dropped_frames += self._record_span(take, block, r, w, overwritten)
        if take is not None and take.sink is not None and take.losses_changed():
            take.sink.note_loss()  # a slip or an xrun the callback counted: journal it now
        if take is not None and not take.done.is_set() and take.cb_state == ENDED:
            end = take.cb_end_stream if take.cb_end_stream is not None else w
            if w >= end:
                self._close_gap(take)
                self._finish_slips(take)
                take.done.set()

    def _read_ring(self, r: int, w: int) -> tuple[AudioArray, int]:
        """Stream frames r..w from the ring; frames the callback already overwrote (the
        drain fell RING_SECONDS behind) come back as zeros, counted first."""
        ring = self._ring
        cap = ring.shape[0]
        lost = w - r - cap if w - r > cap else 0
        block = np.empty((w - r, self.in_channels), np.float32)
        start = max(r, w - cap)
        if lost:
            block[:lost] = 0.0
        i = start % cap
        m = w - start
        first = min(m, cap - i)
        block[lost : lost + first] = ring[i : i + first]
        block[lost + first :] = ring[: m - first]
        w2 = self._ring_w
        if w2 - start > cap:  # the callback overwrote part of what we copied
            bad = min(w2 - start - cap, m)
            block[lost : lost + bad] = 0.0
            lost += bad
        return block, lost

    def _record_span(
        self, take: ScheduledTake, block: AudioArray, r: int, w: int, overwritten: int
    ) -> int:
        """Split stream frames r..w at the input losses confirmed in it and record the
        pieces, silence in each loss's place; returns ring frames lost to overwriting."""
        acct = self.input_account
        s = r
        while self._in_events_read < acct.events:
            k = self._in_events_read % MAX_EVENTS
            at = max(s, int(acct.event_at[k]))
            if at >= w:
                break
            self._record_piece(take, block[s - r : at - r], s)
            self._record_gap(take, at, int(acct.event_frames[k]))
            self._in_events_read += 1
            s = at
        self._record_piece(take, block[s - r :], s)
        if take.cb_r0_stream is None:
            return 0
        return int(max(0, min(r + overwritten, w) - max(r, take.cb_r0_stream)))

    def _in_take(self, take: ScheduledTake, s: int, e: int) -> tuple[int, int]:
        """The part of stream frames s..e that the take records (may be empty)."""
        if not take.record or take.cb_r0_stream is None:
            return s, s
        lo = max(s, take.cb_r0_stream)
        hi = e if take.cb_end_stream is None else min(e, take.cb_end_stream)
        return lo, max(lo, hi)

    def _record_piece(self, take: ScheduledTake, data: AudioArray, s: int) -> None:
        if self._skip_in:
            k = min(self._skip_in, data.shape[0])
            self._skip_in -= k
            data, s = data[k:], s + k
        lo, hi = self._in_take(take, s, s + data.shape[0])
        if hi > lo:
            if take.drained_to is None:
                assert take.o0 is not None and take.cb_r0_stream is not None
                take.r0 = take.cb_r0_stream + self._drain_lost  # device frame, losses known
                take.drained_to = take.r0
                if take.sink is not None:
                    take.sink.set_start_offset(take.r0 - take.o0)
            self._hand_on_audio(take, data[lo - s : hi - s])

    def _record_gap(self, take: ScheduledTake, at: int, frames: int) -> None:
        """``frames`` input frames were lost before stream frame ``at``; a negative count
        was counted lost too soon, and that many frames from ``at`` on are left out."""
        self._drain_lost += frames
        lo, hi = self._in_take(take, at, at + 1)
        if frames < 0:
            if hi > lo and take.drained_to is not None:
                self._skip_in += -frames
            return
        if hi > lo and take.drained_to is not None and at > (take.cb_r0_stream or at):
            assert take.r0 is not None
            if take.open_gap is None:
                take.open_gap = (take.frames_recorded, frames)
            else:  # the audio held since the last loss is silenced with both
                held = sum(h.shape[0] for h in take.held)
                take.open_gap = (take.open_gap[0], take.open_gap[1] + held + frames)
                take.held.clear()

    def _hand_on_audio(self, take: ScheduledTake, part: AudioArray) -> None:
        """Recorded frames, held while they follow a loss closer than MERGE_GAPS_S."""
        if take.open_gap is None:
            self._hand_on(take, part)
            return
        take.held.append(part)
        if sum(h.shape[0] for h in take.held) >= MERGE_GAPS_S * self.rate:
            self._close_gap(take)

    def _close_gap(self, take: ScheduledTake) -> None:
        """Write the open gap's silence and the audio held after it."""
        if take.open_gap is None:
            return
        (at, frames), take.open_gap = take.open_gap, None
        take.gaps.append((at, frames))
        for a in range(0, frames, self.rate):
            n = min(self.rate, frames - a)
            self._hand_on(take, np.zeros((n, self.in_channels), np.float32))
        if take.sink is not None:
            take.sink.note_loss()
        held, take.held = take.held, []
        for part in held:
            self._hand_on(take, part)

    def _hand_on(self, take: ScheduledTake, part: AudioArray) -> None:
        if take.sink is not None:
            take.sink.write(part)
        else:
            take.blocks.append(part.copy())
        take.frames_recorded += part.shape[0]

    @staticmethod
    def _finish_slips(take: ScheduledTake) -> None:
        take.slips = [(int(a), int(f)) for a, f in take.cb_slip_rows[: take.cb_slip_count].tolist()]

    def _meter(self, block: AudioArray) -> None:
        if block.shape[0] == 0:
            return
        recent = block[-min(block.shape[0], self.rate // 10) :]
        peak = float(np.max(np.abs(recent)))
        rms = float(np.sqrt(np.mean(np.square(recent, dtype=np.float64))))
        clips = self._level.clips + (1 if peak >= 0.999 else 0)
        self._level = InputLevel(peak, rms, clips)
