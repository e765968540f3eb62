"""Separate input and output clocks measured at the source: ``tutti mix`` places and de-drifts a
recording from its clock map, with no click or marker in the recording at all."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tutti.audio.drift import MAP_BEND_S, drift_from_clock_map
from tutti.audio.types import AudioError
from tutti.cli import main

from .test_mixcmd import Singer, build_take

RATE = 8000  # a low rate keeps ten minutes of audio quick to mix
MINUTES = 10
BURST_S = 0.05
#: Timeline positions (seconds) of the noise bursts judged: start, middle, end of the take.
BURSTS_AT = (2.0, 300.0, 590.0)
#: An input gap of the fast singer: timeline frame and lost input frames (silence in the file).
GAP_AT, GAP_FRAMES = 400 * RATE, 2400


def _burst(seed: int) -> np.ndarray:
    """A distinctive 50 ms noise burst (Hann-windowed white noise), mono float32."""
    n = int(BURST_S * RATE)
    noise = np.random.default_rng(seed).standard_normal(n)
    return np.asarray(0.5 * noise / np.abs(noise).max() * np.hanning(n), dtype=np.float32)


def _recorded(
    ppm: float, timeline_start: int, seed: int, gap: bool = False
) -> tuple[np.ndarray, list[int]]:
    """What a recorder whose input clock runs ``ppm`` fast writes over ten minutes.

    File frame ``j`` sits at timeline ``timeline_start + j / (1 + ppm·1e-6)``, so a burst
    heard at timeline ``P`` lands at file frame ``(P − timeline_start)·(1 + ppm·1e-6)``
    (rounded: at most half a frame, 0.06 ms).  Quiet noise fills the rest; no click anywhere.
    Returns the recording (frames, 1) and the file frame of each burst."""
    ratio = 1.0 + ppm * 1e-6
    n = int(MINUTES * 60 * RATE * ratio)
    rng = np.random.default_rng(seed)
    audio = (0.003 * rng.standard_normal(n)).astype(np.float32)
    at = []
    for k, secs in enumerate(BURSTS_AT):
        j = round((secs * RATE - timeline_start) * ratio)
        burst = _burst(seed * 10 + k)
        audio[j : j + burst.shape[0]] += burst
        at.append(j)
    if gap:  # as the recorder writes it: that many frames of silence where the input was lost
        j = round((GAP_AT - timeline_start) * ratio)
        audio[j : j + GAP_FRAMES] = 0.0
    return audio[:, None], at


def _clock_map(frames: int, ppm: float, timeline_start: int) -> list[dict[str, int]]:
    """The recorder's map: a point every 5 s of file frames and one at the end."""
    marks = [*range(0, frames, 5 * RATE), frames - 1]
    return [{"frame": f, "timeline": round(timeline_start + f / (1.0 + ppm * 1e-6))} for f in marks]


def _lag(stem: np.ndarray, at: int, burst: np.ndarray) -> float:
    """Frames by which ``burst`` sits later in ``stem`` than timeline frame ``at`` (±100 ms),
    to a fraction of a frame (parabola through the cross-correlation peak)."""
    reach = int(0.1 * RATE)
    seg = stem[at - reach : at + reach + burst.shape[0]]
    xc = np.correlate(seg, burst, mode="valid")
    k = int(np.argmax(xc))
    frac = 0.0
    if 0 < k < xc.shape[0] - 1:
        y0, y1, y2 = xc[k - 1], xc[k], xc[k + 1]
        frac = float(0.5 * (y0 - y2) / (y0 - 2 * y1 + y2))
    return k + frac - reach


