"""True-peak meter and limiter: checked against scipy.signal.resample_poly at 4×."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from tutti.audio.limiter import Limiter, true_peak_db, true_peak_envelope
from tutti.audio.types import AudioError

RATE = 48000


def reference_tp(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.abs(signal.resample_poly(x, 4, 1, axis=0)).max()))


def test_intersample_peak_of_quarter_rate_sine() -> None:
    """fs/4 at 45°: every sample is ±0.707 (−3 dBFS) but the waveform peaks at 1.0 (0 dBTP)."""
    n = np.arange(RATE)
    x = np.sin(2 * np.pi * n / 4 + np.pi / 4).astype(np.float32)[:, None]
    assert 20 * math.log10(float(np.abs(x).max())) == pytest.approx(-3.01, abs=0.01)
    # away from the abrupt start and end (which ring in any interpolator)
    steady = float(true_peak_envelope(x)[1000:-1000].max())
    assert 20 * math.log10(steady) == pytest.approx(0.0, abs=0.05)
    assert true_peak_db(x) >= -0.05


def test_envelope_equals_resample_poly() -> None:
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((5000, 2))).astype(np.float32)
    ref = np.abs(signal.resample_poly(x, 4, 1, axis=0)).reshape(5000, 8).max(axis=1)
    env = true_peak_envelope(x)
    np.testing.assert_allclose(env[40:-40], ref[40:-40], rtol=1e-5, atol=1e-6)
    assert true_peak_db(x, block=1000) == pytest.approx(reference_tp(x), abs=0.01)


def test_silence_is_minus_infinity() -> None:
    assert true_peak_db(np.zeros((100, 2), np.float32)) == -math.inf


@pytest.mark.parametrize("gain_db", [0.0, 6.0, 20.0])
def test_limited_output_stays_under_ceiling(gain_db: float) -> None:
    rng = np.random.default_rng(1)
    n = 3 * RATE
    x = (0.05 * rng.standard_normal((n, 2))).astype(np.float32)
    x[::4800] += 0.8  # transients
    x[RATE : RATE + 2000] += np.sin(2 * np.pi * np.arange(2000) / 4 + np.pi / 4)[:, None] * 0.9
    y = Limiter(RATE, ceiling_db=-1.0).limit(x.astype(np.float32), 10 ** (gain_db / 20))
    assert reference_tp(y) <= -1.0


def test_quiet_signal_passes_untouched() -> None:
    rng = np.random.default_rng(2)
    x = (0.01 * rng.standard_normal((RATE, 2))).astype(np.float32)
    y = Limiter(RATE).limit(x, 2.0)
    np.testing.assert_allclose(y, x * 2.0, rtol=1e-6)


def test_blocks_give_the_same_result_as_one_block() -> None:
    rng = np.random.default_rng(3)
    x = (0.4 * rng.standard_normal((100_000, 2))).astype(np.float32)
    lim = Limiter(RATE)
    np.testing.assert_allclose(
        lim.limit(x, 1.5, block=7777), lim.limit(x, 1.5, block=1 << 20), atol=1e-6
    )


def test_gain_is_smooth_and_never_above_need() -> None:
    """A spike: the gain ramps down before it and up after it, never above what frames need."""
    x = np.zeros((20_000, 1), np.float32)
    x[10_000] = 1.0
    lim = Limiter(RATE, radius_ms=5.0)
    padded = np.zeros((x.shape[0] + 2 * lim.pad, 1), np.float32)
    padded[lim.pad : lim.pad + x.shape[0]] = x
    g = lim.gain_curve(padded, 1.0)
    env = true_peak_envelope(padded, pad=16)[lim.pad - 16 : lim.pad - 16 + x.shape[0]]
    need = lim.needed_gain(env, 1.0)
    assert np.all(g <= need + 1e-7)
    assert g[10_000] < 0.9 and g[0] == 1.0 and g[-1] == 1.0
    assert float(np.max(np.abs(np.diff(g)))) < 0.02  # no jumps: ramps over ~2 radius


def test_bad_ceiling() -> None:
    with pytest.raises(AudioError, match="ceiling"):
        Limiter(RATE, ceiling_db=1.0)
