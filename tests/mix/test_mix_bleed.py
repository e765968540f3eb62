"""Bleed removal end to end: synthetic takes whose singers' recordings hold a known leak of
their headset program (click and backing through a short filter per ear cup, −50 to −20
dBFS) plus room noise; ``tutti mix --stems`` must leave at least 25 dB less bleed in each
stem, change the voice by nothing audible (voice-to-error ≥ 40 dB where the singer sings),
report the leak it measured, and leave alone a recording it cannot fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.audio.test_mixcmd import Singer as MixSinger
from tests.audio.test_mixcmd import build_take, choir
from tests.mix.bleedtakes import RATE, Singer, bleed_figures, make_take, run_mix
from tutti.audio.bleed import NEVER_QUIET_REASON, SILENT_REASON

REDUCTION_DB = 25.0
VOICE_TO_ERROR_DB = 40.0
TEMPO = {"bpm": 120.0, "beats_per_bar": 4, "count_in_bars": 1}


def _check(singers: list[Singer], stems: list[np.ndarray]) -> list[tuple[float, float]]:
    figures = [bleed_figures(s, stem) for s, stem in zip(singers, stems, strict=True)]
    for s, (reduction, vte) in zip(singers, figures, strict=True):
        assert reduction >= REDUCTION_DB, f"{s.name}: bleed only {reduction:.1f} dB lower"
        assert vte >= VOICE_TO_ERROR_DB, f"{s.name}: voice-to-error {vte:.1f} dB"
    return figures


def _reported(report: str, name: str) -> str:
    """What the report says of a singer's bleed ("" when it says nothing)."""
    lines = [ln for ln in report.splitlines() if ln.startswith(f"{name}: bleed ")]
    assert len(lines) <= 1, lines
    return lines[0].removeprefix(f"{name}: bleed ") if lines else ""


def test_leak_removed_from_each_stem(tmp_path: Path) -> None:
    singers = [
        Singer("ann", "S", -50.0, seed=1),
        Singer("ben", "A", -35.0, seed=2),
        Singer("cat", "T", -20.0, seed=3),
    ]
    make_take(tmp_path / "take", singers)
    report, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)
    for s in singers:  # the measured leak level is the one the take was made with
        cell = _reported(report, s.name)
        level = float(cell.split(" dBFS")[0])
        assert abs(level - s.leak_db) < 1.0, cell
    kept_report, kept = run_mix(tmp_path / "take", tmp_path / "tmp", "--keep-bleed")
    for s, stem in zip(singers, kept, strict=True):
        assert abs(bleed_figures(s, stem)[0]) < 0.1  # the bleed is all there
        assert _reported(kept_report, s.name) == ""


def test_changing_leak_path_followed(tmp_path: Path) -> None:
    """The path's gain moves 6 dB over 40 s while its shape changes by a third."""
    singers = [
        Singer("ann", "S", -25.0, seed=1, drift_gain_db=6.0, seconds=40.0),
        Singer("ben", "A", -40.0, seed=2, drift_gain_db=-6.0, seconds=40.0),
    ]
    make_take(tmp_path / "take", singers, seconds=40.0)
    _, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)


@pytest.mark.parametrize("late_ms", [2.5, 3.5])
def test_a_leak_arriving_a_few_ms_late_is_found_and_removed(tmp_path: Path, late_ms: float) -> None:
    """A latency measured a few ms short puts the leak late in the filter's span: the first,
    cheap look for a leak must see it there too (a 2 ms look saw nothing past 1.9 ms)."""
    singers = [Singer("ann", "S", -35.0, seed=1, late_ms=late_ms)]
    make_take(tmp_path / "take", singers)
    report, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)
    assert "removed" in _reported(report, "ann")


def test_a_leak_path_that_steps_is_refitted_in_windows(tmp_path: Path) -> None:
    """A headset moved at mid-take: the path's gain steps by 6 dB.  The whole-take fit's
    compromise is left in every quiet hop alike, so only a fit per quarter of the take shows
    that the path changed (before, 10 dB was removed; the windows blur the step over ±8 s)."""
    singers = [Singer("ann", "S", -35.0, seed=1, step_gain_db=6.0, seconds=120.0)]
    make_take(tmp_path / "take", singers, seconds=120.0)
    _, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    reduction, vte = bleed_figures(singers[0], stems[0])
    assert reduction >= 20.0 and vte >= VOICE_TO_ERROR_DB, (reduction, vte)


