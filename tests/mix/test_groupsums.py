"""Groups' sums kept and summed ahead give the mix the same bits as summing them in the mix
(tutti.audio.voicesum, tutti.mix.groupsums), and the voice order is the take's, not the order
the recordings' pass 1 happened to end in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.audio.test_mixcmd import Singer, build_take, tone
from tutti.audio.mixdown import Mixdown, MixSettings, Voice
from tutti.audio.voicesum import GROUP
from tutti.mix import passes
from tutti.mix.decode import decode
from tutti.mix.folder import MixError
from tutti.mix.groupsums import FolderSums, sums_folder
from tutti.mix.prepared import ended_marker
from tutti.server.mixing import MixJob, PrepareJob, make_mix, prepare_recording

ROOT = Path(__file__).resolve().parents[2]
RATE = 48000


class _Counting(FolderSums):
    """A folder store that counts what the voice pass found and made."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.found = 0
        self.made = 0

    def find(self, key: str, lo: int, hi: int) -> Any:
        kept = super().find(key, lo, hi)
        self.found += kept is not None
        return kept

    def start(self, key: str, lo: int, hi: int) -> Any:
        self.made += 1
        return super().start(key, lo, hi)


def _voices(n: int, gains: dict[int, float] | None = None) -> list[tuple[np.ndarray, Voice]]:
    out = []
    for k in range(n):
        audio = tone(110.0 + 37.0 * k, 3.0, 0.05 + 0.01 * (k % 5), seed=k)
        start = 4800 * (k % 3) - 2400  # ties, and starts before the timeline's 0
        gain = (gains or {}).get(k, 0.0)
        out.append((audio, Voice(f"v{k}", start, gain, (k % 7) / 3.5 - 1.0, order=k, key=f"a{k}")))
    return out


def _bus(voices: list[tuple[np.ndarray, Voice]], sums: FolderSums | None = None) -> np.ndarray:
    mix = Mixdown(MixSettings(RATE), 4 * RATE)
    for audio, voice in voices:
        mix.add_voice(audio, voice)
    mix.finish_voices(2, sums)
    return np.array(mix.bus.read(0, mix.frames))


def test_kept_sums_are_the_bits_the_voice_pass_makes(tmp_path: Path) -> None:
    n = 2 * GROUP + 3  # three groups, the last one short
    plain = _bus(_voices(n))
    first = _Counting(tmp_path / "sums")
    assert np.array_equal(_bus(_voices(n), first), plain)
    assert (first.found, first.made) == (0, 3)
    again = _Counting(tmp_path / "sums")
    assert np.array_equal(_bus(_voices(n), again), plain)
    assert (again.found, again.made) == (3, 0)
    # one singer's gain changes one group's sum: the other two are read
    louder = _Counting(tmp_path / "sums")
    moved = _bus(_voices(n, {GROUP + 1: 3.0}), louder)
    assert (louder.found, louder.made) == (2, 1)
    assert np.array_equal(moved, _bus(_voices(n, {GROUP + 1: 3.0})))
    assert not np.array_equal(moved, plain)


def test_the_voice_order_is_the_takes_not_the_order_voices_arrive() -> None:
    voices = _voices(GROUP + 5)
    assert np.array_equal(_bus(voices), _bus(voices[::-1]))


def _choir(n: int) -> list[Singer]:
    parts = "SATB"
    return [
        Singer(
            f"S{k}",
            parts[k % 4],
            tone(140.0 + 23.0 * k, 4.0, 0.1, seed=k),
            start_offset=150 * k,
            latency=256,
            file=f"rec{k}.flac",
        )  # fmt: skip
        for k in range(n)
    ]


def _tutti_mix(take: Path, out: Path, *options: str) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, "-m", "tutti", "mix", str(take), "-o", str(out), "--jobs", "2", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return np.asarray(sf.read(str(out), dtype="int32")[0])


def _sums(take: Path) -> dict[str, tuple[int, int]]:
    folder = sums_folder(Path(MixJob(str(take), str(take / "mix"), 0).prepared))
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.f32")}


def test_groups_summed_before_the_last_upload_are_what_the_mix_reads(tmp_path: Path) -> None:
    singers = _choir(GROUP + 2)
    take = tmp_path / "take"
    # the server's take folder while the last singer is still uploading
    build_take(take, singers[:-1])
    expected = tuple((s.file, s.part) for s in singers[:-1]) + ((None, singers[-1].part),)
    fds = len(os.listdir("/proc/self/fd"))
    for s in singers[:-1]:
        prepare_recording(PrepareJob(str(take), str(take / "mix"), s.file, expected))
    assert len(os.listdir("/proc/self/fd")) == fds  # a worker runs many jobs: nothing left open
    ahead = _sums(take)
    assert len(ahead) == 1  # the first group is whole; the second waits for the last singer
    # the last upload lands: the mix reads the first group's sum and sums the second
    build_take(take, singers)
    files = tuple(s.file for s in singers)
    made = make_mix(MixJob(str(take), str(take / "mix"), 1, files=files))
    after = _sums(take)
    assert len(after) == 2 and all(after[k] == v for k, v in ahead.items())
    ours = np.asarray(sf.read(str(take / "mix" / "mix-1.flac"), dtype="int32")[0])
    assert made.duration_s > 4.0
    # the same samples as `tutti mix` of the folder, which keeps nothing and sums everything
    assert np.array_equal(ours, _tutti_mix(take, tmp_path / "theirs.flac"))


