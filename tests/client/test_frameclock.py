"""Frame accounting and the clock map, on time-information traces with known truth.

The traces are what a stream callback reads: frame counts and PortAudio timestamps, with the
noise real ones have (late wake-ups only ever read later; JACK's clock filter wanders slowly)
and losses and clock offsets put in where the test says.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tutti.client.frameclock import FrameAccount, clock_map, fit_clock

RATE = 48000
P = 256


def _readings(
    callbacks: int,
    losses: dict[int, int],
    *,
    seed: int = 1,
    late: float = 40.0,
    wander: float = 60.0,
    ppm: float = 0.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per callback: stream frame ``n`` and the time (s) its first frame met the device.

    ``losses``: callback index → frames the stream never saw just before it.  Late wake-ups
    are exponential (mean ``late`` frames, sometimes a period or more), the clock filter
    wanders ±``wander`` frames over seconds, and the device clock runs ``ppm`` fast."""
    rng = np.random.default_rng(seed)
    n = np.arange(callbacks) * P
    lost = np.zeros(callbacks)
    for i, f in losses.items():
        lost[i:] += f
    device = (n + lost) * (1.0 + ppm * 1e-6)
    slow = wander * np.sin(np.arange(callbacks) / 900.0)
    noise = rng.exponential(late, callbacks) * (rng.random(callbacks) < 0.3)
    return n.astype(np.float64), (1000.0 + device + slow + noise) / RATE


def _account(n: npt.NDArray[np.float64], t: npt.NDArray[np.float64]) -> FrameAccount:
    acct = FrameAccount(RATE, P)
    for ni, ti in zip(n, t, strict=True):
        acct.update(int(ni), P, float(ti))
    return acct


def _events(acct: FrameAccount) -> list[tuple[int, int]]:
    return [(int(a), int(f)) for a, f in zip(acct.event_at, acct.event_frames, strict=False)][
        : acct.events
    ]


def test_late_wake_ups_and_a_wandering_clock_lose_nothing() -> None:
    n, t = _readings(20000, {}, late=60.0, wander=100.0)
    acct = _account(n, t)
    assert acct.lost == 0 and acct.events == 0
    assert acct.settled == n[-1] + P


@pytest.mark.parametrize("periods", [1, 9, 55, 375])
def test_a_stall_is_counted_in_whole_periods_where_it_happened(periods: int) -> None:
    n, t = _readings(6000, {3000: periods * P})
    acct = _account(n, t)
    assert _events(acct) == [(3000 * P, periods * P)]


def test_many_losses_on_a_busy_machine_add_up_exactly() -> None:
    rng = np.random.default_rng(7)
    at = sorted(rng.choice(np.arange(200, 29000), 40, replace=False))
    losses = {int(i): int(rng.integers(1, 12)) * P for i in at}
    n, t = _readings(30000, losses, late=80.0, wander=100.0, seed=3)
    acct = _account(n, t)
    assert acct.lost == sum(losses.values())
    assert _events(acct) == [(i * P, f) for i, f in sorted(losses.items())]


def test_a_loss_holds_back_the_frames_after_it_until_measured() -> None:
    n, t = _readings(3100, {3000: 9 * P}, late=0.0, wander=0.0)
    acct = FrameAccount(RATE, P)
    for i, (ni, ti) in enumerate(zip(n, t, strict=True)):
        acct.update(int(ni), P, float(ti))
        if i == 3002:  # two callbacks after the stall: not measured yet
            assert acct.lost == 0 and acct.settled == 3000 * P
    assert acct.lost == 9 * P and acct.settled == n[-1] + P


def _exact_cycles(callbacks: int, late: dict[int, tuple[int, int]]) -> list[tuple[int, int]]:
    """JACK's own cycle count as callbacks read it: ``late`` maps a first callback to (how
    many run late, by how many periods); a late callback reads a later cycle, never an
    earlier one, and the stream then catches up one callback per cycle."""
    behind = np.zeros(callbacks, np.int64)
    for i, (count, periods) in late.items():
        behind[i : i + count] = periods
    return [(k * P, (5000 + k + int(behind[k])) * P) for k in range(callbacks)]


@pytest.mark.parametrize("periods", [1, 3, 19])
def test_a_late_run_counted_as_lost_is_given_back_when_the_stream_catches_up(
    periods: int,
) -> None:
    acct = FrameAccount(RATE, P)
    acct.set_quantum(P, exact=True)
    for k, (n, frame) in enumerate(_exact_cycles(3000, {1000: (40, periods)})):
        acct.update(n, P, frame / RATE)
        if k == 1040:  # the give-back: the reading it was found on is at the level again
            assert acct.lost == 0 and acct.level == 5000 * P
    # the late run held long enough to be counted, then the catch-up took it back
    assert _events(acct) == [(1000 * P, periods * P), (1040 * P, -periods * P)]
    assert acct.lost == 0 and acct.given_back == periods * P


