"""BS.1770 loudness: the streaming meter against pyloudnorm and reference signals."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest

from tutti.audio.loudness import (
    LoudnessMeter,
    db_to_gain,
    gain_to_target,
    integrated_loudness,
)
from tutti.audio.types import AudioError

RATE = 48000


def sine(freq: float, seconds: float, dbfs: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_ebu_reference_stereo_sine_at_minus_23() -> None:
    """EBU Tech 3341 case 1: a 1 kHz stereo sine at −23 dBFS reads −23.0 LUFS (±0.1 LU)."""
    x = sine(1000, 20, -23.0)
    assert integrated_loudness(np.stack([x, x], axis=1), RATE) == pytest.approx(-23.0, abs=0.1)


def test_ebu_reference_minus_33() -> None:
    x = sine(1000, 20, -33.0)
    assert integrated_loudness(np.stack([x, x], axis=1), RATE) == pytest.approx(-33.0, abs=0.1)


@pytest.mark.parametrize(
    ("rate", "channels", "frames"), [(48000, 1, 336_123), (44100, 2, 220_507), (32000, 3, 100_001)]
)
def test_equals_pyloudnorm(rate: int, channels: int, frames: int) -> None:
    rng = np.random.default_rng(rate)
    ramp = np.linspace(0.02, 1.0, frames)[:, None]  # gating matters: quiet start
    x = (0.1 * rng.standard_normal((frames, channels)) * ramp).astype(np.float32)
    ref = pyloudnorm.Meter(rate).integrated_loudness(x.astype(np.float64))
    assert integrated_loudness(x, rate) == pytest.approx(ref, abs=0.01)


def test_block_size_does_not_change_the_result() -> None:
    # hop sums are float32 sums: a hop split across blocks is summed in another order, which
    # moves the result by ~1e-8 LU (a lost or doubled block would move it by far more)
    rng = np.random.default_rng(3)
    x = (0.2 * rng.standard_normal((5 * RATE + 17, 2))).astype(np.float32)
    whole = integrated_loudness(x, RATE, block=x.shape[0])
    for block in (1, 777, 4800, 65536):
        if block == 1:
            m = LoudnessMeter(RATE, 2)
            for a in range(0, 9600, 1):  # frame by frame for the first 0.2 s
                m.feed(x[a : a + 1])
            m.feed(x[9600:])
            assert m.integrated() == pytest.approx(whole, abs=1e-6)
        else:
            assert integrated_loudness(x, RATE, block=block) == pytest.approx(whole, abs=1e-6)


def test_gating_ignores_silence() -> None:
    """Silence around a tone is gated out: the loudness stays near the tone's (ungated, 20 s of
    silence around 5 s of tone would read 7 LU lower); only blocks straddling the edges count."""
    tone = sine(1000, 5, -20.0)
    padded = np.concatenate(
        [np.zeros(10 * RATE, np.float32), tone, np.zeros(10 * RATE, np.float32)]
    )
    a = integrated_loudness(tone[:, None], RATE)
    b = integrated_loudness(padded[:, None], RATE)
    assert b == pytest.approx(a, abs=0.3)
    ref = pyloudnorm.Meter(RATE).integrated_loudness(padded.astype(np.float64))
    assert b == pytest.approx(ref, abs=0.01)


def test_silence_and_short_signals() -> None:
    assert integrated_loudness(np.zeros((RATE, 1), np.float32), RATE) == -math.inf
    assert integrated_loudness(np.full((RATE // 10, 1), 0.5, np.float32), RATE) == -math.inf
    assert gain_to_target(-math.inf, -16.0) == 0.0


def test_gain_to_target_reaches_target() -> None:
    x = sine(440, 10, -30.0)[:, None]
    measured = integrated_loudness(x, RATE)
    g = gain_to_target(measured, -16.0)
    assert integrated_loudness((x * db_to_gain(g)).astype(np.float32), RATE) == pytest.approx(
        -16.0, abs=0.01
    )
    assert gain_to_target(-80.0, -16.0, max_gain_db=30.0) == 30.0


def test_bad_shapes() -> None:
    with pytest.raises(AudioError, match="channels"):
        LoudnessMeter(RATE, 6)
    m = LoudnessMeter(RATE, 2)
    with pytest.raises(AudioError, match="expected"):
        m.feed(np.zeros((10, 1), np.float32))
