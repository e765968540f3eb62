"""The singer's headset mix: placement on the timeline, levels, channels, no wrap-around."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tutti.audio.headset import SOFT_KNEE, headset_mix, soft_limit
from tutti.audio.types import AudioError

RATE = 48000


def _mono(*v: float) -> np.ndarray:
    return np.array(v, np.float32)[:, None]


def test_backing_click_and_guide_land_where_the_timeline_says() -> None:
    backing = _mono(0.1, 0.2, 0.3)
    click = _mono(0.5, 0.0, 0.0, 0.0, 0.25)
    guide = _mono(0.05, 0.05)
    out = headset_mix(
        8, RATE, backing=backing, backing_start=2, click=click, guide=guide, guide_start=6
    )
    want = np.array([0.5, 0, 0.1, 0.2, 0.55, 0, 0.05, 0.05], np.float32)
    assert out.shape == (8, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], want, atol=1e-7)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])


def test_negative_backing_start_cuts_the_start_and_long_inputs_are_cut_at_the_end() -> None:
    backing = _mono(0.1, 0.2, 0.3, 0.4)
    out = headset_mix(3, RATE, backing=backing, backing_start=-2, click=None, channels=1)
    np.testing.assert_allclose(out[:, 0], [0.3, 0.4, 0.0], atol=1e-7)
    out = headset_mix(2, RATE, backing=backing, backing_start=1, click=None, channels=1)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.1], atol=1e-7)
    out = headset_mix(3, RATE, backing=backing, backing_start=10, click=None, channels=1)
    assert not out.any()


def test_gains_in_db_and_channel_layouts() -> None:
    stereo = np.array([[0.4, -0.2], [0.2, 0.6]], np.float32)
    out = headset_mix(2, RATE, backing=stereo, backing_start=0, click=None, backing_db=-6.0206)
    np.testing.assert_allclose(out, stereo / 2, atol=1e-5)
    mono = headset_mix(2, RATE, backing=stereo, backing_start=0, click=None, channels=1)
    np.testing.assert_allclose(mono[:, 0], [0.1, 0.4], atol=1e-7)
    click = _mono(0.5, 0.5)
    out = headset_mix(2, RATE, backing=None, backing_start=0, click=click, click_db=-20.0)
    np.testing.assert_allclose(out, np.full((2, 2), 0.05), atol=1e-7)
    with pytest.raises(AudioError, match="3 channels"):
        headset_mix(2, RATE, backing=np.zeros((2, 3), np.float32), backing_start=0, click=None)
    with pytest.raises(AudioError, match="channels must be 1 or 2"):
        headset_mix(2, RATE, backing=None, backing_start=0, click=None, channels=6)
    with pytest.raises(AudioError, match="NaN"):
        headset_mix(2, RATE, backing=_mono(np.nan, 0), backing_start=0, click=None)
    with pytest.raises(AudioError, match="click_db"):
        headset_mix(2, RATE, backing=None, backing_start=0, click=click, click_db=float("inf"))


def test_a_sum_over_full_scale_is_soft_limited_never_wrapped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = np.arange(RATE) / RATE
    loud = (0.8 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    with caplog.at_level(logging.WARNING, logger="tutti.audio.headset"):
        out = headset_mix(RATE, RATE, backing=loud, backing_start=0, click=loud)
    raw = 2 * loud[:, 0]
    assert float(np.max(np.abs(raw))) > 1.5
    assert float(np.max(np.abs(out))) <= 1.0
    # Same sign everywhere (no wrap-around) and monotonic in the input.
    assert np.all(np.sign(out[:, 0]) == np.sign(raw))
    order = np.argsort(raw)
    assert np.all(np.diff(out[order, 0]) >= 0)
    # Quiet samples are untouched.
    quiet = np.abs(raw) <= SOFT_KNEE
    np.testing.assert_array_equal(out[quiet, 0], raw[quiet])
    assert "soft-limited" in caplog.text and "dBFS" in caplog.text


def test_a_mix_below_full_scale_is_the_exact_sum_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = _mono(0.5, 0.6, -0.7)
    b = _mono(0.45, 0.39, -0.29)
    with caplog.at_level(logging.WARNING, logger="tutti.audio.headset"):
        out = headset_mix(3, RATE, backing=a, backing_start=0, click=b, channels=1)
    np.testing.assert_array_equal(out[:, 0], (a + b)[:, 0])
    assert caplog.text == ""


def test_soft_limit_curve() -> None:
    x = np.array([[0.5], [0.9], [0.95], [1.0], [4.0], [-4.0]], np.float32)
    n = soft_limit(x)
    assert n == 4
    assert x[0, 0] == 0.5 and x[1, 0] == np.float32(0.9)
    assert 0.9 < x[2, 0] < 0.95 and x[2, 0] < x[3, 0] < x[4, 0] <= 1.0
    assert x[5, 0] == -x[4, 0]
    with pytest.raises(AudioError, match="knee"):
        soft_limit(x, 1.5)
