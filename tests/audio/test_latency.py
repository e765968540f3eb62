"""Round-trip latency: exact on integer delays, ±0.25 frame on fractional ones at SNR 10 dB with
gain and a reverb tail, and clear errors for silence, clipping and noise."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tutti.audio import latency
from tutti.audio.latency import LatencyError, estimate_latency

RATE = 48000
F64 = npt.NDArray[np.float64]


def _played() -> np.ndarray:
    # 0.5 s sweep, 0.1 s lead, 0.1 s tail: short enough for fast tests.
    out: np.ndarray = latency.test_signal(RATE, duration_s=0.5, tail_s=0.1)
    return out


def _delayed(x: np.ndarray, delay: float, extra: int) -> F64:
    """``x`` delayed by ``delay`` frames (band-limited: a linear phase shift of its DFT)."""
    n = x.shape[0] + extra
    spec = np.fft.rfft(x[:, 0].astype(np.float64), n)
    k = np.arange(spec.shape[0])
    return np.fft.irfft(spec * np.exp(-2j * np.pi * k * delay / n), n)


def _room(y: F64, rng: np.random.Generator) -> F64:
    """A short reverb: the direct sound and a 10 ms-decay diffuse tail starting 1 ms later."""
    ir = np.zeros(round(0.05 * RATE))
    ir[0] = 1.0
    m = ir.shape[0] - 48
    ir[48:] = rng.standard_normal(m) * 0.05 * np.exp(-np.arange(m) / (0.01 * RATE))
    return np.convolve(y, ir)[: y.shape[0]]


def _with_noise(y: F64, snr_db: float, active: slice, rng: np.random.Generator) -> np.ndarray:
    """Add white noise ``snr_db`` below the power of ``y`` over ``active``."""
    p = float(np.mean(y[active] ** 2))
    noisy = y + rng.standard_normal(y.shape[0]) * np.sqrt(p / 10 ** (snr_db / 10))
    out: np.ndarray = noisy.astype(np.float32)[:, None]
    return out


def test_test_signal_shape_level_and_silence_around() -> None:
    x = latency.test_signal(RATE)
    assert x.dtype == np.float32 and x.shape == (round(2.1 * RATE), 1)
    assert not x[: round(0.1 * RATE)].any() and not x[round(1.1 * RATE) :].any()
    assert 20 * np.log10(float(np.max(np.abs(x)))) == pytest.approx(-12.0, abs=0.1)


def test_clean_digital_loopback_is_exact() -> None:
    p = _played()
    for d in (0, 1, 512, 4801):
        rec = np.zeros((p.shape[0] + d, 1), np.float32)
        rec[d:] = p
        est = estimate_latency(p, rec, RATE, max_latency_s=0.2)
        assert est.frames == d
        assert est.subsample == pytest.approx(d, abs=1e-3)
        assert est.confidence > 50 and est.snr_db > 40 and not est.inverted


@pytest.mark.parametrize("delay", [0, 7, 512, 2048, 9600])
def test_integer_delays_are_exact_with_gain_noise_and_reverb(delay: int) -> None:
    rng = np.random.default_rng(delay)
    p = _played()
    y = np.zeros(p.shape[0] + 10000)
    y[delay : delay + p.shape[0]] = 0.3 * p[:, 0]
    y = _room(y, rng)
    lead = round(0.1 * RATE)
    rec = _with_noise(y, 10.0, slice(lead + delay, lead + delay + RATE // 2), rng)
    est = estimate_latency(p, rec, RATE, max_latency_s=0.25)
    assert est.frames == delay
    assert abs(est.subsample - delay) < 0.25
    assert est.confidence >= 20  # the reverb tail is not counted as a sidelobe


@pytest.mark.parametrize("delay", [300.37, 512.25, 1000.5, 2047.81, 4800.9])
def test_fractional_delays_within_a_quarter_frame_at_snr_10_db(delay: float) -> None:
    rng = np.random.default_rng(int(delay * 100))
    p = _played()
    y = _room(0.3 * _delayed(p, delay, 10000), rng)
    lead = round(0.1 * RATE) + int(delay)
    rec = _with_noise(y, 10.0, slice(lead, lead + RATE // 2), rng)
    est = estimate_latency(p, rec, RATE, max_latency_s=0.25)
    assert abs(est.subsample - delay) <= 0.25, est
    assert est.frames == round(delay)


def test_snr_estimate_tracks_the_noise_and_polarity_is_reported() -> None:
    rng = np.random.default_rng(5)
    p = _played()
    y = -0.5 * _delayed(p, 256.0, 2000)
    lead = round(0.1 * RATE) + 256
    for snr in (10.0, 20.0):
        rec = _with_noise(y, snr, slice(lead, lead + RATE // 2), rng)
        est = estimate_latency(p, rec, RATE, max_latency_s=0.1)
        assert est.frames == 256 and est.inverted
        # In-band explained power vs all noise: within a few dB of the true SNR.
        assert est.snr_db == pytest.approx(snr, abs=2.0)
    assert est.ms(RATE) == pytest.approx(256 / 48, abs=0.01)


def test_silence_clipping_and_noise_only_get_clear_errors() -> None:
    p = _played()
    with pytest.raises(LatencyError, match="silent"):
        estimate_latency(p, np.zeros_like(p), RATE)
    with pytest.raises(LatencyError, match="silent"):
        estimate_latency(p, np.full_like(p, 1e-6), RATE)
    rec = np.zeros((p.shape[0] + 100, 1), np.float32)
    rec[100:] = np.clip(8 * p, -1, 1)
    with pytest.raises(LatencyError, match="clips"):
        estimate_latency(p, rec, RATE, max_latency_s=0.1)
    noise = np.random.default_rng(0).standard_normal((p.shape[0] + 2000, 1)) * 0.1
    with pytest.raises(LatencyError, match="no clear peak"):
        estimate_latency(p, noise.astype(np.float32), RATE, max_latency_s=0.1)
    with pytest.raises(LatencyError, match="all zeros"):
        estimate_latency(np.zeros_like(p), rec, RATE)
    with pytest.raises(LatencyError, match="one channel"):
        estimate_latency(p, np.zeros((100, 2), np.float32), RATE)


def test_a_delay_beyond_the_search_range_is_not_reported_as_a_wrong_one() -> None:
    p = _played()
    rec = np.zeros((p.shape[0] + 20000, 1), np.float32)
    rec[20000:] = p
    with pytest.raises(LatencyError, match="no clear peak"):
        estimate_latency(p, rec, RATE, max_latency_s=0.1)  # 4800 frames < 20000
