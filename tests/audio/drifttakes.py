"""Synthetic choir takes with known clock drift: voices that share a song's rhythm but not its
pitches, the program (click and backing) bleeding into each mic, room noise, and the truth
to judge ``tutti mix`` by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from scipy.signal import correlate

from tutti.audio.click import beat_frames, render_click
from tutti.wire import SessionSettings

BPM = 96.0
SETTINGS: dict[str, Any] = {"title": "drift", "bpm": BPM, "beats_per_bar": 4, "count_in_bars": 1}
#: Base frequency (Hz) of each part's melody.
PART_HZ = {"S": 440.0, "A": 330.0, "T": 220.0, "B": 130.8}
_SCALE = (0, 2, 4, 5, 7, 9, 11, 12)


@dataclass(frozen=True)
class Song:
    """Note onsets and lengths (seconds on the timeline) shared by every part."""

    notes: list[tuple[float, float]]
    seconds: float
    rate: int


def song(seconds: float, rate: int, seed: int = 7) -> Song:
    """Notes of one to three beats, with a rest now and then, from the count-in's end on."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / BPM
    t, notes = 4 * beat, []
    while t < seconds - 3 * beat:
        length = beat * int(rng.integers(1, 4))
        if rng.random() > 0.12:
            notes.append((t, length * 0.92))
        t += length
    return Song(notes, seconds, rate)


def voice(
    s: Song, part: str, seed: int, level: float = 0.15, jitter_s: float = 0.0,
    any_phase: bool = False,
) -> np.ndarray:  # fmt: skip
    """One singer on the timeline: the song's rhythm on this singer's own pitches (harmonics,
    vibrato, a 40 ms attack, breath noise; each note ``jitter_s`` early or late, as a person
    sings: a normal spread; with ``any_phase`` each note starts at a random phase, else at
    the phase the backing's chords start at), mono float32."""
    rng = np.random.default_rng(seed)
    phases = np.random.default_rng(seed + 555)
    n = int(s.seconds * s.rate)
    out = np.zeros(n)
    base = PART_HZ[part] * 2 ** (rng.uniform(-0.05, 0.05))
    for start, length in s.notes:
        late = jitter_s * rng.standard_normal() if jitter_s else 0.0
        a, m = int((start + late) * s.rate), int(length * s.rate)
        if a + m > n:
            break
        t = np.arange(m) / s.rate
        f0 = base * 2 ** (_SCALE[int(rng.integers(0, len(_SCALE)))] / 12)
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.006 * np.sin(2 * np.pi * 5.3 * t))) / s.rate
        if any_phase:
            phase += phases.uniform(0, 2 * np.pi)
        tone = np.sin(phase) + 0.4 * np.sin(2 * phase + 1) + 0.2 * np.sin(3 * phase + 2)
        env = (
            np.minimum(1.0, t / 0.04)
            * np.exp(-t / (2.5 * length))
            * np.minimum(1.0, (length - t) / 0.05)
        )
        out[a : a + m] += level * rng.uniform(0.7, 1.0) * tone * env
    out += 0.002 * rng.standard_normal(n)
    return out.astype(np.float32)


def program(s: Song, with_backing: bool = True) -> np.ndarray:
    """What every singer hears: the click (as the client renders it) and a piano-like backing
    whose chords strike with the song's notes, mono float64, peak 1."""
    n = int(s.seconds * s.rate)
    settings = SessionSettings.from_dict({**SETTINGS, "rate": s.rate})
    beats = beat_frames(settings, s.rate, seconds=s.seconds)
    out = render_click(beats, s.rate, n)[:, 0].astype(np.float64)
    if with_backing:
        out += 0.5 * backing(s)
    peak = float(np.abs(out).max())
    return out / peak


def backing(s: Song) -> np.ndarray:
    """The backing track alone (timeline 0 on), mono float64."""
    n = int(s.seconds * s.rate)
    out = np.zeros(n)
    rng = np.random.default_rng(99)
    for start, length in s.notes:
        a, m = int(start * s.rate), int(length * s.rate)
        if a + m > n:
            break
        t = np.arange(m) / s.rate
        chord = sum(np.sin(2 * np.pi * f * t) for f in 196.0 * 2 ** (rng.choice(_SCALE, 3) / 12))
        out[a : a + m] += 0.2 * chord * np.exp(-t / 0.6)
    return out


@dataclass
class Recorded:
    """One singer's file and its truth."""

    name: str
    part: str
    ppm: float  # the input clock's drift (0: shared clock)
    timeline_start: int  # where file frame 0 sits on the timeline
    audio: np.ndarray  # (frames, 1) float32, as the recorder wrote it
    truth: np.ndarray = field(repr=False)  # the voice alone on the timeline


def record(
    s: Song,
    name: str,
    part: str,
    seed: int,
    ppm: float,
    *,
    bleed_db: float | None,
    start_s: float = 0.0,
    prog: np.ndarray | None = None,
    gap: tuple[float, float] | None = None,
    jitter_s: float = 0.0,
) -> Recorded:
    """A singer's recording: the voice plus the program at ``bleed_db`` (its peak, dBFS; None:
    no bleed) plus room noise, heard from ``start_s`` on and written on an input clock
    ``ppm`` fast; ``gap`` (seconds on the timeline, length) is lost input (silence)."""
    truth = voice(s, part, seed, jitter_s=jitter_s)
    heard = truth.astype(np.float64)
    if bleed_db is not None and prog is not None:
        heard += 10 ** (bleed_db / 20) * prog
    a = int(start_s * s.rate)
    heard = heard[a:]
    rec = soxr.resample(heard, s.rate, s.rate * (1 + ppm * 1e-6), quality="VHQ") if ppm else heard
    rng = np.random.default_rng(seed + 1000)
    rec = rec + 10 ** (-66 / 20) * rng.standard_normal(rec.shape[0])  # the room
    if gap is not None:
        g = round((gap[0] * s.rate - a) * (1 + ppm * 1e-6))
        rec[g : g + round(gap[1] * s.rate)] = 0.0
    return Recorded(name, part, ppm, a, rec.astype(np.float32)[:, None], truth)


def placement_error(stem: np.ndarray, truth: np.ndarray, at_s: float, rate: int) -> float:
    """Frames by which the voice in ``stem`` (mix frame 0 = timeline 0) sits later than the
    truth around ``at_s`` (a 4 s window, ±60 ms searched, to a fraction of a frame)."""
    a, n, reach = int(at_s * rate), 4 * rate, int(0.06 * rate)
    ref = truth[a : a + n]
    seg = stem[a - reach : a + n + reach].astype(np.float64)
    xc = correlate(seg, ref, mode="valid", method="fft")  # np.correlate's sums, to 1e-9 frame
    k = int(np.argmax(xc))
    frac = 0.0
    if 0 < k < xc.shape[0] - 1:
        y0, y1, y2 = xc[k - 1], xc[k], xc[k + 1]
        frac = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return k + frac - reach
