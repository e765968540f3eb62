"""Benchmark ``tutti mix`` against ``sox -m`` and ``ffmpeg amix`` on the same take.

One command::

    .venv/bin/python bench/bench_mix.py [--takes 32] [--minutes 5] [--runs 3]

generates (once; cached in bench/out/) a take folder of ``--takes`` mono 48 kHz 16-bit
(``--bits 24``: 24-bit, as ``tutti join`` records) FLAC
recordings of ``--minutes`` each with a take.json (``--heard``: as ``tutti join`` makes them,
with headset bleed, the session's tempo, a backing per part and some singers on clocks of their
own, so bleed removal and drift measurement run too), then runs, ``--runs`` times each and
interleaved, in the same session:

- ``tutti mix TAKE -o OUT.flac`` — the full pipeline: loudness of every singer, loudness
  matching, default layout, high-pass, backing-free mix, master loudness to −16 LUFS with the
  4×-oversampled true-peak limiter, 24-bit stereo FLAC;
- ``sox -m -v 1 a.flac -v 1 b.flac … OUT.flac`` — a plain sum, nothing else;
- ``ffmpeg … -filter_complex amix=inputs=N:normalize=0 OUT.flac`` — a plain sum.

Wall time (monotonic clock around the child process) and peak RSS of the child (``os.wait4``
resource usage) are recorded per run; the table shows medians and the ratios to sox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 48000
HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def _voice(seconds: float, seed: int) -> np.ndarray:
    """A sung-like test recording: a vibrato tone with harmonics, phrases, breath noise."""
    n = int(seconds * RATE)
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64) / RATE
    f0 = rng.uniform(110, 660)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / RATE
    x = 0.6 * np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
    phrase = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(4, 9) + rng.uniform(0, 6))
    x *= rng.uniform(0.05, 0.3) * phrase**2
    x += 0.002 * rng.standard_normal(n)
    return x.astype(np.float32)


#: --heard: the session's tempo (the count-in before the song) and the leak of the headset
SETTINGS = {"title": "benchmark", "rate": RATE, "bpm": 100, "beats_per_bar": 4, "count_in_bars": 1}
LEAK_DB = -40.0  # RMS of each singer's headset bleed where the program sounds (dBFS)
NOISE_DB = -66.0  # room noise (dBFS RMS)
SEPARATE_EVERY = 4  # every 4th singer records on a clock of their own, without a clock map


def _backing(seconds: float, seed: int) -> np.ndarray:
    """A stereo backing: chords of three tones changing every 0.6 s, each ear its own."""
    n = int(seconds * RATE)
    rng = np.random.default_rng(1000 + seed)
    t = np.arange(int(0.6 * RATE)) / RATE
    out = np.zeros((n, 2), np.float32)
    for a in range(0, n, t.shape[0]):
        seg = min(t.shape[0], n - a)
        for c in range(2):
            chord = sum(np.sin(2 * np.pi * f * t[:seg]) for f in rng.uniform(110, 880, 3))
            out[a : a + seg, c] = 0.1 * chord * np.hanning(2 * seg)[seg:]
    return out


def _heard_recording(
    voice: np.ndarray, program: np.ndarray, at: int, seed: int, ppm: float
) -> np.ndarray:
    """What a microphone took: the voice from the song's first beat, the program leaking
    through a short filter per ear cup at LEAK_DB, room noise; stretched by ``ppm`` when the
    input clock is not the output's.  ``at``: timeline frame of the recording's sample 0."""
    import scipy.signal

    rng = np.random.default_rng(2000 + seed)
    n = voice.shape[0]
    span = program[max(0, at) : at + n]
    taps = np.exp(-np.arange(96) / rng.uniform(8, 24))
    leak = np.zeros(n)
    if span.shape[0]:
        for c in range(span.shape[1]):
            h = taps * rng.standard_normal(96)
            part = scipy.signal.oaconvolve(span[:, c], h)[: span.shape[0]]
            leak[max(0, -at) : max(0, -at) + part.shape[0]] += part
    sounding = np.abs(leak) > 0
    rms = float(np.sqrt(np.mean(leak[sounding] ** 2))) if sounding.any() else 1.0
    x = voice + leak * (10 ** (LEAK_DB / 20) / rms)
    x += 10 ** (NOISE_DB / 20) * rng.standard_normal(n)
    if ppm:
        import soxr

        x = soxr.resample(x, RATE, RATE * (1 + ppm * 1e-6))
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def make_take(takes: int, minutes: float, bits: int = 16, heard: bool = False) -> Path:
    """The cached take folder for this size and sample width (generated on first use).

    ``heard``: a take as ``tutti join`` makes it — the session's tempo and a stereo backing per
    part, every recording holding its singer's headset bleed and room noise, and every
    SEPARATE_EVERY-th singer on a clock of their own (±50–120 ppm) without a clock map — so
    the mix's bleed removal and drift measurement have their real work to do."""
    name = f"take-{takes}x{minutes:g}min" + ("" if bits == 16 else f"-{bits}bit")
    folder = OUT / (name + ("-heard" if heard else ""))
    manifest = folder / "take.json"
    if manifest.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(takes)
    recs: list[dict[str, object]] = []
    parts = ["S", "A", "T", "B"]
    programs = _programs(folder, parts, minutes) if heard else {}
    backing = [
        {"part": p, "file": f"backing/{p}.flac", "timeline_start": programs[p][1]}
        for p in parts
        if heard
    ]
    for i in range(takes):
        name = f"singer{i:03d}.flac"
        start_offset, latency = int(rng.integers(200, 3000)), int(rng.integers(128, 1024))
        audio = _voice(minutes * 60, seed=i)
        extra: dict[str, object] = {}
        if heard:
            program, song = programs[parts[i % 4]]
            at = start_offset - latency
            audio[: max(0, song - at)] = 0.0  # the singer waits for the count-in
            separate = i % SEPARATE_EVERY == SEPARATE_EVERY - 1
            ppm = float(rng.choice([-1, 1]) * rng.uniform(50, 120)) if separate else 0.0
            audio = _heard_recording(audio, program, at, i, ppm)
            extra = {"shared_clock": not separate}
        sf.write(folder / name, audio, RATE, subtype=f"PCM_{bits}")
        recs.append(
            {
                "file": name,
                "singer": f"singer{i:03d}",
                "part": parts[i % 4],
                "rate": RATE,
                "channels": 1,
                "frames": audio.shape[0],
                "start_offset": start_offset,
                "latency": latency,
                **extra,
            }
        )
        if (i + 1) % 10 == 0 or i + 1 == takes:
            print(f"generated {i + 1}/{takes} recordings", file=sys.stderr)
    body = {
        "format": "tutti-take",
        "version": 1,
        "take_id": f"bench-{takes}",
        "title": "benchmark",
        "rate": RATE,
        "settings": SETTINGS if heard else {},
        "backing": backing,
        "recordings": recs,
    }
    manifest.write_text(json.dumps(body, indent=1), encoding="utf-8")
    return folder


