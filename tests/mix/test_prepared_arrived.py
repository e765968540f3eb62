"""A recording the server's upload check decoded is not decoded again: its pass 1 takes the
check's samples (tutti.server.audiocheck, tutti.mix.prepared), and keeps what decoding the
file would have kept."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audio.test_mixcmd import build_take
from tests.mix.test_groupsums import _choir, _with_backings, count_decodes
from tutti.mix.prepared import ARRIVED, arrived_name, arriving, keep_arrived
from tutti.mix.scratch import RawAudio
from tutti.server.audiocheck import check_audio
from tutti.server.mixing import MixJob, PrepareJob, prepare_recording


def _pinned_take(folder: Path) -> tuple[Path, list[str]]:
    """A take of four singers (one recorded at 16 bits), every recording pinned by its
    sha256 as the server's take.json pins it, with a click and a backing per part."""
    singers = _choir(4)
    singers[1] = dataclasses.replace(singers[1], subtype="PCM_16")
    take = build_take(folder, singers)
    _with_backings(take, "SATB")
    manifest = json.loads((take / "take.json").read_text(encoding="utf-8"))
    for rec in manifest["recordings"]:
        rec["sha256"] = hashlib.sha256((take / rec["file"]).read_bytes()).hexdigest()
    (take / "take.json").write_text(json.dumps(manifest), encoding="utf-8")
    return take, [s.file for s in singers]


def _arrive(take: Path, kept: Path, file: str, key: str) -> None:
    """What the server does with an upload: check it, keeping what it decoded."""
    info = check_audio(take / file, decoded=arriving(kept, key))
    assert info.decoded
    raw = RawAudio.existing(arriving(kept, key), info.channels, info.frames,
                            int16=info.subtype == "PCM_16")  # fmt: skip
    raw.close()
    sha = hashlib.sha256((take / file).read_bytes()).hexdigest()
    keep_arrived(kept, arrived_name(sha), raw, file)


def _kept(kept: Path) -> dict[str, tuple[bytes, Any]]:
    """Each kept recording's samples and analysis, by its recording's file."""
    out = {}
    for meta in kept.glob("*.json"):
        about = json.loads(meta.read_text(encoding="utf-8"))
        out[about["file"]] = (meta.with_suffix(".raw").read_bytes(), about["analysis"])
    return out


def test_pass_1_takes_the_checks_samples_and_keeps_what_decoding_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    take, files = _pinned_take(tmp_path / "take")
    made = tmp_path / "made"  # the reference: every pass 1 decodes its file
    for f in files:
        prepare_recording(PrepareJob(str(take), str(made), f))
    kept = MixJob(str(take), str(take / "mix"), 0).prepared
    for k, f in enumerate(files):
        _arrive(take, kept, f, f"upload{k}")
    decoded = count_decodes(monkeypatch, take)
    for f in files:
        prepare_recording(PrepareJob(str(take), str(take / "mix"), f))
    assert not [d for d in decoded if d in files]  # only the backings were decoded
    reference = _kept(MixJob(str(take), str(made), 0).prepared)
    assert _kept(kept) == reference and len(reference) == len(files)
    assert not list((kept / ARRIVED).iterdir())  # each was taken by its pass 1


def test_a_decoded_recording_that_does_not_fit_is_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    take, files = _pinned_take(tmp_path / "take")
    kept = MixJob(str(take), str(take / "mix"), 0).prepared
    _arrive(take, kept, files[0], "upload0")
    raw_file = next((kept / ARRIVED).glob("*.raw"))
    with open(raw_file, "r+b") as f:  # one frame short of the recording
        f.truncate(raw_file.stat().st_size - 4)
    meta_file = raw_file.with_suffix(".json")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta_file.write_text(json.dumps(meta | {"frames": meta["frames"] - 1}), encoding="utf-8")
    decoded = count_decodes(monkeypatch, take)
    prepare_recording(PrepareJob(str(take), str(take / "mix"), files[0]))
    assert files[0] in decoded
    samples = np.frombuffer(next(kept.glob("*.raw")).read_bytes(), np.float32)
    assert samples.size == json.loads(next(kept.glob("*.json")).read_text())["frames"]
    assert not list((kept / ARRIVED).iterdir())


def test_a_refused_check_leaves_nothing_decoded(tmp_path: Path) -> None:
    take, files = _pinned_take(tmp_path / "take")
    data = (take / files[0]).read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) * 2 // 3])
    kept = MixJob(str(take), str(take / "mix"), 0).prepared
    with pytest.raises(ValueError, match="truncated or corrupt"):
        check_audio(cut, decoded=arriving(kept, "upload0"))
    assert not list((kept / ARRIVED).iterdir())
