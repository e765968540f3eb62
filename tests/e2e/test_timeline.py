"""The timeline holds through stalls and late arrivals: issue 16's "Must show", end to end.

Real parts only, as in test_session.py: a private JACK dummy server, ``tutti serve``, ``tutti
join`` singer processes, ``tutti lead`` and ``tutti mix --stems``.  Each singer's headset
output is wired straight to their own microphone (tests/support/jackprobe.py), so every stem
must hold the singer's own headset program at lag 0 ("the click it heard and recorded"), and
no singer's stall holds up another.  An injector adds an outside event to every microphone at
one JACK frame, once before the stalls (``E1``) and once after them (``E2``): in every stem the
two must lie exactly ``E2 − E1`` timeline frames apart, and each event at the same timeline
frame in every stem but for the singers' start skew (their clocks' agreement).

While a take runs, three singers' processes are stopped (``kill -STOP``) for 50 ms, 300 ms and
2 s, one stays healthy, one singer starts ``tutti join`` 5 s into the take, and one who joined
the session never connects.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
import scipy.signal
import soundfile as sf

from tests.client.lead_cli import CliResult, run_cli
from tests.e2e.choir import PERIOD, RATE, Choir, choir
from tests.support.jack import JackServer
from tests.support.jackprobe import Probes, burst
from tutti import takeformat
from tutti.client.program import render_program

pytestmark = [pytest.mark.jack, pytest.mark.slow, pytest.mark.timeout(600)]

VOICES = (
    ("Ann", "S", 310.0),
    ("Ben", "A", 530.0),
    ("Cleo", "T", 770.0),
    ("Dev", "B", 1090.0),
    ("Eve", "S", 1310.0),
)
#: Who is stopped, how long (s), and when (s after timeline 0).
STALLS = {"Ann": (0.05, 2.0), "Ben": (0.3, 2.6), "Cleo": (2.0, 3.2)}
#: What a singer who was not stopped may lose to this shared machine's own xruns (s).
HEALTHY_LOSS = 0.1
LATE = "Eve"
LATE_AT = 5.0
#: The outside event: 48 frames of a fixed pseudo-random burst, far louder than the backing.
BURST = burst()
TOL = 2.0**-22  # the recordings and stems are 24-bit


async def _cli(*argv: str) -> CliResult:
    res = await run_cli(*argv)
    assert res.code == 0, res
    return res


async def _until(t: float) -> None:
    """Wait until monotonic time ``t`` (the server's clock: one host)."""
    while time.monotonic() < t:
        await asyncio.sleep(min(0.05, max(0.0, t - time.monotonic())))


async def _take_states(take_id: str) -> dict[str, dict[str, Any]]:
    res = await _cli("lead", "takes", "--json")
    (take,) = [t for t in res.json()["takes"] if t["take_id"] == take_id]
    return {s["name"]: s for s in take["singers"]}


async def _wait_state(take_id: str, name: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await _take_states(take_id)).get(name, {}).get("state") != state:
        assert time.monotonic() < deadline, f"{name} never reached {state!r}"
        await asyncio.sleep(0.3)


def _program(c: Choir, part: str) -> npt.NDArray[np.float32]:
    audio: npt.NDArray[np.float32] = render_program(c.settings, c.backings[part], channels=2).audio
    return audio[:, 0]


def _h0(heard: npt.NDArray[np.float32], prog: npt.NDArray[np.float32], near: int) -> int:
    """Listener index of timeline 0, from the half second the singer played before index
    ``near``: the program offset at which that stretch is exactly the program."""
    seg = heard[near - RATE // 2 : near]
    xc = scipy.signal.correlate(prog, seg[: 8 * PERIOD], mode="valid", method="fft")
    for k in (int(i) for i in np.argsort(xc)[::-1][:8]):
        if np.allclose(seg, prog[k : k + seg.shape[0]], atol=1e-6, rtol=0):
            return near - RATE // 2 - k
    raise AssertionError("what the singer played before the event matches no program stretch")


def _event_at(stem: npt.NDArray[np.float64], lo: int, hi: int) -> int:
    """Timeline frame of the last burst in a stem between timeline frames lo and hi."""
    xc = scipy.signal.correlate(stem[lo:hi], BURST.astype(np.float64), mode="valid")
    peaks = np.flatnonzero(xc > 0.5 * float(np.dot(BURST, BURST)))
    assert peaks.size, f"no event between timeline {lo} and {hi}"
    last = peaks[peaks >= peaks[-1] - BURST.shape[0]]
    return lo + int(last[np.argmax(xc[last])])


def _lag0_match(
    stem: npt.NDArray[np.float64],
    prog: npt.NDArray[np.float32],
    a: int,
    b: int,
    skip: tuple[int | None, ...] = (),
) -> float:
    """Share of samples in timeline a..b where the stem is the program (loopback) exactly,
    leaving out the events (at ``skip``)."""
    ok = np.abs(stem[a:b] - prog[a:b]) <= TOL + 1e-7
    for at in skip:
        if at is not None and a <= at < b:
            ok[at - a : at - a + BURST.shape[0] + PERIOD] = True
    return float(np.mean(ok))


@pytest.mark.parametrize(
    "stalls",
    [
        pytest.param({}, id="late-and-missed"),
        # exact to the sample only on a quiet machine: JACK's clock filter misreads losses by
        # periods under load (docs/client.md, "Dropouts and clocks"); run with -m stress
        pytest.param(STALLS, id="stalls", marks=pytest.mark.stress),
    ],
)
async def test_singers_stay_on_the_timeline(
    jack: JackServer, tmp_path: Path, leader_config: Path, stalls: dict[str, tuple[float, float]]
) -> None:
    probes = Probes(len(VOICES)).start()
    async with choir(jack, tmp_path, VOICES, start=4, backing_seconds=24, rig=probes) as c:
        procs = {s.name: s for s in c.singers}
        async with aiohttp.ClientSession() as http:  # Fay joins and never connects
            async with http.post(
                f"{c.url}/api/join", json={"code": c.code, "name": "Fay", "part": "A"}
            ) as r:
                assert r.status == 200, await r.text()
        injector = probes.injector
        try:
            res = await _cli("lead", "take", "start", "--lead", "2", "--json")
            take_id, t0 = str(res.json()["take_id"]), float(res.json()["t0"])
            await _until(t0 + 1.0)
            events = [injector.inject(RATE // 4)]
            stopped: dict[str, float] = {}
            for name, (length, at) in sorted(stalls.items(), key=lambda kv: kv[1][1]):
                await _until(t0 + at)
                a = time.monotonic()
                await procs[name].signal(signal.SIGSTOP)
                await asyncio.sleep(length)  # the stall itself is the stimulus
                stopped[name] = time.monotonic() - a
                await procs[name].signal(signal.SIGCONT)
            await _until(t0 + LATE_AT)
            await procs[LATE].start(probes)
            await _wait_state(take_id, LATE, "recording", 60)
            joined = injector.now
            while injector.now < joined + 3 * RATE:  # the latecomer sings a while
                await asyncio.sleep(0.05)
            events.append(injector.inject(RATE // 4))
            while injector.now < events[-1] + 2 * RATE:
                await asyncio.sleep(0.05)
            await _cli("lead", "take", "stop", "--take", take_id)
            folder = tmp_path / "take"
            res = await run_cli("lead", "download", take_id, str(folder), "--wait", "120", "--json")
            assert res.code == 4, res  # Fay's recording is missing: she never connected
            missing = {m["name"]: m for m in res.json()["missing"]}
            mixed = await _cli("mix", str(folder), "--stems", "--no-backing", "--jobs", "1")
            people = (await _cli("lead", "roster", "--json")).json()["participants"]
            roster = {p["name"]: p for p in people}
            _check(c, folder, events, stopped, missing, mixed, roster, strict=bool(stalls))
        except BaseException:
            print("\n".join(s.tail() for s in c.singers))
            print("--- server ---\n" + "".join(list(c.serve.log)[-40:]))
            raise
        finally:
            probes.stop()


def _check(
    c: Choir,
    folder: Path,
    events: list[int],
    stopped: dict[str, float],
    missing: dict[str, Any],
    mixed: CliResult,
    roster: dict[str, dict[str, Any]],
    strict: bool,
) -> None:
    """``strict``: the outside events must land exactly (see the module doc); else they are
    reported, and what a busy machine cannot upset is checked: the late singer recorded from
    where the take was and is at lag 0 on its own timeline, the absent one is missed, every
    stem is its singer's own program at lag 0."""
    manifest = takeformat.parse_manifest(json.loads((folder / "take.json").read_text()))
    recs = {r.singer: r for r in manifest.recordings}
    assert sorted(recs) == sorted(n for n, _, _ in VOICES), sorted(recs)
    assert list(missing) == ["Fay"] and missing["Fay"]["state"] == "missed", missing
    e1, e2 = events
    stems, report = {}, []
    for name, part, _ in VOICES:
        rec = recs[name]
        stem_file = next((folder / "mix-stems").glob(f"*-{rec.participant_id}.flac"))
        stems[name] = stem = sf.read(str(stem_file), dtype="float64", always_2d=True)[0][:, 0]
        prog = _program(c, part)
        lost = sum(g.frames for g in rec.gaps)
        p2 = _event_at(stem, max(0, rec.timeline_start), len(stem))
        p1 = None if name == LATE else _event_at(stem, max(0, rec.timeline_start), p2 - RATE)
        report.append(
            f"{name}: events at timeline {p1} and {p2}, gaps "
            f"{[(g.at, g.frames) for g in rec.gaps]} ({lost / RATE * 1000:.0f} ms), slips "
            f"{[(g.at, g.frames) for g in rec.slips]}, recording from {rec.timeline_start}"
        )
        print(report[-1])
        if p1 is not None and strict:  # a stall did not move what came after it
            assert abs((p2 - p1) - (e2 - e1)) <= 1, (report[-1], e2 - e1)
        # loopback: the stem is the program at lag 0 before the stall and after it
        start = max(0, rec.timeline_start) + RATE // 2
        if name in stopped:
            gap = max(rec.gaps, key=lambda g: g.frames)
            assert abs(gap.frames - stopped[name] * RATE) <= PERIOD + 0.01 * RATE, report[-1]
            assert not np.any(stem[gap.at + 64 : gap.at + gap.frames - 64]), "gap not silent"
            before = _lag0_match(stem, prog, start, gap.at - PERIOD, (p1,))
            after_from = gap.at + gap.frames + RATE // 4
        else:
            before, after_from = 1.0, start
            # no stall: at most a few of this shared machine's own xruns
            assert lost <= HEALTHY_LOSS * RATE or not strict, report[-1]
        if name == LATE:
            assert rec.timeline_start >= LATE_AT * RATE, report[-1]
        after = _lag0_match(stem, prog, after_from, p2 - PERIOD, (p1,))
        print(f"   the program at lag 0 in {before:.1%} before the stall, {after:.1%} after")
        # each loss costs the periods before it is confirmed (more when a busy machine keeps
        # the clock readings apart): most of the take, not all of it, when not strict
        least = 0.97 if strict else 0.8
        assert before >= least and after >= least, report[-1]
    seconds = {n: _event_at(stems[n], 0, len(stems[n])) for n in stems}
    skew = max(seconds.values()) - min(seconds.values())
    print(mixed.out + mixed.err + f"event 2 by singer {seconds}; spread {skew} frames")
    if not strict:
        return
    # one JACK frame lands at one timeline frame for all, but for the start skew
    on_time = [seconds[n] for n, _, _ in VOICES if n != LATE]
    assert max(on_time) - min(on_time) <= 48, seconds
    assert abs(seconds[LATE] - float(np.median(on_time))) <= 0.003 * RATE, seconds
    # per-singer counts: the leader's roster shows each stalled singer's own losses
    for name, _, _ in VOICES:
        lost = int(roster[name].get("lost_frames") or 0)
        if name in stopped:
            assert lost >= 0.9 * stopped[name] * RATE, (name, roster[name])
        else:
            assert lost <= HEALTHY_LOSS * RATE, (name, roster[name])
    assert roster["Fay"]["connected"] is False
