"""Synthetic takes with known bleed: each singer's voice, room noise and what leaked from
their headset (the program the client renders, through a short filter per ear cup) are kept
apart, so a test can measure what ``tutti mix`` left of each in the stems."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.signal
import soundfile as sf

from tests.mix.test_mix_badtakes import mix_command, mix_env
from tutti.audio.click import backing_start_frame
from tutti.audio.program import render_program
from tutti.wire import SessionSettings

RATE = 48000
F64 = npt.NDArray[np.float64]
SETTINGS = {"title": "bleed", "rate": RATE, "bpm": 100, "beats_per_bar": 4, "count_in_bars": 1}


@dataclass
class Singer:
    """One singer of a synthetic take and what their recording is made of."""

    name: str
    part: str
    leak_db: float  # RMS of the bleed where the program sounds, dBFS
    start: int = 0  # timeline frame of the recording's first sample
    seconds: float = 30.0  # length of the recording
    seed: int = 0
    noise_db: float = -66.0
    sings_in_rests: bool = False  # True: no rest, ever (no quiet passage outside the count-in)
    sings_in_count_in: bool = False
    drift_gain_db: float = 0.0  # the leak path's gain changes linearly by this over the take
    gap: tuple[int, int] | None = None  # (timeline frame, frames) of input lost
    late_ms: float = 0.0  # the leak arrives this much later (a latency measured short)
    step_gain_db: float = 0.0  # the leak path's gain steps by this at mid-take (a headset moved)
    # filled in by make_take: the parts of the recording on the timeline
    truth: dict[str, F64] = field(default_factory=dict)


def _voice(n: int, rng: np.random.Generator, rests: bool) -> tuple[F64, F64]:
    """A sung line (vibrato tone with harmonics, notes of 0.4–1.2 s) and where it sounds."""
    t = np.arange(n) / RATE
    f0 = np.empty(n)
    gate = np.ones(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.4, 1.2) * RATE)
        f0[pos : pos + length] = rng.uniform(150, 600)
        pos += length
    if rests:  # a rest of 0.6–1.5 s every 2.5–4 s
        pos = int(rng.uniform(1.0, 2.0) * RATE)
        while pos < n:
            rest = int(rng.uniform(0.6, 1.5) * RATE)
            gate[pos : pos + rest] = 0.0
            pos += rest + int(rng.uniform(2.5, 4.0) * RATE)
    # 20 ms ramps: a voice starts and ends, it does not click
    gate = np.convolve(
        gate, np.hanning(int(0.02 * RATE)) / np.hanning(int(0.02 * RATE)).sum(), "same"
    )
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.006 * np.sin(2 * np.pi * 5.3 * t))) / RATE
    v = 0.25 * np.sin(phase) + 0.1 * np.sin(2 * phase + 0.3) + 0.05 * np.sin(3 * phase + 1.1)
    return v * gate, gate


def _backing(n: int, rng: np.random.Generator, stereo: bool) -> F64:
    """A backing: chords of harmonic tones changing every 0.6 s and a little filtered noise,
    different in each ear when ``stereo``."""
    t = np.arange(n) / RATE
    chans = 2 if stereo else 1
    out = np.zeros((n, chans))
    for c in range(chans):
        for a in range(0, n, int(0.6 * RATE)):
            seg = slice(a, a + int(0.6 * RATE))
            for f in rng.uniform(110, 880, 3):
                out[seg, c] += 0.05 * np.sin(2 * np.pi * f * t[seg]) * np.exp(-(t[seg] - t[a]) * 2)
        noise = scipy.signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
        out[:, c] += 0.01 * noise
    return out


def _leak_filter(rng: np.random.Generator) -> F64:
    """A short leak path: a few frames of delay, then a decaying random response (≤ 2 ms)."""
    delay = int(rng.integers(1, 12))
    length = int(rng.integers(24, 90))
    h = np.zeros(delay + length)
    h[delay:] = rng.standard_normal(length) * np.exp(-np.arange(length) / rng.uniform(5, 20))
    return h


def make_take(
    folder: Path,
    singers: list[Singer],
    *,
    settings: bool = True,
    stereo: bool = True,
    seconds: float = 30.0,
    backing_parts: list[str] | None = None,
) -> None:
    """Write a take folder: a backing per part in ``backing_parts`` (default: one for all),
    and each singer's recording = voice + room noise + the program through their leak path,
    at ``leak_db`` where the program sounds.  Each ``Singer.truth`` gets the voice, noise,
    bleed and singing gate on the timeline (length ``seconds``)."""
    folder.mkdir(parents=True)
    (folder / "backing").mkdir()
    n = int(seconds * RATE)
    s = SessionSettings.from_dict(SETTINGS)
    start = backing_start_frame(s) if settings else int(0.5 * RATE)
    parts = backing_parts or ["all"]
    backings, entries = {}, []
    rng = np.random.default_rng(7)
    for part in parts:
        audio = _backing(n - start, rng, stereo).astype(np.float32)
        name = f"backing/{part}.wav"
        sf.write(folder / name, audio, RATE, subtype="FLOAT")
        backings[part] = audio
        entries.append({"part": part, "file": name, "timeline_start": start})
    recs = []
    for singer in singers:
        rng = np.random.default_rng(100 + singer.seed)
        backing = backings.get(singer.part, backings[parts[0]] if len(parts) == 1 else None)
        if settings:
            program = render_program(s, backing, channels=2).audio.astype(np.float64)
        else:
            program = np.zeros((n, 2))
            assert backing is not None
            program[start:] = backing[: n - start]
        program = np.pad(program, ((0, max(0, n - len(program))), (0, 0)))[:n]
        late = np.zeros(round(singer.late_ms * 1e-3 * RATE))
        bleed = sum(
            scipy.signal.lfilter(np.r_[late, _leak_filter(rng)], [1.0], program[:, c])
            for c in (0, 1)
        )
        assert isinstance(bleed, np.ndarray)
        if singer.drift_gain_db:
            other = sum(
                scipy.signal.lfilter(_leak_filter(rng), [1.0], program[:, c]) for c in (0, 1)
            )
            ramp = np.linspace(0.0, 1.0, n)
            gain = 10 ** (singer.drift_gain_db * ramp / 20)
            bleed = gain * ((1 - 0.3 * ramp) * bleed + 0.3 * ramp * other)
        if singer.step_gain_db:
            bleed[n // 2 :] *= 10 ** (singer.step_gain_db / 20)
        sounding = np.abs(program).sum(axis=1) > 0
        bleed *= 10 ** (singer.leak_db / 20) / np.sqrt(np.mean(bleed[sounding] ** 2))
        voice, gate = _voice(n, rng, rests=not singer.sings_in_rests)
        count_in = s.count_in_frames if settings else 0
        if not singer.sings_in_count_in:
            voice[:count_in] = 0.0
            gate[:count_in] = 0.0
        noise = 10 ** (singer.noise_db / 20) * rng.standard_normal(n)
        lo, hi = singer.start, min(n, singer.start + int(singer.seconds * RATE))
        keep = np.zeros(n)
        keep[lo:hi] = 1.0
        if singer.gap is not None:
            keep[singer.gap[0] : singer.gap[0] + singer.gap[1]] = 0.0
        singer.truth = {
            "voice": voice * keep, "noise": noise * keep, "bleed": bleed * keep,
            "gate": gate * keep, "kept": keep,
        }  # fmt: skip
        x = (voice + noise + bleed)[lo:hi] * keep[lo:hi]
        file = f"{singer.name}.wav"
        sf.write(folder / file, x.astype(np.float32), RATE, subtype="FLOAT")
        rec = {
            "file": file, "singer": singer.name, "part": singer.part, "rate": RATE,
            "channels": 1, "frames": hi - lo, "start_offset": lo + 256, "latency": 256,
        }  # fmt: skip
        if singer.gap is not None:
            rec["gaps"] = [{"at": singer.gap[0], "frames": singer.gap[1]}]
        recs.append(rec)
    body: dict[str, object] = {
        "format": "tutti-take", "version": 1, "rate": RATE, "recordings": recs,
        "backing": entries,
    }  # fmt: skip
    if settings:
        body["settings"] = SETTINGS
    (folder / "take.json").write_text(json.dumps(body), encoding="utf-8")


def run_mix(take: Path, tmp: Path, *options: str) -> tuple[str, list[F64]]:
    """``tutti mix TAKE --stems --keep-count-in -o mix.wav`` plus ``options``: its report (the
    file beside the mix) and the singers' stems (timeline frame 0 first)."""
    out = take.parent / f"mix{len(list(take.parent.glob('mix*.wav')))}.wav"
    tmp.mkdir(exist_ok=True)
    done = subprocess.run(
        mix_command(take, "--stems", "--keep-count-in", "-o", str(out), *options),
        capture_output=True,
        text=True,
        env=mix_env(tmp),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    stems = sorted((out.parent / f"{out.stem}-stems").glob("*.wav"))
    audio = [sf.read(p, dtype="float64")[0] for p in stems if "Backing" not in p.name]
    return out.with_name(f"{out.stem}.report.txt").read_text(encoding="utf-8"), audio


def db(num: float, den: float) -> float:
    return 10.0 * float(np.log10(num / den))


def bleed_figures(singer: Singer, stem: F64) -> tuple[float, float]:
    """(dB by which the bleed in ``stem`` is lower than in the recording, voice-to-error in
    dB where the singer sings): the error is what the stem holds besides voice and noise."""
    n = min(len(stem), len(singer.truth["voice"]))
    tr: Callable[[str], F64] = lambda k: singer.truth[k][:n]  # noqa: E731
    err = stem[:n] - tr("voice") - tr("noise")
    sung = tr("gate") > 0.99
    reduction = db(float(np.sum(tr("bleed") ** 2)), float(np.sum(err**2)))
    vte = db(float(np.sum(tr("voice")[sung] ** 2)), float(np.sum(err[sung] ** 2)))
    return reduction, vte
