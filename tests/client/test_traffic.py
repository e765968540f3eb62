"""What a singer's client sends, and how often: levels at the rate the server sets (holding
the loudest meter reading in between), the clock re-synced as often as it moves."""

from __future__ import annotations

from typing import Any

import numpy as np

from tutti.client.clock import (
    RECONNECT_PROBES,
    RESYNC_MAX_S,
    RESYNC_MIN_S,
    RESYNC_TOLERANCE_S,
    STEADY_AFTER,
    ClockSync,
    ResyncPacer,
)
from tutti.client.join import JOIN_PROBES, LEVEL_HZ, _HeldLevel


def _run(pacer: ResyncPacer, ppm: float, noise: float, n: int) -> list[float]:
    t, intervals = 0.0, []
    for k in range(n):
        wobble = noise if k % 2 else -noise
        intervals.append(pacer.next_interval(t, 0.010 + t * ppm * 1e-6 + wobble, 50e-6))
        t += intervals[-1]
    return intervals


def test_a_still_clock_is_resynced_every_minute_a_drifting_one_often() -> None:
    still = _run(ResyncPacer(), ppm=0.0, noise=20e-6, n=8)
    assert still[:5] == [RESYNC_MIN_S, 10.0, 20.0, 40.0, RESYNC_MAX_S]
    assert still[-1] == RESYNC_MAX_S
    drifting = _run(ResyncPacer(), ppm=100.0, noise=20e-6, n=8)
    assert max(drifting) == RESYNC_MIN_S  # 100 ppm: 0.5 ms every 5 s, past the tolerance
    slow = _run(ResyncPacer(), ppm=10.0, noise=0.0, n=8)
    # 10 ppm beyond a 50 µs error bound: the offset moves the tolerance in about 25-35 s
    assert 20.0 <= slow[-1] <= RESYNC_TOLERANCE_S / 10e-6 * 1.5


def test_a_clock_that_starts_moving_is_resynced_soon() -> None:
    pacer = ResyncPacer()
    t = 0.0
    for _ in range(6):
        t += pacer.next_interval(t, 0.010, 50e-6)
    assert pacer.interval == RESYNC_MAX_S
    # the next re-sync finds the offset 3 ms away (a clock step, a sleep): about 5 s again
    assert pacer.next_interval(t, 0.013, 50e-6) < 6.0


def test_a_slower_report_still_carries_every_peak_and_clip() -> None:
    held = _HeldLevel()
    now, sent = 0.0, []
    readings = [(-40.0, -30.0, False), (-20.0, -6.0, True), (-50.0, -45.0, False)] * 7
    for rms, peak, clip in readings:
        now += 1.0 / LEVEL_HZ
        held.hold(rms, peak, clip)
        if held.due(2.0, now):
            sent.append(held.take(now))
    assert len(sent) == 5  # the first reading at once, then 2 a second for 2.1 s
    assert sent[0] == (-40.0, -30.0, False)
    assert all(s == (-20.0, -6.0, True) for s in sent[1:])
    assert not _HeldLevel().due(0.0, 100.0)  # rate 0: nobody watches, nothing is sent


def test_new_losses_are_reported_while_nobody_watches() -> None:
    held = _HeldLevel()
    assert not held.due(0.0, 10.0, (0, 0, 0))
    assert held.due(0.0, 10.0, (480, 1, 0))  # frames lost: say so (the roster counts them)
    held.take(10.0, (480, 1, 0))
    assert not held.due(0.0, 10.5, (960, 2, 0))  # at most one report a second for losses
    assert held.due(0.0, 11.0, (960, 2, 0))
    held.take(11.0, (960, 2, 0))
    assert not held.due(0.0, 60.0, (960, 2, 0))  # nothing new: nothing sent


class _Path:
    """A fake network path for ClockSync: the server clock is ``now + 1``; each probe's two
    one-way delays come from ``delays`` (seconds); counts the probes sent."""

    def __init__(self, delays: list[tuple[float, float]]) -> None:
        self.delays, self.sent, self.t = delays, 0, 100.0
        self.ahead = 1.0  # the server's clock, ahead of the client's

    def now(self) -> float:
        return self.t

    async def ack(self, event: str, payload: dict[str, Any], timeout: float) -> Any:
        up, down = self.delays[self.sent % len(self.delays)]
        self.sent += 1
        self.t += up
        reply = {"t0": payload["t0"], "server_time": self.t + self.ahead}
        self.t += down
        return reply


async def test_a_steady_path_needs_fewer_join_probes_a_jittery_one_gets_all() -> None:
    steady = _Path([(100e-6, 100e-6)])
    sync = ClockSync(steady.ack, now=steady.now)
    est = await sync.burst(JOIN_PROBES, spacing=0, until_steady=True)
    assert steady.sent == STEADY_AFTER + 8 + 16  # two groups, no narrower: stop; then the tail
    assert abs(est.offset - 1.0) < 1e-6
    rng = np.random.default_rng(7)
    shrinking = [(0.02 * 0.93**k + rng.uniform(0, 1e-3), 0.02 * 0.93**k) for k in range(64)]
    jittery = _Path(shrinking)
    sync = ClockSync(jittery.ack, now=jittery.now)
    await sync.burst(JOIN_PROBES, spacing=0, tail=0, until_steady=True)
    assert jittery.sent == JOIN_PROBES  # every group found a faster path: all 64 were sent
    plain = _Path([(100e-6, 100e-6)])
    await ClockSync(plain.ack, now=plain.now).burst(JOIN_PROBES, spacing=0)
    assert plain.sent == JOIN_PROBES + 16  # without until_steady, as before


async def test_a_reconnection_checks_the_clock_and_starts_afresh_if_it_moved() -> None:
    path = _Path([(100e-6, 100e-6)])
    sync = ClockSync(path.ack, now=path.now)
    await sync.burst(JOIN_PROBES, spacing=0, until_steady=True)
    path.sent = 0
    est = await sync.after_reconnect(JOIN_PROBES)  # the same clock (another process here)
    assert path.sent == 2 * RECONNECT_PROBES and abs(est.offset - 1.0) < 1e-6
    path.sent, path.ahead = 0, 4.5  # another host: its clock is not the one measured
    est = await sync.after_reconnect(JOIN_PROBES)
    assert abs(est.offset - 4.5) < 1e-6
    assert path.sent == 2 * RECONNECT_PROBES + STEADY_AFTER + 8 + 16  # the check, then a burst


def test_estimates_noisy_within_their_bounds_do_not_bring_resyncs_sooner() -> None:
    """A loaded server makes each estimate wobble by up to its bound (here ±0.8 ms, bounds
    of 1 ms): two estimates 1.6 ms apart are still the same offset, so the re-syncs slow
    down instead of adding probes to the load."""
    pacer, t, intervals = ResyncPacer(), 0.0, []
    for k in range(8):
        intervals.append(pacer.next_interval(t, 0.010 + (0.8e-3 if k % 2 else -0.8e-3), 1e-3))
        t += intervals[-1]
    assert intervals[-1] == RESYNC_MAX_S
    # the same wobble with bounds that do not cover it is movement: re-sync soon
    pacer, t = ResyncPacer(), 0.0
    for k in range(8):
        t += pacer.next_interval(t, 0.010 + (0.8e-3 if k % 2 else -0.8e-3), 0.2e-3)
    assert pacer.interval == RESYNC_MIN_S
