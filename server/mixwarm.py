"""A mix worker's warm-up: one tiny take mixed the server's way, before the first real one.

A worker process that has not mixed yet pays, on its first mix, for the imports of the mix's
later stages (PyAV and libopus for the Opus copy), and for loading each compiled kernel
(numba's on-disk cache) the first time it runs with those types: about half a second, on the
path from the last upload to the mix (docs/benchmarks-mix.md).  So every worker mixes a take
of two 3-second recordings when the pool starts: pass 1 kept, the groups' sums, the voice
pass, the master with its FLAC and the Opus copy, all in a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tutti.fsutil import write_json_atomic
from tutti.takeformat import MANIFEST_NAME, Recording, TakeManifest
from tutti.wire import SessionSettings

__all__ = ["warm_up"]

_RATE = 48000
_SECONDS = 3


def _tiny_take(folder: Path) -> list[str]:
    """Write a take folder of two quiet 24-bit FLAC recordings: their files."""
    import soundfile as sf

    rng = np.random.default_rng(7)
    recs = []
    for k, part in enumerate(("S", "A")):
        file = f"recordings/warm{k}.flac"
        x = 0.01 * rng.standard_normal(_SECONDS * _RATE).astype(np.float32)
        (folder / "recordings").mkdir(parents=True, exist_ok=True)
        sf.write(str(folder / file), x, _RATE, subtype="PCM_24", format="FLAC")
        recs.append(Recording(file, f"warm-up {k}", part, _RATE, 1, len(x), 0, 0))
    manifest = TakeManifest("warm-up", _RATE, tuple(recs), SessionSettings(title="warm-up"))
    write_json_atomic(folder / MANIFEST_NAME, manifest.to_dict(), indent=2)
    return [r.file for r in recs]


def warm_up() -> None:
    """Worker process: mix a tiny take as the server mixes one (nothing is kept)."""
    from tutti.server.mixing import MixJob, PrepareJob, make_mix, prepare_recording

    with tempfile.TemporaryDirectory(prefix="tutti-warm-up-") as tmp:
        take = Path(tmp) / "take"
        files = _tiny_take(take)
        out = str(take / "mix")
        expected = tuple((f, p) for f, p in zip(files, ("S", "A"), strict=True))
        prepare_recording(PrepareJob(str(take), out, files[0], expected))
        make_mix(MixJob(str(take), out, 1, rate=_RATE, files=tuple(files)))
