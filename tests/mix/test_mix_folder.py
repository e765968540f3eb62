"""``tutti mix`` on take folders that are unusual but valid (mixed like ordinary ones), and
where its outputs go: created only when complete, nothing left after a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.mix.badtakes import ANNA, BEN, PIANO, write_base
from tutti.cli import main
from tutti.mix.outputs import SCRATCH_PREFIX


def _zero_streaminfo_total(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[21] &= 0xF0
    b[22:26] = bytes(4)
    path.write_bytes(bytes(b))


def _mix(take: Path, *options: str) -> tuple[np.ndarray, list[np.ndarray]]:
    assert main(["mix", str(take), "--stems", "--no-drift", *options]) == 0
    mix, _ = sf.read(take / "mix.flac", dtype="int32")
    stems = [sf.read(p, dtype="int32")[0] for p in sorted((take / "mix-stems").iterdir())]
    return mix, stems


def test_flac_without_a_length_in_its_header_mixes_the_same(tmp_path: Path) -> None:
    """STREAMINFO total 0 (streaming encoders write it): counted, then mixed sample for
    sample as the same file with its length."""
    plain = write_base(tmp_path / "plain")
    streamed = tmp_path / "streamed"
    shutil.copytree(plain, streamed)
    _zero_streaminfo_total(streamed / ANNA)
    _zero_streaminfo_total(streamed / PIANO)
    assert sf.info(str(streamed / ANNA)).frames != sf.info(str(plain / ANNA)).frames
    want, want_stems = _mix(plain)
    got, got_stems = _mix(streamed)
    assert np.abs(want).max() > 2**20
    np.testing.assert_array_equal(got, want)
    for g, w in zip(got_stems, want_stems, strict=True):
        np.testing.assert_array_equal(g, w)


def test_links_inside_the_folder_are_followed(tmp_path: Path) -> None:
    take = write_base(tmp_path / "take")
    (take / "real").mkdir()
    shutil.move(take / BEN, take / "real" / "ben.wav")
    (take / BEN).symlink_to(Path("..") / "real" / "ben.wav")  # relative, stays inside
    shutil.move(take / "backing", take / "real" / "backing")
    (take / "backing").symlink_to(take / "real" / "backing", target_is_directory=True)
    assert main(["mix", str(take)]) == 0
    assert sf.info(str(take / "mix.flac")).frames > 0


def test_a_failure_after_the_first_stem_leaves_no_stem_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second recording is cut off: the first one's stem was already written (to the
    scratch folder), and must not appear."""
    take = write_base(tmp_path / "take")
    data = (take / BEN).read_bytes()
    manifest = (take / "take.json").read_text()
    (take / BEN).write_bytes(data[: len(data) // 2])
    (take / "take.json").write_text(manifest.replace('"frames": 11025', '"frames": 5490'))
    before = sorted(p.name for p in take.rglob("*"))
    assert main(["mix", str(take), "--stems", "--project", "--jobs", "1"]) == 2
    assert "ben.wav" in capsys.readouterr().err
    assert sorted(p.name for p in take.rglob("*")) == before


def test_an_output_folder_is_made_only_for_a_finished_mix(tmp_path: Path) -> None:
    take = write_base(tmp_path / "take")
    out = tmp_path / "new" / "deeper" / "song.wav"
    (take / PIANO).write_bytes(b"not audio")
    assert main(["mix", str(take), "-o", str(out), "--stems"]) == 2
    assert not (tmp_path / "new").exists()
    assert main(["mix", str(take), "-o", str(out), "--stems", "--no-backing"]) == 0
    assert sf.info(str(out)).frames > 0
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "song-stems",
        "song.report.txt",
        "song.wav",
    ]


def test_a_failed_mix_keeps_the_previous_one(tmp_path: Path) -> None:
    take = write_base(tmp_path / "take")
    assert main(["mix", str(take), "--stems"]) == 0
    old = (take / "mix.flac").read_bytes()
    stems = sorted((take / "mix-stems").iterdir())
    (take / ANNA).write_bytes((take / ANNA).read_bytes()[:-1])  # its last frame is damaged
    assert main(["mix", str(take), "--stems"]) == 2
    assert (take / "mix.flac").read_bytes() == old
    assert sorted((take / "mix-stems").iterdir()) == stems
    assert not list(take.glob(f"{SCRATCH_PREFIX}*"))


def test_names_are_shown_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in names are text, not rich markup: "[alto]" is shown, "[/]" breaks nothing."""
    take = write_base(tmp_path / "take")
    text = (take / "take.json").read_text()
    text = text.replace('"Anna"', '"Anna [alto]"').replace('"Ben"', '"[/] Ben"')
    text = text.replace('"Bad takes"', '"Bad [b]takes[/b]"')
    (take / "take.json").write_text(text)
    assert main(["mix", str(take), "--project"]) == 0
    first = capsys.readouterr().out.splitlines()[0]  # piped: what is mixed
    assert first.startswith('mixing 2 recordings and 1 backing track of take "Bad [b]takes[/b]"')
    report = (take / "mix.report.txt").read_text(encoding="utf-8")
    assert "Anna [alto]" in report and "[/] Ben" in report
    assert 'NAME "Anna [alto] (S)"' in (take / "mix.rpp").read_text()


def test_a_folder_name_that_is_not_utf8_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Linux allows any bytes in a name; libsndfile cannot be given them."""
    take = write_base(tmp_path / "take")
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/take-\xff"))
    take.rename(odd)
    assert main(["mix", str(odd)]) == 2
    assert "not a UTF-8 name" in capsys.readouterr().err
    fine = odd.rename(tmp_path / "take")
    assert main(["mix", str(fine), "-o", os.fsdecode(bytes(tmp_path) + b"/mix-\xff.flac")]) == 2
    assert "-o" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take"]
