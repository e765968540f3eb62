"""Where the click is made: beat positions on the take's timeline, and the click track itself.

Timeline sample 0 is the first sample of the count-in (DESIGN.md).  Beat times are
accumulated in exact rational arithmetic (:class:`fractions.Fraction`) from the tempo,
meter and tempo map, and each beat lands on ``round(ideal_time * rate)``: the click never
drifts, even over an hour at a tempo whose beat period is a fractional number of samples
(113 BPM at 48 kHz is 25486.72... frames).

``beat_frames`` gives the positions (the mixer's markers, the singer's bar:beat display);
``render_click`` turns them into audio.  Pure: no files or devices.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from .types import AudioArray, AudioError

__all__ = [
    "Beat",
    "ClickEvent",
    "beat_frames",
    "backing_start_frame",
    "click_events",
    "render_click",
    "render_click_range",
    "click_burst",
    "exact_bpm",
]

#: Longest take the click is computed for, in seconds (a guard against runaway loops).
MAX_SECONDS = 6 * 3600


class _Section(Protocol):
    bar: int
    bpm: float
    beats_per_bar: int
    beat_unit: int


@dataclass(frozen=True)
class Beat:
    """One click on the timeline.

    Attributes
    ----------
    frame : int
        Timeline position in frames at the rate given to :func:`beat_frames`:
        ``round(time * rate)`` (Python rounding: halves go to the even frame).
    bar : int
        Bar number: the count-in bars are ``-count_in_bars .. -1``, the song starts at bar 0
        (the numbering of ``tutti.wire.TempoSection.bar``).
    beat : int
        0-based beat within the bar.
    accent : bool
        True on the first beat of every bar (the downbeat).
    count_in : bool
        True for the beats of the count-in.
    bpm : float
        Tempo in force for this beat (beats of ``beat_unit`` per minute).
    time : Fraction or None
        Exact ideal time in seconds from timeline sample 0 (what ``frame`` was rounded
        from); None when a Beat is built by hand.
    beats_per_bar : int
        Meter in force for this beat.
    """

    frame: int
    bar: int
    beat: int
    accent: bool
    count_in: bool
    bpm: float
    time: Fraction | None = None
    beats_per_bar: int = 4


def exact_bpm(bpm: float) -> Fraction:
    """The tempo as the exact decimal the leader typed.

    ``Fraction(113.1)`` would be the binary approximation of 113.1; ``Fraction("113.1")``
    is 1131/10.  Using the shortest decimal repr makes the beat grid exactly what a human
    computes from the number on screen.

    Raises
    ------
    AudioError
        If ``bpm`` is not a finite number in (0, 1000].
    """
    if isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not math.isfinite(bpm):
        raise AudioError(f"tempo: expected a finite number of beats per minute, got {bpm!r}")
    if not 0 < bpm <= 1000:
        raise AudioError(f"tempo: {bpm} BPM is outside (0, 1000]")
    return Fraction(repr(float(bpm)))


def _sections(settings: Any) -> list[tuple[int, Fraction, float, int]]:
    """(first bar, exact bpm, bpm, beats_per_bar) from the base settings and the tempo map."""
    bpb = int(settings.beats_per_bar)
    if bpb < 1:
        raise AudioError(f"meter: beats_per_bar must be ≥ 1, got {bpb}")
    out = [(0, exact_bpm(settings.bpm), float(settings.bpm), bpb)]
    tmap: Sequence[_Section] = tuple(getattr(settings, "tempo_map", ()) or ())
    for i, s in enumerate(tmap):
        if s.beats_per_bar < 1:
            raise AudioError(f"tempo_map[{i}]: beats_per_bar must be ≥ 1, got {s.beats_per_bar}")
        if s.bar < 0 or (i and s.bar <= tmap[i - 1].bar):
            raise AudioError(f"tempo_map[{i}]: bar {s.bar} must be ≥ 0 and increase")
        entry = (int(s.bar), exact_bpm(s.bpm), float(s.bpm), int(s.beats_per_bar))
        if s.bar == 0:
            out[0] = entry
        else:
            out.append(entry)
    return out


def _beats(settings: Any) -> Iterator[tuple[Fraction, int, int, bool, float, int]]:
    """Endless (time s, bar, beat, count_in, bpm, beats_per_bar), exact times."""
    count_in = int(settings.count_in_bars)
    if count_in < 0:
        raise AudioError(f"count-in: count_in_bars must be ≥ 0, got {count_in}")
    # The count-in is in the session's base tempo and meter (as SessionSettings.count_in_frames).
    base_bpm_exact = exact_bpm(settings.bpm)
    base_bpb = int(settings.beats_per_bar)
    t = Fraction(0)
    for bar in range(-count_in, 0):
        for beat in range(base_bpb):
            yield t, bar, beat, True, float(settings.bpm), base_bpb
            t += 60 / base_bpm_exact
    sections = _sections(settings)
    idx = 0
    bar = 0
    while True:
        while idx + 1 < len(sections) and sections[idx + 1][0] <= bar:
            idx += 1
        _, bpm_exact, bpm, bpb = sections[idx]
        period = 60 / bpm_exact
        for beat in range(bpb):
            yield t, bar, beat, False, bpm, bpb
            t += period
        bar += 1


def beat_frames(
    settings_like: Any,
    rate: int,
    n_bars: int | None = None,
    seconds: float | None = None,
) -> list[Beat]:
    """Every click of a take: the count-in, then the song's bars.

    Parameters
    ----------
    settings_like
        Anything with ``bpm``, ``beats_per_bar``, ``beat_unit``, ``count_in_bars`` and
        ``tempo_map`` (a sequence of sections with ``bar``, ``bpm``, ``beats_per_bar``), such
        as :class:`tutti.wire.SessionSettings`.  The count-in uses the base ``bpm`` and
        ``beats_per_bar``; song bar ``b`` uses the last tempo-map section with ``bar <= b``
        (or the base values before the first section).  A beat is one ``beat_unit`` note.
    rate : int
        Timeline rate in Hz.
    n_bars : int, optional
        Number of song bars after the count-in.
    seconds : float, optional
        Timeline length in seconds: only beats with ideal time ``< seconds``.  At least one
        of ``n_bars`` and ``seconds`` is required; with both, the shorter applies.

    Returns
    -------
    list of Beat
        In timeline order; ``beat.frame == round(beat.time * rate)`` with ``beat.time``
        accumulated exactly.

    Raises
    ------
    AudioError
        Bad rate, tempo, meter, tempo map or extent.
    """
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise AudioError(f"rate: expected a positive integer number of Hz, got {rate!r}")
    if n_bars is None and seconds is None:
        raise AudioError("click: give n_bars (song bars after the count-in) or seconds")
    if n_bars is not None and n_bars < 0:
        raise AudioError(f"click: n_bars must be ≥ 0, got {n_bars}")
    limit: Fraction | None = None
    if seconds is not None:
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
            raise AudioError(f"click: seconds must be in [0, {MAX_SECONDS}], got {seconds}")
        limit = Fraction(seconds)
    out: list[Beat] = []
    for t, bar, beat, count_in, bpm, bpb in _beats(settings_like):
        if n_bars is not None and bar >= n_bars:
            break
        if limit is not None and t >= limit:
            break
        if t > MAX_SECONDS:
            raise AudioError(f"click: more than {MAX_SECONDS} s of beats requested")
        out.append(
            Beat(
                frame=round(t * rate),
                bar=bar,
                beat=beat,
                accent=beat == 0,
                count_in=count_in,
                bpm=bpm,
                time=t,
                beats_per_bar=bpb,
            )
        )
    return out


def click_burst(rate: int, freq_hz: float, length: int, *, decay_s: float = 0.008) -> AudioArray:
    """One click: a decaying sine burst of peak ≈ 1 whose first sample is already non-zero.

    ``sin(2π f (n + 1) / rate) · exp(-n / (decay_s · rate))`` for ``n < length``, with a
    short raised-cosine fade over the last 10 % so a truncated burst does not end in a step.

    Returns
    -------
    AudioArray
        float32, shape (length, 1).
    """
    if length <= 0:
        return np.zeros((0, 1), np.float32)
    n = np.arange(length, dtype=np.float64)
    burst = np.sin(2 * np.pi * freq_hz * (n + 1) / rate) * np.exp(-n / (decay_s * rate))
    fade = max(1, length // 10)
    burst[-fade:] *= 0.5 * (1 + np.cos(np.pi * np.arange(1, fade + 1) / fade))
    return burst.astype(np.float32)[:, None]


def render_click(
    beats: Sequence[Beat],
    rate: int,
    frames: int,
    *,
    level_db: float = -6.0,
    accent_db: float = 0.0,
    subdivisions: int = 1,
    subdivision_db: float = -8.0,
    freq_hz: float = 1000.0,
    accent_freq_hz: float = 1600.0,
    subdivision_freq_hz: float = 800.0,
    burst_s: float = 0.04,
    count_in_only: bool = False,
) -> AudioArray:
    """Render the click track on the timeline.

    Parameters
    ----------
    beats
        From :func:`beat_frames` (any order); beats at or beyond ``frames`` are dropped.
    rate : int
        Hz.
    frames : int
        Length of the output in frames (timeline 0 .. frames-1).
    level_db : float
        Peak level of a plain beat in dBFS.
    accent_db : float
        Extra gain of downbeats in dB (they are also higher: ``accent_freq_hz``).
    subdivisions : int
        Clicks per beat (1 = beats only; 2 = eighths in 4/4 …); subdivision clicks sit at
        ``round((beat.time + j · 60 / (bpm · subdivisions)) · rate)`` and are
        ``subdivision_db`` quieter and lower (``subdivision_freq_hz``).
    burst_s : float
        Longest click in seconds; a click is cut short where the next one starts.
    count_in_only : bool
        Only the count-in clicks (a quiet song with a count-in).

    Returns
    -------
    AudioArray
        float32, shape (frames, 1): each click's first sample is at its frame exactly.

    Raises
    ------
    AudioError
        Bad length, rate, subdivisions or levels that would clip.
    """
    if frames < 0:
        raise AudioError(f"click: frames must be ≥ 0, got {frames}")
    if rate <= 0:
        raise AudioError(f"click: rate must be positive, got {rate}")
    if not 1 <= subdivisions <= 16:
        raise AudioError(f"click: subdivisions must be 1–16, got {subdivisions}")
    top = max(level_db, level_db + accent_db)
    if top > 0:
        raise AudioError(f"click: levels would clip (downbeat at {top:+.1f} dBFS); keep ≤ 0 dBFS")
    return render_click_range(
        click_events(
            beats,
            rate,
            frames,
            level_db=level_db,
            accent_db=accent_db,
            subdivisions=subdivisions,
            subdivision_db=subdivision_db,
            freq_hz=freq_hz,
            accent_freq_hz=accent_freq_hz,
            subdivision_freq_hz=subdivision_freq_hz,
            burst_s=burst_s,
            count_in_only=count_in_only,
        ),
        rate,
        0,
        frames,
    )


@dataclass(frozen=True)
class ClickEvent:
    """One click as rendered: first frame, length in frames, frequency (Hz), linear gain."""

    onset: int
    length: int
    freq_hz: float
    gain: float


def click_events(
    beats: Sequence[Beat],
    rate: int,
    frames: int,
    *,
    level_db: float = -6.0,
    accent_db: float = 0.0,
    subdivisions: int = 1,
    subdivision_db: float = -8.0,
    freq_hz: float = 1000.0,
    accent_freq_hz: float = 1600.0,
    subdivision_freq_hz: float = 800.0,
    burst_s: float = 0.04,
    count_in_only: bool = False,
) -> list[ClickEvent]:
    """The clicks :func:`render_click` renders (same parameters), in timeline order, each cut
    where the next starts and at ``frames``; :func:`render_click_range` turns any range of
    them into audio."""
    # (onset frame, frequency, linear gain)
    events: list[tuple[int, float, float]] = []
    for b in beats:
        if count_in_only and not b.count_in:
            continue
        gain_db = level_db + (accent_db if b.accent else 0.0)
        events.append((b.frame, accent_freq_hz if b.accent else freq_hz, 10 ** (gain_db / 20)))
        if subdivisions > 1:
            t = b.time if b.time is not None else Fraction(b.frame, rate)
            step = 60 / (exact_bpm(b.bpm) * subdivisions)
            sub_gain = 10 ** ((level_db + subdivision_db) / 20)
            for j in range(1, subdivisions):
                events.append((round((t + j * step) * rate), subdivision_freq_hz, sub_gain))
    events = sorted(e for e in events if 0 <= e[0] < frames)
    max_len = max(1, round(burst_s * rate))
    out = []
    for i, (onset, freq, gain) in enumerate(events):
        nxt = events[i + 1][0] if i + 1 < len(events) else frames
        length = min(max_len, nxt - onset, frames - onset)
        if length > 0:
            out.append(ClickEvent(onset, length, freq, gain))
    return out


def render_click_range(events: Sequence[ClickEvent], rate: int, lo: int, hi: int) -> AudioArray:
    """Timeline frames ``[lo, hi)`` of the click track made of ``events`` (from
    :func:`click_events`): float32, shape (hi - lo, 1), equal sample for sample to the same
    range of the whole track."""
    out = np.zeros((max(0, hi - lo), 1), np.float32)
    onsets = [e.onset for e in events]
    first = max(0, bisect.bisect_right(onsets, lo) - 1)
    for e in events[first : bisect.bisect_left(onsets, hi)]:
        a, b = max(lo, e.onset), min(hi, e.onset + e.length)
        if b <= a:
            continue
        burst = _burst(rate, e.freq_hz, e.length)
        out[a - lo : b - lo] += np.float32(e.gain) * burst[a - e.onset : b - e.onset]
    return out


@functools.lru_cache(maxsize=64)
def _burst(rate: int, freq_hz: float, length: int) -> AudioArray:
    """:func:`click_burst`, kept: a click track reuses a handful of bursts (never modified)."""
    return click_burst(rate, freq_hz, length)


def backing_start_frame(settings: Any) -> int:
    """Timeline frame where the backing starts (``backing_offset_beats`` after the count-in).

    ``settings`` is a :class:`tutti.wire.SessionSettings`; the server (take manifests) and the
    singer's client (headset program) both call this, so they agree on the frame.

    Whole and fractional beat offsets follow the song's beat grid (tempo map included);
    negative offsets (a pick-up inside the count-in) follow the count-in's tempo.
    """
    rate = settings.rate
    n_count = settings.count_in_bars * settings.beats_per_bar
    off = settings.backing_offset_beats
    whole = math.floor(off)
    frac = off - whole
    if off < 0:
        start_beat = n_count + whole
        grid = beat_frames(settings, rate, n_bars=1)  # count-in beats (+1 song bar)
        base = grid[start_beat].frame if 0 <= start_beat < len(grid) else 0
        step = 60.0 / settings.bpm * rate
        if start_beat < 0:
            return int(round(start_beat * step + frac * step))
        return int(round(base + frac * step))
    need_bars = int(whole // max(1, settings.beats_per_bar)) + 2
    grid = beat_frames(settings, rate, n_bars=need_bars + 1)
    idx = n_count + whole
    a = grid[idx].frame
    if frac == 0:
        return int(a)
    b = grid[idx + 1].frame
    return int(round(a + frac * (b - a)))
