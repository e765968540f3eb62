"""``tutti mix`` end to end: take folders built in tmp_path, the real command, real files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from tutti.audio.loudness import integrated_loudness
from tutti.cli import main

RATE = 48000


@dataclass
class Singer:
    name: str
    part: str
    audio: np.ndarray  # (frames, channels) float32
    start_offset: int = 0
    latency: int = 0
    rate: int = RATE
    file: str = ""
    subtype: str = "PCM_24"


def tone(
    freq: float, seconds: float, level: float = 0.2, rate: int = RATE, seed: int = 0
) -> np.ndarray:
    """A sung-like test voice: a tone with a slow level swell and a little noise, (frames, 1)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    x = level * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + seed))
    x += 0.003 * rng.standard_normal(n)
    return x.astype(np.float32)[:, None]


def build_take(
    folder: Path,
    singers: list[Singer],
    *,
    backing: np.ndarray | None = None,
    backing_start: int = 0,
    settings: dict[str, Any] | None = None,
    edit: Any = None,
) -> Path:
    """Write a take folder: one FLAC per singer, an optional backing, and take.json."""
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, s in enumerate(singers):
        name = s.file or f"rec{i}-{s.name}.flac"
        sf.write(folder / name, s.audio, s.rate, subtype=s.subtype)
        recs.append(
            {
                "file": name,
                "singer": s.name,
                "part": s.part,
                "rate": s.rate,
                "channels": s.audio.shape[1],
                "frames": s.audio.shape[0],
                "start_offset": s.start_offset,
                "latency": s.latency,
            }
        )
    manifest: dict[str, Any] = {
        "format": "tutti-take",
        "version": 1,
        "take_id": "t1",
        "title": "Test take",
        "rate": RATE,
        "settings": settings or {},
        "backing": [],
        "recordings": recs,
    }
    if backing is not None:
        sf.write(folder / "backing.flac", backing, RATE, subtype="PCM_24")
        manifest["backing"] = [
            {"part": "all", "file": "backing.flac", "timeline_start": backing_start}
        ]
    if edit is not None:
        edit(manifest)
    (folder / "take.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def true_peak_resample_poly(x: np.ndarray) -> float:
    """The reference true-peak meter: 4× with scipy.signal.resample_poly, dBTP."""
    return 20 * math.log10(float(np.abs(signal.resample_poly(x, 4, 1, axis=0)).max()))


def choir(seconds: float = 6.0) -> list[Singer]:
    return [
        Singer("Anna", "S", tone(440, seconds, 0.3, seed=1), start_offset=900, latency=512),
        Singer("Ben", "T", tone(220, seconds, 0.05, seed=2), start_offset=300, latency=256),
        Singer("Cleo", "A", tone(330, seconds, 0.2, seed=3), start_offset=1200, latency=700),
        Singer("Dev", "B", tone(110, seconds, 0.4, seed=4), start_offset=512, latency=512),
    ]


def test_mix_meets_loudness_and_true_peak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    take = build_take(tmp_path / "take", choir())
    assert main(["mix", str(take), "--jobs", "2"]) == 0
    out = take / "mix.flac"
    mix, rate = sf.read(out, dtype="float32", always_2d=True)
    assert rate == RATE and mix.shape[1] == 2
    assert abs(integrated_loudness(mix, RATE) - (-16.0)) <= 0.1
    assert true_peak_resample_poly(mix) <= -1.0
    lines = capsys.readouterr().out.splitlines()  # piped: the start, the stages, the result
    assert lines[0].startswith('mixing 4 recordings of take "Test take"')
    assert lines[-1].startswith(f"wrote {out}:") and "LUFS" in lines[-1] and "dBTP" in lines[-1]
    assert lines[-1].endswith(f"; the whole report in {take / 'mix.report.txt'}")
    report = (take / "mix.report.txt").read_text(encoding="utf-8")
    for name in ("Anna", "Ben", "Cleo", "Dev"):
        assert f"│ {name} " in report
    assert not [p for p in take.iterdir() if p.name.endswith(".part")]


def test_many_singers_with_warnings_give_a_few_lines_piped_and_all_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped, 30 singers each with warnings (and a silent one, and gaps) still give a handful
    of lines: what is mixed, the stages, a summary naming the silent singer first, the result
    naming the report; the report beside the mix has every singer's row, whole."""
    singers = [Singer(f"Singer {k}", "SATB"[k % 4], tone(150 + 3 * k, 1.0, 0.1, seed=k))
               for k in range(30)]  # fmt: skip
    singers[17] = Singer("Quiet Quentin", "B", np.zeros((RATE, 1), np.float32))

    def warned(m: dict[str, Any]) -> None:
        for k, rec in enumerate(m["recordings"]):
            rec["latency_source"] = "reported"  # "latency not measured"
            if k % 5 == 0:
                rec["gaps"] = [{"at": RATE // 2, "frames": 480}]

    take = build_take(tmp_path / "take", singers, backing=tone(440, 1.0, 0.05), edit=warned)
    out = tmp_path / "out" / "song.flac"
    assert main(["mix", str(take), "-o", str(out), "--jobs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 3 <= len(lines) <= 8, lines
    what = "30 recordings and 1 backing track"
    assert lines[0] == f'mixing {what} of take "Test take" ({take}) into {out}'
    summary = [line for line in lines if line.startswith("warnings for 30 of 30 singers — ")]
    assert len(summary) == 1 and " more" in summary[0] and len(summary[0]) <= 160, lines
    assert summary[0].split(" — ")[1].startswith("Quiet Quentin: silent"), summary
    report_file = out.parent / "song.report.txt"
    assert lines[-1].startswith(f"wrote {out}: ") and lines[-1].endswith(f"in {report_file}")
    report = report_file.read_text(encoding="utf-8").splitlines()
    assert report[0] == lines[0]
    for s in singers:  # one row per singer, whole: its name, its warnings
        rows = [row for row in report if row.startswith(f"│ {s.name} ")]
        assert len(rows) == 1, (s.name, rows)
        assert "latency not measured" in rows[0]
    assert "silent" in next(row for row in report if row.startswith("│ Quiet Quentin "))
    assert [row for row in report if row.startswith("Singer 5: input lost 10 ms at 0:00")]
    assert report[-1].startswith(f"wrote {out}: ")


def test_loud_peaky_mix_is_limited(tmp_path: Path) -> None:
    """Target −9 LUFS with sharp transients: the limiter must work and loudness still land."""
    n = 8 * RATE
    rng = np.random.default_rng(5)
    x = 0.02 * rng.standard_normal(n).astype(np.float32)
    x[:: RATE // 4] = 0.9  # clicks four times a second
    x = signal.lfilter([1.0], [1.0, -0.6], x).astype(np.float32) * 0.5
    singers = [Singer("Kim", "S", x[:, None]), Singer("Lou", "A", np.roll(x, 999)[:, None])]
    take = build_take(tmp_path / "take", singers)
    assert main(["mix", str(take), "--target-lufs", "-9", "--no-loudness-match"]) == 0
    mix, _ = sf.read(take / "mix.flac", dtype="float32", always_2d=True)
    assert abs(integrated_loudness(mix, RATE) - (-9.0)) <= 0.1
    assert true_peak_resample_poly(mix) <= -1.0


def test_offsets_place_every_recording_on_the_timeline(tmp_path: Path) -> None:
    """An impulse at recording sample 1000 lands at 1000 + start_offset − latency in the stems."""
    singers = []
    for i, (off, lat) in enumerate([(900, 512), (300, 256), (2000, 100)]):
        x = np.zeros((RATE, 1), np.float32)
        x[1000, 0] = 0.5
        singers.append(Singer(f"s{i}", "S", x, start_offset=off, latency=lat))
    take = build_take(tmp_path / "take", singers)
    assert main(["mix", str(take), "--stems", "--project", "--no-loudness-match"]) == 0
    stems = sorted((take / "mix-stems").iterdir())
    assert len(stems) == 3
    lengths = set()
    for s, path in zip(singers, stems, strict=True):
        data, _ = sf.read(path, dtype="float32", always_2d=True)
        lengths.add(data.shape[0])
        assert int(np.argmax(np.abs(data[:, 0]))) == 1000 + s.start_offset - s.latency
    assert len(lengths) == 1
    rpp = (take / "mix.rpp").read_text()
    lof = (take / "mix.lof").read_text()
    for path in stems:
        assert f'"mix-stems/{path.name}"' in rpp
        assert f'file "mix-stems/{path.name}" offset 0.000000000' in lof


def test_gain_mute_backing_and_formats(tmp_path: Path) -> None:
    singers = choir(4.0)
    backing = tone(660, 5.0, 0.3, seed=9)
    take = build_take(tmp_path / "take", singers, backing=backing, backing_start=100)
    out = tmp_path / "out" / "song.wav"
    args = [
        "mix",
        str(take),
        "-o",
        str(out),
        "--gain",
        "Ben=+6",
        "--mute",
        "Dev",
        "--reverb",
        "0.3",
    ]
    assert main(args) == 0
    mix, _ = sf.read(out, dtype="float32", always_2d=True)
    # the hall's tail makes the mix longer than the timeline (backing ends at 100 + 5 s)
    assert mix.shape[0] > 100 + 5 * RATE
    assert abs(integrated_loudness(mix, RATE) + 16.0) <= 0.1
    ogg = tmp_path / "out" / "song.ogg"
    assert main(["mix", str(take), "-o", str(ogg), "--no-backing"]) == 0
    assert sf.info(str(ogg)).format == "OGG"


def test_mix_rate_other_than_take_is_resampled(tmp_path: Path) -> None:
    singers = choir(3.0)
    singers[1] = Singer("Ben", "T", tone(220, 3.0, 0.2, rate=44100, seed=2), rate=44100)
    take = build_take(tmp_path / "take", singers)
    assert main(["mix", str(take)]) == 0
    mix, rate = sf.read(take / "mix.flac", dtype="float32", always_2d=True)
    assert rate == RATE and abs(mix.shape[0] - 3 * RATE - 1200 + 700) < 5


# -- bad input: a clear message naming the file, exit ≠ 0, nothing left behind ---------------
def _fails(
    take: Path, capsys: pytest.CaptureFixture[str], *words: str, extra: tuple[str, ...] = ()
) -> None:
    code = main(["mix", str(take), *extra])
    err = capsys.readouterr().err
    assert code != 0
    for w in words:
        assert w in err, err
    if take.is_dir():
        leftovers = [p.name for p in take.rglob("*") if p.name.startswith(("mix", ".mix"))]
        assert leftovers == []


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    _fails(tmp_path / "empty", capsys, "empty", "take-format")


def test_missing_folder_and_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(tmp_path / "nope", capsys, "not a folder")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.flac").write_bytes(b"x")
    _fails(tmp_path / "t", capsys, "no take.json")


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    take = build_take(tmp_path / "take", choir(1.0))
    (take / "rec2-Cleo.flac").unlink()
    _fails(take, capsys, "rec2-Cleo.flac", "missing")


def test_unreadable_audio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    take = build_take(tmp_path / "take", choir(1.0))
    (take / "rec1-Ben.flac").write_bytes(b"this is not audio at all" * 10)
    _fails(take, capsys, "rec1-Ben.flac", "not readable audio")


def test_rate_and_channel_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def lie_rate(m: dict[str, Any]) -> None:
        m["recordings"][0]["rate"] = 44100

    take = build_take(tmp_path / "a", choir(1.0), edit=lie_rate)
    _fails(take, capsys, "rec0-Anna.flac", "48000 Hz", "44100 Hz")

    def lie_channels(m: dict[str, Any]) -> None:
        m["recordings"][3]["channels"] = 2

    take = build_take(tmp_path / "b", choir(1.0), edit=lie_channels)
    _fails(take, capsys, "rec3-Dev.flac", "channel")


def test_manifest_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    take = build_take(tmp_path / "a", choir(1.0))
    (take / "take.json").write_text("{not json", encoding="utf-8")
    _fails(take, capsys, "take.json", "not valid JSON")

    def no_latency(m: dict[str, Any]) -> None:
        del m["recordings"][1]["latency"]

    take = build_take(tmp_path / "b", choir(1.0), edit=no_latency)
    _fails(take, capsys, "take.json", "recordings[1]", "latency")

    def escape(m: dict[str, Any]) -> None:
        m["recordings"][0]["file"] = "../secret.flac"

    take = build_take(tmp_path / "c", choir(1.0), edit=escape)
    _fails(take, capsys, "leaves the take folder")

    def none(m: dict[str, Any]) -> None:
        m["recordings"] = []

    take = build_take(tmp_path / "d", choir(1.0), edit=none)
    _fails(take, capsys, "no recordings")


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    take = build_take(tmp_path / "take", choir(1.0))
    _fails(take, capsys, "--gain Zed:", "no such singer", "Anna", extra=("--gain", "Zed=3"))
    _fails(take, capsys, "NAME=DB", extra=("--gain", "Anna=loud"))
    _fails(take, capsys, "--mute", extra=("--mute", "Nobody"))
    _fails(take, capsys, "unknown extension", extra=("-o", str(take / "mix.mp3")))


def test_failure_midway_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that passes the header check but is truncated fails while reading: no mix left."""
    take = build_take(tmp_path / "take", choir(2.0))
    path = take / "rec3-Dev.flac"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    code = main(["mix", str(take), "--stems"])
    err = capsys.readouterr().err
    assert code != 0, "a truncated FLAC must not mix silently"
    assert "rec3-Dev.flac" in err
    assert not (take / "mix.flac").exists()
    assert not [p for p in take.rglob("*.part")]
    assert not (take / "mix-stems").exists(), "no output folder for a failed mix"
    assert not list(take.glob(".tutti-mix-*")), "the scratch folder must be removed"


def test_drift_is_found_and_corrected(tmp_path: Path) -> None:
    """A separate-clock recording running 100 ppm fast over 60 s (6 ms by the end): the mix
    finds the drift from the clicks at both ends and puts every click back on its beat."""
    import soxr

    settings = {
        "title": "drift",
        "rate": RATE,
        "bpm": 120.0,
        "beats_per_bar": 4,
        "count_in_bars": 1,
    }
    seconds = 60
    beat = RATE // 2  # 120 BPM
    clean = np.zeros(seconds * RATE, np.float32)
    burst = (
        0.6 * np.sin(2 * np.pi * 2000 * np.arange(240) / RATE) * np.exp(-np.arange(240) / 60)
    ).astype(np.float32)
    beats = list(range(0, clean.shape[0] - 240, beat))
    for f in beats:
        clean[f : f + 240] += burst
    clean += 0.001 * np.random.default_rng(1).standard_normal(clean.shape[0]).astype(np.float32)
    ppm = 100.0
    drifted = soxr.resample(clean, RATE, RATE * (1 + ppm * 1e-6), quality="VHQ").astype(np.float32)
    singers = [Singer("Ed", "T", drifted[:, None], start_offset=0, latency=0)]

    def separate_clock(m: dict[str, Any]) -> None:
        m["recordings"][0]["shared_clock"] = False

    take = build_take(tmp_path / "take", singers, settings=settings, edit=separate_clock)
    assert main(["mix", str(take), "--stems", "--no-loudness-match", "--keep-count-in"]) == 0
    report = (take / "mix.report.txt").read_text(encoding="utf-8")
    assert "+100" in report or "+99" in report  # the drift column
    stem, _ = sf.read(next((take / "mix-stems").iterdir()), dtype="float32")
    for f in beats[1:4] + beats[-3:]:
        seg = np.abs(stem[f - 200 : f + 200])
        onset = f - 200 + int(np.argmax(seg > 0.3 * seg.max()))
        assert abs(onset - f) <= 0.001 * RATE / 10, (f, onset)  # well under 1 ms


def test_float_file_with_nan_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    singers = choir(1.0)
    bad = singers[2].audio.copy()
    bad[100, 0] = np.nan
    singers[2] = Singer("Cleo", "A", bad, file="cleo.wav", subtype="FLOAT")
    take = build_take(tmp_path / "take", singers)
    _fails(take, capsys, "cleo.wav", "NaN")
    from tests.mix.test_groupsums import _with_backings  # (it imports this module)

    _with_backings(take, "SATB")  # bleed removal measures the voice after it, not as decoded
    _fails(take, capsys, "cleo.wav", "NaN")
    err = main(["mix", str(take)]) and capsys.readouterr().err
    assert err and err.count("cleo.wav") == 1, err  # the recording named once


_LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = p.stderr.read()
_, status, usage = os.wait4(p.pid, 0)
sys.stderr.write(err.decode(errors="replace"))
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _mix_peak_rss_mb(take: Path, *options: str) -> float:
    """Peak RSS (MB) of ``tutti mix`` on ``take``, in a grandchild started by a small launcher.

    Not a direct child: a child started by vfork inherits this (large) process's peak RSS as
    its own, which would hide the mix's.
    """
    import subprocess
    import sys

    mix = [sys.executable, "-m", "tutti", "mix", str(take), "-o", str(take / "mix.wav"), *options]
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *mix], capture_output=True, text=True, check=True
    )
    code, kb = done.stdout.split()
    assert code == "0", done.stderr
    assert sf.info(str(take / "mix.wav")).frames > 0
    return int(kb) / 1024.0  # kB on Linux


def _write_noise(path: Path, frames: int, seed: int) -> None:
    """Low-level noise as 16-bit WAV, written one second at a time (this process stays small)."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(str(path), "w", RATE, 1, "PCM_16") as f:
        for a in range(0, frames, RATE):
            f.write((0.05 * rng.standard_normal(min(RATE, frames - a))).astype(np.float32))


@pytest.mark.parametrize(
    ("short", "long", "options"),
    [(1, 6, ()), (1, 4, ("--target-lufs", "-6"))],
    ids=["quiet", "limited"],
)
@pytest.mark.slow
def test_memory_does_not_grow_with_take_length(
    tmp_path: Path, short: int, long: int, options: tuple[str, ...]
) -> None:
    """Three singers for a short and a long take: the longer take must not need materially
    more memory (the whole-timeline design needed about 220 MB more for 1 → 6 minutes).  At
    −6 LUFS the noise drives the limiter everywhere, which exercises its per-frame envelopes
    (a cache of every limited block grew by about 140 MB for 1 → 6 minutes)."""
    rss = {}
    for minutes in (short, long):
        folder = tmp_path / f"take{minutes}"
        n = minutes * 60 * RATE
        stub = np.zeros((1, 1), np.float32)
        singers = [Singer(f"s{i}", "SATB"[i], stub, start_offset=100 * i, file=f"s{i}.wav",
                          subtype="PCM_16") for i in range(3)]  # fmt: skip

        def real_lengths(m: dict[str, Any], n: int = n) -> None:
            for rec in m["recordings"]:
                rec["frames"] = n

        build_take(folder, singers, edit=real_lengths)
        for i, s in enumerate(singers):
            _write_noise(folder / s.file, n, seed=10 * minutes + i)
        rss[minutes] = _mix_peak_rss_mb(folder, *options)
    assert rss[short] > 50.0, rss  # the mix's own memory, not a launcher's
    assert rss[long] < rss[short] + 40.0, rss


def test_16_bit_scratch_mixes_like_float(tmp_path: Path) -> None:
    """16-bit recordings are kept as integers in the scratch files: the mix must be the same,
    sample for sample, as from float files holding the same 16-bit values."""
    voices = choir(3.0)
    for s in voices:
        s.audio = np.round(s.audio * 32768).clip(-32768, 32767).astype(np.float32) / 32768
    mixes = []
    for subtype in ("PCM_16", "FLOAT"):
        singers = [
            Singer(s.name, s.part, s.audio, s.start_offset, s.latency, file=f"{s.name}.wav",
                   subtype=subtype)
            for s in voices
        ]  # fmt: skip
        take = build_take(tmp_path / subtype, singers)
        assert main(["mix", str(take), "-o", str(take / "mix.wav"), "--stems"]) == 0
        mixes.append(sf.read(str(take / "mix.wav"), dtype="int32")[0])
        stems = sorted((take / "mix-stems").iterdir())
        for stem, s in zip(stems, voices, strict=True):  # the scratch values, scaled right
            peak = float(np.abs(sf.read(str(stem), dtype="float32")[0]).max())
            assert peak == pytest.approx(float(np.abs(s.audio).max()), abs=1e-6)
    assert not list(tmp_path.rglob(".tutti-mix-*"))  # scratch removed after a mix
    assert mixes[0].shape == mixes[1].shape and np.abs(mixes[0]).max() > 2**20
    np.testing.assert_array_equal(mixes[0], mixes[1])


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_recording_decoded_before_the_analysis_code_measures_the_same(
    tmp_path: Path, subtype: str
) -> None:
    # the first recordings are decoded while scipy loads and measured from the scratch file
    from tutti.audio.analysis import VoiceAnalyser
    from tutti.mix import decode as mixdecode
    from tutti.mix.folder import probe

    rng = np.random.default_rng(7)
    x = (0.1 * rng.standard_normal((600_000, 1))).clip(-0.9, 0.9).astype(np.float32)
    x[1000] = 1.0  # one clipped sample
    path = tmp_path / "r.wav"
    sf.write(path, x, RATE, subtype=subtype)
    live = VoiceAnalyser(RATE, 1)
    audio = probe(tmp_path.resolve(), "r.wav", "r")
    raw_live = mixdecode.decode(audio, RATE, tmp_path / "a.raw", live, "r")
    raw_late = mixdecode.decode(audio, RATE, tmp_path / "b.raw", None, "r")
    try:
        late = mixdecode.analyse(raw_late, RATE, "r").result()
        assert late == live.result()
        assert late.clipped == 1
        assert np.array_equal(raw_late.read(0, raw_late.frames), raw_live.read(0, raw_live.frames))
    finally:
        raw_live.close()
        raw_late.close()


def test_command_process_exits_with_its_code_and_its_output(tmp_path: Path) -> None:
    """``python -m tutti mix`` ends its process without the interpreter's teardown (numba's
    LLVM): the report must still be on stdout, the file complete, the code right; an error
    still says what was wrong, with code 2."""
    import subprocess
    import sys

    take = build_take(tmp_path / "take", choir(1.0))
    out = take / "out.flac"
    done = subprocess.run(
        [sys.executable, "-m", "tutti", "mix", str(take), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and str(out.name) in done.stdout
    assert sf.info(str(out)).frames > 0
    bad = subprocess.run(
        [sys.executable, "-m", "tutti", "mix", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "nowhere" in bad.stderr and "not a folder" in bad.stderr
