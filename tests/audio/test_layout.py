"""Default stereo layout by voice part and the constant-power pan law."""

from __future__ import annotations

import math

import pytest

from tutti.audio.layout import PART_CENTRES, SPREAD, default_pans, pan_gains, part_family
from tutti.audio.types import AudioError


def test_pan_law_is_constant_power() -> None:
    for pan in (-1.0, -0.5, 0.0, 0.3, 1.0):
        left, right = pan_gains(pan)
        assert left**2 + right**2 == pytest.approx(1.0)
    assert pan_gains(-1.0) == pytest.approx((1.0, 0.0))
    assert pan_gains(1.0) == pytest.approx((0.0, 1.0))
    left, right = pan_gains(0.0)
    assert 20 * math.log10(left) == pytest.approx(-3.01, abs=0.01) and left == pytest.approx(right)


def test_bad_pan() -> None:
    for bad in (-1.5, 2.0, float("nan")):
        with pytest.raises(AudioError, match="pan"):
            pan_gains(bad)


def test_part_families() -> None:
    assert [
        part_family(p)
        for p in ("S", "S2", "Soprano 1", "alto", "A1", "T", "tenor", "B2", "Bass", "Solo")
    ] == ["S", "S", "S", "A", "A", "T", "T", "B", "B", None]


def test_sopranos_and_tenors_left_altos_and_basses_right() -> None:
    parts = ["S", "A", "T", "B"]
    pans = default_pans(parts)
    assert pans[0] < 0 and pans[2] < 0
    assert pans[1] > 0 and pans[3] > 0
    assert pans == [PART_CENTRES[p] for p in parts]


def test_spread_within_a_part() -> None:
    pans = default_pans(["S", "A", "S", "S", "Solo"])
    sop = [pans[0], pans[2], pans[3]]
    assert sop == sorted(sop) and len(set(sop)) == 3
    assert sop[-1] - sop[0] == pytest.approx(SPREAD)
    assert sum(sop) / 3 == pytest.approx(PART_CENTRES["S"])
    assert pans[1] == PART_CENTRES["A"] and pans[4] == 0.0
    assert all(-1.0 <= p <= 1.0 for p in pans)
