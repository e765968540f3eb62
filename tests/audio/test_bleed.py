"""The leak fit on arrays: a known path is found and predicted exactly; a recording without
a leak is not given one."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.signal

from tutti.audio import bleed

RATE = 48000


F64 = npt.NDArray[np.float64]


def _hops(
    x: F64, program: F64, layout: bleed.FitLayout, idx: npt.NDArray[np.intp]
) -> tuple[F64, F64, F64]:
    before, after = layout.context
    padded = np.pad(program, ((before, after + layout.hop), (0, 0)))
    xs = np.stack([x[i * layout.hop : (i + 1) * layout.hop] for i in idx])
    q = np.stack(
        [padded[i * layout.hop : i * layout.hop + layout.hop + layout.taps - 1] for i in idx]
    )
    return xs, q, (idx * layout.hop).astype(np.float64)


def _program(n: int) -> F64:
    rng = np.random.default_rng(1)
    out: F64 = scipy.signal.lfilter([1.0], [1.0, -0.8], rng.standard_normal((n, 2)), axis=0)
    return 0.1 * out


def test_known_stereo_path_found_and_predicted() -> None:
    layout = bleed.layout_for(RATE)
    n = 6 * RATE
    program = _program(n)
    rng = np.random.default_rng(2)
    taps = np.zeros((2, layout.taps))  # lags -pre .. taps-1-pre: lag 0 at index pre
    taps[:, layout.pre + 3 : layout.pre + 63] = rng.standard_normal((2, 60)) * np.exp(
        -np.arange(60) / 9
    )
    shifted = np.pad(program, ((0, layout.pre), (0, 0)))[layout.pre :]  # p[n + pre]
    leak = sum(scipy.signal.lfilter(taps[c], [1.0], shifted[:, c]) for c in (0, 1))
    x = 0.01 * leak + 1e-6 * rng.standard_normal(n)  # a leak 80 dB above a faint noise
    idx = np.arange(0, n // layout.hop - 1, 3)
    fit = bleed.fit_leak(*_hops(x, program, layout, idx), layout)
    assert fit.usable, fit.reason
    assert np.abs(fit.filter_at(RATE) - 0.01 * taps).max() < 1e-2 * 0.01 * np.abs(taps).max()
    lo, m = RATE, 20000
    before, after = layout.context
    pred = bleed.predict(fit, program[lo - before : lo + m + after].astype(np.float32), lo)
    err = x[lo : lo + m] - pred
    assert 10 * np.log10(np.sum((0.01 * leak[lo : lo + m]) ** 2) / np.sum(err**2)) > 60


def test_no_leak_is_not_fitted() -> None:
    layout = bleed.layout_for(RATE)
    n = 6 * RATE
    program = _program(n)
    x = 1e-3 * np.random.default_rng(3).standard_normal(n)  # room noise, nothing of the program
    idx = np.arange(0, n // layout.hop - 1, 2)
    fit = bleed.fit_leak(*_hops(x, program, layout, idx), layout)
    assert not fit.usable and "no leak found" in fit.reason


def test_ringing_path_removed() -> None:
    """A leak through a 2nd-order Butterworth band-pass (200 Hz–4 kHz: it rings for several
    ms) at −25 dBFS, with a voice in every other 2.5 s and room noise at −66 dBFS."""
    layout = bleed.layout_for(RATE)
    n = 20 * RATE
    program = _program(n)
    b, a = scipy.signal.butter(2, [200, 4000], "bandpass", fs=RATE)
    leak = scipy.signal.lfilter(b, a, program[:, 0]) + 0.7 * scipy.signal.lfilter(
        b, a, np.roll(program[:, 1], 5)
    )
    leak *= 10 ** (-25 / 20) / np.sqrt(np.mean(leak**2))
    t = np.arange(n) / RATE
    sung = np.sin(2 * np.pi * t / 5) > 0
    voice = 0.1 * np.sin(2 * np.pi * 220 * t) * sung
    noise = 10 ** (-66 / 20) * np.random.default_rng(4).standard_normal(n)
    x = voice + leak + noise
    ex = bleed.hop_energies(x, layout.hop)
    ep = bleed.hop_energies(program[: len(ex) * layout.hop], layout.hop)
    usable = np.ones(len(ex), dtype=bool)
    idx = bleed.candidate_hops(ex, ep, ~usable, usable, layout.window // layout.hop)
    fit = bleed.fit_leak(*_hops(x, program, layout, idx[idx < len(ex) - 1]), layout)
    assert fit.usable, fit.reason
    before, after = layout.context
    padded = np.pad(program, ((before, after), (0, 0))).astype(np.float32)
    pred = bleed.predict(fit, padded, 0)
    err = x - pred - voice - noise
    assert 10 * np.log10(np.sum(leak**2) / np.sum(err**2)) > 35
    assert 10 * np.log10(np.sum(voice[sung] ** 2) / np.sum(err[sung] ** 2)) > 40


def test_a_windowed_path_is_predicted_with_the_filter_at_the_block_centre() -> None:
    """predict interpolates the windows' filter spectra (made once per fit) as filter_at
    interpolates their taps: the same bleed as convolving the program with filter_at."""
    layout = bleed.layout_for(RATE)
    rng = np.random.default_rng(5)
    centres = np.array([0.0, 2.0, 4.0]) * RATE
    filters = rng.standard_normal((3, 2, layout.taps)) * np.exp(-np.arange(layout.taps) / 40)
    fit = bleed.LeakFit(layout, centres, 0.01 * filters)
    program = _program(4 * RATE).astype(np.float32)
    before, after = layout.context
    for lo, m in ((RATE, 20000), (int(2.5 * RATE), 7000), (int(3.9 * RATE), 3000)):
        q = program[lo - before : lo + m + after]
        pred = bleed.predict(fit, q, lo)
        h = fit.filter_at(lo + m / 2)
        want = sum(np.convolve(q[:, c].astype(np.float64), h[c], mode="valid") for c in (0, 1))
        assert pred.shape == (m,)
        assert np.abs(pred - want).max() < 1e-5 * np.abs(want).max()
    made = dict(fit._spectra)
    assert len(made) == 3  # one set of spectra per FFT length…
    bleed.predict(fit, program[RATE - before : RATE + 20000 + after], RATE)
    assert all(fit._spectra[n] is s for n, s in made.items())  # …made once
