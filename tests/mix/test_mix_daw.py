"""The stems and the projects a leader drops into a DAW: every stem named after its singer and
part (safe for any Unicode name, never two alike), the backing a stem of its own, and both
project files referencing exactly the stems on disk, with the singers' names as track names."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf

from tests.audio.test_mixcmd import RATE, Singer, build_take, tone
from tutti.cli import main

ZOE = 'Zoë "Z" Ñ 🎵'
#: REAPER quotes a string in the first of ", ' and ` that it does not contain.
RPP_STRING = r"""("[^"]*"|'[^']*'|`[^`]*`)"""


def _rpp_values(text: str, key: str) -> list[str]:
    return [m.group(1)[1:-1] for m in re.finditer(rf"^\s*{key} {RPP_STRING}\s*$", text, re.M)]


def test_stems_and_projects_agree_for_any_name(tmp_path: Path) -> None:
    singers = [
        Singer(ZOE, "S", tone(440, 3.0, seed=1), file="rec0.flac"),
        Singer("Ann", "A", tone(330, 3.0, seed=2), file="rec1.flac"),
        Singer("Ann", "A", tone(220, 3.0, seed=3), file="rec2.flac"),  # two singers, one name
        Singer("Mañana/Ω", "T", tone(165, 3.0, seed=4), file="rec3.flac"),
    ]
    backing = (0.1 * np.random.default_rng(9).standard_normal((3 * RATE, 2))).astype(np.float32)
    take = build_take(tmp_path / "take", singers, backing=backing)
    assert main(["mix", str(take), "--project", "--jobs", "2"]) == 0
    on_disk = sorted(p.name for p in (take / "mix-stems").iterdir())
    assert on_disk == [
        "00-Zoë_Z_Ñ-S.flac",
        "01-Ann-A.flac",
        "02-Ann-A.flac",
        "03-Mañana_Ω-T.flac",
        "04-Backing-all.flac",
    ], on_disk
    # REAPER: one track per stem, its FILE on disk, the singer's name as given
    rpp = (take / "mix.rpp").read_text(encoding="utf-8")
    files = _rpp_values(rpp, "FILE")
    assert sorted(Path(f).name for f in files) == on_disk
    assert all((take / f).is_file() for f in files)
    names = _rpp_values(rpp, "NAME")[::2]  # the track's NAME, then its item's
    assert names == [f"{ZOE} (S)", "Ann (A)", "Ann (A)", "Mañana/Ω (T)", "Backing (all)"]
    # Audacity: the same files (its tracks are named after them)
    lof = (take / "mix.lof").read_text(encoding="utf-8")
    listed = re.findall(r'^file "([^"]+)" offset 0\.000000000$', lof, re.M)
    assert listed == files
    # the backing stem is the backing on the timeline, at the mix's backing gain (-6 dB)
    stem, rate = sf.read(take / "mix-stems" / "04-Backing-all.flac", dtype="float32")
    assert rate == RATE
    np.testing.assert_allclose(stem[: backing.shape[0]], backing, atol=2e-6)
    assert "VOLPAN 0.501187" in rpp  # -6 dB on the backing's track


def test_the_mix_runs_from_the_song_to_where_the_singing_stopped(tmp_path: Path) -> None:
    """Count-in trimmed (one bar at 120 bpm: 2 s), the backing cut where the last singer
    stopped; --keep-count-in and --tail S keep them."""
    settings = {"title": "t", "rate": RATE, "bpm": 120.0, "beats_per_bar": 4, "count_in_bars": 1}
    voice = np.zeros((5 * RATE, 1), np.float32)
    voice[3 * RATE, 0] = 0.5  # a click 3 s into the recording: 1 s into the song
    singers = [Singer("Ann", "S", voice, start_offset=0, latency=0)]
    backing = (0.05 * np.random.default_rng(3).standard_normal((9 * RATE, 1))).astype(np.float32)
    take = build_take(tmp_path / "take", singers, backing=backing, settings=settings)

    def mixed(*options: str) -> tuple[np.ndarray, np.ndarray]:
        out = tmp_path / f"mix{len(options)}-{'-'.join(options)}.wav"
        args = ["mix", str(take), "-o", str(out), "--stems", "--no-loudness-match", *options]
        assert main(args) == 0
        stem, _ = sf.read(out.parent / f"{out.stem}-stems" / "00-Ann-S.wav", dtype="float32")
        return sf.read(out, dtype="float32")[0], stem

    mix, stem = mixed()
    assert mix.shape[0] == 3 * RATE and stem.shape[0] == 3 * RATE  # 2 s to 5 s
    assert int(np.argmax(np.abs(stem))) == RATE
    mix, stem = mixed("--keep-count-in")
    assert mix.shape[0] == 5 * RATE and int(np.argmax(np.abs(stem))) == 3 * RATE
    mix, stem = mixed("--tail", "2.5")
    assert mix.shape[0] == int(5.5 * RATE)
    mix, stem = mixed("--tail", "60")  # no more than there is: the backing ends at 9 s
    assert mix.shape[0] == 7 * RATE
