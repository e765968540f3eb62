"""The mix's scratch-file helpers: raw audio by range, and the allocator setting for blocks."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tutti.mix.scratch import RawAudio

_FAULTS = """
import resource, sys
import numpy as np
from tutti.mix.scratch import keep_freed_blocks
applied = keep_freed_blocks() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):  # a block loop: allocate, fill and free 1 MB arrays
    a = np.ones(1 << 18, dtype=np.float32)
    b = a * 2.0
    del a, b
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_keep_freed_blocks_stops_page_faults_per_block() -> None:
    """Without the setting every 1 MB temporary is a fresh mmap: ~256 page faults each."""
    applied, kept = _faults("keep")
    _, default = _faults("default")
    assert applied == "True"
    assert default > 300 * 200  # at least 200 faults per block by default
    assert kept * 20 < default, f"{kept} faults with the setting, {default} without"


def test_raw_audio_int16_round_trip_and_scaled_reads(tmp_path: Path) -> None:
    raw = RawAudio(tmp_path / "x.raw", 2, int16=True)
    block = np.array([[0, 1], [-32768, 32767], [100, -100]], dtype=np.int16)
    raw.append(block)
    raw.append(block[:1])
    assert raw.frames == 4
    stored, scale = raw.read_scaled(1, 6)  # past the end: zeros
    assert scale == 1 / 32768
    np.testing.assert_array_equal(stored[:3], np.vstack([block[1:], block[:1]]))
    assert not stored[3:].any()
    np.testing.assert_array_equal(raw.read(1, 6), stored.astype(np.float32) * np.float32(scale))
    with pytest.raises(ValueError, match="expected int16"):
        raw.append(block.astype(np.float32))
    raw.close()
