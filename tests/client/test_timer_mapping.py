"""Which mapping a cycle uses: JACK's frame timer, checked against the client's wake-ups."""

from __future__ import annotations

import pytest

from tutti.client.engine import JACK_HOLD_S, TimerMapping

MS = 1e-3
TRUE = 100.0  # the monotonic time of device frame 0 (s)
CYCLE = 256 / 48000


def _healthy(m: TimerMapping, lag: float, cycles: int, t: float = 0.0) -> float:
    """Feed ``cycles`` cycles of a timer on the truth and wake-ups ``lag`` late; the end time."""
    for _ in range(cycles):
        t += CYCLE
        assert m.pick(TRUE + lag, TRUE, t) == (TRUE, True)
    return t


def test_a_timer_that_jumps_late_is_held_alike_by_a_prompt_and_a_slow_client() -> None:
    # the CI case: the timer jumped ~1.1 ms late; a slow client's wake-ups (0.4 ms late) were
    # within 1 ms of it and took it, a prompt one's (0.05 ms) were not and used their own
    prompt, slow = TimerMapping(), TimerMapping()
    t = _healthy(prompt, 0.05 * MS, 20)
    _healthy(slow, 0.4 * MS, 20)
    for _ in range(8):
        t += CYCLE
        a = prompt.pick(TRUE + 0.05 * MS, TRUE + 1.1 * MS, t)
        b = slow.pick(TRUE + 0.4 * MS, TRUE + 1.1 * MS, t)
        assert a == b == (TRUE, True)


@pytest.mark.parametrize("jump", [0.5 * MS, 5.4 * MS, -1.5 * MS, -30 * MS])
def test_a_timer_later_than_a_wake_up_or_far_earlier_is_not_used(jump: float) -> None:
    m = TimerMapping()
    t = _healthy(m, 0.2 * MS, 10)
    assert m.pick(TRUE + 0.2 * MS, TRUE + jump, t + CYCLE) == (TRUE, True)


def test_the_held_mapping_ends_and_the_wake_ups_take_over_unconfirmed() -> None:
    m = TimerMapping()
    t = _healthy(m, 0.2 * MS, 10)
    wakeups = TRUE + 0.2 * MS
    assert m.pick(wakeups, TRUE + 5 * MS, t + JACK_HOLD_S * 0.9) == (TRUE, True)
    assert m.pick(wakeups, TRUE + 5 * MS, t + JACK_HOLD_S * 1.1) == (wakeups, False)
    # the timer back on the truth is taken again at once
    assert m.pick(wakeups, TRUE, t + JACK_HOLD_S * 1.2) == (TRUE, True)


def test_nothing_is_held_before_a_good_reading() -> None:
    m = TimerMapping()
    assert m.pick(TRUE, TRUE + 2 * MS, 0.0) == (TRUE, False)


def test_frames_given_back_move_the_held_mapping() -> None:
    m = TimerMapping()
    t = _healthy(m, 0.2 * MS, 10)
    m.shift(CYCLE)
    base, confirmed = m.pick(TRUE + 0.2 * MS, TRUE + 5 * MS, t + CYCLE)
    assert confirmed and base == pytest.approx(TRUE + CYCLE)
