"""Placing takes on the timeline: hand arrays, known offsets to ±1 frame, markers, resampling."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tutti.audio.align import find_markers, place, refine_offset, resample
from tutti.audio.click import beat_frames, render_click
from tutti.audio.types import AudioError
from tutti.wire import SessionSettings

RATE = 48000


def _col(*v: float) -> np.ndarray:
    return np.array(v, np.float32)[:, None]


def test_place_pads_and_trims_hand_arrays() -> None:
    rec = _col(1, 2, 3, 4)
    np.testing.assert_array_equal(place(rec, 2, 8)[:, 0], [0, 0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(place(rec, -1, 5)[:, 0], [2, 3, 4, 0, 0])
    np.testing.assert_array_equal(place(rec, 3, 5)[:, 0], [0, 0, 0, 1, 2])
    assert not place(rec, 9, 5).any() and not place(rec, -4, 5).any()
    assert place(rec, 0, 0).shape == (0, 1)
    st = np.array([[1, -1], [2, -2]], np.float32)
    np.testing.assert_array_equal(place(st, 1, 3), [[0, 0], [1, -1], [2, -2]])
    with pytest.raises(AudioError, match="length"):
        place(rec, 0, -1)


def _timeline(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A reference on the timeline: a click and a 'choir' of band-limited noise."""
    s = SessionSettings(title="t", bpm=113, count_in_bars=1)
    n = round(seconds * RATE)
    click = render_click(beat_frames(s, RATE, seconds=seconds), RATE, n)
    voice = np.convolve(rng.standard_normal(n), np.hanning(24) / 12, mode="same") * 0.05
    out: np.ndarray = (click[:, 0] + voice).astype(np.float32)[:, None]
    return out


def _fractional_shift(x: np.ndarray, delay: float) -> npt.NDArray[np.float64]:
    n = x.shape[0]
    spec = np.fft.rfft(x[:, 0].astype(np.float64), n)
    k = np.arange(spec.shape[0])
    return np.fft.irfft(spec * np.exp(-2j * np.pi * k * delay / n), n)


@pytest.mark.parametrize(
    ("true_start", "metadata_error"), [(-3000, 0), (1234, 37), (0, -200), (20000, 480)]
)
def test_recordings_with_known_offsets_are_placed_to_one_frame(
    true_start: int, metadata_error: int
) -> None:
    rng = np.random.default_rng(abs(true_start))
    ref = _timeline(6.0, rng)
    # The singer's recording: the reference from timeline true_start on, 0.5 gain, mic noise.
    rec = (
        ref[max(true_start, 0) :]
        if true_start >= 0
        else np.vstack([np.zeros((-true_start, 1), np.float32), ref])
    )
    rec = (0.5 * rec + 0.01 * rng.standard_normal(rec.shape)).astype(np.float32)
    start = refine_offset(rec, ref, true_start + metadata_error, window=512)
    assert abs(start - true_start) <= 1
    placed = place(rec, start, ref.shape[0])
    beat = beat_frames(SessionSettings(title="t", bpm=113), RATE, n_bars=2)[5].frame
    window = placed[beat - 2 : beat + 3, 0] * 2 - ref[beat - 2 : beat + 3, 0]
    assert float(np.max(np.abs(window))) < 0.1  # the click lines up with the reference


def test_a_fractional_offset_is_placed_to_the_nearest_frame() -> None:
    rng = np.random.default_rng(7)
    ref = _timeline(4.0, rng)
    true_start = 1234.4
    rec = _fractional_shift(ref, -true_start)[: ref.shape[0] - 2000].astype(np.float32)[:, None]
    start = refine_offset(rec, ref, 1200, window=100, segment=(0, 2 * RATE))
    assert abs(start - true_start) <= 1


def test_refine_offset_stays_within_its_window_and_rejects_silence() -> None:
    rng = np.random.default_rng(3)
    ref = _timeline(3.0, rng)
    rec = ref[5000:]
    start = refine_offset(rec, ref, 4000, window=100)
    assert 3900 <= start <= 4100  # the true 5000 is outside the window: bounded, not found
    with pytest.raises(AudioError, match="silent"):
        refine_offset(np.zeros_like(rec), ref, 5000, window=10)
    with pytest.raises(AudioError, match="window"):
        refine_offset(rec, ref, 5000, window=-1)


def test_find_markers_finds_click_onsets_and_says_none_where_there_is_none() -> None:
    rng = np.random.default_rng(11)
    n = 5 * RATE
    s = SessionSettings(title="t", bpm=113, count_in_bars=1)
    beats = beat_frames(s, RATE, n_bars=0)  # the 4 count-in clicks
    rec = render_click(beats, RATE, n)[:, 0] * 0.3
    rec = (rec + 0.003 * rng.standard_normal(n)).astype(np.float32)[:, None]
    shifted = [b.frame + 700 for b in beats]
    rec = np.vstack([np.zeros((700, 1), np.float32), rec])
    found = find_markers(rec, RATE, [f + 30 for f in shifted] + [4 * RATE], window=2400)
    for f, got in zip(shifted, found[:4], strict=True):
        assert got is not None and abs(got - f) <= 2.0
    assert found[4] is None  # only noise near 4 s
    assert find_markers(rec, RATE, [-100000, rec.shape[0] + 100000], window=2400) == [None, None]
    with pytest.raises(AudioError, match="window"):
        find_markers(rec, RATE, [0], window=0)


