"""The audio stream's clock against ``time.monotonic()``: a diagnostic measurement (the engine
schedules with the mapping its callback measures every cycle, see
:meth:`tutti.client.engine.DuplexEngine.dac_mapping`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sounddevice as sd

from tutti.client.scheduled import EngineError

__all__ = ["ClockMapping", "measure_clock"]


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