def test_a_prediction_that_fails_costs_time_not_samples(tmp_path: Path) -> None:
    singers = _choir(GROUP + 1)
    take = tmp_path / "take"
    build_take(take, singers)
    # predicted: one more soprano after them, who never uploads; the sopranos' pans in the
    # first group are not the ones the mix gives them
    expected = tuple((s.file, s.part) for s in singers) + ((None, "S"),)
    for s in singers:
        prepare_recording(PrepareJob(str(take), str(take / "mix"), s.file, expected))
    ahead = _sums(take)
    assert len(ahead) == 1
    files = tuple(s.file for s in singers)
    make_mix(MixJob(str(take), str(take / "mix"), 1, files=files))
    assert not set(ahead) & set(_sums(take))  # not used, so not kept
    ours = np.asarray(sf.read(str(take / "mix" / "mix-1.flac"), dtype="int32")[0])
    assert np.array_equal(ours, _tutti_mix(take, tmp_path / "theirs.flac"))


def test_a_failed_pass_1_leaves_its_end_mark_for_a_waiting_mix(tmp_path: Path) -> None:
    take = build_take(tmp_path / "take", _choir(1))
    (take / "rec0.flac").write_bytes(b"fLaC" + bytes(500))  # damaged after take.json
    job = PrepareJob(str(take), str(take / "mix"), "rec0.flac")
    with pytest.raises(MixError, match="rec0.flac"):
        prepare_recording(job)
    kept = Path(MixJob(str(take), str(take / "mix"), 0).prepared)
    assert ended_marker(kept, "rec0.flac").exists()  # a mix waiting for it stops waiting


def _with_backings(take: Path, parts: str) -> None:
    """Give ``take`` a stereo backing per part, pinned by sha256 as the server's take.json
    pins them, and the session's tempo (so the singers heard a click and a backing)."""
    manifest = json.loads((take / "take.json").read_text(encoding="utf-8"))
    (take / "backing").mkdir(exist_ok=True)
    backings = []
    for k, part in enumerate(parts):
        audio = np.hstack([tone(220.0 + 55.0 * k, 4.5, 0.1, seed=40 + k)] * 2)
        file = f"backing/{part}.flac"
        sf.write(take / file, audio, RATE, subtype="PCM_24")
        digest = hashlib.sha256((take / file).read_bytes()).hexdigest()
        backings.append({"part": part, "file": file, "sha256": digest, "timeline_start": 0})
    manifest["backing"] = backings
    manifest["settings"] = {"title": "t", "rate": RATE, "bpm": 120, "count_in_bars": 1}
    (take / "take.json").write_text(json.dumps(manifest), encoding="utf-8")


def count_decodes(monkeypatch: pytest.MonkeyPatch, take: Path) -> list[str]:
    """From now on, the files (relative to ``take``) that pass 1 decodes, as it decodes them."""
    decoded: list[str] = []

    def counting(audio: Any, *args: Any, **kwargs: Any) -> Any:
        decoded.append(audio.path.relative_to(take).as_posix())
        return decode(audio, *args, **kwargs)

    monkeypatch.setattr(passes, "decode", counting)
    return decoded


def test_each_backing_is_decoded_once_per_take_and_the_mix_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    singers = _choir(6)  # S A T B S A
    take = build_take(tmp_path / "take", singers)
    _with_backings(take, "SATB")
    decoded = count_decodes(monkeypatch, take)
    prepare_recording(PrepareJob(str(take), str(take / "mix"), singers[0].file))
    # a soprano's pass 1 reads her recording and the backing she heard, not the others'
    assert sorted(decoded) == ["backing/S.flac", singers[0].file]
    decoded.clear()
    for s in singers[1:]:
        prepare_recording(PrepareJob(str(take), str(take / "mix"), s.file))
    assert sorted(decoded) == sorted(["backing/A.flac", "backing/T.flac", "backing/B.flac"]
                                     + [s.file for s in singers[1:]])  # fmt: skip
    decoded.clear()
    files = tuple(s.file for s in singers)
    make_mix(MixJob(str(take), str(take / "mix"), 1, files=files))
    assert decoded == []  # every recording and every backing as pass 1 kept them
    ours = np.asarray(sf.read(str(take / "mix" / "mix-1.flac"), dtype="int32")[0])
    assert np.array_equal(ours, _tutti_mix(take, tmp_path / "theirs.flac"))
    # a backing replaced (another sha256) is decoded again, not read from the old one
    manifest = json.loads((take / "take.json").read_text(encoding="utf-8"))
    sf.write(take / "backing/T.flac", np.zeros((RATE, 2), np.float32), RATE, subtype="PCM_24")
    new = hashlib.sha256((take / "backing/T.flac").read_bytes()).hexdigest()
    manifest["backing"][2]["sha256"] = new
    (take / "take.json").write_text(json.dumps(manifest), encoding="utf-8")
    make_mix(MixJob(str(take), str(take / "mix"), 2, files=files))
    assert "backing/T.flac" in decoded and "backing/S.flac" not in decoded
    again = np.asarray(sf.read(str(take / "mix" / "mix-2.flac"), dtype="int32")[0])
    assert np.array_equal(again, _tutti_mix(take, tmp_path / "theirs2.flac"))