def test_clock_map_places_ten_minutes_within_a_millisecond(tmp_path: Path) -> None:
    """Two singers, input clocks +100 and −100 ppm off the timeline (±60 ms after ten minutes),
    ``shared_clock: false`` with a clock map and no tempo (nothing to search markers in): each
    stem's bursts at 2 s, 5:00 and 9:50 are within 1 ms of where the timeline has them, and an
    input gap at 6:40 is silent where the take says."""
    ts = {"Fast": 800, "Slow": -400}  # start_offset − latency of each
    ppm = {"Fast": 100.0, "Slow": -100.0}
    singers, maps, seeds = [], {}, {"Fast": 1, "Slow": 2}
    for name in ("Fast", "Slow"):
        audio, file_at = _recorded(ppm[name], ts[name], seeds[name], gap=name == "Fast")
        # uncorrected, the last burst would sit 59 ms off (590 s · 100 ppm): worth correcting
        naive = ts[name] + file_at[-1] - BURSTS_AT[-1] * RATE
        assert abs(naive) > 0.055 * RATE
        singers.append(
            Singer(name, "S", audio, start_offset=ts[name] + 100, latency=100, rate=RATE)
        )
        maps[name] = _clock_map(audio.shape[0], ppm[name], ts[name])

    def measured_clocks(m: dict[str, Any]) -> None:
        m["rate"] = RATE
        for rec in m["recordings"]:
            rec["shared_clock"] = False
            rec["clock_map"] = maps[rec["singer"]]
        m["recordings"][0]["gaps"] = [{"at": GAP_AT, "frames": GAP_FRAMES}]

    take = build_take(tmp_path / "take", singers, edit=measured_clocks)
    started = time.monotonic()
    assert main(["mix", str(take), "--stems", "--no-loudness-match"]) == 0
    took = time.monotonic() - started
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    stems = sorted((take / "mix-stems").iterdir())
    fast, _ = sf.read(stems[0], dtype="float32")
    # the gap, 40 ms from where it would be without the clock map, is found silent and kept so
    assert "unfaded" not in out, out
    assert not np.any(fast[GAP_AT : GAP_AT + GAP_FRAMES - 1])
    assert np.abs(fast[GAP_AT - 200 : GAP_AT - 50]).max() > 0.001  # the voice up to its fade
    worst = 0.0
    for path, name in zip(stems, ("Fast", "Slow"), strict=True):
        stem, rate = sf.read(path, dtype="float32")
        assert rate == RATE
        for k, secs in enumerate(BURSTS_AT):
            lag = _lag(stem, round(secs * RATE), _burst(seeds[name] * 10 + k))
            worst = max(worst, abs(lag) / RATE)
            assert abs(lag) <= 0.001 * RATE, (name, secs, lag)
    assert "(map)" in out and "+100.0" in out and "-100.0" in out, out
    assert "drift not" not in out, out  # no marker search was needed, none was tried
    print(f"clock map: worst burst residual {1000 * worst:.3f} ms; mix took {took:.1f} s")


def test_without_a_map_a_separate_clock_still_searches_markers(tmp_path: Path) -> None:
    """``shared_clock: false`` and no clock map: today's marker search (here: no tempo, so
    the table says the drift was not checked) and no correction."""
    audio, _ = _recorded(100.0, 0, 3)
    singers = [Singer("Ed", "T", audio[: 20 * RATE], rate=RATE)]

    def separate(m: dict[str, Any]) -> None:
        m["rate"] = RATE
        m["recordings"][0]["shared_clock"] = False

    take = build_take(tmp_path / "take", singers, edit=separate)
    assert main(["mix", str(take), "--no-loudness-match"]) == 0
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    assert "drift not" in out and "(map)" not in out, out


# -- the fit itself ------------------------------------------------------------------------
def test_map_fit_hand_computed() -> None:
    """timeline = 800 + frame / 1.0001: 100 ppm fast, placed at 800."""
    pts = [(f, 800 + f / 1.0001) for f in (0.0, 40_000.0, 2_400_000.0, 4_800_480.0)]
    est = drift_from_clock_map(pts, 800)
    assert est.ppm == pytest.approx(100.0, abs=1e-6)
    assert est.corrected_timeline_start(800) == 800
    assert est.residual_frames < 1e-6
    assert est.markers_used == 4


def test_map_fit_rounded_points_and_an_offset_start() -> None:
    """Integer points (as stored) 40 ppm slow whose line starts 3 frames after the manifest's
    start: the fit keeps the ppm to 0.01 and places the recording at the map's start."""
    pts = [(f, round(-397 + f / (1 - 40e-6))) for f in range(0, 4_800_000, 40_000)]
    est = drift_from_clock_map(pts, -400)
    assert est.ppm == pytest.approx(-40.0, abs=0.01)
    assert est.corrected_timeline_start(-400) == -397
    assert est.residual_frames <= 0.6


def test_map_fit_reports_a_bend() -> None:
    """A map whose middle point is 4 frames off the line through the ends (0.5 ms at 8 kHz)."""
    pts = [(0.0, 0.0), (RATE * 300.0, RATE * 300.0 + 4), (RATE * 600.0, RATE * 600.0)]
    est = drift_from_clock_map(pts, 0)
    assert est.residual_frames > MAP_BEND_S * RATE


@pytest.mark.parametrize(
    ("pts", "words"),
    [
        ([(0.0, 0.0)], "at least two"),
        ([(0.0, 0.0), (0.0, 10.0)], "increase"),
        ([(0.0, 0.0), (10.0, math.nan)], "finite"),
        ([(0.0, 0.0), (1000.0, 990.0)], "not clock drift"),
    ],
)
def test_map_fit_refuses_a_broken_map(pts: list[tuple[float, float]], words: str) -> None:
    with pytest.raises(AudioError, match=words):
        drift_from_clock_map(pts, 0)