def test_exact_readings_keep_a_real_loss_after_a_late_run() -> None:
    acct = FrameAccount(RATE, P)
    acct.set_quantum(P, exact=True)
    cycles = _exact_cycles(3000, {1000: (40, 4)})
    # 7 cycles really missed at callback 2000: the count steps and stays
    cycles = cycles[:2000] + [(n, f + 7 * P) for n, f in cycles[2000:]]
    for n, frame in cycles:
        acct.update(n, P, frame / RATE)
    assert acct.lost == 7 * P
    assert _events(acct)[-1] == (2000 * P, 7 * P)


def test_exact_readings_place_a_loss_in_the_steps_they_show() -> None:
    """A loss a busy client sees in steps (2 periods, then 2 more read one callback late, then
    2 more) sits at each callback's lowest later reading, not all at the last step; the late
    callback's own frames belong to a cycle it jumped over, which one is unknown: left out."""
    acct = FrameAccount(RATE, P)
    acct.set_quantum(P, exact=True)
    steps = {1000: 2, 1001: 5, 1002: 4, 1003: 6}  # periods above the level; 1001 read late
    for k in range(3000):
        ahead = steps.get(k, 6 if k > 1003 else 0)
        acct.update(k * P, P, (5000 + k + ahead) * P / RATE)
    assert _events(acct) == [
        (1000 * P, 2 * P), (1001 * P, 3 * P), (1001 * P, -P), (1003 * P, 2 * P)
    ]  # fmt: skip
    assert acct.lost == 6 * P and acct.unplaced == P


def test_readings_that_are_not_exact_never_give_back() -> None:
    acct = FrameAccount(RATE, P)  # PortAudio's estimate wanders both ways: a loss stands
    for n, frame in _exact_cycles(3000, {1000: (40, 3)}):
        acct.update(n, P, frame / RATE)
    assert acct.lost == 3 * P and acct.given_back == 0


@pytest.mark.parametrize("ppm", [100.0, -100.0])
def test_clock_map_of_separate_clocks_over_ten_minutes(ppm: float) -> None:
    """Input on a clock ``ppm`` fast against the output's (two devices, so not JACK: losses
    in single frames): the map puts every input frame within 1 ms of its timeline frame over
    10 minutes, with no click in any recording."""
    callbacks = 10 * 60 * RATE // P
    n, t_out = _readings(callbacks, {}, seed=11, late=40.0, wander=60.0)
    _, t_in = _readings(callbacks, {}, seed=12, late=40.0, wander=60.0, ppm=-ppm)
    acct_in, acct_out = FrameAccount(RATE, 1), FrameAccount(RATE, 1)
    rows = []
    for i in range(callbacks):
        acct_in.update(int(n[i]), P, float(t_in[i]))
        acct_out.update(int(n[i]), P, float(t_out[i]))
        if i % 94 == 0 and i > 64:  # every ~0.5 s, as the engine samples it
            rows.append((n[i] + acct_in.lost, acct_in.level - acct_out.level))
    trace = np.array(rows)
    fit = fit_clock(trace, RATE)
    assert not fit.shared and fit.ppm == pytest.approx(ppm, abs=2.0)
    r0, start = int(trace[0, 0]), -512
    points = clock_map(trace, r0, start, 5 * RATE, 40)
    assert 2 <= len(points) <= 40
    # truth: input frame j was captured at device time j / (1 + ppm·1e-6) of the output clock
    for frame, timeline in points:
        true = start + (frame + r0) / (1.0 + ppm * 1e-6) - r0 / (1.0 + ppm * 1e-6)
        assert abs(timeline - true) <= 0.001 * RATE, (frame, timeline, true)


def test_one_clock_is_measured_as_shared() -> None:
    callbacks = 60 * RATE // P
    n, t = _readings(callbacks, {}, seed=5)
    acct_in, acct_out = FrameAccount(RATE, P), FrameAccount(RATE, P)
    rows = []
    for i in range(callbacks):
        acct_in.update(int(n[i]), P, float(t[i]) - 256 / RATE)  # ADC: a constant earlier
        acct_out.update(int(n[i]), P, float(t[i]) + 768 / RATE)
        if i % 94 == 0 and i > 64:
            rows.append((n[i] + acct_in.lost, acct_in.level - acct_out.level))
    fit = fit_clock(np.array(rows), RATE)
    assert fit.shared and abs(fit.ppm) < 1.0
