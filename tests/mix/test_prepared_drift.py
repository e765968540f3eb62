"""The server's mix of a take whose singers' clocks differ: each recording is prepared as it
arrives as far as it goes alone (drift from its clock map or from the program's bleed), one
whose drift only the rest of the take can tell waits for the mix, and the mix and every remix
give the samples ``tutti mix`` gives (tutti.mix.prepared, tutti.mix.driftsense)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.audio.drifttakes import SETTINGS, backing, program, record, song
from tests.audio.test_mixcmd import RATE, Singer, build_take
from tests.mix.test_groupsums import _tutti_mix, count_decodes
from tutti.mix import passes
from tutti.mix.debleed import debleed
from tutti.mix.folder import MixError
from tutti.mix.prepared import PENDING, kept_files
from tutti.server.mixing import MixJob, PrepareJob, make_mix, prepare_recording

SECONDS = 60.0
#: Each singer: part, input clock (ppm), the program's bleed (dBFS), whether a clock map says it.
CHOIR = [
    ("S", 0.0, -40.0, False),
    ("A", 90.0, -30.0, False),  # its bleed tells its drift
    ("T", -100.0, None, False),  # only the others' onsets tell
    ("B", 0.0, -40.0, False),
    ("S", 60.0, -40.0, True),  # its recorder's clock map tells
]
#: The clock map's line sits this far from take.json's start (the recorder measured it).
MAP_OFFSET = 12
#: The onsets' singer lost input here (timeline seconds, length): faded by pass 1, in place.
GAP = (20.0, 0.3)


def _clock_map(frames: int, ppm: float, start: int) -> list[dict[str, int]]:
    marks = [*range(0, frames, 5 * RATE), frames - 1]
    return [{"frame": f, "timeline": round(start + MAP_OFFSET + f / (1 + ppm * 1e-6))}
            for f in marks]  # fmt: skip


def _take(folder: Path) -> tuple[Path, tuple[str, ...]]:
    s = song(SECONDS, RATE)
    prog = program(s)
    recs = [record(s, f"{part}{k}", part, k + 1, ppm, bleed_db=db, prog=prog,
                   gap=GAP if k == 2 else None)
            for k, (part, ppm, db, _) in enumerate(CHOIR)]  # fmt: skip
    singers = [Singer(r.name, r.part, r.audio, file=f"{r.name}.flac") for r in recs]

    def edit(m: dict[str, Any]) -> None:
        for rec, (_, ppm, _, mapped) in zip(m["recordings"], CHOIR, strict=True):
            rec["shared_clock"] = ppm == 0.0
            if mapped:
                rec["clock_map"] = _clock_map(rec["frames"], ppm, 0)
        m["recordings"][2]["gaps"] = [{"at": round(GAP[0] * RATE), "frames": round(GAP[1] * RATE)}]

    take = build_take(folder, singers, backing=backing(s)[:, None].astype(np.float32),
                      settings=dict(SETTINGS), edit=edit)  # fmt: skip
    return take, tuple(s.file for s in singers)


def _files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _pending(kept: Path) -> set[str]:
    """The recordings (files) kept as pending entries."""
    metas = (kept / PENDING).glob("*.json")
    return {json.loads(m.read_text(encoding="utf-8"))["file"] for m in metas}


def test_separate_clocks_are_prepared_as_far_as_each_goes_alone_and_mix_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    take, files = _take(tmp_path / "take")
    for file in files:
        prepare_recording(PrepareJob(str(take), str(take / "mix"), file))
    kept = MixJob(str(take), str(take / "mix"), 0).prepared
    onsets = files[2]
    assert kept_files(kept) == set(files) - {onsets}  # the map's and the bleed's are done
    assert _pending(kept) == {onsets}  # decoded, waiting for the others' onsets
    decoded = count_decodes(monkeypatch, take)
    # a mix that fails after fading the pending recording's gap changes nothing kept
    before = _files(kept)

    def failing(item: Any, *args: Any, **kwargs: Any) -> Any:
        if item.rec.file == onsets:
            raise MixError("stopped for the test")
        return debleed(item, *args, **kwargs)

    monkeypatch.setattr(passes, "debleed", failing)
    with pytest.raises(MixError, match="stopped for the test"):
        make_mix(MixJob(str(take), str(take / "mix"), 1, files=files))
    assert _files(kept) == before
    monkeypatch.setattr(passes, "debleed", debleed)
    decoded.clear()
    make_mix(MixJob(str(take), str(take / "mix"), 1, files=files))
    assert decoded == ["backing.flac"]  # not pinned by a sha256, so not kept
    assert kept_files(kept) == set(files) and _pending(kept) == set()
    # nothing but entries (audio, analysis, envelope) is left where they are kept
    names = [n for n in _files(kept) if not n.startswith(("backing/", "sums/"))]
    assert all(n.endswith((".raw", ".json", ".env.npy", ".ended")) for n in names), names
    ours = np.asarray(sf.read(str(take / "mix" / "mix-1.flac"), dtype="int32")[0])
    assert np.array_equal(ours, _tutti_mix(take, tmp_path / "theirs.flac"))
    # a remix with a gain reads every recording where pass 1 placed it
    decoded.clear()
    make_mix(MixJob(str(take), str(take / "mix"), 2, gains_db=((onsets, -6.0),), files=files))
    assert decoded == ["backing.flac"]
    again = np.asarray(sf.read(str(take / "mix" / "mix-2.flac"), dtype="int32")[0])
    theirs = _tutti_mix(take, tmp_path / "theirs2.flac", "--gain", f"{onsets}=-6.0")
    assert np.array_equal(again, theirs)


def test_the_program_wave_is_made_once_per_take_for_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The click and backings at 8 kHz, which a separate clock's drift is measured against,
    are made by the first worker that needs them and kept with the take: another worker
    (nothing of its own in memory) reads the same samples instead of decoding the backings;
    a longer take makes a longer one, the same over the first one's length."""
    from tutti.mix import driftsense
    from tutti.mix.folder import probe
    from tutti.takeformat import Backing
    from tutti.wire import SessionSettings

    audio = np.stack([backing(song(8.0, RATE))] * 2, axis=1)
    sf.write(tmp_path / "b.flac", audio, RATE, subtype="PCM_24")
    sha = hashlib.sha256((tmp_path / "b.flac").read_bytes()).hexdigest()
    pinned = [(Backing("S", "b.flac", sha, 4800), probe(tmp_path, "b.flac", "backing"))]
    settings = SessionSettings(title="t", rate=RATE, bpm=120)
    made: list[str] = []
    real = driftsense._backing_wave

    def counting(audio: Any, *args: Any) -> None:
        made.append(audio.path.name)
        real(audio, *args)

    monkeypatch.setattr(driftsense, "_backing_wave", counting)
    monkeypatch.setattr(driftsense, "_WAVES", {})
    kept = tmp_path / "kept"
    first = driftsense.program_wave(settings, pinned, 5 * RATE, RATE, kept)
    assert first is not None and np.any(first) and made == ["b.flac"]
    driftsense._WAVES.clear()  # the take's other worker
    again = driftsense.program_wave(settings, pinned, 5 * RATE, RATE, kept)
    assert again is not None and np.array_equal(again, first) and made == ["b.flac"]
    driftsense._WAVES.clear()
    longer = driftsense.program_wave(settings, pinned, 9 * RATE, RATE, kept)
    assert longer is not None and len(made) == 2
    # the same samples (but the last: a click sounding there was cut at the shorter end)
    assert np.array_equal(longer[: len(first) - 1], first[:-1]) and len(longer) > len(first)
    assert [p.suffix for p in kept.iterdir()] == [".npy"]  # one wave; no temporary left
