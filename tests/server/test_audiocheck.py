"""The upload check decodes a FLAC as the mix does: the samples it keeps are libsndfile's,
bit for bit, and a single damaged byte anywhere in the stream is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tutti.mix.scratch import RawAudio
from tutti.server.audiocheck import AudioCheckError, check_audio

RATE = 48000


def _flac(path: Path, subtype: str, seconds: float = 6.0, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(3)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = 0.4 * np.sin(2 * np.pi * 220 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    sf.write(path, x, RATE, subtype=subtype, format="FLAC")
    decoded: np.ndarray = sf.read(path, dtype="float32", always_2d=True)[0]
    return decoded


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_the_kept_samples_are_libsndfiles(tmp_path: Path, subtype: str, channels: int) -> None:
    expected = _flac(tmp_path / "a.flac", subtype, channels=channels)
    info = check_audio(tmp_path / "a.flac", decoded=tmp_path / "a.raw")
    assert info.decoded and info.frames == expected.shape[0] and info.channels == channels
    raw = RawAudio.existing(tmp_path / "a.raw", channels, info.frames, int16=subtype == "PCM_16")
    try:
        kept = raw.read(0, info.frames)
    finally:
        raw.close()
    assert np.array_equal(kept, expected)  # a 16-bit file is kept as int16, read back scaled


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_one_flipped_byte_is_refused(tmp_path: Path, subtype: str, where: float) -> None:
    _flac(tmp_path / "a.flac", subtype)
    data = bytearray((tmp_path / "a.flac").read_bytes())
    data[int(len(data) * where)] ^= 0x10
    (tmp_path / "b.flac").write_bytes(bytes(data))
    for decoded in (None, tmp_path / "b.raw"):
        with pytest.raises(AudioCheckError, match="truncated or corrupt"):
            check_audio(tmp_path / "b.flac", decoded=decoded)
    assert not (tmp_path / "b.raw").exists()
