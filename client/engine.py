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
from typing import Any, Protocol

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

__all__ = [
    "EngineError",
    "ClockMapping",
    "InputLevel",
    "TakeSink",
    "ScheduledTake",
    "DuplexEngine",
    "measure_clock",
]

#: Seconds of input the ring holds: how long the drain thread may stall without loss.
RING_SECONDS = 10.0
#: How often the drain thread wakes (seconds).
DRAIN_PERIOD = 0.02
#: Callbacks over which the DAC-time mapping takes its minimum (~40 ms at 256 frames).
HISTORY = 8

_JACK_NAME_ENV = "TUTTI_JACK_CLIENT_NAME"
_jack_name_applied = False


class EngineError(RuntimeError):
    """The engine cannot do what was asked (not started, a take already running, too late)."""


class TakeSink(Protocol):
    """Where a take's recorded frames go (called from the engine's drain thread)."""

    def set_start_offset(self, frames: int) -> None:
        """``r0 - o0`` is known (before the first :meth:`write`)."""

    def write(self, block: AudioArray) -> None:
        """The next recorded frames, float32 (frames, channels); must not block for long."""


@dataclass(frozen=True)
class ClockMapping:
    """``time.monotonic() = stream_time + offset`` as measured.

    Attributes
    ----------
    offset : float
        Seconds to add to PortAudio stream time to get ``time.monotonic()``.
    uncertainty : float
        Half-width (seconds) of the spread of the best samples: how well ``offset`` is known.
    samples : int
        Readings taken.
    """

    offset: float
    uncertainty: float
    samples: int


@dataclass(frozen=True)
class InputLevel:
    """Input level over the last drained block (~20–100 ms), linear full scale.

    ``clips`` counts blocks so far with a sample at or above 0.999 in magnitude.
    """

    peak: float
    rms: float
    clips: int


