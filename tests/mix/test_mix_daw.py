"""The stems and the projects a leader drops into a DAW: every stem named after its singer and
part (safe for any Unicode name, never two alike), the backing a stem of its own, and both
project files referencing exactly the stems on disk, with the singers' names as track names."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio.test_mixcmd import RATE, Singer, build_take, tone
from tutti.audio.daw import safe_name, stem_file_name
from tutti.cli import main

ZOE = 'Zoë "Z" Ñ 🎵'
#: REAPER quotes a string in the first of ", ' and ` that it does not contain.
RPP_STRING = r"""("[^"]*"|'[^']*'|`[^`]*`)"""
#: The longest file name ext4 takes, bytes.
NAME_MAX = 255


def _rpp_values(text: str, key: str) -> list[str]:
    return [m.group(1)[1:-1] for m in re.finditer(rf"^\s*{key} {RPP_STRING}\s*$", text, re.M)]


def _lof_files(text: str) -> list[str]:
    return re.findall(r'^file "([^"]+)" offset 0\.000000000$', text, re.M)


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


def test_names_in_4_byte_letters_fit_a_file_name(tmp_path: Path) -> None:
    """A name and a part of 40 letters of 4 bytes each (331 bytes as they were) are cut at a
    letter so that the stem's name stays within 255 bytes, number and part kept."""
    big = "\U00020000"  # 𠀀, 4 bytes in UTF-8
    singers = [
        Singer(big * 40, big * 40, tone(220, 1.0, seed=1), file="rec0.flac"),
        Singer(big * 40, big * 40, tone(330, 1.0, seed=2), file="rec1.flac"),  # the same
    ]
    take = build_take(tmp_path / "take", singers)
    assert main(["mix", str(take), "--project", "--jobs", "2"]) == 0
    on_disk = sorted(p.name for p in (take / "mix-stems").iterdir())
    assert [n[:3] for n in on_disk] == ["00-", "01-"] and len(set(on_disk)) == 2
    assert all(len(n.encode()) <= NAME_MAX and n.endswith(f"{big}.flac") for n in on_disk)
    files = _rpp_values((take / "mix.rpp").read_text(encoding="utf-8"), "FILE")
    assert [Path(f).name for f in files] == on_disk
    assert _lof_files((take / "mix.lof").read_text(encoding="utf-8")) == files
    # the part keeps up to half the room, the name the rest, whatever the number's width
    name = stem_file_name(12345, big * 200, big * 200, "opus")
    assert name == f"12345-{big * 30}-{big * 30}.opus" and len(name.encode()) == 252
    assert stem_file_name(3, big * 40, "Alto 2", "flac") == f"03-{big * 40}-Alto_2.flac"


def test_more_than_a_hundred_stems_stay_in_order(tmp_path: Path) -> None:
    """119 singers and a backing: both projects list the tracks in stem order (100 after 99,
    not after 10), the backing last; with the count known the numbers are as wide as it."""
    n = 119
    singers = [
        Singer(f"S{i}", "SATB"[i % 4], tone(150 + 3 * i, 0.3, 0.05, seed=i), file=f"r{i}.flac")
        for i in range(n)
    ]
    backing = tone(440, 0.3, 0.05, seed=999)
    take = build_take(tmp_path / "take", singers, backing=backing)
    assert main(["mix", str(take), "--project", "--jobs", "2", "--keep-bleed"]) == 0
    rpp = (take / "mix.rpp").read_text(encoding="utf-8")
    names = _rpp_values(rpp, "NAME")[::2]
    assert names == [f"S{i} ({'SATB'[i % 4]})" for i in range(n)] + ["Backing (all)"]
    files = _rpp_values(rpp, "FILE")
    assert [int(Path(f).name.split("-")[0]) for f in files] == list(range(n + 1))
    assert _lof_files((take / "mix.lof").read_text(encoding="utf-8")) == files
    assert all((take / f).is_file() for f in files)
    wide = [stem_file_name(i, f"S{i}", "S", "flac", count=n + 1) for i in range(n + 1)]
    assert wide[5] == "005-S5-S.flac" and wide == sorted(wide)
    assert stem_file_name(5, "S5", "S", "flac", count=100) == "05-S5-S.flac"


@pytest.mark.parametrize("name", ['my "best" mix', "new\nline"])
def test_an_output_name_no_project_can_hold_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A ``"`` (an Audacity .lof has no escape for it) or a line break in ``-o`` with
    ``--project``: exit 2 and one line that says why, before anything is read or made."""
    take = build_take(tmp_path / "take", [Singer("Ann", "S", tone(220, 1.0), file="rec0.flac")])
    out = tmp_path / "out" / f"{name}.flac"
    assert main(["mix", str(take), "-o", str(out), "--project"]) == 2
    err = capsys.readouterr().err
    assert "--project names the stems by path" in err and len(err.splitlines()) == 1, err
    assert not out.parent.exists()
    # REAPER quotes a string that holds ' and ` in ": such a name works
    odd = tmp_path / "out" / "it's `odd`.flac"
    assert main(["mix", str(take), "-o", str(odd), "--project", "--jobs", "2"]) == 0
    files = _rpp_values(odd.with_suffix(".rpp").read_text(encoding="utf-8"), "FILE")
    assert files == ["it's `odd`-stems/00-Ann-S.flac"] and (out.parent / files[0]).is_file()
    assert _lof_files(odd.with_suffix(".lof").read_text(encoding="utf-8")) == files


def test_invisible_characters_leave_file_names() -> None:
    """Format characters (Cf), variation selectors and marks on nothing are dropped, not kept
    invisible in a file name (nor turned into ``_``); a mark on a letter stays."""
    assert stem_file_name(12, "Anna \u2764\ufe0f", "S", "flac") == "12-Anna-S.flac"  # ❤️
    assert stem_file_name(20, "\u0301\u0302", "S", "flac") == "20-singer-S.flac"
    assert safe_name("a\u200fb \u202eevil\u202c", "x") == "ab_evil"  # direction marks
    assert safe_name("1\ufe0f\u20e3 Ben\u00ad", "x") == "1\u20e3_Ben"  # keycap, soft hyphen
    assert safe_name("\u845b\U000e0100 \u3164", "x") == "\u845b"  # a variation, a filler
    assert safe_name("Jose\u0301", "x") == "Jos\u00e9"  # composed