def test_late_start_gap_and_no_backing(tmp_path: Path) -> None:
    """Ann starts after the count-in (no count-in to fit on) and loses 350 ms of input; the
    mix leaves the backing out, but the singers heard it."""
    singers = [
        Singer("ann", "S", -30.0, seed=1, start=4 * RATE, seconds=26.0, gap=(12 * RATE, 16800)),
        Singer("ben", "A", -45.0, seed=2, start=RATE, seconds=29.0),
    ]
    make_take(tmp_path / "take", singers)
    report, stems = run_mix(tmp_path / "take", tmp_path / "tmp", "--no-backing")
    _check(singers, stems)
    lo, n = singers[0].gap or (0, 0)
    ramp = round(0.005 * RATE)
    assert not np.any(stems[0][lo + ramp : lo + n - ramp])  # the gap stays silent
    assert len(stems) == 2  # and no backing stem


def test_take_without_tempo(tmp_path: Path) -> None:
    """No settings: no click, only the backing was heard."""
    singers = [Singer("ann", "S", -30.0, seed=1), Singer("ben", "A", -22.0, seed=2)]
    make_take(tmp_path / "take", singers, settings=False)
    _, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)


def test_backing_per_part(tmp_path: Path) -> None:
    """Mono backings, one per part: each singer heard (and leaks) their own part's."""
    singers = [
        Singer("ann", "S", -30.0, seed=1),
        Singer("ben", "A", -22.0, seed=2),
        Singer("cy", "T", -48.0, seed=3),
    ]
    make_take(tmp_path / "take", singers, stereo=False, backing_parts=["S", "A", "T"])
    _, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)


def test_untrustworthy_fit_leaves_the_recording_alone(tmp_path: Path) -> None:
    """Ann has no leak at all; Ben sings through the count-in and every rest, and Cy through
    every rest (a count-in of four clicks is too short to fit on), so nothing shows what
    their microphones pick up alone.  Every stem stays exactly as recorded, and the table
    says why: for Ann that there is no leak, for Ben and Cy, who have one, that it could not
    be measured."""
    singers = [
        Singer("ann", "S", -150.0, seed=1),
        Singer("ben", "A", -30.0, seed=2, sings_in_rests=True, sings_in_count_in=True),
        Singer("cy", "T", -30.0, seed=3, sings_in_rests=True),
    ]
    make_take(tmp_path / "take", singers)
    report, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _, kept = run_mix(tmp_path / "take", tmp_path / "tmp", "--keep-bleed")
    for s, stem, raw in zip(singers, stems, kept, strict=True):
        assert np.array_equal(stem, raw), s.name
    assert _reported(report, "ann").startswith("kept: no leak found"), report
    for name in ("ben", "cy"):
        assert _reported(report, name) == f"kept: {NEVER_QUIET_REASON}", report


def test_a_silent_recording_is_said_to_be_silent(tmp_path: Path) -> None:
    """A singer whose microphone was not connected: the report says the recording is
    silent, not that it has no quiet passage."""
    silent = MixSinger("Ann", "S", np.zeros((8 * RATE, 1), np.float32))
    take = build_take(tmp_path / "take", [silent, *choir(8.0)[:1]], settings=TEMPO)
    report, _ = run_mix(take, tmp_path / "tmp")
    assert _reported(report, "Ann") == f"kept: {SILENT_REASON}", report


@pytest.mark.parametrize("leak_db", [-50.0, -20.0])
def test_sixteen_bit_recording(tmp_path: Path, leak_db: float) -> None:
    """A 16-bit recording (kept as integers in the scratch folder) is cleaned into float."""
    import soundfile as sf

    singers = [Singer("ann", "S", leak_db, seed=4)]
    make_take(tmp_path / "take", singers)
    wav = tmp_path / "take" / "ann.wav"
    x, _ = sf.read(wav, dtype="float64")
    sf.write(wav, x, RATE, subtype="PCM_16")
    # the truth's voice now carries the 16-bit rounding: measure against what was written
    q, _ = sf.read(wav, dtype="float64")
    singers[0].truth["noise"][: len(q)] += q - x
    _, stems = run_mix(tmp_path / "take", tmp_path / "tmp")
    _check(singers, stems)


def test_unreadable_backing_left_out_without_backing(tmp_path: Path) -> None:
    """With ``--no-backing`` the backing is read only for bleed removal: a broken one does not
    stop the mix (it does without the option)."""
    import subprocess

    from tests.mix.test_mix_badtakes import mix_command, mix_env

    singers = [Singer("ann", "S", -30.0, seed=1, seconds=12.0)]
    make_take(tmp_path / "take", singers, seconds=12.0)
    (tmp_path / "take" / "backing" / "all.wav").write_bytes(b"not audio at all" * 64)
    for options, code in ((["--no-backing"], 0), ([], 2)):
        done = subprocess.run(
            mix_command(tmp_path / "take", *options), capture_output=True, text=True,
            env=mix_env(tmp_path), timeout=120,
        )  # fmt: skip
        assert done.returncode == code, done.stderr


