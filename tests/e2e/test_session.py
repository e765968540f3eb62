"""A whole choir session, end to end, on one machine: issue 5's "Must show".

Real parts only: a private JACK dummy server; ``tutti serve`` as a subprocess; the leader's
``tutti lead`` commands; four ``tutti join`` singer processes, each on its own PortAudio
stream; ``tutti calibrate``; ``tutti lead download``; ``tutti mix``.

Each singer is "sung" by a harness — one JACK client (a 4-channel PortAudio stream in this
process) sitting between that singer's headset output and microphone input.  For singer
``k`` it multiplies what the singer hears by a carrier tone of its own frequency (ring
modulation) in the same JACK cycle, so every click and every bit of backing the singer hears
comes back as a burst at that singer's own pitch, time-locked to the headset.  The harness
also records what each singer played, so the test knows, per singer, the harness frame ``h0``
where the singer's timeline sample 0 arrived and therefore exactly what each recording must
contain at every timeline position: ``ref_k[n] = heard_k[h0 + n] * carrier_k[h0 + n]``.

Checked: every singer played the rendered program sample-exactly, all four started within a
few frames of each other, every stem holds ``ref_k`` at lag 0 (±1 sample) and sample-exactly,
every singer appears in the mix at lag 0 (±1 sample), the mix is on its loudness target, and
nothing is lost (all recordings uploaded, sha256-checked, long enough).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from tests.client.lead_cli import run_cli
from tests.e2e.choir import PERIOD, RATE, TABLE, Choir, choir, wait_roster
from tests.support.jack import JackServer, first_nonzero
from tests.support.wirecheck import check_wire_log
from tutti import takeformat, wire
from tutti.audio.gaps import FADE_S

pytestmark = [pytest.mark.jack, pytest.mark.slow, pytest.mark.timeout(600)]

#: (name, part, carrier Hz).  Carriers are multiples of 10 Hz (see choir.TABLE).
SINGERS = (("Ann", "S", 310.0), ("Ben", "A", 530.0), ("Cleo", "T", 770.0), ("Dev", "B", 1090.0))


# -- analysis -------------------------------------------------------------------------------


def _best_lag(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], span: int) -> int:
    """Lag d in [-span, span] maximising sum x[n] * y[n - d]."""
    n = min(len(x), len(y)) - 2 * span
    scores = [
        float(np.dot(x[span : span + n], y[span - d : span - d + n]))
        for d in range(-span, span + 1)
    ]
    return int(np.argmax(scores)) - span


@dataclass
class Sung:
    """What the harness sang to one singer, on that singer's take timeline.

    ``ref[n]`` is what the harness fed the singer's microphone in the JACK cycle in which the
    singer's timeline sample ``n`` reached the harness (NaN where unknown).  Neither the
    harness's frame counter nor a singer's stream is the JACK clock: when this busy,
    non-real-time machine makes either miss a cycle, one side slips a period against the
    other.  So every period the harness heard is matched, exactly, against the program the
    singer was rendering — which says which timeline period it was — and a period that matches
    nothing (the singer's output underflowed) is left unknown.  Both are counted and reported.
    """

    ref: npt.NDArray[np.float64]
    h0: int
    slips: int  # periods by which the harness or the singer's stream slipped (missed cycles)
    off_program: int  # periods the singer played that matched no program period
    silent_off: int  # of those, periods in which the harness heard nothing at all
    upset_silent: int  # of those, periods in the stretch where the test upset the JACK graph
    blocks: int  # periods examined
    silent_at: list[int]  # timeline starts of the others (silent, unmatched, not upset)


#: Slips tried when a period does not follow on from the previous one, nearest first: a
#: burst of xruns costs a few, and a singer killed mid-take upsets the whole JACK graph for a
#: second or more (the harness slipped 25-65 periods against the singers in that time in runs
#: here), so up to 6 s.  Two fresh-clone runs and one run here with this search still found
#: no match from the kill on: the harness heard silence from the others for the rest of the
#: take while they recorded one period over and over (see ``_fed_stale``).
_EXTRAS = [0] + [sign * i * PERIOD for i in range(1, 6 * RATE // PERIOD) for sign in (1, -1)]


def _sung(
    c: Choir,
    k: int,
    harness_from: int,
    frames: int,
    recorded_to: int,
    until: int | None = None,
    upset: range = range(0),
) -> Sung:
    """Rebuild what the harness sang to singer ``k`` (up to harness frame ``until``, and up
    to timeline frame ``recorded_to``, where the singer's recording ended); silent periods
    starting in ``upset`` (harness frames where the test upset the JACK graph) are counted
    apart."""
    part = SINGERS[k][1]
    z, prog = _program_first(c.settings, c.backings[part])
    heard = c.harness.heard[:, k]
    (first,) = first_nonzero(heard[harness_from:])
    assert first is not None, f"{SINGERS[k][0]} played nothing"
    h0 = harness_from + first - z
    ref = np.full(frames, np.nan)
    # A singer stops playing when its recording ends; the others' may run on (a singer that
    # missed take.stop records until it reconnects), so the mix can be longer than this one.
    end = min(frames, len(prog), recorded_to)
    shift, skips, blocks, unmatched, silent, upset_silent = 0, 0, 0, 0, 0, 0
    silent_at = []
    j = h0 // PERIOD
    while True:
        p0 = j * PERIOD
        block = heard[p0 : p0 + PERIOD]
        t_base = p0 - h0
        if t_base + shift + 3 * PERIOD > end or len(block) < PERIOD:
            break
        if until is not None and p0 + PERIOD > until:
            break
        quiet = not np.any(block)
        # a skip needs sound in the program where it lands, so silence is tried in place only
        for extra in _EXTRAS[:1] if quiet else _EXTRAS:
            t0 = t_base + shift + extra
            if t0 + PERIOD <= 0 or t0 + PERIOD > end:
                continue  # no program there, or past the recording (a skip forward near its end)
            lo = max(0, -t0)  # the first block may start before timeline 0
            want = prog[t0 + lo : t0 + PERIOD]
            if np.allclose(block[lo:], want, atol=1e-6, rtol=0) and (extra == 0 or np.any(want)):
                if extra:
                    skips += abs(extra) // PERIOD
                    shift += extra
                pos = p0 + lo + np.arange(PERIOD - lo)
                ref[t0 + lo : t0 + PERIOD] = block[lo:] * c.harness.table[pos % TABLE, k]
                break
        else:
            unmatched += 1
            silent += quiet
            upset_silent += quiet and p0 in upset
            if quiet and p0 not in upset:
                silent_at.append(t_base + shift)
        blocks += 1
        j += 1
    return Sung(ref, h0, skips, unmatched, silent, upset_silent, blocks, silent_at)


def _program_first(
    settings: wire.SessionSettings, backing: npt.NDArray[np.float32]
) -> tuple[int, npt.NDArray[np.float32]]:
    from tutti.client.program import render_program

    prog = render_program(settings, backing, channels=2).audio[:, 0]
    (z,) = first_nonzero(prog)
    assert z is not None
    return int(z), prog


@dataclass
class TakeCheck:
    take_id: str
    h0: list[int]
    start_skew: int
    slips: list[int]
    off_program: list[int]  # periods played off the program (of ``blocks``)
    silent_off: list[int]  # of those, periods the harness heard as silence
    upset_silent: list[int]  # of those, periods while the test upset the JACK graph
    stale: list[int]  # of the other silent ones, periods the singer recorded sound in
    blocks: list[int]
    stem_lags: list[int]
    stem_off: list[int]  # known periods in which the stem differs from what was sung
    mix_lags: list[int]
    mix_gains: list[float]
    lufs: float
    xruns: list[tuple[int, int]]  # (overflows, underflows) each singer's client reported
    reported: list[int]  # periods each client reported as lost: its headset's slips, its gaps
    recorded_to: list[int]  # timeline frame where each recording ends
    silent_spans: list[str]  # where each singer's unexcused silence lies on the timeline
    mix_output: str  # what ``tutti mix`` printed


def _check_take(
    c: Choir,
    take_id: str,
    harness_from: int,
    folder: Path,
    min_seconds: dict[str, float] | None = None,
    until: dict[str, int] | None = None,
    upset: range = range(0),
) -> TakeCheck:
    """Check a downloaded and mixed take against what the harness sang (see module doc).

    ``min_seconds``: per singer, the least audio a recording must hold (default 3.5 s);
    ``until``: per singer, the harness frame after which they were no longer singing;
    ``upset``: harness frames in which the test killed and started a JACK client.
    """
    manifest = takeformat.parse_manifest(json.loads((folder / "take.json").read_text()))
    assert manifest.take_id == take_id
    recs = {r.singer: r for r in manifest.recordings}
    assert sorted(recs) == sorted(n for n, _, _ in SINGERS), recs.keys()
    mix, mix_rate = sf.read(str(folder / "mix.flac"), dtype="float64", always_2d=True)
    assert mix_rate == RATE
    frames = len(mix)
    sung, stem_lags, stem_off, stale, ends = [], [], [], [], []
    count_in = c.settings.count_in_frames
    for k, (name, _, _) in enumerate(SINGERS):
        rec = recs[name]
        assert rec.latency_source == "measured" and rec.latency == c.latencies[k]
        least = (min_seconds or {}).get(name, 3.5)
        assert rec.frames >= least * RATE, f"{name}: only {rec.frames} frames recorded"
        ends.append(rec.timeline_start + rec.frames)
        sg = _sung(c, k, harness_from, frames, ends[-1], (until or {}).get(name), upset)
        sung.append(sg)
        (stem_file,) = (folder / "mix-stems").glob(f"*-{rec.singer}-{rec.part}.flac")
        stem = sf.read(str(stem_file), dtype="float64", always_2d=True)[0][:, 0]
        assert len(stem) == frames
        # placement: the count-in (timeline 0 … count_in) must sit at lag 0
        ref0 = np.nan_to_num(sg.ref[: count_in + 64])
        stem_lags.append(_best_lag(stem[: count_in + 64], ref0, 32))
        # content: every known period of the stem is what the harness sang, sample-exactly
        start, end = max(0, rec.timeline_start), min(frames, rec.timeline_start + rec.frames)
        known = ~np.isnan(sg.ref[start:end])
        diff = np.where(known, np.abs(stem[start:end] - np.nan_to_num(sg.ref[start:end])), 0)
        n = (end - start) // PERIOD * PERIOD
        per_block = diff[:n].reshape(-1, PERIOD).max(axis=1)
        stem_off.append(int(np.sum(per_block > 1e-3)))
        stale.append(_fed_stale(stem, sg.silent_at))
    # the mix: least squares of the mono mix on the four references (where all are known)
    refs = np.stack([np.nan_to_num(sg.ref) for sg in sung], axis=1)
    mask = np.all(np.stack([~np.isnan(sg.ref) for sg in sung], axis=1), axis=1)
    mono = mix.sum(axis=1)
    gains, *_ = np.linalg.lstsq(refs[mask], mono[mask], rcond=None)
    mix_lags = []
    for k in range(len(SINGERS)):
        others = refs @ np.where(np.arange(len(SINGERS)) == k, 0.0, gains)
        resid = np.where(mask, mono - others, 0.0)
        mix_lags.append(_best_lag(resid, refs[:, k] * mask, 16))
    import pyloudnorm

    lufs = float(pyloudnorm.Meter(RATE).integrated_loudness(mix))
    h0s = [sg.h0 for sg in sung]
    return TakeCheck(
        take_id,
        h0s,
        max(h0s) - min(h0s),
        [sg.slips for sg in sung],
        [sg.off_program for sg in sung],
        [sg.silent_off for sg in sung],
        [sg.upset_silent for sg in sung],
        stale,
        [sg.blocks for sg in sung],
        stem_lags,
        stem_off,
        mix_lags,
        [float(g) for g in gains],
        lufs,
        [(recs[n].overflows, recs[n].underflows) for n, _, _ in SINGERS],
        [_reported_periods(recs[n]) for n, _, _ in SINGERS],
        ends,
        [_spans(sg.silent_at) for sg in sung],
        (folder / "mix-output.txt").read_text(),
    )


def _fed_stale(stem: npt.NDArray[np.float64], silent_at: list[int]) -> int:
    """Periods the harness heard as silence while the singer recorded sound there.  The
    harness sends back what it hears (times a carrier), so on a sound JACK graph a silent
    period comes back silent; after a client is killed mid-cycle, JACK 1.9.21 may instead
    feed the other clients' inputs one stale buffer and the harness's inputs silence, for
    the rest of the take (their recordings then repeat one period; 21 of 51 runs here)."""
    loud = [t for t in silent_at if t >= 0 and np.any(np.abs(stem[t : t + PERIOD]) > 1e-3)]
    return len(loud)


def _spans(starts: list[int]) -> str:
    """Timeline periods as seconds, runs of consecutive periods joined ("0.500-1.205 s")."""
    runs: list[list[int]] = []
    for t in starts:
        if runs and t - runs[-1][1] <= PERIOD:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return ", ".join(f"{a / RATE:.3f}-{(b + PERIOD) / RATE:.3f} s" for a, b in runs) or "none"


def _reported_periods(rec: takeformat.Recording) -> int:
    """Periods a singer's client reported losing (each loss may straddle one more period),
    and for a gap the periods its fades reach into (the mix fades FADE_S each side)."""
    ramp = round(FADE_S * RATE)
    slips = sum(-(-g.frames // PERIOD) + 1 for g in rec.slips)
    return slips + sum(-(-(g.frames + 2 * ramp) // PERIOD) + 1 for g in rec.gaps)


async def _run_take(c: Choir, seconds: float) -> tuple[str, int]:
    harness_from = c.harness.pos
    res = await run_cli("lead", "take", "run", "--seconds", str(seconds), "--lead", "2", "--json")
    assert res.code == 0, res
    return str(res.json()["take_id"]), harness_from


async def _fetch_and_mix(take_id: str, folder: Path, wait: float = 120) -> None:
    res = await run_cli("lead", "download", take_id, str(folder), "--wait", str(wait), "--json")
    assert res.code == 0, res
    assert res.json()["missing"] == []
    res = await run_cli(
        "mix", str(folder), "--stems", "--keep-count-in", "--no-backing", "--jobs", "1"
    )
    assert res.code == 0, res
    # what it printed (piped: a summary) and its whole report, which the checks read
    report = (folder / "mix.report.txt").read_text()
    (folder / "mix-output.txt").write_text(res.out + res.err + report)


_JUMP = re.compile(
    r"the loudness jumps from (-?[\d.]+) to (-?[\d.]+) LUFS .*? kept [-+][\d.]+ dB, "
    r"(-?[\d.]+) LUFS"
)


def _loudness_ok(t: TakeCheck) -> bool:
    """Within 0.5 LU of −16 LUFS, or — when the mix reported that the gated loudness jumps
    over the target (the click bleeding into the mics during the count-in makes a run of
    equally loud blocks that the relative gate counts or not) — on the side of the jump
    closest to the target, as reported."""
    if abs(t.lufs - (-16.0)) <= 0.5:
        return True
    m = _JUMP.search(" ".join(t.mix_output.split()))
    if m is None:
        return False
    a, b, kept = (float(v) for v in m.groups())
    return (
        min(a, b) <= -16.0 <= max(a, b)
        and abs(kept - min(a, b, key=lambda v: abs(v + 16.0))) <= 0.01
        and abs(t.lufs - kept) <= 0.02
    )


def _report(checks: list[TakeCheck], c: Choir) -> None:
    print(f"\ncalibrated round trips through the harness: {c.latencies} frames")
    for t in checks:
        print(
            f"take {t.take_id}: start skew {t.start_skew} frames (h0 {t.h0}); "
            f"slipped periods {t.slips}; singer periods off-program "
            f"{t.off_program} of {t.blocks} ({t.silent_off} silent, {t.upset_silent} of them "
            f"while a client was killed and started, {t.stale} while the singer recorded "
            f"sound); stem lags {t.stem_lags}, "
            f"periods off "
            f"{t.stem_off}; mix lags {t.mix_lags}, gains "
            f"{[round(g, 3) for g in t.mix_gains]}; loudness {t.lufs:.2f} LUFS; client "
            f"xruns (over, under) {t.xruns}; periods the clients reported lost {t.reported}; "
            f"recordings end at {[round(e / RATE, 2) for e in t.recorded_to]} s; other "
            f"silence at {t.silent_spans}"
        )


def _assert_take(t: TakeCheck) -> None:
    assert t.start_skew <= 2 * PERIOD + 48, t
    # A glitch is allowed only where a client reported an xrun or a side slipped a cycle
    # (this machine is shared; where JACK gets no real-time priority, busy processes starve
    # it): nothing may go wrong unnoticed.  Each such event spoils at most two periods; a
    # CPU hog on both cores can cost 15 % of the periods that way, so the cap only says most
    # of the take was heard.  A stretch the client itself reported as lost (its headset's
    # program skipped ahead, its recording holds silence) was noticed too.  So is silence
    # while the test kills and starts a JACK client: JACK may then run the clients after it
    # in the graph late for a second or more (the harness heard 213 periods of silence from
    # two singers in a CI run), which a singer on a machine of their own never meets; so the
    # cap leaves that silence out (under a CPU hog on both cores it reached half the take:
    # 567 periods of 1,127 for three singers while Ben was killed and started, 7 Dec), and
    # so is silence the singer's own recording proves was JACK's (``_fed_stale``).
    for k in range(len(SINGERS)):
        jack = t.upset_silent[k] + t.stale[k]
        excused = 2 * (sum(t.xruns[k]) + t.slips[k]) + t.reported[k] + jack
        assert t.off_program[k] <= excused, (k, t)
        assert t.off_program[k] - jack <= 0.5 * t.blocks[k], (k, t)
        assert t.stem_off[k] <= min(excused, 0.5 * t.blocks[k]), (k, t)
    assert all(abs(d) <= 1 for d in t.stem_lags), t
    assert all(abs(d) <= 1 for d in t.mix_lags), t
    assert all(g > 0 for g in t.mix_gains), t
    assert _loudness_ok(t), t


# -- the tests ------------------------------------------------------------------------------


async def test_four_singers_two_takes_mixed(
    jack: JackServer, tmp_path: Path, leader_config: Path
) -> None:
    async with choir(jack, tmp_path, SINGERS) as c:
        try:
            checks = []
            for i in range(2):
                take_id, since = await _run_take(c, 4.0)
                folder = tmp_path / f"take{i + 1}"
                await _fetch_and_mix(take_id, folder)
                checks.append(_check_take(c, take_id, since, folder))
        except BaseException:
            print("\n".join(s.tail() for s in c.singers))
            raise
        _report(checks, c)
        for t in checks:
            _assert_take(t)
        res = await run_cli("lead", "takes", "--json")
        states = [[s["state"] for s in t["singers"]] for t in res.json()["takes"]]
        assert states == [["uploaded"] * 4] * 2
    # every message the server sent during the session met the contract's JSON Schema
    assert c.wire_log is not None
    seen = check_wire_log(c.wire_log)
    print("messages the server sent, by kind:", dict(sorted(seen.items())))
    events = {name.split(" ", 1)[1] for name in seen if name.startswith("event ")}
    assert events >= {  # (no leader watches here: no roster event)
        wire.Ev.WELCOME,
        wire.Ev.PARTICIPANT,
        wire.Ev.LEVELS,
        wire.Ev.CLOCKS,
        wire.Ev.SESSION,
        wire.Ev.TAKE_ARMED,
        wire.Ev.TAKE_START,
        wire.Ev.TAKE_STOP,
        wire.Ev.TAKE_UPDATES,
    }, events
    assert seen[f"ack {wire.Ev.CLOCK_PROBE}"] > 100 and seen["reply POST /api/join"] >= 4


async def test_singer_killed_mid_take_and_server_restarted(
    jack: JackServer, tmp_path: Path, leader_config: Path
) -> None:
    """Ben's client is killed (SIGKILL) 3 s into take 1 and started again; the server is
    killed (SIGKILL) right after take 1 stops, while uploads are in flight, and restarted on
    its data folder.  Both takes complete, with Ben's recovered recording of take 1."""
    async with choir(jack, tmp_path, SINGERS) as c:
        ben = c.singers[1]
        try:
            since1 = c.harness.pos
            run1 = asyncio.create_task(
                run_cli("lead", "take", "run", "--seconds", "6", "--lead", "2", "--json")
            )
            await asyncio.sleep(2 + 3)
            killed_at = c.harness.pos
            await ben.kill9()
            await ben.start(c.harness)  # same config folder: same singer, recovers the take
            upset = range(killed_at, c.harness.pos + 2 * RATE)  # and 2 s for JACK to settle
            res = await run1
            assert res.code == 0, res
            take1 = str(res.json()["take_id"])
            # Between takes, right after the stop: the take.stop broadcast may not have
            # reached every singer before the kill; the welcome they get on reconnecting
            # tells them take 1 is stopped, and they finish and upload it.
            await c.serve.kill9()
            await asyncio.sleep(1.0)
            assert await c.serve.start() == c.url
            await wait_roster(len(SINGERS))
            take2, since2 = await _run_take(c, 4.0)
            await _fetch_and_mix(take1, tmp_path / "take1")
            await _fetch_and_mix(take2, tmp_path / "take2")
            # Ben sang from the start of take 1 until he was killed; at most ~1 s may be lost
            sung_s = (killed_at - since1) / RATE - 2.0
            check1 = _check_take(
                c,
                take1,
                since1,
                tmp_path / "take1",
                {"Ben": sung_s - 1.5, "Ann": 5.5, "Cleo": 5.5, "Dev": 5.5},
                {"Ben": killed_at},
                upset,
            )
            check2 = _check_take(c, take2, since2, tmp_path / "take2")
        except BaseException:
            print("\n".join(s.tail() for s in c.singers))
            raise
        _report([check1, check2], c)
        print(f"Ben was killed {sung_s:.2f} s after take 1's count-in started")
        for t in (check1, check2):
            _assert_take(t)
        res = await run_cli("lead", "takes", "--json")
        states = [[s["state"] for s in t["singers"]] for t in res.json()["takes"]]
        assert states == [["uploaded"] * 4] * 2
        assert any("recover" in line.lower() for line in ben.lines), ben.tail()
