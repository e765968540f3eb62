"""The duplex engine on a JACK digital loopback: a take placed by its own timeline numbers
is the rendered headset mix, sample for sample."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
import scipy.signal

from tests.support.jack import JackServer, isolate_ports, jack_connect, new_ports
from tutti.audio.click import beat_frames, render_click
from tutti.audio.headset import headset_mix
from tutti.audio.types import AudioArray, AudioError, as_audio
from tutti.client.calibrate import measure
from tutti.client.engine import DuplexEngine, EngineError
from tutti.client.frameclock import CONFIRM
from tutti.wire import SessionSettings

pytestmark = pytest.mark.jack
RATE = 48000
_PERIOD = 256  # the JACK fixture's buffer size
#: Frames after a loss before the loopback holds the program again: the callbacks it takes
#: to count the loss and the round trip back into the input.
_RELOCK = (CONFIRM + 4) * _PERIOD


@pytest.fixture
def loopback(jack: JackServer) -> Iterator[DuplexEngine]:
    """A started engine (blocksize 256) whose output 1 is wired to its input."""
    with new_ports() as ports:
        eng = DuplexEngine(rate=RATE, device="system", blocksize=256)
        eng.start()
    try:
        isolate_ports(ports)
        jack_connect(ports[1], ports[0])
        yield eng
    finally:
        eng.close()


def _headset_program(seconds: float) -> AudioArray:
    settings = SessionSettings(title="t", rate=RATE, bpm=113.0, count_in_bars=1)
    frames = int(seconds * RATE)
    click = render_click(beat_frames(settings, RATE, seconds=seconds), RATE, frames)
    rng = np.random.default_rng(3)
    backing = (0.05 * rng.standard_normal((frames, 1))).astype(np.float32)
    start = settings.count_in_frames
    mix = headset_mix(
        frames, RATE, backing=backing[: frames - start], backing_start=start, click=click
    )
    return as_audio(mix)


@pytest.mark.slow
def test_loopback_take_placed_by_its_numbers_matches_the_program(
    loopback: DuplexEngine,
) -> None:
    eng = loopback
    cal = measure(eng, repeats=1)
    assert cal.frames == 512
    program = _headset_program(4.0)
    take = eng.schedule(program, time.monotonic() + 0.3, tail=0.2)
    assert take.wait(15) and take.error is None
    assert take.o0 is not None and take.r0 is not None
    assert -256 < take.start_offset <= 0
    rec = take.audio()[:, 0]
    assert take.frames_recorded == rec.shape[0] == program.shape[0] + 9600 - take.start_offset
    # place: recording sample j sits at timeline position j + start_offset - L
    shift = take.start_offset - cal.frames
    placed = np.zeros(program.shape[0], np.float32)
    j = np.arange(rec.shape[0])
    pos = j + shift
    ok = (pos >= 0) & (pos < placed.shape[0])
    placed[pos[ok]] = rec[ok]
    ref = program[:, 0]
    xc = scipy.signal.correlate(placed, ref, mode="full", method="fft")
    lag = int(np.argmax(xc)) - (ref.shape[0] - 1)
    covered = pos[ok][-1] + 1  # the timeline up to here came back through the loop
    wrong = placed[:covered] != ref[:covered]
    mismatched = int(np.count_nonzero(wrong))
    xruns = take.overflows + take.underflows
    # A loss (the machine overloaded) spoils what it dropped and the periods until it is
    # counted and the program re-locked through the loop, nothing else.
    for at, frames in [*((a + shift, f) for a, f in take.gaps), *take.slips]:
        wrong[max(0, at - _PERIOD) : max(0, at + frames + _RELOCK)] = False
    print(
        f"\nloopback take: o0={take.o0} r0={take.r0} start_offset={take.start_offset} "
        f"L={cal.frames}; xcorr lag {lag}; samples differing from the program: {mismatched} "
        f"of {covered}, {int(np.count_nonzero(wrong))} outside the losses {take.gaps}; "
        f"xruns during the take: {xruns}"
    )
    assert lag == 0
    assert covered == program.shape[0]
    if xruns == 0:
        assert mismatched == 0  # digital loopback: bit-exact
    assert not np.any(wrong)
    assert take.first_dac_time is not None
    assert abs(take.first_dac_time - take.t0) <= 0.5 / RATE + 1e-9


def test_stop_take_ends_recording_and_output(loopback: DuplexEngine) -> None:
    eng = loopback
    program = np.full((10 * RATE, 2), 0.25, np.float32)
    take = eng.schedule(program, time.monotonic() + 0.2, tail=None)
    time.sleep(0.6)
    eng.stop_take()
    assert take.wait(5) and take.error is None
    n = take.frames_recorded
    assert 0.2 * RATE < n < 2.0 * RATE
    rec = take.audio()
    assert rec.shape == (n, 1)
    # after the stop nothing more is played: schedule silence-checking take
    probe = eng.schedule(np.zeros((RATE // 2, 2), np.float32), time.monotonic() + 0.1, tail=0)
    assert probe.wait(5)
    assert float(np.max(np.abs(probe.audio()))) == 0.0


def test_schedule_errors_are_clear(loopback: DuplexEngine, jack: JackServer) -> None:
    eng = loopback
    with pytest.raises(EngineError, match="in the past"):
        eng.schedule(np.zeros((10, 2), np.float32), time.monotonic() - 0.01)
    with pytest.raises(AudioError, match="expected 2 channel"):
        eng.schedule(np.zeros((10, 1), np.float32), time.monotonic() + 1)
    take = eng.schedule(np.zeros((RATE, 2), np.float32), time.monotonic() + 1)
    with pytest.raises(EngineError, match="already scheduled"):
        eng.schedule(np.zeros((10, 2), np.float32), time.monotonic() + 2)
    eng.stop_take()
    assert take.wait(5) and take.error == "stopped before it started"
    idle = DuplexEngine(rate=RATE, device="system")
    with pytest.raises(EngineError, match="start the engine"):
        idle.schedule(np.zeros((10, 2), np.float32), time.monotonic() + 1)
    with pytest.raises(EngineError, match="out_channels"):
        DuplexEngine(rate=RATE, device="system", out_channels=0)


def test_clock_mappings_are_measured(loopback: DuplexEngine) -> None:
    eng = loopback
    c = eng.remeasure_clock()
    a, spread = eng.dac_mapping()
    # frame n leaves the DAC at a + n/rate: the current frame's DAC time lies just ahead
    # of now (by the output latency, here 2 periods) on time.monotonic()
    ahead = a + eng.frame / RATE - time.monotonic()
    print(
        f"\nstream clock offset {c.offset:.6f} s ±{c.uncertainty * 1e6:.1f} µs; DAC mapping "
        f"spread over the last cycles {spread * 1e6:.0f} µs; current frame's DAC time "
        f"{ahead * 1000:.2f} ms ahead"
    )
    assert c.uncertainty < 500e-6 and c.samples >= 16
    assert -0.005 < ahead < 0.05


def test_input_level_meter(loopback: DuplexEngine) -> None:
    eng = loopback
    program = np.full((RATE, 2), 0.5, np.float32)
    take = eng.schedule(program, time.monotonic() + 0.1, record=False, tail=0.0)
    time.sleep(0.6)
    lvl = eng.input_level()
    assert abs(lvl.peak - 0.5) < 1e-6 and abs(lvl.rms - 0.5) < 1e-3 and lvl.clips == 0
    assert take.wait(5)


def test_the_drain_records_every_frame_where_its_losses_put_it(jack: JackServer) -> None:
    """The drain thread's recording, fed exact JACK readings with a busy spell (late reads,
    cycles jumped, a period lost every few callbacks): every recorded frame sits where the
    account placed it, losses closer than MERGE_GAPS_S are one gap, and the audio between
    them is silenced, never shifted."""
    from tutti.client.engine import MERGE_GAPS_S
    from tutti.client.scheduled import ScheduledTake

    eng = DuplexEngine(rate=48000)  # never started: its account and drain are fed here
    acct = eng.input_account
    acct.set_quantum(_PERIOD, exact=True)
    rng = np.random.default_rng(5)
    lost = np.zeros(3000, np.int64)  # true cycles missed before each callback
    lost[1200:1600] = rng.random(400) < 0.2  # the spell: a period every ~5 callbacks
    lost[2500] = 40  # one stall, far from the spell
    ahead = (rng.random(3000) < 0.1) * rng.integers(1, 3, 3000)  # late reads, 1-2 periods
    cycle = 5000 + np.arange(3000) + np.cumsum(lost)
    take = ScheduledTake(
        np.zeros((8, 2), np.float32), 0.0, record=True, sink=None, tail_frames=None, in_channels=1
    )
    take.o0, take.cb_r0_stream, take.cb_state = 0, 100 * _PERIOD, 1
    r = take.cb_r0_stream
    for k in range(3000):
        n = k * _PERIOD
        acct.update(n, _PERIOD, (cycle[k] + ahead[k]) * _PERIOD / 48000)
        w = min(n + _PERIOD, acct.settled)
        if k >= 100 and w > r:
            # each frame carries its stream position (+1: zero is silence)
            block = (np.arange(r, w) + 1.0).astype(np.float32)[:, None]
            eng._record_span(take, block, r, w, 0)
            r = w
    eng._close_gap(take)
    rec = np.concatenate(take.blocks)[:, 0].astype(np.int64)
    at = acct.event_at[: acct.events]
    steps = np.concatenate([[0], np.cumsum(acct.event_frames[: acct.events])])

    def lost_before(n: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return steps[np.searchsorted(at, n, side="right")]

    sounding = np.flatnonzero(rec)
    stream = rec[sounding] - 1
    r0 = np.array([take.cb_r0_stream])
    placed = stream - r0 + lost_before(stream) - lost_before(r0)
    assert np.array_equal(sounding, placed)
    gaps = take.gaps
    assert acct.lost == int(np.sum(lost[:3000]) * _PERIOD)
    # the spell's ~80 losses, 1 to 10 callbacks apart, are one gap or a few; the stall another
    assert MERGE_GAPS_S == 0.1 and 2 <= len(gaps) <= 4, gaps
    between = [b - (a + f) for (a, f), (b, _) in zip(gaps, gaps[1:], strict=False)]
    assert min(between) >= 0.1 * 48000, gaps
    for a, f in gaps:
        assert not rec[a : a + f].any()
