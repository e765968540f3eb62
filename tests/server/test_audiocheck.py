"""The upload check decodes a FLAC as the mix does: a single damaged byte anywhere in the
stream is refused; a recording's check reads its header only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


@pytest.mark.parametrize("where", [0.3, 0.5, 0.9])
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_one_flipped_byte_is_refused(tmp_path: Path, subtype: str, where: float) -> None:
    _flac(tmp_path / "a.flac", subtype)
    assert check_audio(tmp_path / "a.flac").frames == 6 * RATE
    data = bytearray((tmp_path / "a.flac").read_bytes())
    data[int(len(data) * where)] ^= 0x10
    (tmp_path / "b.flac").write_bytes(bytes(data))
    with pytest.raises(AudioCheckError, match="truncated or corrupt"):
        check_audio(tmp_path / "b.flac")
    # a recording's check reads the header only: its pass 1 decodes it (tests/server/
    # test_server_mix.py refuses it there)
    assert check_audio(tmp_path / "b.flac", decode=False).frames == 6 * RATE


def test_the_header_is_checked_without_the_decode(tmp_path: Path) -> None:
    _flac(tmp_path / "a.flac", "PCM_24", channels=2)
    info = check_audio(tmp_path / "a.flac", decode=False)
    assert (info.format, info.subtype, info.channels, info.frames) == (
        "FLAC",
        "PCM_24",
        2,
        6 * RATE,
    )
    (tmp_path / "c.flac").write_bytes((tmp_path / "a.flac").read_bytes()[:30])  # no STREAMINFO
    with pytest.raises(AudioCheckError, match="not a readable audio file"):
        check_audio(tmp_path / "c.flac", decode=False)