def _programs(folder: Path, parts: list[str], minutes: float) -> dict[str, tuple[np.ndarray, int]]:
    """Per part: the headset program its singers heard (as the client renders it) and the
    timeline frame of the song's first beat; the backings are written to ``folder/backing``."""
    from tutti.audio.click import backing_start_frame
    from tutti.audio.program import render_program
    from tutti.wire import SessionSettings

    settings = SessionSettings.from_dict(SETTINGS)
    song = backing_start_frame(settings)
    (folder / "backing").mkdir(exist_ok=True)
    out = {}
    for k, part in enumerate(parts):
        backing = _backing(minutes * 60, k)
        sf.write(folder / "backing" / f"{part}.flac", backing, RATE, subtype="PCM_24")
        out[part] = (render_program(settings, backing, channels=2).audio, song)
    return out


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the child in MB, CPU seconds user+sys)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 1024.0, cpu  # ru_maxrss is in kB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--takes", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--bits",
        type=int,
        choices=(16, 24),
        default=16,
        help="sample width of the generated FLAC files (tutti join records 24-bit)",
    )
    parser.add_argument(
        "--heard",
        action="store_true",
        help="recordings with headset bleed, a tempo and backing, and every "
        f"{SEPARATE_EVERY}th singer on a clock of their own (see make_take)",
    )
    parser.add_argument("--no-ffmpeg", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.generate:
        make_take(args.takes, args.minutes, args.bits, args.heard)
        return 0
    # generate in a child process: a child forked from a parent that held the generated
    # audio would report the parent's memory as its own peak RSS
    gen = [sys.executable, __file__, "--generate", "--takes", str(args.takes)]
    gen += ["--minutes", str(args.minutes), "--bits", str(args.bits)]
    subprocess.run(gen + (["--heard"] if args.heard else []), check=True)
    take = make_take(args.takes, args.minutes, args.bits, args.heard)
    files = [
        str(take / r["file"]) for r in json.loads((take / "take.json").read_text())["recordings"]
    ]
    tutti = shutil.which("tutti", path=str(Path(sys.executable).parent)) or "tutti"
    commands: dict[str, list[str]] = {
        "tutti mix": [
            tutti,
            "mix",
            str(take),
            "-o",
            str(OUT / "mix-tutti.flac"),
            "--jobs",
            str(args.jobs),
        ],
        "sox -m": [
            "sox",
            "-V1",
            "-m",
            *[a for f in files for a in ("-v", "1", f)],
            str(OUT / "mix-sox.flac"),
        ],
    }
    if not args.no_ffmpeg:
        inputs = [a for f in files for a in ("-i", f)]
        commands["ffmpeg amix"] = [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inputs,
            "-filter_complex", f"amix=inputs={len(files)}:normalize=0",
            str(OUT / "mix-ffmpeg.flac"),
        ]  # fmt: skip
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
    for run in range(args.runs):
        for name, cmd in commands.items():
            wall, rss, cpu = timed(cmd)
            results[name].append((wall, rss, cpu))
            print(
                f"run {run + 1}/{args.runs} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                f"{rss:.0f} MB",
                file=sys.stderr,
            )
    load = os.getloadavg()
    med = {
        k: (
            statistics.median(w for w, _, _ in v),
            max(r for _, r, _ in v),
            statistics.median(c for _, _, c in v),
        )
        for k, v in results.items()
    }
    sox_wall, sox_cpu = med["sox -m"][0], med["sox -m"][2]
    kind = " (heard: bleed, tempo, backing, separate clocks)" if args.heard else ""
    print(f"\n{args.takes} takes × {args.minutes:g} min mono 48 kHz {args.bits}-bit FLAC{kind}, "
          f"{args.runs} runs, jobs={args.jobs}, {os.cpu_count()} CPUs, {platform.machine()}, "
          f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip
    print("| command | median wall (s) | runs (s) | median CPU (s) | peak RSS (MB) "
          "| wall / sox | CPU / sox |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, (wall, rss, cpu) in med.items():
        runs = ", ".join(f"{w:.2f}" for w, _, _ in results[name])
        print(f"| {name} | {wall:.2f} | {runs} | {cpu:.2f} | {rss:.0f} "
              f"| {wall / sox_wall:.2f} | {cpu / sox_cpu:.2f} |")  # fmt: skip
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": results})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