def _tone_hz(x: npt.NDArray[np.float64], rate: int) -> float:
    """Frequency of a pure tone: peak of a Hann-windowed spectrum, parabolic on log |X|."""
    w = np.hanning(x.shape[0])
    spec = np.abs(np.fft.rfft(x * w, 4 * x.shape[0]))
    i = int(np.argmax(spec))
    a, b, c = np.log(spec[i - 1 : i + 2])
    return float((i + 0.5 * (a - c) / (a - 2 * b + c)) * rate / (4 * x.shape[0]))


def test_resample_44k1_to_48k_keeps_a_tone_and_the_timing() -> None:
    n = 44100 * 2
    t = np.arange(n) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 997.0 * t)).astype(np.float32)[:, None]
    out = resample(tone, 44100, 48000)
    assert out.dtype == np.float32 and abs(out.shape[0] - 96000) <= 1
    mid = out[24000:72000, 0].astype(np.float64)
    assert _tone_hz(mid, 48000) == pytest.approx(997.0, abs=0.01)
    assert float(np.max(np.abs(mid))) == pytest.approx(0.5, abs=0.005)
    # A click at 1.0 s stays at 1.0 s.
    imp = np.zeros((n, 1), np.float32)
    s = SessionSettings(title="t", bpm=60, count_in_bars=0)
    imp[:] = render_click(beat_frames(s, 44100, n_bars=1)[1:2], 44100, n)
    got = find_markers(resample(imp, 44100, 48000), 48000, [48000], window=480)[0]
    ref = find_markers(imp, 44100, [44100], window=480)[0]
    assert got is not None and ref is not None
    assert got / 48000 == pytest.approx(ref / 44100, abs=1.5 / 48000)
    # Stereo stays stereo; the same rate is a copy; bad rates are refused.
    st = np.hstack([tone, -tone])
    out2 = resample(st, 44100, 48000)
    assert out2.shape[1] == 2
    np.testing.assert_allclose(out2[:, 0], -out2[:, 1], atol=1e-6)
    same = resample(tone, 48000, 48000)
    assert same is not tone and np.array_equal(same, tone)
    with pytest.raises(AudioError, match="from_rate"):
        resample(tone, 0, 48000)


def test_the_design_timeline_numbers_place_a_loop_recording_on_the_beat() -> None:
    """DESIGN.md end to end in arrays: calibrate a loop, record a take through it, place it.

    The loop (output → ear cup → mic) delays by 731.3 frames with gain 0.5 and adds noise.
    Timeline sample 0 leaves at stream frame o0 = 5000; the recording starts at input frame
    r0 = 3000.  Placed at ``start_offset − L = (r0 − o0) − L``, the take must line up with the
    headset mix: cross-correlation peak at lag 0 (±1).
    """
    from tutti.audio import latency
    from tutti.audio.headset import headset_mix

    rng = np.random.default_rng(21)
    true_latency = 731.3

    def loop(x: np.ndarray) -> np.ndarray:
        y = 0.5 * _fractional_shift(np.vstack([x, np.zeros((2000, 1), np.float32)]), true_latency)
        out: np.ndarray = (y + 0.002 * rng.standard_normal(y.shape[0])).astype(np.float32)
        return out[:, None]

    played = latency.test_signal(RATE, duration_s=0.5, tail_s=0.1)
    cal = latency.estimate_latency(played, loop(played), RATE, max_latency_s=0.1)
    assert cal.frames == 731

    s = SessionSettings(title="t", bpm=113, count_in_bars=1)
    n = 4 * RATE
    click = render_click(beat_frames(s, RATE, seconds=4.0), RATE, n)
    backing = (0.05 * rng.standard_normal((n, 1))).astype(np.float32)
    mix = headset_mix(n, RATE, backing=backing, backing_start=s.count_in_frames, click=click)
    o0, r0 = 5000, 3000
    stream_out = np.vstack([np.zeros((o0, 1), np.float32), mix[:, :1]])
    stream_in = loop(stream_out)
    take = stream_in[r0:]
    start = (r0 - o0) - cal.frames
    placed = place(take, start, n)
    lags = np.arange(-20, 21)
    corr = [float(np.dot(placed[20 + g : n - 20 + g, 0], mix[20 : n - 20, 0])) for g in lags]
    assert abs(int(lags[int(np.argmax(corr))])) <= 1
    assert refine_offset(take, mix, start, window=50) == start
