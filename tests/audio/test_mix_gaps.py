"""Dropout gaps in ``tutti mix``: silent, faded at their edges, placement kept, reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tutti.audio.gaps import FADE_S, gap_envelope, gap_regions
from tutti.audio.types import AudioError
from tutti.cli import main

from .test_mixcmd import RATE, Singer, build_take

TS = 300  # start_offset − latency: the recording's sample 0 sits at timeline 300
GAP_AT = 2 * RATE + 27  # timeline frame where the input was lost (the tone is at a peak)
GAP = int(0.35 * RATE)  # 350 ms of input lost
SLIP_AT = 161 * RATE // 60  # a headset slip the report lists
TONE_HZ = 440.0
LEVEL = 0.3


def _burst(seed: int, n: int = 2400) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(n)
    return np.asarray(0.4 * noise / np.abs(noise).max() * np.hanning(n), dtype=np.float32)


def _timeline_voice(frames: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A steady 440 Hz tone on the timeline with noise bursts at 1 s and 4 s (before and
    after the gap) to judge placement by cross-correlation."""
    t = np.arange(frames) / RATE
    x = (LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    bursts = {at: _burst(k) for k, at in enumerate((RATE, 4 * RATE)) if at + 2400 <= frames}
    for at, b in bursts.items():
        x[at : at + b.shape[0]] += b
    return x, bursts


def _lag(stem: np.ndarray, at: int, burst: np.ndarray) -> int:
    reach = 480
    seg = stem[at - reach : at + reach + burst.shape[0]]
    return int(np.argmax(np.correlate(seg, burst, mode="valid"))) - reach


def test_gap_is_silent_faded_placed_and_reported(tmp_path: Path) -> None:
    """The recorder lost 350 ms of input at 0:02 and wrote that much silence (as the engine
    does), so the recording stays on the timeline after it.  The stem is exactly silent in the
    gap, the edges do not step more than the tone itself, the bursts before and after are at
    lag 0, and the report lists the gap and the headset slip (and no xrun warning)."""
    frames = 6 * RATE
    timeline, bursts = _timeline_voice(frames + TS)
    rec = timeline[TS:].copy()  # file frame j = timeline j + TS
    rec[GAP_AT - TS : GAP_AT - TS + GAP] = 0.0
    # unfaded, the cut into the gap is a step of about the tone's peak (a click)
    assert abs(float(rec[GAP_AT - TS - 1])) > 0.9 * LEVEL
    singers = [Singer("Ann", "S", rec[:, None], start_offset=TS + 256, latency=256)]

    def lost(m: dict[str, Any]) -> None:
        r = m["recordings"][0]
        r["gaps"] = [{"at": GAP_AT, "frames": GAP}]
        r["slips"] = [{"at": SLIP_AT, "frames": int(0.3 * RATE)}]
        r["overflows"], r["underflows"] = 74, 12  # JACK's server-wide counts: not warnings

    take = build_take(tmp_path / "take", singers, edit=lost)
    assert main(["mix", str(take), "--stems", "--no-loudness-match"]) == 0
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    stem, _ = sf.read(next((take / "mix-stems").iterdir()), dtype="float32")

    assert not np.any(stem[GAP_AT : GAP_AT + GAP]), "the gap must stay silent"
    tone_step = LEVEL * 2 * np.pi * TONE_HZ / RATE  # the tone's own largest sample step
    ramp = round(FADE_S * RATE)
    for edge in (GAP_AT, GAP_AT + GAP):
        near = stem[edge - 2 * ramp : edge + 2 * ramp]
        step = float(np.abs(np.diff(near)).max())
        assert step <= 1.05 * tone_step, (edge, step, tone_step)
        print(f"gap edge {edge}: largest step {step:.4f}, the tone's own {tone_step:.4f}")
    # the fade is short: a few ms away from the gap the tone is untouched
    away = slice(GAP_AT - 3 * ramp, GAP_AT - 2 * ramp)
    assert np.allclose(stem[away], timeline[away], atol=1e-5)
    for at, burst in bursts.items():
        assert _lag(stem, at, burst) == 0, at

    assert "1 gap, 0.35 s" in out, out  # the table's "lost" cell
    assert "headset skipped 1× (300 ms)" in out.split("Ann: input lost")[0], "table warning"
    assert "Ann: input lost 350 ms at 0:02" in out, out
    assert "Ann: headset skipped 300 ms at 0:02" in out, out
    assert "overflow" not in out and "underflow" not in out, out


def test_gaps_in_a_16_bit_recording_are_faded_too(tmp_path: Path) -> None:
    """A 16-bit file is kept as 16-bit scratch: its gap is faded and silent all the same."""
    timeline, _ = _timeline_voice(3 * RATE)
    rec = timeline.copy()
    rec[RATE : RATE + 4800] = 0.0
    singers = [Singer("Bo", "T", rec[:, None], subtype="PCM_16")]

    def lost(m: dict[str, Any]) -> None:
        m["recordings"][0]["gaps"] = [{"at": RATE, "frames": 4800}]

    take = build_take(tmp_path / "take", singers, edit=lost)
    assert main(["mix", str(take), "--stems", "--no-loudness-match"]) == 0
    stem, _ = sf.read(next((take / "mix-stems").iterdir()), dtype="float32")
    assert not np.any(stem[RATE : RATE + 4800])
    ramp = round(FADE_S * RATE)
    step = float(np.abs(np.diff(stem[RATE - 2 * ramp : RATE + 2 * ramp])).max())
    assert step <= 1.05 * LEVEL * 2 * np.pi * TONE_HZ / RATE + 2 / 32768


def test_gap_where_the_file_is_not_silent_is_left_alone(tmp_path: Path) -> None:
    """A gap listed where the recording holds a voice (a manifest that disagrees with its
    file): the voice is kept as it is, and the table says so."""
    timeline, _ = _timeline_voice(3 * RATE)
    singers = [Singer("Di", "A", timeline[:, None])]

    def wrong(m: dict[str, Any]) -> None:
        m["recordings"][0]["gaps"] = [{"at": RATE, "frames": 4800}]

    take = build_take(tmp_path / "take", singers, edit=wrong)
    assert main(["mix", str(take), "--stems", "--no-loudness-match"]) == 0
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    stem, _ = sf.read(next((take / "mix-stems").iterdir()), dtype="float32")
    np.testing.assert_allclose(
        stem[RATE - 500 : RATE + 5300], timeline[RATE - 500 : RATE + 5300], atol=1e-5
    )
    assert "gap at 0:01 not silent in the file: left unfaded" in out, out


def test_old_take_without_gaps_shows_xruns_as_information(tmp_path: Path) -> None:
    timeline, _ = _timeline_voice(RATE)
    singers = [Singer("Cy", "A", timeline[:, None])]

    def old(m: dict[str, Any]) -> None:
        m["recordings"][0]["overflows"] = 74

    take = build_take(tmp_path / "take", singers, edit=old)
    assert main(["mix", str(take), "--no-loudness-match"]) == 0
    out = (take / "mix.report.txt").read_text(encoding="utf-8")  # the whole report
    assert "xruns" in out and "overflows" not in out, out


# -- the envelope itself -------------------------------------------------------------------
def test_envelope_hand_computed() -> None:
    """Gap of 2 frames at 5, ramp 3: gains ½(1 − cos(πk/4)) for k = 3, 2, 1 before it and
    k = 1, 2, 3 after it."""
    env = gap_envelope(0, 12, [(5, 2)], 3)
    r = [0.5 * (1 - np.cos(np.pi * k / 4)) for k in (1, 2, 3)]
    want = [1, 1, r[2], r[1], r[0], 0, 0, r[0], r[1], r[2], 1, 1]
    assert env.dtype == np.float32
    np.testing.assert_allclose(env, want, atol=1e-7)
    # a window into the middle gives the same numbers
    np.testing.assert_allclose(gap_envelope(4, 9, [(5, 2)], 3), want[4:9], atol=1e-7)


def test_envelope_of_close_gaps_takes_the_lower_gain() -> None:
    env = gap_envelope(0, 10, [(2, 1), (5, 1)], 2)
    assert env[2] == 0 and env[5] == 0
    assert env[3] == pytest.approx(
        min(0.5 * (1 - np.cos(np.pi / 3)), 0.5 * (1 - np.cos(2 * np.pi / 3)))
    )


def test_regions_merge_and_clip() -> None:
    assert gap_regions([(10, 5), (18, 2), (100, 1)], 3, 102) == [(7, 23), (97, 102)]
    assert gap_regions([(-20, 5)], 3, 50) == []
    assert gap_regions([(1, 1)], 3, 50) == [(0, 5)]


def test_envelope_refuses_nonsense() -> None:
    with pytest.raises(AudioError, match="ramp"):
        gap_envelope(0, 4, [(1, 1)], -1)
    with pytest.raises(AudioError, match="one frame"):
        gap_regions([(1, 0)], 2, 10)