def measure_clock(stream: sd.Stream, rate: int, span: float = 0.1) -> ClockMapping:
    """Measure the offset between ``stream.time`` and ``time.monotonic()``.

    Reads ``monotonic, stream.time, monotonic`` every ~1.5 ms for ``span`` seconds (tens of
    audio cycles).  Host stream clocks that interpolate from the last cycle's wake-up (JACK)
    lag whenever that wake-up was late, which only ever makes ``monotonic - stream.time``
    larger; so among the readings with a tight bracket the smallest offset is taken — the
    cycle that woke on time.  A stream clock quantised to whole frames (JACK rounds) gets
    half a frame added back.

    Raises
    ------
    EngineError
        The stream clock does not advance (the host API gives no usable stream time).
    """
    rows: list[tuple[float, float, float]] = []
    first = stream.time
    end = time.monotonic() + span
    while time.monotonic() < end or len(rows) < 16:
        a = time.monotonic()
        s = stream.time
        b = time.monotonic()
        rows.append((b - a, (a + b) / 2.0 - s, s))
        time.sleep(0.0015)
    if stream.time == first:
        raise EngineError("the audio device's stream clock does not advance")
    widths = sorted(w for w, _, _ in rows)
    limit = max(widths[len(widths) // 2] * 2.0, 20e-6)
    good = [(off, w) for w, off, _ in rows if w <= limit]
    off, width = min(good)
    quantised = all(abs(st * rate - round(st * rate)) < 1e-6 for _, _, st in rows)
    if quantised:
        off -= 0.5 / rate
    return ClockMapping(
        offset=off,
        uncertainty=width / 2.0 + (0.5 / rate if quantised else 0.0),
        samples=len(rows),
    )


_WAITING, _RUNNING, _ENDED = 0, 1, 2


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
        (0 when on time; > 0 only after an xrun just before the start).
    dropped_frames : int
        Frames lost because the drain thread fell more than RING_SECONDS behind (zeros
        were written in their place, so the timeline stays right).
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
        self.error: str | None = None
        self.first_dac_time: float | None = None  # monotonic estimate of o0's DAC time
        # callback-owned state
        self._state = _WAITING
        self._end: int | None = None  # exclusive stream frame where the take ends
        self._stop_requested = False
        self._blocks: list[AudioArray] = []
        self._drained_to: int | None = None

    @property
    def start_offset(self) -> int:
        """``r0 - o0`` in frames (≤ 0: recording starts in the callback holding o0)."""
        if self.o0 is None or self.r0 is None:
            raise EngineError("the take has not started recording yet")
        return self.r0 - self.o0

    @property
    def ended(self) -> bool:
        return self.done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the take is done; True if it is."""
        return self.done.wait(timeout)

    def audio(self) -> AudioArray:
        """The recording kept in memory (only when scheduled without a sink)."""
        if self.sink is not None:
            raise EngineError("this take's frames went to its sink, not to memory")
        if not self._blocks:
            return np.zeros((0, self.in_channels), np.float32)
        return np.concatenate(self._blocks, axis=0)


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
        self._skew_floor = float("inf")
        self._skips = 0
        self._out_latency = 0.0

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
        if take is not None and take._end is None:
            take._end = self._n
            if take._state == _WAITING:
                take.error = take.error or "the engine was closed before the take started"
            take._state = _ENDED
        self._closing.set()
        if self._drain_thread is not None:
            self._drain_thread.join(5.0)
            self._drain_thread = None

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
        if t0 <= now:
            raise EngineError(f"t0 is {now - t0:.3f} s in the past; schedule takes ahead of time")
        take = ScheduledTake(
            program,
            t0,
            record=record,
            sink=writer,
            tail_frames=None if tail is None else int(round(tail * self.rate)),
            in_channels=self.in_channels,
        )
        self._draining = take
        self._take = take  # the callback picks it up from here
        return take

    def stop_take(self) -> None:
        """End the running take at the next callback (its recording stops there)."""
        take = self._draining
        if take is not None:
            take._stop_requested = True

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
        # Where frame n meets the DAC on time.monotonic(), measured this very cycle:
        # now + (DAC time - current time) - n / rate.  A callback that woke late reads a
        # later "now", never an earlier one, so the smallest of the last HISTORY cycles is
        # the truest; a short window follows stream clocks that drift or jump (JACK's
        # dummy driver loses time under load; an xrun skips frames).
        dac = time_info.outputBufferDacTime
        cur = time_info.currentTime
        ahead = dac - cur if dac > 0.0 else self._out_latency
        hist = self._hist
        # Frames this stream never saw (its own xrun) show as a jump of the stream clock
        # against the frame count; a late wake-up also reads a later clock, but only once.
        # (PortAudio's JACK xrun flags are server-wide, so they cannot tell which it was.)
        skew = cur - n / self.rate
        if skew < self._skew_floor:
            self._skew_floor = skew
            self._skips = 0
        elif skew - self._skew_floor > 1.5 * frames / self.rate:
            self._skips += 1
            if self._skips >= 3:  # three late in a row: frames were skipped
                hist.fill(np.inf)
                self._skew_floor = skew
                self._skips = 0
        else:
            self._skips = 0
        hist[self._callbacks % HISTORY] = now + ahead - n / self.rate
        base = hist.min()
        # output
        outdata.fill(0)
        if take is not None:
            if take._state == _WAITING:
                # o0 is recomputed every callback until it starts, so an xrun while
                # waiting (frames the stream never saw) cannot shift the start.
                o0 = round((take.t0 - base) * self.rate)
                if take._stop_requested:
                    take._end = n
                    take._state = _ENDED
                    take.error = "stopped before it started"
                elif take.o0 is None and o0 < n:
                    take.error = (
                        f"t0 was {(n - o0) / self.rate * 1000:.1f} ms in the past when "
                        "the stream first saw it; schedule further ahead"
                    )
                    take._end = n
                    take._state = _ENDED
                else:
                    take.o0 = o0
                    take.first_dac_time = base + o0 / self.rate
                    if o0 < n + frames:
                        take.late_frames = n - o0 if o0 < n else 0
                        if take.record:
                            take.r0 = n
                        if take.tail_frames is not None:
                            take._end = o0 + take.program.shape[0] + take.tail_frames
                        take._state = _RUNNING
            if take._state == _RUNNING and take.o0 is not None:
                o0 = take.o0
                if take._stop_requested and (take._end is None or take._end > n):
                    take._end = n
                end = take._end
                hi = o0 + take.program.shape[0]
                if end is not None and end < hi:
                    hi = end
                if n + frames < hi:
                    hi = n + frames
                lo = o0 if o0 > n else n
                if hi > lo:
                    outdata[lo - n : hi - n] = take.program[lo - o0 : hi - o0]
                if end is not None and n + frames >= end:
                    take._state = _ENDED
            if take._state == _ENDED:
                self._take = None
        # publish the input frames last, so the drain thread sees r0 / the end with them
        self._ring_w = n + frames
        self._n = n + frames
        self._callbacks += 1

    # ------------------------------------------------------------------ drain thread

    def _drain_loop(self) -> None:
        while True:
            closing = self._closing.wait(DRAIN_PERIOD)
            self._drain_once()
            if closing:
                self._drain_once()
                take = self._draining
                if take is not None and not take.done.is_set():
                    take.error = take.error or "the engine closed during the take"
                    take.done.set()
                return

    def _drain_once(self) -> None:
        ring = self._ring
        cap = ring.shape[0]
        w = self._ring_w
        r = self._ring_r
        take = self._draining
        lost = 0
        if w - r > cap:
            lost = w - r - cap
        if w > r:
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
            self._ring_r = w
            self._meter(block[lost:])
            if take is not None:
                take.dropped_frames += self._record(take, block, r, w, lost)
        if take is not None and not take.done.is_set() and take._state == _ENDED:
            end = take._end if take._end is not None else w
            if w >= end:
                take.done.set()

    def _record(self, take: ScheduledTake, block: AudioArray, r: int, w: int, lost: int) -> int:
        """Hand the part of ``block`` (stream frames r..w) inside the take on; frames lost."""
        if not take.record or take.r0 is None or take.o0 is None:
            return 0
        lo = max(r, take.r0)
        end = take._end
        hi = w if end is None else min(w, end)
        if hi <= lo:
            return 0
        if take._drained_to is None:
            take._drained_to = take.r0
            if take.sink is not None:
                take.sink.set_start_offset(take.r0 - take.o0)
        part = block[lo - r : hi - r]
        if take.sink is not None:
            take.sink.write(part)
        else:
            take._blocks.append(part.copy())
        take.frames_recorded += hi - lo
        take._drained_to = hi
        return max(0, min(hi, r + lost) - lo)

    def _meter(self, block: AudioArray) -> None:
        if block.shape[0] == 0:
            return
        recent = block[-min(block.shape[0], self.rate // 10) :]
        peak = float(np.max(np.abs(recent)))
        rms = float(np.sqrt(np.mean(np.square(recent, dtype=np.float64))))
        clips = self._level.clips + (1 if peak >= 0.999 else 0)
        self._level = InputLevel(peak, rms, clips)