def test_a_parts_program_is_scanned_once_per_process_when_its_content_is_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server worker prepares a take's recordings one job after the other: the program of
    a part (click and backing) is scanned by the first and reused by the next; a backing
    whose content is not pinned by a sha256 is scanned every time."""
    import threading

    from tutti.audio.program import ProgramSound
    from tutti.mix import debleed
    from tutti.mix.scratch import RawAudio
    from tutti.takeformat import Backing
    from tutti.wire import SessionSettings

    scans: list[int] = []
    real = ProgramSound.scan_peak

    def counting(self: ProgramSound, *args: object, **kwargs: object) -> float:
        scans.append(self.frames)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ProgramSound, "scan_peak", counting)
    monkeypatch.setattr(debleed, "_SCANS", {})
    settings = SessionSettings(title="t", rate=RATE, bpm=120)
    raw = RawAudio(tmp_path / "backing.raw", 2)
    raw.append(np.full((3 * RATE, 2), 1.5, np.float32))  # peaks over full scale: limited
    stop = threading.Event()

    def heard(sha: str) -> debleed._Heard | None:
        programs = debleed.HeardPrograms(settings, RATE, [Backing("S", "b.flac", sha, 0)])
        programs.backing_ready(0, raw)
        return programs.heard("S", stop)

    first, again = heard("ab" * 32), heard("ab" * 32)
    assert first is not None and again is not None
    assert len(scans) == 1
    assert again.sound.limited and first.sound.limited
    assert np.array_equal(again.hop_energy, first.hop_energy) and first.hop_energy.any()
    other = heard("cd" * 32)  # another backing: its own scan
    assert len(scans) == 2 and other is not None
    heard(""), heard("")  # not pinned: never reused
    assert len(scans) == 4
    raw.close()


def test_a_parts_program_is_rendered_once_and_read_as_rendered_by_range(tmp_path: Path) -> None:
    """Each part's program (click and a backing that clips, so soft-limited) is rendered
    whole once: every range a recording asks for, inside the program or across its ends,
    is the same samples as the program rendered for that range; the server's kept one is
    opened by the next job instead of rendered again, and a backing not pinned by a sha256
    is rendered in the mix's scratch folder only."""
    import threading

    from tutti.mix import debleed
    from tutti.mix.scratch import RawAudio
    from tutti.takeformat import Backing
    from tutti.wire import SessionSettings

    settings = SessionSettings(title="t", rate=RATE, bpm=100)
    raw = RawAudio(tmp_path / "backing.raw", 2)
    rng = np.random.default_rng(7)
    raw.append((rng.standard_normal((5 * RATE, 2)) * 0.6).astype(np.float32))
    stop = threading.Event()
    kept, scratch = tmp_path / "kept", tmp_path / "scratch"

    def heard(sha: str, where: Path) -> tuple[debleed._Heard, RawAudio, list[RawAudio]]:
        opened: list[RawAudio] = []
        programs = debleed.HeardPrograms(
            settings, RATE, [Backing("S", "b.flac", sha, 0)], scratch=where, kept=kept,
            opened=opened,
        )  # fmt: skip
        programs.backing_ready(0, raw)
        got = programs.heard("S", stop)
        assert got is not None and got.rendered is not None
        return got, got.rendered, opened

    first, rendered, opened = heard("ab" * 32, scratch)
    assert first.sound.limited and first.channels == 2
    assert opened == [rendered] and rendered.path.parent == kept
    frames = first.sound.frames
    for lo, hi in [(-500, 300), (0, 4096), (12345, 12345 + 70000), (frames - 99, frames + 800),
                   (frames + 5, frames + 10), (-RATE, frames + RATE)]:  # fmt: skip
        assert np.array_equal(first.render(lo, hi), first.sound.render(lo, hi)), (lo, hi)
    made = rendered.path.stat().st_mtime_ns
    again, reread, _ = heard("ab" * 32, tmp_path / "other-scratch")  # the next job: opened
    assert reread.path == rendered.path and reread.path.stat().st_mtime_ns == made
    assert np.array_equal(again.render(100, 9000), first.sound.render(100, 9000))
    _, loose, _ = heard("", scratch)  # not pinned: its content may differ next time
    assert loose.path.parent == scratch
    assert sorted(p.name.endswith(".program.f32") for p in kept.iterdir()) == [True]
    for r in (rendered, reread, loose):
        r.close()
    raw.close()
