"""The compiled loops against scipy doing the same work one sample after another."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from tutti.audio.kernels import kweight_hop_energies, true_peak_rows
from tutti.audio.limiter import _BANK, _LEFT, _PHASES, _TAPS, SAMPLE_FLOOR
from tutti.audio.loudness import k_weighting_sos

RATE = 48000
HOP = 4800


def _signal(n: int, seed: int) -> np.ndarray:
    """Noise, a 40 Hz tone (where the K-weighting's high-pass rings longest) and a swell."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 40 * t)
    return (x * (0.3 + 0.7 * np.sin(2 * np.pi * 0.25 * t) ** 2)).astype(np.float32)


@pytest.mark.parametrize(("lanes", "chunk"), [(32, 20 * HOP), (7, 3 * HOP), (1, 5 * HOP + 123)])
def test_lanes_equal_sequential_filtering(lanes: int, chunk: int) -> None:
    """Each lane starts 0.2 s early from a zero state; the hop sums still equal scipy's
    sequential K-weighting of the whole signal (partial last hop included)."""
    warm = 2 * HOP
    x = _signal(warm + lanes * chunk, seed=lanes)
    sos = k_weighting_sos(RATE)
    hops = -(-chunk // HOP)
    out = np.full((lanes, hops), np.nan)
    kweight_hop_energies(x, 1.0, warm, lanes, chunk, warm, HOP, sos, out)
    y = signal.sosfilt(sos, x.astype(np.float64))[warm:]
    want = np.array(
        [
            [
                float(
                    np.sum(
                        y[
                            lane * chunk + k * HOP : min(
                                (lane + 1) * chunk, lane * chunk + (k + 1) * HOP
                            )
                        ]
                        ** 2
                    )
                )
                for k in range(hops)
            ]
            for lane in range(lanes)
        ]
    )
    np.testing.assert_allclose(out, want, rtol=1e-11)


def test_int16_samples_are_scaled() -> None:
    x = (_signal(4 * HOP, seed=3) * 20000).astype(np.int16)
    sos = k_weighting_sos(RATE)
    a = np.empty((1, 2))
    b = np.empty((1, 2))
    kweight_hop_energies(x, 1 / 32768, 2 * HOP, 1, 2 * HOP, 2 * HOP, HOP, sos, a)
    kweight_hop_energies(
        x.astype(np.float32) / 32768, 1.0, 2 * HOP, 1, 2 * HOP, 2 * HOP, HOP, sos, b
    )
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_true_peak_rows_equal_three_convolutions() -> None:
    """The envelope equals the polyphase branches run by scipy.ndimage (and phase 0)."""
    x = np.random.default_rng(5).standard_normal((2, 10_000)).astype(np.float32)
    n = x.shape[1]
    rows = np.zeros((2, n + _TAPS - 1), dtype=np.float32)
    rows[:, _LEFT : _LEFT + n] = x
    got = np.empty(n, dtype=np.float32)
    true_peak_rows(rows, _BANK, SAMPLE_FLOOR, _LEFT, got)
    want = np.abs(x) * np.float32(SAMPLE_FLOOR)
    for taps in _PHASES:
        want = np.maximum(want, np.abs(ndimage.convolve1d(x, taps, axis=1, mode="constant")))
    np.testing.assert_allclose(got, want.max(axis=0), atol=1e-6)


def test_pan_add_equals_two_numpy_products() -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(1000) * 5000).astype(np.int16)
    left = np.zeros(1000, np.float32) + 0.5
    right = np.zeros(1000, np.float32)
    gl, gr = np.float32(0.7 / 32768), np.float32(0.3 / 32768)
    want_l = left + x.astype(np.float32) * gl
    want_r = right + x.astype(np.float32) * gr
    from tutti.audio.kernels import pan_add

    pan_add(x, gl, gr, left, right)
    np.testing.assert_allclose(left, want_l, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(right, want_r, rtol=1e-6, atol=1e-9)