def test_bent_or_broken_map_is_said_in_the_table(tmp_path: Path) -> None:
    audio = (0.01 * np.random.default_rng(4).standard_normal((30 * RATE, 1))).astype(np.float32)
    bent = [{"frame": 0, "timeline": 0}, {"frame": 15 * RATE, "timeline": 15 * RATE + 8},
            {"frame": 30 * RATE - 1, "timeline": 30 * RATE - 1}]  # fmt: skip
    broken = [{"frame": 0, "timeline": 0}, {"frame": 1000, "timeline": 500}]
    singers = [Singer("Bo", "T", audio, rate=RATE), Singer("Cy", "B", audio, rate=RATE)]

    def maps(m: dict[str, Any]) -> None:
        m["rate"] = RATE
        for rec, cmap in zip(m["recordings"], (bent, broken), strict=True):
            rec["shared_clock"] = False
            rec["clock_map"] = cmap

    take = build_take(tmp_path / "take", singers, edit=maps)
    assert main(["mix", str(take), "--no-loudness-match"]) == 0
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    assert "bends" in out and "1000000" in out and "(map)" in out, out


# -- where the mix ends ----------------------------------------------------------------------
def _steady(seconds: float, seed: int) -> np.ndarray:
    """Noise at a steady level to its last sample (a singer still singing when the file
    ends), (frames, 1) float32."""
    n = round(seconds * RATE)
    return (0.1 * np.random.default_rng(seed).uniform(-1, 1, (n, 1))).astype(np.float32)


@pytest.mark.parametrize(
    ("shift_s", "ppm"), [(1.0, 0.0), (-1.0, 0.0), (0.5, -100.0), (-0.5, 100.0)]
)
def test_mix_ends_where_the_clock_map_places_the_last_recording(
    tmp_path: Path, shift_s: float, ppm: float
) -> None:
    """A map whose first point places the recording ``shift_s`` later (or earlier) than
    ``start_offset − latency`` says (the map wins): the mix ends where the map puts the
    recording's last sample — nothing of it cut, no silence after it — not where take.json's
    numbers would put it."""
    audio = _steady(9.0, 5)
    n = audio.shape[0]
    shift = round(shift_s * RATE)
    cmap = _clock_map(n, ppm, shift)  # nominally at 0: take.json's numbers say nothing else
    singers = [Singer("Al", "S", audio, rate=RATE), Singer("Bea", "A", _steady(6.0, 6), rate=RATE)]

    def mapped(m: dict[str, Any]) -> None:
        m["rate"] = RATE
        del m["settings"]  # no tempo: the timeline starts at 0
        m["recordings"][0]["shared_clock"] = False
        m["recordings"][0]["clock_map"] = cmap

    take = build_take(tmp_path / "take", singers, edit=mapped)
    out = tmp_path / "mix.wav"
    assert main(["mix", str(take), "-o", str(out), "--stems", "--no-loudness-match"]) == 0
    end = shift + round(n / (1 + ppm * 1e-6))  # the map's line, resampled onto the timeline
    assert end != n  # not where start_offset − latency would end it
    frames = sf.info(str(out)).frames
    assert abs(frames - end) <= 1, (frames, end, n)
    stem, _ = sf.read(sorted((tmp_path / "mix-stems").iterdir())[0], dtype="float32")
    assert stem.shape[0] == frames
    assert np.abs(stem[-8:]).max() > 0.01  # sounds to the mix's last frame: not padded
    if ppm == 0.0:  # placed as the map says, sample for sample (24-bit files)
        at = max(0, shift)
        assert np.abs(stem[at:] - audio[at - shift :, 0]).max() < 1e-6


def test_mix_ends_at_the_nominal_end_when_a_drift_is_not_found(tmp_path: Path) -> None:
    """``shared_clock: false``, no map, no tempo (no drift can be measured): the recording is
    mixed where take.json puts it, so with ``--tail 5`` and nothing else sounding the mix ends
    at its nominal end — no room left for a correction that did not happen."""
    singers = [Singer("Al", "S", _steady(9.0, 7), rate=RATE),
               Singer("Bea", "A", _steady(8.0, 8), rate=RATE)]  # fmt: skip

    def separate(m: dict[str, Any]) -> None:
        m["rate"] = RATE
        del m["settings"]
        m["recordings"][0]["shared_clock"] = False

    take = build_take(tmp_path / "take", singers, edit=separate)
    out = tmp_path / "mix.wav"
    assert main(["mix", str(take), "-o", str(out), "--tail", "5", "--no-loudness-match"]) == 0
    assert sf.info(str(out)).frames == 9 * RATE
