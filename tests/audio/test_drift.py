"""Clock drift: a hand-computed fit, and 100 ppm over 10 minutes (made with soxr) corrected to
well under 1 ms, measured at a marker the fit never saw."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from tutti.audio.align import find_markers
from tutti.audio.click import beat_frames, render_click
from tutti.audio.drift import correct_drift, estimate_drift
from tutti.audio.types import AudioError
from tutti.wire import SessionSettings

RATE = 48000


def test_fit_of_hand_computed_markers() -> None:
    # found = 5 + 1.0001 * expected: 100 ppm fast, 5 frames late.
    pairs = [(e, 5 + 1.0001 * e) for e in (0.0, 25000.0, 28_000_000.0, 28_800_000.0)]
    est = estimate_drift(pairs)
    assert est.ppm == pytest.approx(100.0, abs=1e-6)
    assert est.offset_frames == pytest.approx(5.0, abs=1e-4)
    assert est.markers_used == 4 and est.residual_frames < 1e-4
    # The recording after correct_drift starts 5 / 1.0001 frames later on the timeline.
    assert est.corrected_timeline_start(1000) == 995


def test_an_outlier_marker_is_dropped() -> None:
    pairs = [(e, 1.00005 * e) for e in (0.0, 10000.0, 20000.0, 1e7, 1.001e7)]
    pairs.append((5e6, 5e6 * 1.00005 + 300))  # a cough, 300 frames off
    est = estimate_drift(pairs)
    assert est.markers_used == 5
    assert est.ppm == pytest.approx(50.0, abs=1e-6)


def test_a_minority_of_wrong_markers_cannot_move_the_fit() -> None:
    # 5 clicks at each end of 10 min, 60 ppm slow, 3 frames early; 4 'markers' that are the
    # singer's consonants, hundreds of frames off, all near the start.
    good = [float(e) for e in (1e4, 3e4, 5e4, 7e4, 9e4, 2.87e7, 2.872e7, 2.874e7, 2.876e7, 2.878e7)]
    pairs = [(e, -3 + (1 - 60e-6) * e) for e in good]
    pairs += [(2e4, 2e4 + 400.0), (4e4, 4e4 - 250.0), (6e4, 6e4 + 900.0), (8e4, 8e4 + 130.0)]
    est = estimate_drift(pairs)
    assert est.markers_used == 10
    assert est.ppm == pytest.approx(-60.0, abs=1e-6)
    assert est.offset_frames == pytest.approx(-3.0, abs=1e-4)
    # With more wrong markers than right ones there is no telling: refused, not guessed.
    bad = [(e, e + off) for e, off in ((1e4, 300.0), (2e4, -700.0), (3e4, 90.0), (4e4, 555.0))]
    with pytest.raises(AudioError, match="disagree"):
        estimate_drift(pairs[:2] + [(2.8e7, 2.8e7)] + bad)
    # The markers that agree must still span the take.
    with pytest.raises(AudioError, match="span"):
        estimate_drift([(0.0, 0.0), (10.0, 10.0), (20.0, 20.0), (2.8e7, 2.8e7 + 999)], min_span=1e6)


def test_bad_marker_sets_are_refused_clearly() -> None:
    with pytest.raises(AudioError, match="both ends"):
        estimate_drift([(100.0, 100.0)])
    with pytest.raises(AudioError, match="span"):
        estimate_drift([(100.0, 100.0), (100.0, 101.0)])
    with pytest.raises(AudioError, match="not clock drift"):
        estimate_drift([(0.0, 0.0), (1e6, 1.01e6)])
    with pytest.raises(AudioError, match="finite"):
        estimate_drift([(0.0, 0.0), (1e6, float("nan"))])
    with pytest.raises(AudioError, match="ppm"):
        correct_drift(np.zeros((10, 1), np.float32), RATE, 1e5)
    x = np.arange(5, dtype=np.float32)[:, None] / np.float32(10)
    same = correct_drift(x, RATE, 0.0)
    assert same is not x and np.array_equal(same, x)


def test_100_ppm_over_ten_minutes_is_corrected_to_under_one_ms() -> None:
    seconds = 600
    n = seconds * RATE
    s = SessionSettings(title="t", bpm=113, count_in_bars=1)
    beats = beat_frames(s, RATE, seconds=seconds)
    # Markers the mic hears: the count-in clicks, the last bars' clicks, and one click in
    # the middle that the fit does not use: it measures the residual independently.
    ends = [b for b in beats if b.count_in or b.frame > n - 4 * RATE]
    middle = [b for b in beats if abs(b.frame - n // 2) < 2 * RATE][:2]
    timeline = render_click(ends + middle, RATE, n, level_db=-12.0)
    rng = np.random.default_rng(0)
    timeline[:, 0] += (0.003 * rng.standard_normal(n)).astype(np.float32)

    # The singer's interface runs 100 ppm fast; its recording starts at timeline frame 777,
    # and the take's metadata says 790.
    true_start, nominal = 777, 790
    rec = soxr.resample(timeline[true_start:], RATE, RATE * (1 + 100e-6), quality="VHQ")
    assert rec.shape[0] - (n - true_start) == pytest.approx(0.06 * RATE, abs=2)  # 60 ms more

    window = round(0.1 * RATE)
    expected = [b.frame - nominal for b in ends]
    found = find_markers(rec, RATE, expected, window=window)
    assert found[0] is None  # the first click began before the recording did
    pairs = [(e, f) for e, f in zip(expected, found, strict=True) if f is not None]
    assert len(pairs) >= 6 and pairs[0][0] < RATE and pairs[-1][0] > n - 5 * RATE
    est = estimate_drift(pairs)
    assert est.ppm == pytest.approx(100.0, abs=0.5)

    fixed = correct_drift(rec, RATE, est.ppm)
    start = est.corrected_timeline_start(nominal)
    assert abs(start - true_start) <= 2

    every = ends + middle
    after = find_markers(fixed, RATE, [b.frame - start for b in every], window=window)
    before = find_markers(rec, RATE, [b.frame - nominal for b in every], window=window)
    res_after = [abs(f - (b.frame - start)) for b, f in zip(every, after, strict=True) if f]
    res_before = [abs(f - (b.frame - nominal)) for b, f in zip(every, before, strict=True) if f]
    assert len(res_after) == len(every) - 1
    assert max(res_before) > 0.05 * RATE  # uncorrected, the end is ~60 ms late
    assert max(res_after) <= 0.001 * RATE  # ≤ 1 ms everywhere, the unused middle included
    assert max(res_after) <= 3.0  # in fact within a few frames


def _burst(n: int, at: list[int], level: float, rate: int = RATE) -> np.ndarray:
    """A quiet recording of ``n`` frames with a decaying 1.5 kHz burst (a pluck or a click)
    at each frame of ``at``."""
    x = np.random.default_rng(3).normal(0.0, 1e-4, n).astype(np.float32)
    k = np.arange(round(0.03 * rate))
    burst = level * np.sin(2 * np.pi * 1500 * k / rate) * np.exp(-k / (0.008 * rate))
    for a in at:
        x[a : a + len(k)] += burst[: max(0, n - a)].astype(np.float32)
    return x[:, None]


def test_a_sung_note_in_the_window_is_no_marker() -> None:
    """A note that starts near a beat and lasts is not a click: no marker, where the loudest
    onset in the window used to be taken for one."""
    n, e = RATE * 2, RATE
    x = _burst(n, [e], 0.01)
    t = np.arange(n) / RATE
    note = (t >= 1.02) & (t < 1.6)
    x[note, 0] += (0.3 * np.sin(2 * np.pi * 440 * t[note])).astype(np.float32)
    assert find_markers(x, RATE, [e], window=round(0.05 * RATE)) == [None]
    alone = find_markers(_burst(n, [e], 0.01), RATE, [e], window=round(0.05 * RATE))
    assert alone[0] is not None and abs(alone[0] - e) < 5


def test_plucks_off_the_beat_near_the_start_are_no_markers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A backing plucked 103 ms after every beat and no click heard: the whole recording's
    search window (±104 ms for 3 minutes) holds the plucks, but near its start a clock has
    had no time to drift that far, nor a line through the end's markers alone put it there."""
    from types import SimpleNamespace

    from tutti.mix import dedrift
    from tutti.mix.scratch import RawAudio

    settings = SessionSettings.from_dict(
        {"title": "t", "rate": RATE, "bpm": 90.0, "beats_per_bar": 4, "count_in_bars": 1}
    )
    n = RATE * 180
    beats = [b.frame for b in beat_frames(settings, RATE, seconds=n / RATE)]
    raw = RawAudio(tmp_path / "r.f32", 1)
    raw.append(_burst(n, [b + round(0.103 * RATE) for b in beats], 0.01))
    item = SimpleNamespace(timeline_start=0, warnings=[])
    try:
        assert dedrift._marker_drift(item, raw, RATE, settings) is None  # type: ignore[arg-type]
    finally:
        raw.close()
    assert "start +103 ms off" in item.warnings[0], item.warnings
