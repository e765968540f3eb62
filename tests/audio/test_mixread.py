"""The mix's block reader: dr_flac (miniaudio) for FLAC gives exactly libsndfile's samples,
in blocks, and a cut-off or damaged FLAC yields fewer frames than its header promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tutti.mix.read import UNKNOWN_LENGTH, count_flac_frames, read_blocks

RATE = 48000


def _noise(frames: int, channels: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((frames, channels)) * 0.2, -1.0, 1.0).astype(np.float32)


def _read_all(path: Path, block: int, *, int16: bool) -> np.ndarray:
    info = sf.info(str(path))
    parts = [b.copy() for b in read_blocks(path, info, block, int16=int16)]
    assert all(p.shape[0] <= block for p in parts)
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("fmt", "subtype", "channels"),
    [
        ("FLAC", "PCM_16", 1),
        ("FLAC", "PCM_16", 2),
        ("FLAC", "PCM_24", 1),
        ("FLAC", "PCM_24", 2),
        ("WAV", "PCM_16", 1),
        ("WAV", "FLOAT", 2),
    ],
)
def test_blocks_equal_libsndfile(tmp_path: Path, fmt: str, subtype: str, channels: int) -> None:
    frames = 100_003  # not a multiple of the block or of a FLAC frame
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(str(path), _noise(frames, channels), RATE, subtype=subtype, format=fmt)
    int16 = subtype == "PCM_16"
    got = _read_all(path, 8192, int16=int16)
    want, _ = sf.read(str(path), dtype="int16" if int16 else "float32", always_2d=True)
    assert got.dtype == want.dtype
    assert got.shape == (frames, channels)
    np.testing.assert_array_equal(got, want)


def test_cut_off_flac_yields_fewer_frames(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(str(path), _noise(RATE * 4, 1), RATE, subtype="PCM_24")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    info = sf.info(str(path))
    got = _read_all(path, 1 << 16, int16=False)
    assert 0 < got.shape[0] < info.frames


def test_damaged_flac_frame_is_dropped_not_passed_on(tmp_path: Path) -> None:
    """Bytes flipped in the middle: the frame fails its CRC and is skipped, so the file yields
    fewer frames than the header says, which ``tutti mix`` reports."""
    path = tmp_path / "bad.flac"
    sf.write(str(path), _noise(RATE * 4, 1), RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0x5A for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))
    info = sf.info(str(path))
    got = _read_all(path, 1 << 16, int16=True)
    assert got.shape[0] < info.frames


def test_not_flac_inside_gives_a_clear_error(tmp_path: Path) -> None:
    """A file that passed the header check but whose FLAC stream cannot be opened."""
    good = tmp_path / "good.flac"
    sf.write(str(good), _noise(RATE, 1), RATE, subtype="PCM_16")
    info = sf.info(str(good))
    good.write_bytes(b"not audio at all" * 100)  # replaced after its header was read
    with pytest.raises(RuntimeError, match="FLAC decoder failed"):
        list(read_blocks(good, info, 1 << 16, int16=True))


def _zero_streaminfo_total(path: Path) -> None:
    """What a streaming encoder writes: STREAMINFO's 36-bit total-samples field left 0."""
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC"
    b[21] &= 0xF0
    b[22:26] = bytes(4)
    path.write_bytes(bytes(b))


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 1), ("PCM_24", 2)])
def test_flac_without_a_length_is_counted_and_read_whole(
    tmp_path: Path, subtype: str, channels: int
) -> None:
    frames = 100_003
    path = tmp_path / "stream.flac"
    sf.write(str(path), _noise(frames, channels), RATE, subtype=subtype)
    want = _read_all(path, 1 << 16, int16=False)
    _zero_streaminfo_total(path)
    info = sf.info(str(path))
    assert info.frames == UNKNOWN_LENGTH  # libsndfile's "unknown"
    assert count_flac_frames(path, channels, limit=10**9) == frames
    assert 1000 < count_flac_frames(path, channels, limit=1000) <= 1000 + (1 << 16)  # stops
    got = _read_all(path, 1 << 16, int16=False)
    np.testing.assert_array_equal(got, want)
