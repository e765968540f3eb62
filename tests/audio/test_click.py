"""Click positions on the timeline (hand-computed) and the rendered click track."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tutti.audio.click import Beat, beat_frames, render_click
from tutti.audio.types import AudioError
from tutti.wire import SessionSettings, TempoSection

RATE = 48000


def test_113_bpm_over_ten_minutes_lands_every_beat_on_its_exact_rounded_sample() -> None:
    # 60 * 48000 / 113 = 25486.725... frames per beat: a fractional period.
    s = SessionSettings(title="t", bpm=113, count_in_bars=0)
    beats = beat_frames(s, RATE, seconds=600)
    # k * 60 / 113 < 600  <=>  k < 1130.
    assert len(beats) == 1130
    for k, b in enumerate(beats):
        # round(k * 2880000 / 113) in integer arithmetic; 113 is odd, so no ties.
        assert b.frame == (2 * k * 2_880_000 + 113) // (2 * 113), k
        assert b.time == Fraction(60 * k, 113)
    # Hand-computed: 1129 * 2880000 / 113 = 28774513.27...
    assert beats[-1].frame == 28_774_513
    # A naive float32 accumulation of the period would be off by now; ours is not.
    naive = np.cumsum(np.full(1130, np.float32(2_880_000 / 113), np.float32))[-2]
    assert abs(float(naive) - 28_774_513) > 1.0


def test_count_in_bars_beats_accents_and_first_downbeat() -> None:
    s = SessionSettings(title="t", bpm=120, beats_per_bar=4, count_in_bars=2)
    beats = beat_frames(s, RATE, n_bars=2)
    assert [b.frame for b in beats] == [i * 24000 for i in range(16)]
    assert [b.count_in for b in beats] == [True] * 8 + [False] * 8
    assert [b.bar for b in beats] == [-2] * 4 + [-1] * 4 + [0] * 4 + [1] * 4
    assert [b.beat for b in beats] == [0, 1, 2, 3] * 4
    assert [b.accent for b in beats] == [True, False, False, False] * 4
    # The song's first downbeat is where the wire contract says the count-in ends.
    assert beats[8].frame == s.count_in_frames == 192000


def test_tempo_map_sections_change_tempo_and_meter_at_their_bars() -> None:
    s = SessionSettings(
        title="t",
        bpm=120,
        beats_per_bar=4,
        count_in_bars=1,
        tempo_map=(
            TempoSection(bar=2, bpm=90, beats_per_bar=3),
            TempoSection(bar=3, bpm=100, beats_per_bar=5),
            TempoSection(bar=4, bpm=113.1, beats_per_bar=2),
        ),
    )
    beats = beat_frames(s, RATE, n_bars=5)
    frames = [b.frame for b in beats]
    # count-in 4 x 0.5 s; bars 0-1 at 120 BPM (0.5 s); bar 2 at 90 BPM, 3/4 (2/3 s);
    # bar 3 at 100 BPM, 5/4 (0.6 s); bar 4 at 113.1 BPM (600/1131 s), 2 beats.
    expected_s = [Fraction(i, 2) for i in range(12)]
    expected_s += [6 + Fraction(2 * i, 3) for i in range(3)]
    expected_s += [8 + Fraction(3 * i, 5) for i in range(5)]
    expected_s += [11 + Fraction(600 * i, 1131) for i in range(2)]
    assert frames == [round(t * RATE) for t in expected_s]
    assert frames[12:15] == [288000, 320000, 352000]
    assert frames[15:20] == [384000, 412800, 441600, 470400, 499200]
    assert frames[20:] == [528000, 528000 + 25464]  # 600/1131 s * 48000 = 25464.19
    assert [b.bar for b in beats][12:] == [2, 2, 2, 3, 3, 3, 3, 3, 4, 4]
    assert [b.bpm for b in beats][12:] == [90.0] * 3 + [100.0] * 5 + [113.1] * 2
    assert beats[20].accent and beats[15].accent and not beats[16].accent


def test_a_tempo_map_section_at_bar_zero_replaces_the_base_tempo_for_the_song_only() -> None:
    s = SessionSettings(title="t", bpm=120, count_in_bars=1, tempo_map=(TempoSection(0, 60, 2),))
    frames = [b.frame for b in beat_frames(s, RATE, n_bars=2)]
    assert frames == [0, 24000, 48000, 72000, 96000, 144000, 192000, 240000]


def test_extent_limits_and_bad_settings() -> None:
    s = SessionSettings(title="t", bpm=120, count_in_bars=1)
    assert len(beat_frames(s, RATE, seconds=2.0)) == 4  # beats at 0, .5, 1, 1.5 s
    assert len(beat_frames(s, RATE, n_bars=1, seconds=100)) == 8
    assert len(beat_frames(s, RATE, n_bars=10, seconds=2.01)) == 5
    with pytest.raises(AudioError, match="n_bars"):
        beat_frames(s, RATE)
    with pytest.raises(AudioError, match="rate"):
        beat_frames(s, 0, n_bars=1)
    bad = SessionSettings(title="t", bpm=float("nan"))
    with pytest.raises(AudioError, match="tempo"):
        beat_frames(bad, RATE, n_bars=1)
    backwards = SessionSettings(
        title="t", tempo_map=(TempoSection(3, 100, 4), TempoSection(2, 100, 4))
    )
    with pytest.raises(AudioError, match="tempo_map"):
        beat_frames(backwards, RATE, n_bars=4)


def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x, 8 * rate))
    return float(np.argmax(spec)) * rate / (8 * rate)


def test_render_click_onsets_are_exact_and_downbeats_are_higher() -> None:
    s = SessionSettings(title="t", bpm=113, count_in_bars=1)
    beats = beat_frames(s, RATE, n_bars=1)
    out = render_click(beats, RATE, beats[-1].frame + RATE, level_db=-6.0)
    assert out.shape == (beats[-1].frame + RATE, 1) and out.dtype == np.float32
    for b in beats:
        assert out[b.frame, 0] != 0.0
        if b.frame:
            assert out[b.frame - 1, 0] == 0.0  # silence right up to the onset
    burst = round(0.04 * RATE)
    down = out[beats[4].frame : beats[4].frame + burst, 0]
    up = out[beats[5].frame : beats[5].frame + burst, 0]
    assert _dominant_hz(down, RATE) == pytest.approx(1600, abs=15)
    assert _dominant_hz(up, RATE) == pytest.approx(1000, abs=15)
    assert 0.45 < float(np.max(np.abs(out))) <= 10 ** (-6 / 20) + 1e-6
    assert not out[beats[1].frame - 100 : beats[1].frame].any()  # bursts end well before


def test_render_click_subdivisions_count_in_only_and_levels() -> None:
    s = SessionSettings(title="t", bpm=120, count_in_bars=1)
    beats = beat_frames(s, RATE, n_bars=1)
    out = render_click(beats, RATE, 8 * 24000, subdivisions=2)
    for k in range(8):
        sub = k * 24000 + 12000
        assert out[sub, 0] != 0.0 and out[sub - 1, 0] == 0.0
    main_peak = float(np.max(np.abs(out[24000:25000])))
    sub_peak = float(np.max(np.abs(out[12000:13000])))
    assert 20 * np.log10(sub_peak / main_peak) == pytest.approx(-8.0, abs=0.5)

    only = render_click(beats, RATE, 8 * 24000, count_in_only=True)
    assert only[:96000].any() and not only[96000:].any()

    louder = render_click(beats, RATE, 48000, level_db=-12.0, accent_db=6.0)
    a = float(np.max(np.abs(louder[:1000])))
    b = float(np.max(np.abs(louder[24000:25000])))
    assert 20 * np.log10(a / b) == pytest.approx(6.0, abs=0.6)

    with pytest.raises(AudioError, match="clip"):
        render_click(beats, RATE, 48000, level_db=-3.0, accent_db=6.0)
    with pytest.raises(AudioError, match="subdivisions"):
        render_click(beats, RATE, 48000, subdivisions=0)


def test_hand_built_beats_without_time_and_beats_past_the_end() -> None:
    beats = [
        Beat(frame=10, bar=0, beat=0, accent=True, count_in=False, bpm=120.0),
        Beat(frame=500, bar=0, beat=1, accent=False, count_in=False, bpm=120.0),
    ]
    out = render_click(beats, RATE, 100)
    assert out[10, 0] != 0.0 and not out[:10].any()
    assert out.shape == (100, 1)
