"""ClockEstimator on synthetic samples with a known offset (pure; no network)."""

from __future__ import annotations

import random

import pytest

from tutti.client.clock import ClockError, ClockEstimator, ClockSample


def _sample(rng: random.Random, t: float, theta: float, up: float, down: float) -> ClockSample:
    # client sends at t, server stamps at t + up (client clock) = t + up + theta (server clock)
    return ClockSample(t0=t, server=t + up + theta, t1=t + up + down)


def test_symmetric_constant_delay_is_exact() -> None:
    est = ClockEstimator(window=16)
    rng = random.Random(1)
    for i in range(16):
        est.add(_sample(rng, i * 0.1, 3.25, 0.001, 0.001))
    for method in ("envelope", "median"):
        e = est.estimate(method)
        assert e.offset == pytest.approx(3.25, abs=1e-12)
        assert e.error_bound == pytest.approx(0.0, abs=1e-12)
        assert e.rtt_min == pytest.approx(0.002)


def test_envelope_beats_median_under_random_one_way_delays() -> None:
    rng = random.Random(7)
    theta = -12.5
    env_err: list[float] = []
    med_err: list[float] = []
    for trial in range(200):
        est = ClockEstimator(window=100)
        for i in range(100):
            up = 0.010 + rng.uniform(0, 0.020)
            down = 0.010 + rng.uniform(0, 0.020)
            est.add(_sample(rng, trial * 10 + i * 0.05, theta, up, down))
        env_err.append(abs(est.estimate("envelope").offset - theta))
        med_err.append(abs(est.estimate("median").offset - theta))
    env_err.sort()
    med_err.sort()
    p99_env, p99_med = env_err[197], med_err[197]
    # with 100 samples per window the envelope's bounds sit ~0.2 ms above the 10 ms floor
    assert p99_env < 0.001
    assert p99_env < p99_med
    # every estimate lies inside its causal interval, so the error never exceeds the half width
    assert max(env_err) < 0.010


def test_causal_interval_contains_truth_and_asymmetry_shows() -> None:
    est = ClockEstimator(window=8)
    rng = random.Random(3)
    for i in range(8):
        est.add(_sample(rng, i, 1.0, 0.004, 0.001))  # asymmetric path: +1.5 ms bias
    e = est.estimate()
    assert e.offset == pytest.approx(1.0015, abs=1e-9)
    assert e.causal_half_width == pytest.approx(0.0025, abs=1e-9)
    assert abs(e.offset - 1.0) <= e.causal_half_width


def test_old_samples_leave_the_window_and_errors_are_clear() -> None:
    est = ClockEstimator(window=4, max_age=10.0)
    with pytest.raises(ClockError, match="no clock samples"):
        est.estimate()
    rng = random.Random(0)
    for i in range(6):
        est.add(_sample(rng, float(i), 0.0, 0.001, 0.001))
    assert len(est) == 4
    est.add(_sample(rng, 100.0, 0.0, 0.001, 0.001))
    assert len(est) == 1
    with pytest.raises(ClockError, match="answered before it was sent"):
        est.add(ClockSample(t0=5.0, server=1.0, t1=4.0))
    with pytest.raises(ValueError, match="method"):
        ClockEstimator(method="mean")  # type: ignore[arg-type]  # the point of the test


def test_contradicting_samples_are_reported() -> None:
    est = ClockEstimator()
    est.add(ClockSample(t0=0.0, server=10.0, t1=0.001))
    est.add(ClockSample(t0=1.0, server=20.0, t1=1.001))  # the server clock jumped 9 s
    with pytest.raises(ClockError, match="contradict"):
        est.estimate()
